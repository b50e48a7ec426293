//! A typed client of the admin API: one method per endpoint the commands
//! use, with an error answer turned into an error in one place
//! ([`Client::send`]); and [`render`], how every answer is printed (the
//! API's JSON with `--json`, else for people, with [`table`]).

use anyhow::Context as _;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};

use crate::ClientArgs;

/// The admin API at one base URL, with its token.
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

/// Which DLQ entries to list (`GET /v1/dlq`).
pub struct DlqFilter {
    /// Only this handler.
    pub handler: Option<String>,
    /// Only this topic.
    pub topic: Option<String>,
    /// Only this status.
    pub status: Option<String>,
    /// At most this many.
    pub limit: u32,
    /// Entries after this id.
    pub cursor: Option<i64>,
}

impl Client {
    /// The client of `--url` and `--token`.
    pub fn new(args: &ClientArgs) -> Self {
        Self {
            base: args.url.trim_end_matches('/').to_owned(),
            token: args.token.clone(),
            http: reqwest::Client::new(),
        }
    }

    /// `POST /v1/topics/{topic}/events`: appends the event `body`.
    pub async fn publish(&self, topic: &str, body: Value) -> anyhow::Result<Value> {
        self.call(
            Method::POST,
            &format!("/v1/topics/{topic}/events"),
            Some(body),
        )
        .await
    }

    /// `GET /v1/dlq`: a page of entries, oldest first.
    pub async fn dlq_list(&self, filter: &DlqFilter) -> anyhow::Result<Value> {
        let mut query = vec![format!("limit={}", filter.limit)];
        for (name, value) in [
            ("handler", &filter.handler),
            ("topic", &filter.topic),
            ("status", &filter.status),
        ] {
            if let Some(v) = value {
                query.push(format!("{name}={v}"));
            }
        }
        if let Some(c) = filter.cursor {
            query.push(format!("cursor={c}"));
        }
        self.call(Method::GET, &format!("/v1/dlq?{}", query.join("&")), None)
            .await
    }

    /// `GET /v1/dlq/{id}`: one entry with its event and attempts.
    pub async fn dlq_entry(&self, id: i64) -> anyhow::Result<Value> {
        self.call(Method::GET, &format!("/v1/dlq/{id}"), None).await
    }

    /// `POST /v1/dlq/{id}/redrive`, on `version` or the active one.
    pub async fn dlq_redrive(&self, id: i64, version: Option<i64>) -> anyhow::Result<Value> {
        let body = json!({ "version": version });
        self.call(Method::POST, &format!("/v1/dlq/{id}/redrive"), Some(body))
            .await
    }

    /// `DELETE /v1/dlq/{id}`: discards the entry.
    pub async fn dlq_discard(&self, id: i64) -> anyhow::Result<Value> {
        self.call(Method::DELETE, &format!("/v1/dlq/{id}"), None)
            .await
    }

    /// `GET /v1/events/{id}`: the event, its processing and its effects.
    pub async fn event(&self, id: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, &format!("/v1/events/{id}"), None)
            .await
    }

    /// `GET /v1/handlers`: every handler.
    pub async fn handlers(&self) -> anyhow::Result<Value> {
        self.call(Method::GET, "/v1/handlers", None).await
    }

    /// `GET /v1/handlers/{name}`: one handler.
    pub async fn handler(&self, name: &str) -> anyhow::Result<Value> {
        self.call(Method::GET, &format!("/v1/handlers/{name}"), None)
            .await
    }

    /// `GET /v1/handlers/{name}`, `None` when there is no such handler.
    pub async fn find_handler(&self, name: &str) -> anyhow::Result<Option<Value>> {
        let (status, record, text) = self
            .request(Method::GET, &format!("/v1/handlers/{name}"), |r| r)
            .await?;
        if status == StatusCode::NOT_FOUND {
            Ok(None)
        } else if status.is_success() {
            Ok(Some(record))
        } else {
            anyhow::bail!("reading handler {name}: {status}: {text}")
        }
    }

    /// `PUT /v1/handlers/{name}`: creates or reconfigures the handler.
    pub async fn put_handler(&self, name: &str, config: Value) -> anyhow::Result<Value> {
        self.call(Method::PUT, &format!("/v1/handlers/{name}"), Some(config))
            .await
    }

    /// `POST /v1/handlers/{name}/versions`: uploads a component, activated
    /// at once when `activate`.
    pub async fn upload_version(
        &self,
        name: &str,
        component: Vec<u8>,
        activate: bool,
    ) -> anyhow::Result<Value> {
        let path = format!("/v1/handlers/{name}/versions?activate={activate}");
        self.send(Method::POST, &path, |r| {
            r.header("content-type", "application/wasm").body(component)
        })
        .await
    }

    /// `DELETE /v1/handlers/{name}`, with its records when `purge`.
    pub async fn remove_handler(&self, name: &str, purge: bool) -> anyhow::Result<Value> {
        let path = format!("/v1/handlers/{name}?purge={purge}");
        self.call(Method::DELETE, &path, None).await
    }

    /// `POST /v1/handlers/{name}/activate`: activates a stored version.
    pub async fn activate(&self, name: &str, version: i64) -> anyhow::Result<Value> {
        let body = json!({ "version": version });
        self.call(
            Method::POST,
            &format!("/v1/handlers/{name}/activate"),
            Some(body),
        )
        .await
    }

    /// One call with a JSON body (or none).
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        self.send(method, path, |r| match body {
            Some(body) => r.json(&body),
            None => r,
        })
        .await
    }

    /// One call with any body (`with_body` adds it); an error answer
    /// becomes an error with its detail.
    async fn send(
        &self,
        method: Method,
        path: &str,
        with_body: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> anyhow::Result<Value> {
        let (status, value, text) = self.request(method, path, with_body).await?;
        if !status.is_success() {
            match (value["error"].as_str(), value["detail"].as_str()) {
                (Some(error), Some(detail)) => anyhow::bail!("{status}: {error}: {detail}"),
                _ => anyhow::bail!("{status}: {text}"),
            }
        }
        Ok(value)
    }

    /// One call, whatever its status: status, JSON body (`null` if it is
    /// not JSON) and the raw text.
    async fn request(
        &self,
        method: Method,
        path: &str,
        with_body: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> anyhow::Result<(StatusCode, Value, String)> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = with_body(request)
            .send()
            .await
            .with_context(|| format!("cannot reach {url}"))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok((status, value, text))
    }
}

/// Prints an answer: the API's JSON, pretty, with `--json`; else `human`
/// prints it for people.
pub fn render(json: bool, answer: &Value, human: impl FnOnce(&Value)) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(answer)?);
    } else {
        human(answer);
    }
    Ok(())
}

/// Prints rows as aligned columns under a header.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

/// A value as a table cell: strings bare, `null` as `-`.
pub fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The first line of a (possibly multi-line) text cell, marked `…` when
/// there is more: a stack trace must not break a table's rows.
pub fn first_line(v: &Value) -> String {
    let text = cell(v);
    match text.split_once('\n') {
        Some((first, _)) => format!("{} …", first.trim_end()),
        None => text,
    }
}

/// A digest's first 12 characters.
pub fn short(digest: &Value) -> String {
    cell(digest).chars().take(12).collect()
}

/// The elements of `v` if it is an array, else none.
pub fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}
