//! The node's configuration: embedded defaults, overridden by a TOML file, overridden by
//! `RUNNEL_*` environment variables, overridden by command-line flags. Every setting and its
//! default is listed in `docs/configuration.md`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clap::Parser;
use runnel_core::Limits;
use runnel_segment::LogConfig;
use serde::Deserialize;
use thiserror::Error;

/// Why a configuration was refused.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML for this configuration.
    #[error("invalid configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said (line, column, unknown key, ...).
        message: String,
    },
    /// A value is out of range or settings contradict each other.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The `[log]` section: how each shard's log on disk is sized.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// Segment files are rolled before they exceed this size. Default 1 GiB.
    pub segment_bytes_max: u64,
    /// The most one group commit writes; appends wait when it is full. Default 4 MiB.
    pub write_buffer_bytes: usize,
    /// One sparse index entry per this many bytes. Default 64 KiB.
    pub index_interval_bytes: u64,
    /// How often retention runs on each core. Default 60 s.
    pub retention_check_interval_ms: u64,
    /// A shard log nobody used for this long is closed (its descriptors, buffer and flusher
    /// freed); the next request opens it again. Default 30 s.
    pub idle_close_ms: u64,
    /// The most shard logs each core keeps open; more are opened after closing the least
    /// recently used idle ones. 0 (the default): half the open-files limit, after 1,024, split
    /// over the cores.
    pub open_logs_max: usize,
    /// Bytes of recently written buffers each shard log keeps to serve tailing reads and
    /// consumers without disk I/O (its batch cache); 0 disables it. Default 16 MiB.
    pub read_cache_bytes: usize,
    /// Bytes the batch caches of all shard logs of one core hold together. Default 64 MiB.
    pub read_cache_core_bytes: usize,
    /// Idempotent producers each shard remembers (`crate::dedup`); beyond it the least
    /// recently active is forgotten. Default 4,096; positive.
    pub idempotent_producers_max: usize,
    /// An idempotent producer whose last batch is more than this many records behind its
    /// shard's end is forgotten; also the most records read to rebuild a shard's producers
    /// after a start. Default 1,000,000.
    pub idempotent_window_records: u64,
}

impl LogSection {
    /// The bounds of each shard's idempotent-producer table.
    pub fn producer_table(&self) -> runnel_replicate::producers::ProducerTableConfig {
        runnel_replicate::producers::ProducerTableConfig {
            producers_max: self.idempotent_producers_max,
            window_records: self.idempotent_window_records,
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        let log = LogConfig::default();
        let producers = runnel_replicate::producers::ProducerTableConfig::default();
        LogSection {
            segment_bytes_max: log.segment_bytes_max,
            write_buffer_bytes: log.write_buffer_bytes,
            index_interval_bytes: log.index_interval_bytes,
            retention_check_interval_ms: 60_000,
            idle_close_ms: 30_000,
            open_logs_max: 0,
            read_cache_bytes: log.read_cache_bytes,
            read_cache_core_bytes: log.read_cache_core_bytes,
            idempotent_producers_max: producers.producers_max,
            idempotent_window_records: producers.window_records,
        }
    }
}

/// The `[limits]` section: record and batch sizes the node accepts.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest record (key + value + headers). Default 1 MiB.
    pub record_bytes_max: u64,
    /// Largest batch. Default 2 MiB.
    pub batch_bytes_max: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            record_bytes_max: Limits::DEFAULT.record_bytes_max,
            batch_bytes_max: Limits::DEFAULT.batch_bytes_max,
        }
    }
}

/// The `[subscriptions]` section: consumer groups and delivery.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubscriptionsSection {
    /// Each core persists the committed progress of its (subscription, shard) pairs that moved
    /// at most this often: after a crash, records acked within the last interval may be
    /// delivered again. Default 1 s.
    pub commit_interval_ms: u64,
    /// A consumer not heard from for this long is expelled and its shards reassigned, when its
    /// join does not ask for another timeout. Default 10 s.
    pub session_timeout_ms: u32,
    /// Shortest session timeout a join may ask for. Default 1 s.
    pub session_timeout_ms_min: u32,
    /// Longest session timeout a join may ask for. Default 5 min.
    pub session_timeout_ms_max: u32,
    /// Most batch bytes in one delivery frame (a batch larger than this still goes whole).
    /// Default 1 MiB.
    pub delivery_bytes_max: u64,
    /// Most records in one delivery frame: 1 to 4096. Default 4096.
    pub delivery_records_max: u32,
}

impl Default for SubscriptionsSection {
    fn default() -> Self {
        SubscriptionsSection {
            commit_interval_ms: 1_000,
            session_timeout_ms: 10_000,
            session_timeout_ms_min: 1_000,
            session_timeout_ms_max: 300_000,
            delivery_bytes_max: 1 << 20,
            delivery_records_max: 4096,
        }
    }
}

impl SubscriptionsSection {
    fn validate(&self) -> Result<(), String> {
        if self.commit_interval_ms == 0 || self.commit_interval_ms > 3_600_000 {
            return Err(format!(
                "subscriptions.commit_interval_ms must be 1 to 3600000, got {}",
                self.commit_interval_ms
            ));
        }
        if self.session_timeout_ms_min < 100
            || self.session_timeout_ms_min > self.session_timeout_ms
            || self.session_timeout_ms > self.session_timeout_ms_max
        {
            return Err(format!(
                "subscriptions: need 100 <= session_timeout_ms_min ({}) <= session_timeout_ms ({}) <= session_timeout_ms_max ({})",
                self.session_timeout_ms_min, self.session_timeout_ms, self.session_timeout_ms_max
            ));
        }
        if self.delivery_bytes_max < 4096 || self.delivery_bytes_max > 64 << 20 {
            return Err(format!(
                "subscriptions.delivery_bytes_max must be 4096 to 67108864, got {}",
                self.delivery_bytes_max
            ));
        }
        let records_max = runnel_replicate::consumer::DELIVERY_RECORDS_MAX_LIMIT;
        if self.delivery_records_max == 0 || self.delivery_records_max > records_max {
            return Err(format!(
                "subscriptions.delivery_records_max must be 1 to {records_max}, got {}",
                self.delivery_records_max
            ));
        }
        Ok(())
    }
}

/// The `[cluster]` section: how this node finds and watches the other nodes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSection {
    /// Peers to contact when this node is not yet in the metadata group: their advertised
    /// addresses (`host:base_port`). Default: none (a node alone).
    pub seeds: Vec<String>,
    /// Found a new metadata group here on first start (the scripted form of
    /// `runnel cluster init`). Default: true when `seeds` is empty (a single node is a group of
    /// one), false otherwise (the node waits for `runnel cluster init` or to be let in).
    pub init: Option<bool>,
    /// Voters of the metadata group (1, 3 or 5); other nodes are learners. Default 3.
    pub voters: usize,
    /// One tick of the metadata group's clock, in milliseconds: elections start after 10–20
    /// ticks without a leader, heartbeats go every 2. Default 50.
    pub tick_ms: u64,
    /// A node not heard from for this long is `Unavailable`, in milliseconds. Default 1000:
    /// the metadata leader fails over the sequencers of an unavailable node
    /// (`crate::failover`), and detection is most of the failover time (the leader hears
    /// every node every 2 ticks, 100 ms by default, so 1 s is ten missed heartbeats).
    pub unavailable_after_ms: u64,
    /// A node not heard from for this long is `Dead`, in milliseconds. Default 30000.
    pub dead_after_ms: u64,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            seeds: Vec::new(),
            init: None,
            voters: 3,
            tick_ms: 50,
            unavailable_after_ms: 1_000,
            dead_after_ms: 30_000,
        }
    }
}

impl ClusterSection {
    /// Whether this node founds a group on first start.
    pub fn founds(&self) -> bool {
        self.init.unwrap_or(self.seeds.is_empty())
    }

    fn validate(&self) -> Result<(), String> {
        if ![1, 3, 5].contains(&self.voters) {
            return Err(format!(
                "cluster.voters must be 1, 3 or 5, got {}",
                self.voters
            ));
        }
        if self.tick_ms == 0 || self.tick_ms > 10_000 {
            return Err(format!(
                "cluster.tick_ms must be 1 to 10000, got {}",
                self.tick_ms
            ));
        }
        if self.unavailable_after_ms < 2 * self.tick_ms
            || self.dead_after_ms < self.unavailable_after_ms
        {
            return Err(format!(
                "cluster.unavailable_after_ms ({}) must be at least two ticks and at most \
                 cluster.dead_after_ms ({})",
                self.unavailable_after_ms, self.dead_after_ms
            ));
        }
        for seed in &self.seeds {
            match seed.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
                _ => return Err(format!("cluster.seeds: {seed:?} is not host:port")),
            }
        }
        Ok(())
    }
}

/// The whole configuration of a node.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id in the cluster. Default 1.
    pub node_id: u64,
    /// Where streams, metadata and the self-signed certificate live. Default `./runnel-data`.
    pub data_dir: PathBuf,
    /// Address the QUIC endpoints listen on. Default `127.0.0.1` (loopback only).
    pub listen_address: IpAddr,
    /// Core `i` listens on UDP port `base_port + i`. Default 6570 (HStreamDB's port).
    pub base_port: u16,
    /// Executors (one per core). 0 means every core the process may run on. Default 0.
    pub cores: usize,
    /// Pin each executor to its own CPU. Default true.
    pub pin_cores: bool,
    /// TLS certificate chain (PEM). Unset: a self-signed certificate under the data directory.
    pub tls_cert_path: Option<PathBuf>,
    /// TLS private key (PEM). Set together with `tls_cert_path`.
    pub tls_key_path: Option<PathBuf>,
    /// The certificate authority (PEM) of the cluster: nodes present certificates it signed
    /// to each other (mutual TLS between nodes). Unset: this node accepts no peers.
    pub tls_ca_path: Option<PathBuf>,
    /// What clients and peers dial to reach this node: `host:base_port`. Default
    /// `listen_address:base_port`; a node in a container or behind NAT advertises another.
    pub advertised_address: Option<String>,
    /// Core 0 writes a metadata snapshot (and trims the command log) once at least this many
    /// commands were recorded since the last one, and at least half that snapshot's size in
    /// command bytes (`crate::metadata_log::SinceSnapshot::due`). Default 256.
    pub metadata_snapshot_interval: u64,
    /// How each shard's log is sized.
    pub log: LogSection,
    /// Record and batch size limits.
    pub limits: LimitsSection,
    /// Consumer groups and delivery.
    pub subscriptions: SubscriptionsSection,
    /// The cluster: seeds, the metadata group, failure detection.
    pub cluster: ClusterSection,
    /// **Test-only.** A fault file that core 0 reads every 100 ms and whose rules make this
    /// node drop peer frames to and from chosen nodes (`isolate N…`, `drop-to N…`,
    /// `drop-from N…`; see `docs/operations.md`). Unset (the default): no fault injection.
    pub fault_injection_file: Option<PathBuf>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_id: 1,
            data_dir: PathBuf::from("runnel-data"),
            listen_address: IpAddr::from([127, 0, 0, 1]),
            base_port: 6570,
            cores: 0,
            pin_cores: true,
            tls_cert_path: None,
            tls_key_path: None,
            tls_ca_path: None,
            advertised_address: None,
            metadata_snapshot_interval: 256,
            log: LogSection::default(),
            limits: LimitsSection::default(),
            subscriptions: SubscriptionsSection::default(),
            cluster: ClusterSection::default(),
            fault_injection_file: None,
        }
    }
}

/// Command-line flags of `runnel-server`; each also reads its `RUNNEL_*` variable.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "runnel-server", version, about = "Runs a Runnel node")]
pub struct Flags {
    /// TOML configuration file (see docs/configuration.md). Default: none, the embedded
    /// defaults. Flags override the file; each default below is the one used when neither
    /// the flag, its variable nor the file sets it.
    #[arg(long, env = "RUNNEL_CONFIG")]
    pub config: Option<PathBuf>,
    /// This node's id; the data directory remembers it and refuses another. Default: 1.
    #[arg(long, env = "RUNNEL_NODE_ID")]
    pub node_id: Option<u64>,
    /// Data directory (locked by one process at a time). Default: ./runnel-data.
    #[arg(long, env = "RUNNEL_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Listen address of the QUIC endpoints. Default: 127.0.0.1 (loopback only).
    #[arg(long, env = "RUNNEL_LISTEN_ADDRESS")]
    pub listen_address: Option<IpAddr>,
    /// UDP port of core 0; core i listens on base_port + i (1 to 65535). Default: 6570.
    #[arg(long, env = "RUNNEL_BASE_PORT")]
    pub base_port: Option<u16>,
    /// Number of executors, one per core; 0 means every core the process may run on.
    /// Default: 0.
    #[arg(long, env = "RUNNEL_CORES")]
    pub cores: Option<usize>,
    /// Pin each executor to its own CPU (true/false). Default: true.
    #[arg(long, env = "RUNNEL_PIN_CORES")]
    pub pin_cores: Option<bool>,
    /// TLS certificate chain (PEM). Default: a self-signed certificate created under
    /// <data-dir>/tls/.
    #[arg(long, env = "RUNNEL_TLS_CERT_PATH")]
    pub tls_cert_path: Option<PathBuf>,
    /// TLS private key (PEM), set together with --tls-cert-path. Default: the self-signed
    /// certificate's key under <data-dir>/tls/.
    #[arg(long, env = "RUNNEL_TLS_KEY_PATH")]
    pub tls_key_path: Option<PathBuf>,
    /// Fewest metadata commands between two snapshots (a snapshot also waits until the
    /// commands since the last one are half its size). Default: 256.
    #[arg(long, env = "RUNNEL_METADATA_SNAPSHOT_INTERVAL")]
    pub metadata_snapshot_interval: Option<u64>,
    /// The cluster's certificate authority (PEM): nodes authenticate each other with
    /// certificates it signed. Default: none (the node accepts no peers).
    #[arg(long, env = "RUNNEL_TLS_CA_PATH")]
    pub tls_ca_path: Option<PathBuf>,
    /// The address clients and peers dial, host:base_port. Default: listen address and base
    /// port.
    #[arg(long, env = "RUNNEL_ADVERTISED_ADDRESS")]
    pub advertised_address: Option<String>,
    /// Peers to join through, comma-separated host:base_port. Default: none.
    #[arg(long, env = "RUNNEL_SEEDS", value_delimiter = ',')]
    pub seeds: Option<Vec<String>>,
    /// Found a new cluster here on first start (true/false). Default: true without seeds,
    /// false with seeds (then `runnel cluster init` founds it).
    #[arg(long, env = "RUNNEL_INIT_CLUSTER")]
    pub init_cluster: Option<bool>,
    /// Test-only: drop peer frames as this fault file says (docs/operations.md, "Fault
    /// injection"). Default: none (no fault injection).
    #[arg(long, env = "RUNNEL_FAULT_INJECTION_FILE")]
    pub fault_injection_file: Option<PathBuf>,
}

impl NodeConfig {
    /// Reads a configuration file over the defaults.
    pub fn from_file(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Defaults, then the file named by the flags (or `RUNNEL_CONFIG`), then the flags and
    /// their environment variables; validated, with `cores` resolved.
    pub fn load(flags: &Flags, available_cores: usize) -> Result<NodeConfig, ConfigError> {
        let mut config = match &flags.config {
            Some(path) => NodeConfig::from_file(path)?,
            None => NodeConfig::default(),
        };
        if let Some(v) = flags.node_id {
            config.node_id = v;
        }
        if let Some(v) = &flags.data_dir {
            config.data_dir = v.clone();
        }
        if let Some(v) = flags.listen_address {
            config.listen_address = v;
        }
        if let Some(v) = flags.base_port {
            config.base_port = v;
        }
        if let Some(v) = flags.cores {
            config.cores = v;
        }
        if let Some(v) = flags.pin_cores {
            config.pin_cores = v;
        }
        if let Some(v) = &flags.tls_cert_path {
            config.tls_cert_path = Some(v.clone());
        }
        if let Some(v) = &flags.tls_key_path {
            config.tls_key_path = Some(v.clone());
        }
        if let Some(v) = flags.metadata_snapshot_interval {
            config.metadata_snapshot_interval = v;
        }
        if let Some(v) = &flags.tls_ca_path {
            config.tls_ca_path = Some(v.clone());
        }
        if let Some(v) = &flags.advertised_address {
            config.advertised_address = Some(v.clone());
        }
        if let Some(v) = &flags.seeds {
            config.cluster.seeds = v.clone();
        }
        if let Some(v) = flags.init_cluster {
            config.cluster.init = Some(v);
        }
        if let Some(v) = &flags.fault_injection_file {
            config.fault_injection_file = Some(v.clone());
        }
        if config.cores == 0 {
            config.cores = available_cores.max(1);
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.cores == 0 || self.cores > 1024 {
            return invalid(format!(
                "cores must be between 1 and 1024, got {}",
                self.cores
            ));
        }
        if self.base_port == 0 {
            // Not "any free port": core i listens on base_port + i, so core 1 would take port 1,
            // and clients could not find core 0.
            return invalid(
                "base_port must be 1 to 65535 (core i listens on base_port + i), got 0".into(),
            );
        }
        if usize::from(self.base_port) + self.cores > usize::from(u16::MAX) + 1 {
            return invalid(format!(
                "base_port {} + {} cores runs past port 65535",
                self.base_port, self.cores
            ));
        }
        if self.tls_cert_path.is_some() != self.tls_key_path.is_some() {
            return invalid("tls_cert_path and tls_key_path must be set together".into());
        }
        if self.limits.record_bytes_max == 0
            || self.limits.record_bytes_max > self.limits.batch_bytes_max
        {
            return invalid(format!(
                "limits.record_bytes_max ({}) must be positive and at most limits.batch_bytes_max ({})",
                self.limits.record_bytes_max, self.limits.batch_bytes_max
            ));
        }
        if self.metadata_snapshot_interval == 0 {
            return invalid("metadata_snapshot_interval must be positive".into());
        }
        if self.log.retention_check_interval_ms == 0 {
            return invalid("log.retention_check_interval_ms must be positive".into());
        }
        if self.log.idempotent_producers_max == 0 {
            return invalid("log.idempotent_producers_max must be positive".into());
        }
        if self.log.idle_close_ms == 0 {
            return invalid("log.idle_close_ms must be positive".into());
        }
        self.log_config().validate().map_err(ConfigError::Invalid)?;
        self.subscriptions
            .validate()
            .map_err(ConfigError::Invalid)?;
        self.cluster.validate().map_err(ConfigError::Invalid)?;
        if self.tls_ca_path.is_some() && self.tls_cert_path.is_none() {
            return invalid(
                "tls_ca_path needs tls_cert_path and tls_key_path: a certificate the cluster CA \
                 signed, naming the host of the advertised address"
                    .into(),
            );
        }
        if let Some(address) = &self.advertised_address {
            match address.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
                _ => {
                    return invalid(format!(
                        "advertised_address {address:?} is not host:port (the base port)"
                    ))
                }
            }
        }
        // A delivery is one frame, and a frame's payload is at most one batch's size.
        if self.subscriptions.delivery_bytes_max > self.limits.batch_bytes_max {
            return invalid(format!(
                "subscriptions.delivery_bytes_max ({}) must be at most limits.batch_bytes_max ({}): a delivery is one frame, whose payload is at most that",
                self.subscriptions.delivery_bytes_max, self.limits.batch_bytes_max
            ));
        }
        if self.log_config().batch_bytes_max() < self.limits.batch_bytes_max {
            return invalid(format!(
                "limits.batch_bytes_max ({}) must fit the log's write buffer and segments ({} bytes)",
                self.limits.batch_bytes_max,
                self.log_config().batch_bytes_max()
            ));
        }
        Ok(())
    }

    /// What clients and peers dial: the advertised address, or listen address and base port.
    pub fn advertised(&self) -> String {
        match &self.advertised_address {
            Some(address) => address.clone(),
            None => std::net::SocketAddr::new(self.listen_address, self.base_port).to_string(),
        }
    }

    /// The record and batch limits.
    pub fn limits(&self) -> Limits {
        Limits {
            record_bytes_max: self.limits.record_bytes_max,
            batch_bytes_max: self.limits.batch_bytes_max,
            ..Limits::DEFAULT
        }
    }

    /// The configuration of every shard's log.
    pub fn log_config(&self) -> LogConfig {
        LogConfig {
            segment_bytes_max: self.log.segment_bytes_max,
            write_buffer_bytes: self.log.write_buffer_bytes,
            index_interval_bytes: self.log.index_interval_bytes,
            limits: self.limits(),
            read_cache_bytes: self.log.read_cache_bytes,
            read_cache_core_bytes: self.log.read_cache_core_bytes,
            ..LogConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_start_one_loopback_node_under_runnel_data() {
        let config = NodeConfig::load(&Flags::default(), 2).expect("defaults are valid");
        assert_eq!(config.data_dir, PathBuf::from("runnel-data"));
        assert!(config.listen_address.is_loopback());
        assert_eq!(config.base_port, 6570);
        assert_eq!(config.cores, 2);
        assert!(config.tls_cert_path.is_none());
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("runnel.toml");
        std::fs::write(
            &path,
            "node_id = 7\nbase_port = 7000\ncores = 3\n[log]\nsegment_bytes_max = 67108864\n\
             idempotent_producers_max = 7\n",
        )
        .expect("write config");
        let flags = Flags {
            config: Some(path),
            base_port: Some(8000),
            ..Flags::default()
        };
        let config = NodeConfig::load(&flags, 2).expect("valid");
        assert_eq!(config.node_id, 7, "from the file");
        assert_eq!(config.base_port, 8000, "the flag wins over the file");
        assert_eq!(config.cores, 3, "the file wins over the machine");
        assert_eq!(config.log.segment_bytes_max, 64 << 20);
        assert_eq!(config.log.producer_table().producers_max, 7);
        assert_eq!(
            config.log.write_buffer_bytes,
            4 << 20,
            "unset keys keep their default"
        );
    }

    #[test]
    fn environment_variables_are_read_through_the_flags() {
        let flags =
            Flags::try_parse_from(["runnel-server", "--cores", "1", "--pin-cores", "false"])
                .expect("flags parse");
        let config = NodeConfig::load(&flags, 8).expect("valid");
        assert_eq!((config.cores, config.pin_cores), (1, false));
    }

    /// Regression: `runnel-server --help` named no default, so a newcomer could not tell what
    /// the node would do without flags.
    #[test]
    fn help_names_the_default_of_every_flag() {
        use clap::CommandFactory;
        let command = Flags::command();
        for argument in command.get_arguments() {
            let id = argument.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            let help = argument
                .get_help()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(
                help.contains("Default:"),
                "--{id} names no default: {help:?}"
            );
        }
    }

    #[test]
    fn bad_files_and_values_get_clear_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "node_idd = 3\n").expect("write");
        let error = NodeConfig::from_file(&path).expect_err("unknown key");
        assert!(error.to_string().contains("node_idd"), "{error}");
        let missing = NodeConfig::from_file(&dir.path().join("missing.toml")).expect_err("missing");
        assert!(matches!(missing, ConfigError::Read { .. }));
        let mut config = NodeConfig {
            cores: 2,
            base_port: 65535,
            ..NodeConfig::default()
        };
        assert!(config.validate().is_err(), "ports past 65535");
        // Regression: base_port 0 was accepted, and core 1 bound UDP port 1.
        config.base_port = 0;
        let error = config.validate().expect_err("base_port 0");
        assert!(
            error.to_string().contains("base_port must be 1 to 65535"),
            "{error}"
        );
        config.base_port = 6570;
        config.tls_cert_path = Some("cert.pem".into());
        assert!(config.validate().is_err(), "cert without key");
        config.tls_cert_path = None;
        config.log.idempotent_producers_max = 0;
        let error = config.validate().expect_err("no idempotent producers");
        assert!(
            error.to_string().contains("idempotent_producers_max"),
            "{error}"
        );
        config.log.idempotent_producers_max = 1;
        config.subscriptions.session_timeout_ms = 50;
        assert!(
            config.validate().is_err(),
            "session timeout below its minimum"
        );
        config.subscriptions.session_timeout_ms = 10_000;
        config.subscriptions.commit_interval_ms = 0;
        assert!(config.validate().is_err(), "no commit interval");
        config.subscriptions.commit_interval_ms = 1_000;
        // Regression: a delivery larger than a frame's payload limit was written as a frame
        // the client refused, and the consumer reconnected forever.
        config.subscriptions.delivery_bytes_max = 4 << 20;
        assert!(config.validate().is_err(), "deliveries larger than a frame");
        config.subscriptions.delivery_bytes_max = 1 << 20;
        assert!(config.validate().is_ok());
        config.limits.batch_bytes_max = 64 << 20;
        assert!(
            config.validate().is_err(),
            "batch larger than the write buffer"
        );
    }
}
