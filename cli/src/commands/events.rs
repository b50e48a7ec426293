//! `sluice events`: an event, who processed it and what it caused.

use std::process::ExitCode;

use serde_json::Value;

use crate::EventsCommand;
use crate::client::{Client, cell, items, render, short, table};

/// Shows the event: its causes, its processing, its effects as a tree.
pub async fn run(command: EventsCommand) -> anyhow::Result<ExitCode> {
    let EventsCommand::Show { id, client } = command;
    let answer = Client::new(&client).event(&id).await?;
    render(client.json, &answer, print_event)?;
    Ok(ExitCode::SUCCESS)
}

/// The event, its causes, who processed it, then its effects.
fn print_event(answer: &Value) {
    let e = &answer["event"];
    println!(
        "event {} ({}) on {} key {} seq {}",
        cell(&e["id"]),
        cell(&e["type"]),
        cell(&e["topic"]),
        cell(&e["key"]),
        cell(&e["seq"])
    );
    for cause in items(&answer["causes"]) {
        println!(
            "  caused by {} ({}) on {}",
            cell(&cause["id"]),
            cell(&cause["type"]),
            cell(&cause["topic"])
        );
    }
    let rows = items(&answer["processed_by"])
        .map(|p| {
            vec![
                cell(&p["handler"]),
                cell(&p["outcome"]),
                short(&p["version"]),
                cell(&p["attempts"]),
            ]
        })
        .collect();
    table(&["HANDLER", "OUTCOME", "VERSION", "ATTEMPTS"], rows);
    walk(&answer["effects"], 1);
}

/// The emitted events, indented by their depth in the causation tree.
fn walk(effects: &Value, depth: usize) {
    for e in items(effects) {
        let ev = &e["event"];
        println!(
            "{}-> {} ({}) on {} key {}",
            "  ".repeat(depth),
            cell(&ev["id"]),
            cell(&ev["type"]),
            cell(&ev["topic"]),
            cell(&ev["key"])
        );
        walk(&e["effects"], depth + 1);
    }
}
