//! `sluice publish`: one event appended through the admin API.

use std::process::ExitCode;

use anyhow::Context as _;

use crate::PublishArgs;
use crate::client::{Client, items};

/// Appends the event and prints its id.
pub async fn run(args: PublishArgs) -> anyhow::Result<ExitCode> {
    let mut body = serde_json::json!({ "type": args.ty });
    if let Some(id) = args.id {
        body["id"] = id.into();
    }
    if let Some(key) = args.key {
        body["key"] = key.into();
    }
    if let Some(schema) = args.data_schema {
        body["data_schema"] = schema.into();
    }
    if let Some(data) = args.data {
        body["data"] = serde_json::from_str(&data).context("--data is not valid JSON")?;
    }
    let mut headers = serde_json::Map::new();
    for h in args.headers {
        let (name, value) = h
            .split_once('=')
            .with_context(|| format!("--header {h:?} is not name=value"))?;
        headers.insert(name.to_owned(), value.into());
    }
    if !headers.is_empty() {
        body["headers"] = headers.into();
    }
    let answer = Client::new(&args.client).publish(&args.topic, body).await?;
    // Compact, one line: unlike the other commands' pretty `--json`.
    if args.client.json {
        println!("{answer}");
    } else {
        for id in items(&answer["ids"]) {
            println!("{}", id.as_str().unwrap_or_default());
        }
    }
    Ok(ExitCode::SUCCESS)
}
