//! `sluice dlq`: list, show, redrive and discard dead-letter entries.

use std::process::ExitCode;

use serde_json::Value;

use crate::DlqCommand;
use crate::client::{Client, DlqFilter, cell, first_line, items, render, short, table};

/// Runs one DLQ subcommand; each but `list` prints the entry it touched.
pub async fn run(command: DlqCommand) -> anyhow::Result<ExitCode> {
    let (client, answer) = match command {
        DlqCommand::List {
            handler,
            topic,
            status,
            limit,
            cursor,
            client,
        } => {
            let filter = DlqFilter {
                handler,
                topic,
                status,
                limit,
                cursor,
            };
            let answer = Client::new(&client).dlq_list(&filter).await?;
            render(client.json, &answer, print_list)?;
            return Ok(ExitCode::SUCCESS);
        }
        DlqCommand::Show { id, client } => {
            let answer = Client::new(&client).dlq_entry(id).await?;
            (client, answer)
        }
        DlqCommand::Redrive {
            id,
            version,
            client,
        } => {
            let answer = Client::new(&client).dlq_redrive(id, version).await?;
            (client, answer)
        }
        DlqCommand::Discard { id, client } => {
            let answer = Client::new(&client).dlq_discard(id).await?;
            (client, answer)
        }
    };
    render(client.json, &answer, print_entry)?;
    Ok(ExitCode::SUCCESS)
}

/// A page of entries as a table, then the cursor of the next page.
fn print_list(answer: &Value) {
    let rows = items(&answer["entries"])
        .map(|e| {
            vec![
                cell(&e["id"]),
                cell(&e["handler"]),
                short(&e["version"]),
                cell(&e["status"]),
                cell(&e["event"]["topic"]),
                cell(&e["event"]["id"]),
                e["attempts"].as_array().map_or(0, Vec::len).to_string(),
                first_line(&e["error"]),
            ]
        })
        .collect();
    table(
        &[
            "ID", "HANDLER", "VERSION", "STATUS", "TOPIC", "EVENT", "ATTEMPTS", "ERROR",
        ],
        rows,
    );
    if let Some(next) = answer["next_cursor"].as_i64() {
        println!("(more: --cursor {next})");
    }
}

/// One entry: its handler, its event, then its attempts as a table.
fn print_entry(answer: &Value) {
    println!(
        "entry {} ({}) for handler {} at version {}",
        cell(&answer["id"]),
        cell(&answer["status"]),
        cell(&answer["handler"]),
        short(&answer["version"])
    );
    println!(
        "event {} ({}) on {} key {}",
        cell(&answer["event"]["id"]),
        cell(&answer["event"]["type"]),
        cell(&answer["event"]["topic"]),
        cell(&answer["event"]["key"])
    );
    let rows = items(&answer["attempts"])
        .map(|a| {
            vec![
                cell(&a["attempt"]),
                cell(&a["outcome"]),
                short(&a["version"]),
                cell(&a["at"]),
                first_line(&a["error"]),
            ]
        })
        .collect();
    table(&["ATTEMPT", "OUTCOME", "VERSION", "AT(ms)", "ERROR"], rows);
    // The whole last error: a JS stack or a Python traceback has many lines.
    let error = cell(&answer["error"]);
    if error.contains('\n') {
        println!("last error:");
        for line in error.lines() {
            println!("  {line}");
        }
    }
}
