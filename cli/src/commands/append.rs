//! `stream append`: records from stdin, one per line, through a [`BufferedProducer`].
//!
//! A thread reads stdin (blocking, as stdin is) into a bounded channel; the command sends each
//! line to the producer and prints each record's id as it is answered, in input order. Lines
//! are bounded (the server's `record_bytes_max` plus the separator and a CRLF), so a stray
//! binary file cannot exhaust memory; empty lines are skipped; a trailing `\r` is removed.
//!
//! On the first failure the command stops reading, still waits for the records already sent
//! (printing the ids of those stored), and reports the failure with its line number. Nothing
//! is retried when it may have been stored (the SDK's rule).

use std::collections::VecDeque;
use std::io::{BufRead, Read};
use std::time::{SystemTime, UNIX_EPOCH};

use runnel_client::{AppendFuture, BufferedProducerConfig, Client, ClientError, Record, RecordId};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::args::{AppendArgs, OutputFormat};
use crate::error::CliError;
use crate::output::Output;

/// Lines read ahead of the producer.
const LINES_QUEUED_MAX: usize = 1_024;
/// Records sent whose answer is not printed yet; input waits above this.
const ANSWERS_PENDING_MAX: usize = 100_000;

/// One line of input.
struct InputLine {
    /// 1-based line number, for error messages.
    number: u64,
    bytes: Vec<u8>,
}

/// Appends stdin's lines to the stream.
pub async fn run(client: &Client, args: AppendArgs, output: &mut Output) -> Result<(), CliError> {
    // Fail fast on an unknown stream, before waiting for input.
    client.describe_stream(&args.name).await?;
    let separator = args.key_separator.clone().map(String::into_bytes);
    let record_bytes_max = client.limits().record_bytes_max;
    let line_bytes_max = record_bytes_max + separator.as_ref().map_or(0, Vec::len) as u64 + 2;
    // Idempotent: a batch whose connection broke after sending is sent again, and the node
    // stores it once. It costs nothing here (one batch per shard in flight, the default).
    let config = BufferedProducerConfig {
        batch_records_max: args.batch_records as usize,
        idempotent: true,
        ..BufferedProducerConfig::default()
    };
    let producer = client.buffered_producer(&args.name, config)?;
    let mut lines = read_stdin(line_bytes_max);

    let mut pending: VecDeque<(u64, AppendFuture)> = VecDeque::new();
    let mut appended: u64 = 0;
    let mut ids: Vec<String> = Vec::new();
    let mut failure: Option<CliError> = None;
    let mut input_open = true;
    while input_open || !pending.is_empty() {
        tokio::select! {
            biased;
            answer = next_answer(&mut pending), if !pending.is_empty() => {
                let line = pending.pop_front().map_or(0, |(line, _)| line);
                match answer {
                    Ok(id) => {
                        appended += 1;
                        print_id(id, &args, output, &mut ids)?;
                        if pending.is_empty() {
                            output.flush()?;
                        }
                    }
                    Err(error) => {
                        if failure.is_none() {
                            failure = Some(at_line(line, error));
                        }
                        input_open = false;
                    }
                }
            }
            line = lines.recv(), if input_open && pending.len() < ANSWERS_PENDING_MAX => {
                match line {
                    None => input_open = false,
                    Some(Err(error)) => {
                        failure.get_or_insert(error);
                        input_open = false;
                    }
                    Some(Ok(line)) => {
                        let record = to_record(line.bytes, separator.as_deref());
                        match producer.send(record).await {
                            Ok(answer) => pending.push_back((line.number, answer)),
                            Err(error) => {
                                failure.get_or_insert(at_line(line.number, error));
                                input_open = false;
                            }
                        }
                    }
                }
            }
        }
    }
    // Stop the stdin thread (its next send fails) and the producer's task.
    drop(lines);
    producer.close().await?;
    match (output.format(), args.count) {
        (OutputFormat::Table, true) => {
            output.text(&format!("appended {appended} records to {}\n", args.name))?
        }
        (OutputFormat::Table, false) => {}
        (OutputFormat::Json, _) => {
            #[derive(Serialize)]
            struct Appended<'a> {
                stream: &'a str,
                appended: u64,
                #[serde(skip_serializing_if = "Option::is_none")]
                record_ids: Option<Vec<String>>,
            }
            output.json(&Appended {
                stream: &args.name,
                appended,
                record_ids: (!args.count).then_some(ids),
            })?
        }
    }
    failure.map_or(Ok(()), Err)
}

/// The answer for the oldest record sent (never ready when none is pending).
async fn next_answer(pending: &mut VecDeque<(u64, AppendFuture)>) -> Result<RecordId, ClientError> {
    match pending.front_mut() {
        Some((_, answer)) => answer.await,
        None => std::future::pending().await,
    }
}

fn print_id(
    id: RecordId,
    args: &AppendArgs,
    output: &mut Output,
    ids: &mut Vec<String>,
) -> Result<(), CliError> {
    match (output.format(), args.count) {
        (_, true) => Ok(()),
        (OutputFormat::Table, false) => output.text(&format!("{id}\n")),
        (OutputFormat::Json, false) => {
            ids.push(id.to_string());
            Ok(())
        }
    }
}

fn at_line(line: u64, error: ClientError) -> CliError {
    let mut error = CliError::from(error);
    error.message = format!("line {line}: {}", error.message);
    error
}

/// A record of `line`, keyed by the part before the first `separator` when there is one.
fn to_record(line: Vec<u8>, separator: Option<&[u8]>) -> Record {
    let (key, value) = split_key(line, separator);
    let record = Record::at(value, now_ms());
    match key {
        Some(key) => record.with_key(key),
        None => record,
    }
}

/// Splits `line` at the first `separator`: `(Some(key), value)`; `(None, line)` without a
/// separator or when the line does not hold it.
pub fn split_key(mut line: Vec<u8>, separator: Option<&[u8]>) -> (Option<Vec<u8>>, Vec<u8>) {
    let Some(separator) = separator.filter(|s| !s.is_empty()) else {
        return (None, line);
    };
    match line
        .windows(separator.len())
        .position(|window| window == separator)
    {
        Some(at) => {
            let value = line.split_off(at + separator.len());
            line.truncate(at);
            (Some(line), value)
        }
        None => (None, line),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// Starts the thread reading stdin's lines into a bounded channel; the channel closes at the
/// end of input, after an error, or when the receiver is dropped.
fn read_stdin(line_bytes_max: u64) -> mpsc::Receiver<Result<InputLine, CliError>> {
    let (sender, receiver) = mpsc::channel(LINES_QUEUED_MAX);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        let mut number = 0_u64;
        loop {
            number += 1;
            let line = match read_line(&mut input, line_bytes_max, number) {
                Ok(Some(line)) if line.is_empty() => continue,
                Ok(Some(bytes)) => Ok(InputLine { number, bytes }),
                Ok(None) => return,
                Err(error) => Err(error),
            };
            let failed = line.is_err();
            if sender.blocking_send(line).is_err() || failed {
                return;
            }
        }
    });
    receiver
}

/// The next line without its `\n` or `\r\n`; `None` at the end of input.
fn read_line(
    input: &mut impl BufRead,
    line_bytes_max: u64,
    number: u64,
) -> Result<Option<Vec<u8>>, CliError> {
    let mut line = Vec::new();
    let read = input
        .take(line_bytes_max + 1)
        .read_until(b'\n', &mut line)
        .map_err(|error| CliError::io("cannot read stdin", &error))?;
    if read == 0 {
        return Ok(None);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    } else if line.len() as u64 > line_bytes_max {
        return Err(CliError::other(
            "RecordTooLarge",
            format!(
                "line {number} is longer than {line_bytes_max} bytes \
                 (the server's record_bytes_max, a separator and a line end)"
            ),
        ));
    }
    Ok(Some(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(line: &str, separator: Option<&str>) -> (Option<String>, String) {
        let (key, value) = split_key(line.as_bytes().to_vec(), separator.map(str::as_bytes));
        (
            key.map(|k| String::from_utf8(k).expect("utf-8")),
            String::from_utf8(value).expect("utf-8"),
        )
    }

    /// The key is the part before the first separator; the value keeps later separators.
    #[test]
    fn keys_split_at_the_first_separator() {
        assert_eq!(
            split("user-1:{\"a\":1}", Some(":")),
            (Some("user-1".into()), "{\"a\":1}".into())
        );
        assert_eq!(
            split("k::v:w", Some("::")),
            (Some("k".into()), "v:w".into())
        );
        assert_eq!(split("a=b=c", Some("=")), (Some("a".into()), "b=c".into()));
        assert_eq!(split(":v", Some(":")), (Some(String::new()), "v".into()));
        assert_eq!(split("k:", Some(":")), (Some("k".into()), String::new()));
        assert_eq!(
            split("no separator", Some(":")),
            (None, "no separator".into())
        );
        assert_eq!(split("k:v", None), (None, "k:v".into()));
        assert_eq!(split("k\tv", Some("\t")), (Some("k".into()), "v".into()));
        assert_eq!(split("ké→v", Some("→")), (Some("ké".into()), "v".into()));
    }

    /// Lines lose their `\n` or `\r\n`; the last line needs none; long lines are refused.
    #[test]
    fn lines_are_bounded_and_trimmed() {
        let mut input = std::io::Cursor::new(b"a\r\nbb\n\nccc".to_vec());
        let mut lines = Vec::new();
        while let Some(line) = read_line(&mut input, 3, 1).expect("fits") {
            lines.push(String::from_utf8(line).expect("utf-8"));
        }
        assert_eq!(lines, vec!["a", "bb", "", "ccc"]);

        let mut input = std::io::Cursor::new(b"abcd\nx".to_vec());
        let error = read_line(&mut input, 3, 7).expect_err("too long");
        assert_eq!(error.code, "RecordTooLarge");
        assert!(error.message.starts_with("line 7 "), "{error}");
        // Exactly the bound, with its newline, fits.
        let mut input = std::io::Cursor::new(b"abc\n".to_vec());
        assert_eq!(
            read_line(&mut input, 3, 1).expect("fits"),
            Some(b"abc".to_vec())
        );
    }

    /// Records carry the key, the value and the current time.
    #[test]
    fn lines_become_records() {
        let record = to_record(b"k|v".to_vec(), Some(b"|"));
        assert_eq!(record.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(record.value, b"v".to_vec());
        assert!(record.timestamp_ms > 1_600_000_000_000);
        assert!(to_record(b"kv".to_vec(), Some(b"|")).key.is_none());
    }
}
