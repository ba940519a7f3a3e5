//! `runnel sql`: SQL statements through the node's SQL service (`docs/sql.md`, `docs/cli.md`).
//!
//! `-e STATEMENT` runs one statement; without it, an interactive shell reads statements from
//! stdin (ended by `;`, over as many lines as needed), keeps their history in
//! `~/.runnel_sql_history` (`\history` prints it), and ends with `\q`, `exit` or end of input.
//! Pull queries and SHOW print tables; a push query prints its rows as they come, `+ {row}`
//! for an inserted row and `- {row}` for a retracted one, until Ctrl-C, which ends the query
//! and not the shell.

use std::io::Write;

use runnel_client::{Client, PushQuery, SqlAnswer, SqlOutcome};
use serde_json::{json, Value};

use crate::args::OutputFormat;
use crate::error::CliError;
use crate::output::Output;
use crate::table::Table;

/// Most statements the shell's history file keeps.
const HISTORY_STATEMENTS_MAX: usize = 1000;

/// Runs `runnel sql`.
pub async fn run(
    client: &Client,
    execute: Option<String>,
    output: &mut Output,
) -> Result<(), CliError> {
    match execute {
        Some(statement) => statement_run(client, &statement, output).await,
        None => shell(client, output).await,
    }
}

async fn statement_run(client: &Client, sql: &str, output: &mut Output) -> Result<(), CliError> {
    match client.sql(sql).await? {
        SqlAnswer::Done(outcome) => print_outcome(&outcome, output),
        SqlAnswer::Push(query) => push_rows(query, output).await,
    }
}

fn cell(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn print_outcome(outcome: &SqlOutcome, output: &mut Output) -> Result<(), CliError> {
    if output.format() == OutputFormat::Json {
        return output.json(&json!({
            "message": outcome.message,
            "columns": outcome.columns,
            "rows": outcome.rows,
        }));
    }
    if outcome.columns.is_empty() {
        return output.text(&format!("{}\n", outcome.message));
    }
    let mut table = Table::new(outcome.columns.iter().cloned());
    for row in &outcome.rows {
        let mut cells: Vec<String> = row.iter().map(cell).collect();
        cells.resize(outcome.columns.len(), String::new());
        table.row(cells);
    }
    output.text(&table.render())?;
    output.text(&format!("({} row(s))\n", outcome.rows.len()))
}

/// Prints a push query's rows until the server ends it or Ctrl-C, which ends the query.
async fn push_rows(mut query: PushQuery, output: &mut Output) -> Result<(), CliError> {
    loop {
        let row = tokio::select! {
            row = query.next() => row?,
            _ = tokio::signal::ctrl_c() => {
                query.cancel();
                return output.flush();
            }
        };
        let Some(row) = row else {
            return output.flush();
        };
        if output.format() == OutputFormat::Json {
            output.json(&json!({"retract": row.retract, "row": row.value()}))?;
        } else {
            let sign = if row.retract { '-' } else { '+' };
            output.text(&format!("{sign} {}\n", row.json))?;
        }
        output.flush()?;
    }
}

fn history_path() -> Option<std::path::PathBuf> {
    std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".runnel_sql_history"))
}

fn load_history() -> Vec<String> {
    history_path()
        .and_then(|path| std::fs::read_to_string(path).ok())
        .map(|text| {
            text.split("\n;;\n")
                .filter(|s| !s.trim().is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn save_history(history: &[String]) {
    let Some(path) = history_path() else {
        return;
    };
    let keep = &history[history.len().saturating_sub(HISTORY_STATEMENTS_MAX)..];
    let _ = std::fs::write(path, keep.join("\n;;\n") + "\n;;\n");
}

async fn read_line() -> Option<String> {
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        match std::io::stdin().read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(line),
        }
    })
    .await
    .ok()
    .flatten()
}

fn prompt(text: &str) {
    let mut err = std::io::stderr();
    let _ = write!(err, "{text}");
    let _ = err.flush();
}

async fn shell(client: &Client, output: &mut Output) -> Result<(), CliError> {
    let mut history = load_history();
    let mut statement = String::new();
    loop {
        prompt(if statement.is_empty() {
            "runnel> "
        } else {
            "   ...> "
        });
        let Some(line) = read_line().await else {
            break;
        };
        let trimmed = line.trim();
        if statement.is_empty() {
            match trimmed {
                "" => continue,
                "\\q" | "exit" | "quit" => break,
                "\\history" => {
                    for (index, past) in history.iter().enumerate() {
                        output.text(&format!("{:>4}  {}\n", index + 1, past))?;
                    }
                    output.flush()?;
                    continue;
                }
                _ => {}
            }
        }
        statement.push_str(&line);
        if !trimmed.ends_with(';') {
            continue;
        }
        let sql = std::mem::take(&mut statement);
        history.push(sql.trim().to_string());
        save_history(&history);
        if let Err(error) = statement_run(client, &sql, output).await {
            output.flush()?;
            eprintln!("{error}");
        }
        output.flush()?;
    }
    Ok(())
}
