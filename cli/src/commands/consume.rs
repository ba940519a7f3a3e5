//! `consume`: joins a subscription's consumer group, prints the records delivered as
//! `stream read` prints records, and acks them once printed.
//!
//! A record is acked only after it reached stdout: each delivery's records are printed, stdout
//! is flushed, and then the records printed are acked (so a closed pipe or a full disk leaves
//! them unacked, to be delivered again). Acks are batched and sent by the SDK in the
//! background. `--total N` stops after N records; a delivery's records past the N-th are not
//! printed nor acked, and go to the next consumer as redeliveries.
//!
//! The command ends after `--total`, on Ctrl-C (SIGINT) or SIGTERM, or when the consumer
//! ends; each time it flushes the acks and leaves the group, so the shards go to the other
//! members at once and nothing acked is delivered again. A second signal while leaving stops
//! waiting (the group then expels the member after its session timeout).
//!
//! Acks refused because the shard went to another member meanwhile are not a reason to stop:
//! those records are delivered again to that member. They are reported when the command ends
//! (exit 1, `AckRefused`), after everything else.

use std::io::Read;

use runnel_client::{Client, ClientError, Consumer, ConsumerOptions, CONSUMER_NAME_BYTES_MAX};

use crate::args::{ConsumeArgs, OutputFormat};
use crate::error::{CliError, ExitCode};
use crate::output::{record_line, redelivered_record_line, Output, RecordDocument};

/// Longest hostname file read, in bytes (a hostname has at most 255).
const HOSTNAME_FILE_BYTES_MAX: u64 = 1_024;

/// Consumes until `--total`, a signal, or the end of the consumer.
pub async fn run(client: &Client, args: ConsumeArgs, output: &mut Output) -> Result<(), CliError> {
    let name = args.name.clone().unwrap_or_else(default_consumer_name);
    // Listening before joining: a signal from here on leaves the group instead of killing
    // the process with a member the group would wait a session timeout for.
    let mut stop = Stop::listen()?;
    let joining = client.consumer(&args.subscription, ConsumerOptions::new(name));
    let mut consumer = tokio::select! {
        joined = joining => joined?,
        () = stop.requested() => return Ok(()),
    };
    let mut tally = Tally::default();
    let outcome = consume(&mut consumer, &args, output, &mut stop, &mut tally).await;
    let (ended, failure) = match outcome {
        Ok(end) => (end == End::ConsumerEnded, None),
        Err(failure) => (false, Some(failure)),
    };
    let left = if ended {
        // Nothing to leave: the consumer is gone (its `next` said so).
        Ok(())
    } else {
        tokio::select! {
            left = consumer.leave() => left.map_err(CliError::from),
            () = stop.requested() => Err(CliError::other(
                "Interrupted",
                "interrupted again while leaving: queued acks may not have been sent (their \
                 records will be delivered again), and the group expels this consumer after \
                 its session timeout",
            )),
        }
    };
    // The first real failure wins; a closed stdout (a quiet success) only when leaving went
    // well; refused acks last, as they stopped nothing.
    match (failure, left) {
        (Some(failure), _) if failure.exit != ExitCode::Success => Err(failure),
        (_, Err(left)) => Err(left),
        (Some(quiet), Ok(())) => Err(quiet),
        (None, Ok(())) if tally.refused_records > 0 => Err(CliError::refused(
            "AckRefused",
            format!(
                "the acks of {} printed records were refused (their shard went to another \
                 consumer); they will be delivered again",
                tally.refused_records
            ),
        )),
        (None, Ok(())) => Ok(()),
    }
}

/// Why consuming stopped without a failure.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// `--total` records were printed, or a signal came: leave the group.
    Stopped,
    /// The consumer ended by itself: nothing to leave.
    ConsumerEnded,
}

/// Acks refused as the command went.
#[derive(Debug, Default)]
struct Tally {
    refused_records: u64,
}

async fn consume(
    consumer: &mut Consumer,
    args: &ConsumeArgs,
    output: &mut Output,
    stop: &mut Stop,
    tally: &mut Tally,
) -> Result<End, CliError> {
    let mut printed_total: u64 = 0;
    loop {
        let wanted = match args.total {
            Some(total) if printed_total >= total => return Ok(End::Stopped),
            Some(total) => total - printed_total,
            None => u64::MAX,
        };
        let delivery = tokio::select! {
            delivery = consumer.next() => delivery,
            () = stop.requested() => return Ok(End::Stopped),
        };
        let Some(delivery) = delivery else {
            return Ok(End::ConsumerEnded);
        };
        let delivery = delivery?;
        let mut printed: u64 = 0;
        let mut failure: Option<CliError> = None;
        for item in delivery.records() {
            if printed >= wanted {
                break;
            }
            let written = match item {
                Ok((id, record)) => match output.format() {
                    OutputFormat::Table if delivery.is_redelivery() => {
                        output.text(&redelivered_record_line(id, record.key(), record.value()))
                    }
                    OutputFormat::Table => {
                        output.text(&record_line(id, record.key(), record.value()))
                    }
                    OutputFormat::Json => output.json(&RecordDocument::of_ref(id, &record)),
                },
                Err(error) => Err(CliError::from(error)),
            };
            match written {
                Ok(()) => printed += 1,
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        // Ack only what reached stdout.
        if let Err(error) = output.flush() {
            return Err(failure.unwrap_or(error));
        }
        // Records come in offset order, and printing stopped at the first failure: the
        // records printed are the delivery's first `printed` ids.
        for id in delivery.ids().take(printed as usize) {
            match consumer.ack(id) {
                Ok(()) => {}
                Err(ClientError::AckRefused {
                    refused_records, ..
                }) => tally.refused_records += refused_records.max(1),
                Err(error) => return Err(error.into()),
            }
        }
        printed_total += printed;
        if let Some(failure) = failure {
            return Err(failure);
        }
    }
}

/// The signals that stop `consume` gracefully: Ctrl-C (SIGINT) and, on Unix, SIGTERM.
struct Stop {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(not(unix))]
    ctrl_c: std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<()>>>>,
}

impl Stop {
    /// Starts listening (on Unix, from now on; elsewhere from the first wait).
    fn listen() -> Result<Stop, CliError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let listen = |kind| {
                signal(kind).map_err(|error| CliError::io("cannot listen for signals", &error))
            };
            Ok(Stop {
                interrupt: listen(SignalKind::interrupt())?,
                terminate: listen(SignalKind::terminate())?,
            })
        }
        #[cfg(not(unix))]
        {
            Ok(Stop {
                ctrl_c: Box::pin(tokio::signal::ctrl_c()),
            })
        }
    }

    /// Waits for the next signal (cancel-safe: a wait dropped early loses none).
    async fn requested(&mut self) {
        #[cfg(unix)]
        {
            tokio::select! {
                Some(()) = self.interrupt.recv() => {}
                Some(()) = self.terminate.recv() => {}
                // Both listeners closed (the runtime is shutting down): no signal can come.
                else => std::future::pending().await,
            }
        }
        #[cfg(not(unix))]
        {
            if (&mut self.ctrl_c).await.is_err() {
                // No Ctrl-C listener could be installed: no signal can come.
                std::future::pending::<()>().await;
            }
            self.ctrl_c = Box::pin(tokio::signal::ctrl_c());
        }
    }
}

/// `runnel-cli-<hostname>`, or `runnel-cli-<pid>` when the hostname is unknown.
fn default_consumer_name() -> String {
    consumer_name(hostname().as_deref(), std::process::id())
}

/// The default name for `host` (trimmed, without control characters, cut to the longest
/// consumer name) or, without one, for the process `pid`.
fn consumer_name(host: Option<&str>, pid: u32) -> String {
    let prefix = "runnel-cli-";
    let host: String = host
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .collect();
    if host.is_empty() {
        return format!("{prefix}{pid}");
    }
    let mut name = String::from(prefix);
    for c in host.chars() {
        if name.len() + c.len_utf8() > CONSUMER_NAME_BYTES_MAX {
            break;
        }
        name.push(c);
    }
    name
}

/// This machine's hostname, where the system shows it as a file or the shell exported it.
fn hostname() -> Option<String> {
    for path in ["/proc/sys/kernel/hostname", "/etc/hostname"] {
        let mut text = String::new();
        let read = std::fs::File::open(path)
            .and_then(|file| file.take(HOSTNAME_FILE_BYTES_MAX).read_to_string(&mut text));
        if read.is_ok() && !text.trim().is_empty() {
            return Some(text);
        }
    }
    std::env::var("HOSTNAME").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default name carries the hostname, cleaned and bounded, or the pid.
    #[test]
    fn default_names_come_from_the_host_or_the_pid() {
        assert_eq!(consumer_name(Some("db-7\n"), 42), "runnel-cli-db-7");
        assert_eq!(consumer_name(Some("  "), 42), "runnel-cli-42");
        assert_eq!(consumer_name(None, 42), "runnel-cli-42");
        assert_eq!(consumer_name(Some("a\u{7}b"), 1), "runnel-cli-ab");
        let long = consumer_name(Some(&"é".repeat(300)), 1);
        assert!(
            long.len() <= CONSUMER_NAME_BYTES_MAX && long.len() >= 253,
            "{long}"
        );
        for name in [
            default_consumer_name(),
            long,
            consumer_name(Some("db-7"), 1),
        ] {
            ConsumerOptions::new(name.clone())
                .validate()
                .unwrap_or_else(|error| panic!("{name:?}: {error}"));
        }
    }
}
