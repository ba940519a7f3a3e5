//! The command line: global connection flags, the `stream`, `shard`, `sub`, `consume` and
//! `node` verbs and their flags, as clap derives. Values with a grammar of their own
//! (retention, read positions, subscription offsets) are parsed here by the parsers of
//! `duration.rs` and `position.rs`, so a bad value is a usage error (exit 2) before anything is
//! sent.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::duration::parse_duration;
use crate::position::{
    parse_end, parse_start, parse_subscription_offset, ReadEndAt, ReadStart, SubscriptionOffset,
};

/// The default node: the server's default base port on loopback.
pub const DEFAULT_URL: &str = "runnel://127.0.0.1:6570";
/// How long the command tries to reach the node before giving up, in milliseconds: a few
/// seconds, so that a dead node is reported promptly (loopback answers in microseconds, a
/// distant node in well under a second).
pub const DEFAULT_CONNECT_TIMEOUT_MS: u32 = 3_000;
/// Where a node started without configuration writes its self-signed certificate.
pub const DEFAULT_CA_CERT: &str = "runnel-data/tls/cert.pem";

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  the server refused the request (its error code is printed)
  2  usage error: bad arguments or flags
  3  connection or TLS error (unreachable node, timeout, untrusted certificate)
  4  not found: unknown stream, shard or subscription
  5  any other error

Errors are printed to stderr as `runnel: <code>: <message>`.";

/// `runnel`: manage and use a Runnel node from a shell.
#[derive(Debug, Parser)]
#[command(
    name = "runnel",
    version,
    about = "Runnel's command line: create, list, describe, delete, append to and read streams; \
             list shards; manage subscriptions and consume them; show the node's status",
    after_help = EXIT_CODES_HELP
)]
pub struct Cli {
    /// Connection and output flags, accepted before or after the subcommand.
    #[command(flatten, next_help_heading = "Global options")]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// The node to talk to: runnel://host[:port] (the port of its core 0), or several nodes
    /// of one cluster, tried in order: runnel://host1:port,host2:port
    #[arg(long, global = true, env = "RUNNEL_URL", default_value = DEFAULT_URL)]
    pub url: String,
    /// The node's certificate (PEM) to trust [default: ./runnel-data/tls/cert.pem if it exists]
    #[arg(long, global = true, env = "RUNNEL_CA_CERT", value_name = "PATH")]
    pub ca_cert: Option<PathBuf>,
    /// Do not verify the node's certificate (local development only; not with --ca-cert).
    #[arg(
        long,
        global = true,
        env = "RUNNEL_INSECURE",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub insecure: bool,
    /// How to print results: aligned tables, or one JSON document (JSON lines for records).
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Time allowed for each attempt of a request, in milliseconds.
    #[arg(
        long,
        global = true,
        default_value_t = 5_000,
        value_parser = clap::value_parser!(u32).range(1..=3_600_000)
    )]
    pub timeout_ms: u32,
    /// Deadline for reaching the node, every retry included, in milliseconds.
    #[arg(
        long,
        global = true,
        env = "RUNNEL_CONNECT_TIMEOUT_MS",
        default_value_t = DEFAULT_CONNECT_TIMEOUT_MS,
        value_parser = clap::value_parser!(u32).range(1..=3_600_000)
    )]
    pub connect_timeout_ms: u32,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned tables for people; records as `<record id>\t<key>\t<value>` lines.
    Table,
    /// One JSON document per command; records as JSON lines.
    Json,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, list, describe, delete, write and read streams.
    #[command(subcommand)]
    Stream(StreamCommand),
    /// Inspect the shards of a stream.
    #[command(subcommand)]
    Shard(ShardCommand),
    /// Create, list, describe and delete subscriptions (durable consumer groups).
    #[command(subcommand, visible_alias = "subscription")]
    Sub(SubscriptionCommand),
    /// Join a subscription as a consumer: print its records and ack each once printed.
    Consume(ConsumeArgs),
    /// Inspect the node, and list the cluster's nodes.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Manage the cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Run SQL: one statement with -e, else an interactive shell (statements end with `;`).
    Sql {
        /// The statement to run (push queries print rows until Ctrl-C).
        #[arg(short = 'e', long = "execute", value_name = "STATEMENT")]
        execute: Option<String>,
    },
}

/// `runnel stream …`
#[derive(Debug, Subcommand)]
pub enum StreamCommand {
    /// Create a stream.
    Create(CreateArgs),
    /// List every stream.
    List,
    /// Show a stream's settings and shards.
    Describe {
        /// The stream.
        name: String,
    },
    /// Delete a stream and its records.
    Delete {
        /// The stream.
        name: String,
        /// Delete even while subscriptions or queries use it.
        #[arg(long)]
        force: bool,
    },
    /// Append records read from stdin, one per line.
    Append(AppendArgs),
    /// Read records from every shard of a stream (or one) and print them.
    Read(ReadArgs),
}

/// `runnel stream create`
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The stream's name: 1 to 255 characters of [A-Za-z0-9_.-], not starting with '-' or '.'.
    pub name: String,
    /// Shards dividing the key-hash space evenly (1 to 65536).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub shards: u32,
    /// Replicas of each shard.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..))]
    pub replication_factor: u8,
    /// How long records are kept: a number and a unit (ms, s, m, h, d, w), e.g. 7d, 3600s,
    /// 1h30m; a bare number is seconds.
    #[arg(long, default_value = "7d", value_parser = parse_duration)]
    pub retention: Duration,
    /// When appends are acknowledged: after fdatasync on a write quorum, or once a write
    /// quorum holds them in memory.
    #[arg(long, value_enum, default_value_t = DurabilityArg::Fsync)]
    pub durability: DurabilityArg,
}

/// `--durability`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DurabilityArg {
    /// Acknowledge after fdatasync on a write quorum.
    Fsync,
    /// Acknowledge once a write quorum holds the records in memory.
    Memory,
}

/// `runnel stream append`
#[derive(Debug, Args)]
pub struct AppendArgs {
    /// The stream.
    pub name: String,
    /// Split each line at the first SEP: the part before is the record's key, the rest its
    /// value. Lines without SEP are appended without a key.
    #[arg(long, value_name = "SEP", value_parser = non_empty)]
    pub key_separator: Option<String>,
    /// Most records in one batch.
    #[arg(long, value_name = "N", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_records: u32,
    /// Print only the number of records appended, not each record id.
    #[arg(long)]
    pub count: bool,
}

/// `runnel stream read`
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The stream.
    pub name: String,
    /// Where to start in each shard: earliest, latest, an offset (digits), or a time
    /// (RFC 3339 like 2024-05-01T12:00:00Z, or @<milliseconds since the Unix epoch>).
    #[arg(long, value_parser = parse_start)]
    pub from: ReadStart,
    /// Where to stop in each shard (exclusive): an offset, or a time (RFC 3339 or @<ms>;
    /// the shard stops at its first record with a timestamp at or after it).
    #[arg(long, value_parser = parse_end)]
    pub until: Option<ReadEndAt>,
    /// Stop after printing N records in all.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub total: Option<u64>,
    /// Read only this shard.
    #[arg(long, value_name = "ID")]
    pub shard: Option<u64>,
    /// Once caught up, wait for new records instead of ending (Ctrl-C stops).
    #[arg(long)]
    pub tail: bool,
}

/// `runnel shard …`
#[derive(Debug, Subcommand)]
pub enum ShardCommand {
    /// List a stream's shards, open and sealed.
    List {
        /// The stream.
        stream: String,
    },
}

/// `runnel sub …`
#[derive(Debug, Subcommand)]
pub enum SubscriptionCommand {
    /// Create a subscription of a stream.
    Create(SubscriptionCreateArgs),
    /// List every subscription, or those of one stream.
    List {
        /// Only the subscriptions of this stream.
        #[arg(long)]
        stream: Option<String>,
    },
    /// Show a subscription's settings, its progress on each shard and its consumers.
    Describe {
        /// The subscription.
        #[arg(value_name = "SUB")]
        name: String,
    },
    /// Delete a subscription and its committed progress.
    Delete {
        /// The subscription.
        #[arg(value_name = "SUB")]
        name: String,
        /// Delete even while consumers are joined (their consumption ends).
        #[arg(long)]
        force: bool,
    },
}

/// Most seconds `--ack-timeout` takes (the server's bound: one hour).
const ACK_TIMEOUT_SECONDS_MAX: i64 = 3_600;
/// Most records `--max-unacked-records` takes (the server's bound).
const MAX_UNACKED_RECORDS_LIMIT: i64 = 1_000_000;

/// `runnel sub create`
#[derive(Debug, Args)]
pub struct SubscriptionCreateArgs {
    /// The subscription's name, unique in the cluster: the stream naming rule (1 to 255
    /// characters of [A-Za-z0-9_.-], not starting with '-' or '.').
    #[arg(value_name = "SUB")]
    pub name: String,
    /// The stream it consumes.
    #[arg(long)]
    pub stream: String,
    /// Records not acked within this many seconds are delivered again (1 to 3600).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u32).range(1..=ACK_TIMEOUT_SECONDS_MAX)
    )]
    pub ack_timeout: u32,
    /// Most records delivered and not acked at once, over all consumers; delivery pauses
    /// there (1 to 1000000).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u32).range(1..=MAX_UNACKED_RECORDS_LIMIT)
    )]
    pub max_unacked_records: u32,
    /// Where delivery starts on each shard: earliest, latest (records appended from now on),
    /// or a time (milliseconds since the Unix epoch, or RFC 3339 like 2026-12-01T10:00:00Z).
    #[arg(
        long,
        value_name = "POSITION",
        default_value = "latest",
        value_parser = parse_subscription_offset
    )]
    pub offset: SubscriptionOffset,
}

/// `runnel consume`
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// The subscription.
    #[arg(value_name = "SUB")]
    pub subscription: String,
    /// The consumer's name, unique in the subscription's group
    /// [default: runnel-cli-<hostname>, or runnel-cli-<pid> without a hostname]
    #[arg(long)]
    pub name: Option<String>,
    /// Stop after printing and acking N records in all (then leave the group).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub total: Option<u64>,
    /// How to print records, as `stream read` does: `<record id>\t<key>\t<value>` lines
    /// (table) or JSON lines (json) [default: the --output format]
    #[arg(long, value_enum)]
    pub format: Option<OutputFormat>,
}

/// `runnel node …`
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Show the node's id, version, uptime and cores.
    Status,
    /// List the cluster's nodes: id, state, address, version and role in the metadata group.
    List,
    /// Remove a node from the cluster for good (it must own no shards of live streams); the
    /// node stops when it learns so, and its data directory will not start again.
    Remove {
        /// The node's id.
        id: u64,
    },
}

/// `runnel cluster …`
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Found the cluster on the node at --url (once per cluster, like `hadmin server init`).
    Init,
}

impl Cli {
    /// The format results are printed in: `--output`, or `consume --format` when given.
    pub fn output_format(&self) -> OutputFormat {
        match &self.command {
            Command::Consume(ConsumeArgs {
                format: Some(format),
                ..
            }) => *format,
            _ => self.global.output,
        }
    }
}

fn non_empty(text: &str) -> Result<String, String> {
    if text.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(text.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("runnel").chain(args.iter().copied()))
    }

    fn parsed(args: &[&str]) -> Cli {
        parse(args).unwrap_or_else(|error| panic!("{args:?}: {error}"))
    }

    /// clap's own consistency checks over every subcommand and flag.
    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// `stream create` takes HStreamDB's flags with the documented defaults.
    #[test]
    fn create_has_documented_defaults() {
        let cli = parsed(&["stream", "create", "orders"]);
        let Command::Stream(StreamCommand::Create(create)) = cli.command else {
            panic!("not create: {cli:?}");
        };
        assert_eq!(create.name, "orders");
        assert_eq!(create.shards, 1);
        assert_eq!(create.replication_factor, 1);
        assert_eq!(create.retention, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(create.durability, DurabilityArg::Fsync);
        assert_eq!(cli.global.output, OutputFormat::Table);
        assert_eq!(cli.global.timeout_ms, 5_000);
        assert_eq!(cli.global.connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT_MS);

        let cli = parsed(&[
            "stream",
            "create",
            "orders",
            "--shards",
            "4",
            "--replication-factor",
            "3",
            "--retention",
            "3600s",
            "--durability",
            "memory",
            "--output",
            "json",
        ]);
        let Command::Stream(StreamCommand::Create(create)) = cli.command else {
            panic!("not create");
        };
        assert_eq!(create.shards, 4);
        assert_eq!(create.replication_factor, 3);
        assert_eq!(create.retention, Duration::from_secs(3600));
        assert_eq!(create.durability, DurabilityArg::Memory);
        assert_eq!(cli.global.output, OutputFormat::Json);
    }

    /// Global flags go before or after the subcommand.
    #[test]
    fn global_flags_go_anywhere() {
        let before = parsed(&["--url", "runnel://h:1", "--insecure", "node", "status"]);
        let after = parsed(&["node", "status", "--url", "runnel://h:1", "--insecure"]);
        for cli in [before, after] {
            assert_eq!(cli.global.url, "runnel://h:1");
            assert!(cli.global.insecure);
        }
    }

    /// Read positions and bounds parse into their kinds; `--from` is required.
    #[test]
    fn read_takes_positions() {
        let cli = parsed(&[
            "stream", "read", "orders", "--from", "earliest", "--until", "100", "--total", "5",
            "--shard", "3", "--tail",
        ]);
        let Command::Stream(StreamCommand::Read(read)) = cli.command else {
            panic!("not read");
        };
        assert_eq!(read.from, ReadStart::Earliest);
        assert_eq!(read.until, Some(ReadEndAt::Offset(100)));
        assert_eq!(read.total, Some(5));
        assert_eq!(read.shard, Some(3));
        assert!(read.tail);
        let cli = parsed(&["stream", "read", "orders", "--from", "2024-05-01T00:00:00Z"]);
        let Command::Stream(StreamCommand::Read(read)) = cli.command else {
            panic!("not read");
        };
        assert_eq!(read.from, ReadStart::Timestamp(1_714_521_600_000));
        assert_eq!(
            parse(&["stream", "read", "orders"])
                .map(|_| ())
                .expect_err("--from is required")
                .kind(),
            ErrorKind::MissingRequiredArgument
        );
    }

    /// Append's key separator and batch size.
    #[test]
    fn append_takes_a_separator() {
        let cli = parsed(&[
            "stream",
            "append",
            "orders",
            "--key-separator",
            ":",
            "--batch-records",
            "10",
            "--count",
        ]);
        let Command::Stream(StreamCommand::Append(append)) = cli.command else {
            panic!("not append");
        };
        assert_eq!(append.key_separator.as_deref(), Some(":"));
        assert_eq!(append.batch_records, 10);
        assert!(append.count);
    }

    /// `sub create` takes HStreamDB's flags with the documented defaults: 60 s, 10 000
    /// records, latest.
    #[test]
    fn sub_create_has_documented_defaults() {
        let cli = parsed(&["sub", "create", "billing", "--stream", "orders"]);
        let Command::Sub(SubscriptionCommand::Create(create)) = cli.command else {
            panic!("not sub create: {cli:?}");
        };
        assert_eq!(create.name, "billing");
        assert_eq!(create.stream, "orders");
        assert_eq!(create.ack_timeout, 60);
        assert_eq!(create.max_unacked_records, 10_000);
        assert_eq!(create.offset, SubscriptionOffset::Latest);

        let cli = parsed(&[
            "subscription",
            "create",
            "billing",
            "--stream",
            "orders",
            "--ack-timeout",
            "30",
            "--max-unacked-records",
            "500",
            "--offset",
            "2026-12-01T10:00:00Z",
        ]);
        let Command::Sub(SubscriptionCommand::Create(create)) = cli.command else {
            panic!("not sub create");
        };
        assert_eq!(create.ack_timeout, 30);
        assert_eq!(create.max_unacked_records, 500);
        assert_eq!(
            create.offset,
            SubscriptionOffset::Timestamp(1_796_119_200_000)
        );
        let cli = parsed(&[
            "sub", "create", "b", "--stream", "s", "--offset", "earliest",
        ]);
        let Command::Sub(SubscriptionCommand::Create(create)) = cli.command else {
            panic!("not sub create");
        };
        assert_eq!(create.offset, SubscriptionOffset::Earliest);
    }

    /// The other `sub` verbs and `consume`; `consume --format` overrides `--output`.
    #[test]
    fn sub_verbs_and_consume_parse() {
        let cli = parsed(&["sub", "list", "--stream", "orders"]);
        let Command::Sub(SubscriptionCommand::List { stream }) = cli.command else {
            panic!("not sub list");
        };
        assert_eq!(stream.as_deref(), Some("orders"));
        let cli = parsed(&["sub", "delete", "billing", "--force"]);
        let Command::Sub(SubscriptionCommand::Delete { name, force }) = cli.command else {
            panic!("not sub delete");
        };
        assert_eq!((name.as_str(), force), ("billing", true));
        let cli = parsed(&["sub", "describe", "billing", "--output", "json"]);
        assert_eq!(cli.output_format(), OutputFormat::Json);

        let cli = parsed(&["consume", "billing"]);
        assert_eq!(cli.output_format(), OutputFormat::Table);
        let Command::Consume(consume) = &cli.command else {
            panic!("not consume");
        };
        assert_eq!(consume.subscription, "billing");
        assert_eq!((consume.name.as_deref(), consume.total), (None, None));
        let cli = parsed(&[
            "consume", "billing", "--name", "worker-1", "--total", "5", "--format", "json",
        ]);
        assert_eq!(cli.output_format(), OutputFormat::Json);
        let Command::Consume(consume) = &cli.command else {
            panic!("not consume");
        };
        assert_eq!(consume.name.as_deref(), Some("worker-1"));
        assert_eq!(consume.total, Some(5));
        let cli = parsed(&[
            "--output", "json", "consume", "billing", "--format", "table",
        ]);
        assert_eq!(cli.output_format(), OutputFormat::Table);
    }

    /// Bad values are refused by the parser, before anything is sent.
    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["stream", "create", "s", "--shards", "0"][..],
            &["stream", "create", "s", "--shards", "65537"],
            &["stream", "create", "s", "--replication-factor", "0"],
            &["stream", "create", "s", "--retention", "7 days"],
            &["stream", "create", "s", "--retention", "0s"],
            &["stream", "create", "s", "--durability", "disk"],
            &["stream", "read", "s", "--from", "yesterday"],
            &[
                "stream", "read", "s", "--from", "earliest", "--until", "latest",
            ],
            &["stream", "read", "s", "--from", "earliest", "--total", "0"],
            &["stream", "append", "s", "--key-separator", ""],
            &["stream", "append", "s", "--batch-records", "0"],
            &["stream", "list", "--output", "yaml"],
            &["stream", "list", "--timeout-ms", "0"],
            &["stream", "list", "--connect-timeout-ms", "0"],
            &["stream"],
            &["streams", "list"],
            &["sub", "create", "b"],
            &["sub", "create", "b", "--stream", "s", "--ack-timeout", "0"],
            &[
                "sub",
                "create",
                "b",
                "--stream",
                "s",
                "--ack-timeout",
                "3601",
            ],
            &["sub", "create", "b", "--stream", "s", "--ack-timeout", "1m"],
            &[
                "sub",
                "create",
                "b",
                "--stream",
                "s",
                "--max-unacked-records",
                "0",
            ],
            &[
                "sub",
                "create",
                "b",
                "--stream",
                "s",
                "--max-unacked-records",
                "1000001",
            ],
            &[
                "sub",
                "create",
                "b",
                "--stream",
                "s",
                "--offset",
                "yesterday",
            ],
            &["sub", "create", "b", "--stream", "s", "--offset", "42x"],
            &["sub", "describe"],
            &["consume"],
            &["consume", "b", "--total", "0"],
            &["consume", "b", "--format", "yaml"],
        ] {
            let error = parse(args).map(|_| ()).expect_err("refused");
            assert_ne!(error.kind(), ErrorKind::DisplayHelp, "{args:?}");
            assert_eq!(error.exit_code(), 2, "{args:?}");
        }
    }
}
