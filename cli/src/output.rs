//! What commands print: streams, shards, the node and records, as tables or JSON;
//! subscriptions in `output/subscription.rs`, the cluster's nodes in `output/cluster.rs`.
//!
//! Tables follow HStreamDB's column names (`Stream Name | Replica | Retention Time | Shard
//! Count`); JSON output is one document per command (records: one JSON object per line), with
//! snake_case fields, 128-bit key hashes as 32 hex digits and offsets as numbers.
//!
//! Stdout is buffered and flushed at the end of each command (and after each chunk of records
//! read). A closed pipe (`runnel stream read … | head`) ends the command quietly with success.

use std::io::{BufWriter, Stdout, Write};

use runnel_client::{
    Durability, NodeStatus, Record, RecordId, RecordRef, ReplicaPlacement, ShardInfo, ShardStatus,
    StreamInfo,
};
use serde::Serialize;

mod cluster;
mod subscription;

pub use self::cluster::NodeListDocument;
pub use self::subscription::{
    consumer_table, subscription_settings_table, subscription_shard_table, subscription_table,
    SubscriptionDocument,
};

use crate::args::OutputFormat;
use crate::duration::format_duration_ms;
use crate::error::{CliError, ExitCode};
use crate::table::Table;

/// Where results go: stdout, buffered, in the chosen format.
pub struct Output {
    format: OutputFormat,
    out: BufWriter<Stdout>,
}

impl Output {
    /// Stdout in `format`.
    pub fn stdout(format: OutputFormat) -> Output {
        Output {
            format,
            out: BufWriter::new(std::io::stdout()),
        }
    }

    /// The format chosen with `--output`.
    pub fn format(&self) -> OutputFormat {
        self.format
    }

    /// Writes `text` as is.
    pub fn text(&mut self, text: &str) -> Result<(), CliError> {
        self.out.write_all(text.as_bytes()).map_err(write_error)
    }

    /// Writes one JSON document (or JSON line) and a newline.
    pub fn json<T: Serialize>(&mut self, document: &T) -> Result<(), CliError> {
        serde_json::to_writer(&mut self.out, document).map_err(|error| {
            match error.io_error_kind() {
                Some(kind) => write_error(std::io::Error::from(kind)),
                None => CliError::other("Json", error.to_string()),
            }
        })?;
        self.text("\n")
    }

    /// Says that the `kind` named `name` was deleted: `deleted stream orders`, or
    /// `{"deleted":"orders"}`.
    pub fn deleted(&mut self, kind: &str, name: &str) -> Result<(), CliError> {
        match self.format {
            OutputFormat::Table => self.text(&format!("deleted {kind} {name}\n")),
            OutputFormat::Json => {
                #[derive(Serialize)]
                struct Deleted<'a> {
                    deleted: &'a str,
                }
                self.json(&Deleted { deleted: name })
            }
        }
    }

    /// Sends what is buffered to stdout.
    pub fn flush(&mut self) -> Result<(), CliError> {
        self.out.flush().map_err(write_error)
    }
}

/// A closed pipe means the reader has seen enough: stop, successfully and silently.
fn write_error(error: std::io::Error) -> CliError {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        CliError {
            exit: ExitCode::Success,
            code: "BrokenPipe".into(),
            message: "stdout was closed".into(),
        }
    } else {
        CliError::io("cannot write to stdout", &error)
    }
}

// ---------------------------------------------------------------------------------------------
// Streams and shards
// ---------------------------------------------------------------------------------------------

/// A stream as JSON.
#[derive(Debug, Serialize)]
pub struct StreamDocument {
    name: String,
    shard_count: u32,
    replication_factor: u8,
    retention_ms: u64,
    retention: String,
    durability: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    shards: Option<Vec<ShardDocument>>,
}

/// A shard as JSON.
#[derive(Debug, Serialize)]
pub struct ShardDocument {
    id: u64,
    key_range_start: String,
    key_range_end: String,
    status: &'static str,
    /// The sequencer's node (where appends go); `node` says the same, `sequencer` is the name
    /// the replication tools read.
    sequencer: u64,
    node: u64,
    core: u32,
    epoch: u64,
    /// The node of every replica, the sequencer's included, in replica-set order.
    replicas: Vec<u64>,
    /// Every replica as node and core, in the same order.
    replica_placements: Vec<ReplicaDocument>,
    start_offset: Option<u64>,
    next_offset: Option<u64>,
    parents: Vec<u64>,
    children: Vec<u64>,
}

/// One replica of a shard as JSON.
#[derive(Debug, Serialize)]
pub struct ReplicaDocument {
    node: u64,
    core: u32,
}

fn durability_name(durability: Durability) -> &'static str {
    match durability {
        Durability::Fsync => "fsync",
        Durability::Memory => "memory",
    }
}

fn status_name(status: ShardStatus) -> &'static str {
    match status {
        ShardStatus::Open => "open",
        ShardStatus::Sealed => "sealed",
    }
}

/// A key hash as HStreamDB prints hash keys: 32 hex digits.
fn hash_hex(hash: u128) -> String {
    format!("{hash:032x}")
}

impl StreamDocument {
    /// The stream; its shards too when `with_shards`.
    pub fn new(info: &StreamInfo, with_shards: bool) -> StreamDocument {
        StreamDocument {
            name: info.name.to_string(),
            shard_count: info.shard_count,
            replication_factor: info.replication_factor,
            retention_ms: info.retention_ms,
            retention: format_duration_ms(info.retention_ms),
            durability: durability_name(info.durability),
            shards: with_shards.then(|| info.shards.iter().map(ShardDocument::new).collect()),
        }
    }
}

impl ShardDocument {
    /// The shard.
    pub fn new(shard: &ShardInfo) -> ShardDocument {
        ShardDocument {
            id: shard.id.0,
            key_range_start: hash_hex(shard.key_range.start()),
            key_range_end: hash_hex(shard.key_range.end()),
            status: status_name(shard.status),
            sequencer: shard.node,
            node: shard.node,
            core: shard.core,
            epoch: shard.epoch.0,
            replicas: shard.replicas.iter().map(|replica| replica.node).collect(),
            replica_placements: shard
                .replicas
                .iter()
                .map(|replica| ReplicaDocument {
                    node: replica.node,
                    core: replica.core,
                })
                .collect(),
            start_offset: shard.start_offset.map(|offset| offset.0),
            next_offset: shard.next_offset.map(|offset| offset.0),
            parents: shard.parents.iter().map(|id| id.0).collect(),
            children: shard.children.iter().map(|id| id.0).collect(),
        }
    }
}

/// The stream table: one row per stream.
pub fn stream_table(streams: &[StreamInfo]) -> Table {
    let mut table = Table::new([
        "Stream Name",
        "Replica",
        "Retention Time",
        "Shard Count",
        "Durability",
    ]);
    for stream in streams {
        table.row(vec![
            stream.name.to_string(),
            stream.replication_factor.to_string(),
            format_duration_ms(stream.retention_ms),
            stream.shard_count.to_string(),
            durability_name(stream.durability).into(),
        ]);
    }
    table
}

/// The shard table: one row per shard.
pub fn shard_table(shards: &[ShardInfo]) -> Table {
    let mut table = Table::new([
        "Shard ID",
        "Key Range Start",
        "Key Range End",
        "Status",
        "Sequencer",
        "Core",
        "Epoch",
        "Start Offset",
        "Next Offset",
        "Parents",
        "Children",
        "Replicas",
    ]);
    let optional =
        |value: Option<runnel_client::Offset>| value.map_or("-".into(), |o| o.to_string());
    let ids = |ids: &[runnel_client::ShardId]| {
        if ids.is_empty() {
            "-".to_owned()
        } else {
            ids.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    for shard in shards {
        table.row(vec![
            shard.id.to_string(),
            hash_hex(shard.key_range.start()),
            hash_hex(shard.key_range.end()),
            status_name(shard.status).into(),
            shard.node.to_string(),
            shard.core.to_string(),
            shard.epoch.to_string(),
            optional(shard.start_offset),
            optional(shard.next_offset),
            ids(&shard.parents),
            ids(&shard.children),
            replica_nodes(&shard.replicas),
        ]);
    }
    table
}

/// The nodes of `replicas`, in order: `2,3,1`; a replica on another core than the first of
/// its node shows it: `2:1`.
fn replica_nodes(replicas: &[ReplicaPlacement]) -> String {
    replicas
        .iter()
        .map(|replica| match replica.core {
            0 => replica.node.to_string(),
            core => format!("{}:{core}", replica.node),
        })
        .collect::<Vec<_>>()
        .join(",")
}

// ---------------------------------------------------------------------------------------------
// The node
// ---------------------------------------------------------------------------------------------

/// The node's status as JSON.
#[derive(Debug, Serialize)]
pub struct NodeDocument {
    node_id: u64,
    state: &'static str,
    address: String,
    server_version: String,
    uptime_ms: u64,
    uptime: String,
    core_count: u32,
    base_port: u16,
    cores: Vec<CoreDocument>,
}

/// One core of the node as JSON.
#[derive(Debug, Serialize)]
pub struct CoreDocument {
    core: u32,
    port: u16,
    shard_count: u32,
}

impl NodeDocument {
    /// The node answering `status`, reached at `host`.
    pub fn new(status: &NodeStatus, host: &str) -> NodeDocument {
        let address = if host.contains(':') {
            format!("[{host}]:{}", status.base_port)
        } else {
            format!("{host}:{}", status.base_port)
        };
        // Whole seconds: milliseconds of uptime are noise in a status line.
        let uptime_ms = if status.uptime_ms >= 1_000 {
            status.uptime_ms / 1_000 * 1_000
        } else {
            status.uptime_ms
        };
        NodeDocument {
            node_id: status.node_id,
            // It answered: HStreamDB's `Running`. A cluster view will add others.
            state: "running",
            address,
            server_version: status.server_version.clone(),
            uptime_ms: status.uptime_ms,
            uptime: format_duration_ms(uptime_ms),
            core_count: status.core_count,
            base_port: status.base_port,
            cores: status
                .cores
                .iter()
                .map(|core| CoreDocument {
                    core: core.core,
                    port: core.port,
                    shard_count: core.shard_count,
                })
                .collect(),
        }
    }

    /// The node table and the table of its cores.
    pub fn tables(&self) -> (Table, Table) {
        let mut node = Table::new(["Node ID", "State", "Address", "Version", "Uptime", "Cores"]);
        node.row(vec![
            self.node_id.to_string(),
            "Running".into(),
            self.address.clone(),
            self.server_version.clone(),
            self.uptime.clone(),
            self.core_count.to_string(),
        ]);
        let mut cores = Table::new(["Core", "Port", "Shards"]);
        for core in &self.cores {
            cores.row(vec![
                core.core.to_string(),
                core.port.to_string(),
                core.shard_count.to_string(),
            ]);
        }
        (node, cores)
    }
}

// ---------------------------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------------------------

/// A record read, as one JSON line. Keys and values that are not UTF-8 are given lossily in
/// `key`/`value` and exactly in `key_hex`/`value_hex`.
#[derive(Debug, Serialize)]
pub struct RecordDocument {
    id: String,
    shard: u64,
    offset: u64,
    timestamp_ms: i64,
    key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_hex: Option<String>,
    value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_hex: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    headers: Vec<HeaderDocument>,
}

/// A record header as JSON.
#[derive(Debug, Serialize)]
pub struct HeaderDocument {
    name: String,
    value: String,
}

impl RecordDocument {
    /// The record with its id.
    pub fn new(id: RecordId, record: &Record) -> RecordDocument {
        RecordDocument::of_parts(
            id,
            record.key.as_deref(),
            &record.value,
            record.timestamp_ms,
            record
                .headers
                .iter()
                .map(|header| (header.name.as_str(), header.value.as_slice())),
        )
    }

    /// The record read in place (a delivery's), with its id: the same document as
    /// [`RecordDocument::new`] of its owned copy.
    pub fn of_ref(id: RecordId, record: &RecordRef<'_>) -> RecordDocument {
        RecordDocument::of_parts(
            id,
            record.key(),
            record.value(),
            record.timestamp_ms(),
            record.headers(),
        )
    }

    fn of_parts<'a>(
        id: RecordId,
        key: Option<&[u8]>,
        value: &[u8],
        timestamp_ms: i64,
        headers: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) -> RecordDocument {
        let (key, key_hex) = match key {
            Some(key) => {
                let (text, hex) = text_and_hex(key);
                (Some(text), hex)
            }
            None => (None, None),
        };
        let (value, value_hex) = text_and_hex(value);
        RecordDocument {
            id: id.to_string(),
            shard: id.shard.0,
            offset: id.offset.0,
            timestamp_ms,
            key,
            key_hex,
            value,
            value_hex,
            headers: headers
                .map(|(name, value)| HeaderDocument {
                    name: name.to_owned(),
                    value: String::from_utf8_lossy(value).into_owned(),
                })
                .collect(),
        }
    }
}

fn text_and_hex(bytes: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_owned(), None),
        Err(_) => (
            String::from_utf8_lossy(bytes).into_owned(),
            Some(bytes.iter().map(|b| format!("{b:02x}")).collect()),
        ),
    }
}

/// A record as one line `<record id>\t<key>\t<value>\n`: backslash, tab, newline and
/// carriage return are escaped (`\\`, `\t`, `\n`, `\r`) and bytes that are not UTF-8 are
/// written `\xNN`, so each record is exactly one line of three fields. No key: empty field.
pub fn record_line(id: RecordId, key: Option<&[u8]>, value: &[u8]) -> String {
    let mut line = record_fields(id, key, value);
    line.push('\n');
    line
}

/// The fourth field that marks a record delivered again by a subscription (`consume`).
pub const REDELIVERED_FIELD: &str = "(redelivered)";

/// A record [`consume`](crate::commands) got again (it was delivered before and not acked in
/// time, or its consumer left): the line of [`record_line`] with a fourth field,
/// `\t(redelivered)`. Tabs inside fields are escaped, so the first three fields read the same.
pub fn redelivered_record_line(id: RecordId, key: Option<&[u8]>, value: &[u8]) -> String {
    let mut line = record_fields(id, key, value);
    line.push('\t');
    line.push_str(REDELIVERED_FIELD);
    line.push('\n');
    line
}

fn record_fields(id: RecordId, key: Option<&[u8]>, value: &[u8]) -> String {
    let mut line = id.to_string();
    line.push('\t');
    if let Some(key) = key {
        escape_field(&mut line, key);
    }
    line.push('\t');
    escape_field(&mut line, value);
    line
}

fn escape_field(line: &mut String, bytes: &[u8]) {
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => line.push_str("\\\\"),
                '\t' => line.push_str("\\t"),
                '\n' => line.push_str("\\n"),
                '\r' => line.push_str("\\r"),
                c => line.push(c),
            }
        }
        for byte in chunk.invalid() {
            line.push_str(&format!("\\x{byte:02x}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runnel_client::{KeyRange, Offset, ShardId, StreamName};

    fn stream() -> StreamInfo {
        StreamInfo {
            name: StreamName::new("orders").expect("valid"),
            shard_count: 2,
            replication_factor: 1,
            retention_ms: 604_800_000,
            durability: Durability::Fsync,
            shards: vec![ShardInfo {
                id: ShardId(1),
                key_range: KeyRange::new(0, u128::MAX / 2).expect("range"),
                status: ShardStatus::Open,
                node: 1,
                core: 0,
                epoch: runnel_core::Epoch(1),
                start_offset: Some(Offset(0)),
                next_offset: None,
                parents: vec![],
                children: vec![ShardId(3), ShardId(4)],
                replicas: vec![
                    ReplicaPlacement { node: 1, core: 0 },
                    ReplicaPlacement { node: 2, core: 0 },
                    ReplicaPlacement { node: 3, core: 1 },
                ],
            }],
            shards_truncated: false,
        }
    }

    /// The stream list is HStreamDB's table plus durability.
    #[test]
    fn stream_tables_have_hstream_columns() {
        let text = stream_table(&[stream()]).render();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1],
            "| Stream Name | Replica | Retention Time | Shard Count | Durability |"
        );
        assert_eq!(
            lines[3],
            "| orders      | 1       | 7d             | 2           | fsync      |"
        );
    }

    /// Shards show hash ranges as 32 hex digits, unknowns and empty lists as `-`.
    #[test]
    fn shard_tables_show_ranges_and_lineage() {
        let text = shard_table(&stream().shards).render();
        assert!(text.contains(
            "| 1        | 00000000000000000000000000000000 | 7fffffffffffffffffffffffffffffff | open   |"
        ), "{text}");
        assert!(
            text.contains("| 0            | -           | -       | 3,4      |"),
            "{text}"
        );
        // Sequencer node 1, core 0, epoch 1; replicas on nodes 1, 2 and 3 (core 1 of node 3).
        assert!(text.contains("| 1         | 0    | 1     |"), "{text}");
        assert!(text.contains("| 3,4      | 1,2,3:1  |"), "{text}");
    }

    /// JSON documents name every field; shards only when asked for.
    #[test]
    fn stream_documents_serialise() {
        let json = serde_json::to_value(StreamDocument::new(&stream(), false)).expect("json");
        assert_eq!(json["name"], "orders");
        assert_eq!(json["retention"], "7d");
        assert_eq!(json["durability"], "fsync");
        assert!(json.get("shards").is_none());
        let json = serde_json::to_value(StreamDocument::new(&stream(), true)).expect("json");
        assert_eq!(
            json["shards"][0]["key_range_end"],
            "7fffffffffffffffffffffffffffffff"
        );
        assert_eq!(json["shards"][0]["next_offset"], serde_json::Value::Null);
        assert_eq!(json["shards"][0]["children"], serde_json::json!([3, 4]));
        assert_eq!(json["shards"][0]["sequencer"], 1);
        assert_eq!(json["shards"][0]["replicas"], serde_json::json!([1, 2, 3]));
        assert_eq!(
            json["shards"][0]["replica_placements"][2],
            serde_json::json!({"node": 3, "core": 1})
        );
    }

    /// One record, one line of three tab-separated fields, whatever its bytes.
    #[test]
    fn record_lines_escape_their_fields() {
        let id = RecordId {
            shard: ShardId(2),
            offset: Offset(7),
        };
        assert_eq!(
            record_line(id, Some(b"user-1"), b"{\"a\": 1}"),
            "2-7\tuser-1\t{\"a\": 1}\n"
        );
        assert_eq!(record_line(id, None, b"v"), "2-7\t\tv\n");
        assert_eq!(
            redelivered_record_line(id, Some(b"k"), b"a\tb"),
            "2-7\tk\ta\\tb\t(redelivered)\n"
        );
        assert_eq!(
            record_line(id, Some(b"k\tx"), b"a\nb\\c\r\xff\xfe\xc3\xa9"),
            "2-7\tk\\tx\ta\\nb\\\\c\\r\\xff\\xfeé\n"
        );
    }

    /// Non-UTF-8 keys and values keep their exact bytes in hex.
    #[test]
    fn record_documents_keep_exact_bytes() {
        let id = RecordId {
            shard: ShardId(1),
            offset: Offset(0),
        };
        let record = Record::at(b"\xff1".to_vec(), 5).with_key(b"k".to_vec());
        let json = serde_json::to_value(RecordDocument::new(id, &record)).expect("json");
        assert_eq!(json["id"], "1-0");
        assert_eq!(json["key"], "k");
        assert!(json.get("key_hex").is_none());
        assert_eq!(json["value"], "\u{fffd}1");
        assert_eq!(json["value_hex"], "ff31");
        assert_eq!(json["timestamp_ms"], 5);
        assert!(json.get("headers").is_none());
    }

    /// A record read in place gives the same document as its owned copy, headers included.
    #[test]
    fn record_documents_of_borrowed_records_match() {
        let id = RecordId {
            shard: ShardId(4),
            offset: Offset(9),
        };
        let mut record = Record::at(b"v\xff".to_vec(), 17).with_key(b"k".to_vec());
        record.headers.push(runnel_client::RecordHeader {
            name: "trace".into(),
            value: b"abc".to_vec(),
        });
        let mut builder = runnel_core::BatchBuilder::new();
        builder.push(record.clone());
        let bytes = builder
            .finish(&runnel_client::Limits::DEFAULT)
            .expect("encodes");
        let view = runnel_core::batch::BatchView::check(&bytes).expect("a valid batch");
        let borrowed = view.records().expect("records").next().expect("one record");
        let owned = serde_json::to_value(RecordDocument::new(id, &record)).expect("json");
        let read_in_place =
            serde_json::to_value(RecordDocument::of_ref(id, &borrowed)).expect("json");
        assert_eq!(owned, read_in_place);
        assert_eq!(owned["headers"][0]["name"], "trace");
        assert_eq!(owned["value_hex"], "76ff");
    }

    /// The node's address joins the URL's host and the base port.
    #[test]
    fn node_documents_show_the_address() {
        let status = NodeStatus {
            node_id: 1,
            server_version: "0.1.0".into(),
            uptime_ms: 61_500,
            core_count: 1,
            base_port: 6570,
            cores: vec![runnel_client::CoreStatus {
                core: 0,
                port: 6570,
                shard_count: 3,
                allocations: None,
            }],
            other_allocations: None,
        };
        let document = NodeDocument::new(&status, "127.0.0.1");
        let (node, cores) = document.tables();
        let node = node.render();
        assert!(
            node.contains("| 1       | Running | 127.0.0.1:6570 | 0.1.0   | 1m1s   | 1     |"),
            "{node}"
        );
        assert!(cores.render().contains("| 0    | 6570 | 3      |"));
        assert_eq!(NodeDocument::new(&status, "::1").address, "[::1]:6570");
    }
}
