//! `sluice handlers`, `deploy`, `remove` and `activate`: the handlers and
//! their versions.

use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::Value;

use crate::client::{Client, cell, items, render, short, table};
use crate::{ActivateArgs, DeployArgs, HandlersArgs, RemoveArgs};

/// The counters of `sluice handlers`, in their columns' order.
const COUNTERS: [&str; 7] = [
    "processed",
    "duplicates",
    "failed",
    "retries",
    "dead_lettered",
    "parked",
    "in_flight",
];

/// Every handler as a table, or one in detail when named.
pub async fn list(args: HandlersArgs) -> anyhow::Result<ExitCode> {
    let client = Client::new(&args.client);
    if let Some(name) = &args.name {
        let answer = client.handler(name).await?;
        render(args.client.json, &answer, |h| print_detail(name, h))?;
    } else {
        let answer = client.handlers().await?;
        render(args.client.json, &answer, print_list)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The handlers, one row each: version, running, topics, counters, lag.
fn print_list(answer: &Value) {
    let rows = items(&answer["handlers"])
        .map(|h| {
            let lag: i64 = h["lag"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(_, v)| v.as_i64())
                .sum();
            let topics: Vec<&str> = items(&h["config"]["topics"])
                .filter_map(|t| t.as_str())
                .collect();
            [
                cell(&h["name"]),
                cell(&h["active_version"]),
                if h["running"] == true { "yes" } else { "no" }.into(),
                topics.join(","),
            ]
            .into_iter()
            .chain(COUNTERS.iter().map(|c| cell(&h["stats"][*c])))
            .chain(std::iter::once(lag.to_string()))
            .collect()
        })
        .collect();
    table(
        &[
            "HANDLER",
            "VERSION",
            "RUNNING",
            "TOPICS",
            "PROCESSED",
            "DUPLICATES",
            "FAILED",
            "RETRIES",
            "DEAD",
            "PARKED",
            "IN_FLIGHT",
            "LAG",
        ],
        rows,
    );
}

/// One handler: configuration, versions (the active one marked), counters.
fn print_detail(name: &str, h: &Value) {
    let config = &h["config"];
    println!(
        "handler {name} ({}, managed by {}): topics {} types {} concurrency {} on_dead_letter {}",
        if h["running"] == true {
            "running"
        } else {
            "not running"
        },
        cell(&h["managed_by"]),
        config["topics"],
        config["types"],
        cell(&config["concurrency"]),
        cell(&config["on_dead_letter"])
    );
    println!("retry {} limits {}", config["retry"], config["limits"]);
    let active = h["active_version"].as_i64();
    let rows = items(&h["versions"])
        .map(|v| {
            vec![
                if v["version"].as_i64() == active {
                    "*".into()
                } else {
                    String::new()
                },
                cell(&v["version"]),
                short(&v["digest"]),
                cell(&v["size"]),
                cell(&v["uploaded_at"]),
            ]
        })
        .collect();
    table(&["", "VERSION", "DIGEST", "SIZE", "UPLOADED(ms)"], rows);
    if let Some(stats) = h["stats"].as_object() {
        let counters: Vec<String> = stats.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("{}", counters.join(", "));
    }
}

/// Creates the handler, or changes its subscriptions, as `--topic` and
/// `--type` ask; the rest of an existing configuration stays.
async fn subscribe(client: &Client, args: &DeployArgs) -> anyhow::Result<()> {
    let mut config = match client.find_handler(&args.name).await? {
        Some(mut record) => record["config"].take(),
        None if args.topics.is_empty() => anyhow::bail!(
            "handler {} does not exist: give --topic to create it",
            args.name
        ),
        None => serde_json::json!({}),
    };
    if let Some(fields) = config.as_object_mut() {
        fields.remove("name");
        fields.remove("component");
    }
    if !args.topics.is_empty() {
        config["topics"] = args.topics.clone().into();
    }
    if !args.types.is_empty() {
        config["types"] = args.types.clone().into();
    }
    client.put_handler(&args.name, config).await?;
    Ok(())
}

/// Uploads the component as a new version (after [`subscribe`] when
/// `--topic` or `--type` is given), activated unless `--no-activate`.
pub async fn deploy(args: DeployArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let client = Client::new(&args.client);
    if !args.topics.is_empty() || !args.types.is_empty() {
        subscribe(&client, &args).await?;
    }
    // The host answers once the component is validated and compiled:
    // seconds for a large (JavaScript, Python) one the first time.
    if !args.client.json {
        eprintln!(
            "uploading {} ({:.1} MB); the host validates and compiles it before it answers",
            args.file.display(),
            bytes.len() as f64 / 1e6
        );
    }
    let answer = client
        .upload_version(&args.name, bytes, !args.no_activate)
        .await
        .map_err(|e| {
            if args.topics.is_empty() && e.to_string().contains("unknown_handler") {
                e.context(format!(
                    "handler {} does not exist: give --topic to create it",
                    args.name
                ))
            } else {
                e
            }
        })?;
    render(args.client.json, &answer, |answer| {
        println!(
            "{} version {} ({}){}{}{}",
            args.name,
            cell(&answer["version"]),
            short(&answer["digest"]),
            match answer["prepared_ms"].as_u64() {
                Some(ms) => format!(", ready in {:.1} s", ms as f64 / 1000.0),
                None => String::new(),
            },
            if answer["created"] == true {
                ""
            } else {
                ", identical to a stored version"
            },
            if args.no_activate {
                ", not activated"
            } else {
                ", active"
            }
        );
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Deletes the handler with its versions (and its records with `--purge`).
pub async fn remove(args: RemoveArgs) -> anyhow::Result<ExitCode> {
    let answer = Client::new(&args.client)
        .remove_handler(&args.name, args.purge)
        .await?;
    render(args.client.json, &answer, |_| {
        if args.purge {
            println!("{} deleted, with its records", args.name);
        } else {
            println!(
                "{} deleted (its positions, state and DLQ entries are kept)",
                args.name
            );
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Activates a stored version of the handler.
pub async fn activate(args: ActivateArgs) -> anyhow::Result<ExitCode> {
    let answer = Client::new(&args.client)
        .activate(&args.name, args.version)
        .await?;
    render(args.client.json, &answer, |answer| {
        println!(
            "{} now runs version {}",
            args.name,
            cell(&answer["active_version"])
        );
    })?;
    Ok(ExitCode::SUCCESS)
}
