//! `runnel`: the command line of Runnel — streams, shards, subscriptions and the node, in
//! HStreamDB's verbs (`runnel stream create|list|describe|delete|append|read`,
//! `runnel shard list`, `runnel sub create|list|describe|delete`, `runnel consume`,
//! `runnel node status`), built on the `runnel-client` SDK.
//!
//! Responsibility: turn flags into SDK calls and answers into tables or JSON; nothing else.
//! Invariants: every failure leaves through one place (`main`), as a line
//! `runnel: <code>: <message>` on stderr and a documented exit code (0 ok, 1 refused by the
//! server, 2 usage, 3 connection/TLS, 4 not found, 5 other; see `docs/cli.md`). Stdout holds
//! results only, so it can be piped. `consume` acks a record only once it was written to
//! stdout.
//! Must never: retry an append that may have been stored (the SDK's rule, kept here), trust a
//! node's certificate without an explicit choice (`--ca-cert`, the default file, or
//! `--insecure`), or read unbounded input into memory (lines are bounded by the server's
//! record size; queues by named constants).
//! Fault model: the node may be unreachable, refuse, or vanish mid-command; each is an exit
//! code, never a panic. A closed stdout ends the command quietly.

mod args;
mod commands;
mod connect;
mod duration;
mod error;
mod output;
mod position;
mod table;
mod time;

use clap::error::ErrorKind;
use clap::Parser;

use crate::args::Cli;
use crate::error::{CliError, ExitCode};
use crate::output::Output;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => exit_on_usage_error(&error),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => exit_with(&CliError::io("cannot start the async runtime", &error)),
    };
    let mut output = Output::stdout(cli.output_format());
    let outcome = runtime.block_on(commands::run(cli, &mut output));
    // Background tasks (a tail's readers, the producer's or consumer's worker) end with the
    // runtime.
    drop(runtime);
    match outcome {
        Ok(()) => std::process::exit(ExitCode::Success.number()),
        Err(error) => exit_with(&error),
    }
}

/// Prints `--help` and `--version` (exit 0) or a usage error (exit 2).
fn exit_on_usage_error(error: &clap::Error) -> ! {
    match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // Help goes to stdout; a failure to print it changes nothing.
            let _ = error.print();
            std::process::exit(
                if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::Usage.number()
                } else {
                    ExitCode::Success.number()
                },
            );
        }
        _ => {
            let rendered = error.render().to_string();
            let message = rendered.strip_prefix("error: ").unwrap_or(&rendered);
            exit_with(&CliError::usage(message.trim_end()))
        }
    }
}

/// Prints the error (unless it is the quiet end of a closed pipe) and exits with its code.
fn exit_with(error: &CliError) -> ! {
    if error.exit != ExitCode::Success {
        eprintln!("{error}");
    }
    std::process::exit(error.exit.number())
}
