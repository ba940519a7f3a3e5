//! A cluster of real `runnel-server` processes on loopback for `runnel-bench cluster`: the Rust
//! twin of `scripts/local-cluster`. A fresh certificate authority (rcgen, through
//! `runnel_net::tls::CertificateAuthority`) signs one certificate per node; node `k` (1-based,
//! its node id) gets its own data directory, `cores` consecutive free UDP ports, the other
//! nodes as seeds, and node 1 founds the metadata group. A cluster of one is the same node
//! with no seeds: the same TLS, the same group code, a group of one.
//!
//! The benchmark SIGKILLs and restarts nodes; a node restarts with the same flags, ports and
//! data. Every node still running is killed when the cluster is dropped (an error path), and
//! the nodes' logs (`node-K/node.log`) stay until the cluster's directory is removed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use runnel_client::{Client, ClientOptions, NodeInfo, NodeState};
use runnel_net::tls::CertificateAuthority;

use crate::server_process::{free_udp_ports, runnel_command, udp_port_bound, ServerProcess};

/// The names every node's certificate carries: clients and peers dial loopback.
const NODE_NAMES: [&str; 2] = ["127.0.0.1", "localhost"];
/// How long one poll may take to connect to a node and to list the nodes.
const POLL_REQUEST_TIMEOUT_MS: u64 = 2_000;
/// Pause between two polls of the cluster's state.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Log lines of each node printed with a failure.
pub const LOG_TAIL_LINES: usize = 20;

/// Node `k`'s base port is `base + (k - 1) * cores`: the nodes take consecutive ranges.
pub fn node_ports(base: u16, nodes: usize, cores: usize) -> Result<Vec<u16>, String> {
    (0..nodes)
        .map(|index| {
            index
                .checked_mul(cores)
                .and_then(|offset| u16::try_from(offset).ok())
                .and_then(|offset| base.checked_add(offset))
                .ok_or_else(|| format!("no ports for {nodes} nodes of {cores} cores from {base}"))
        })
        .collect()
}

/// The files a node is started with.
#[derive(Debug, Clone)]
pub struct NodeFiles {
    /// Its data directory.
    pub data_dir: PathBuf,
    /// Its certificate (PEM), signed by the cluster's CA.
    pub cert_path: PathBuf,
    /// Its private key (PEM).
    pub key_path: PathBuf,
    /// The CA's certificate (PEM), which it trusts for its peers.
    pub ca_path: PathBuf,
}

/// The cluster flags of node `id` (1-based) among nodes listening on `ports` (node `k` on
/// `ports[k - 1]`): its identity, TLS files, advertised address, the others as seeds, and
/// whether it founds the group (node 1 only).
pub fn node_arguments(id: u64, ports: &[u16], files: &NodeFiles) -> Vec<String> {
    assert!(
        id >= 1 && id as usize <= ports.len(),
        "node {id} of {}",
        ports.len()
    );
    let port = ports[id as usize - 1];
    let path = |path: &Path| path.display().to_string();
    let mut arguments = vec![
        "--node-id".to_owned(),
        id.to_string(),
        "--tls-cert-path".to_owned(),
        path(&files.cert_path),
        "--tls-key-path".to_owned(),
        path(&files.key_path),
        "--tls-ca-path".to_owned(),
        path(&files.ca_path),
        "--advertised-address".to_owned(),
        format!("127.0.0.1:{port}"),
        "--init-cluster".to_owned(),
        (id == 1).to_string(),
    ];
    let seeds: Vec<String> = ports
        .iter()
        .enumerate()
        .filter(|&(index, _)| index + 1 != id as usize)
        .map(|(_, other)| format!("127.0.0.1:{other}"))
        .collect();
    if !seeds.is_empty() {
        arguments.push("--seeds".to_owned());
        arguments.push(seeds.join(","));
    }
    arguments
}

struct ClusterNode {
    port: u16,
    dir: PathBuf,
    arguments: Vec<String>,
    data_dir: PathBuf,
    /// `None` while killed.
    process: Option<ServerProcess>,
}

/// A running (or partly killed) cluster of `runnel-server` processes.
pub struct ClusterProcesses {
    server: PathBuf,
    cores: usize,
    ca_path: PathBuf,
    nodes: Vec<ClusterNode>,
}

impl ClusterProcesses {
    /// Starts `nodes` nodes of `cores` executors each (not pinned) from the `server` binary,
    /// their files under `root` (created). Returns once the processes are spawned; see
    /// [`ClusterProcesses::wait_serving`].
    pub fn start(
        server: &Path,
        root: &Path,
        nodes: usize,
        cores: usize,
    ) -> Result<ClusterProcesses, String> {
        assert!(nodes >= 1 && cores >= 1, "{nodes} nodes of {cores} cores");
        std::fs::create_dir_all(root).map_err(|e| format!("create {}: {e}", root.display()))?;
        let ca = CertificateAuthority::new("Runnel benchmark cluster CA")
            .map_err(|e| format!("the cluster's CA: {e}"))?;
        let ca_path = root.join("ca.pem");
        write(&ca_path, &ca.certificate_pem())?;
        let ports = node_ports(free_udp_ports(nodes * cores)?, nodes, cores)?;
        let mut cluster = ClusterProcesses {
            server: server.to_path_buf(),
            cores,
            ca_path: ca_path.clone(),
            nodes: Vec::with_capacity(nodes),
        };
        for (index, &port) in ports.iter().enumerate() {
            let id = index as u64 + 1;
            let dir = root.join(format!("node-{id}"));
            let certificate = ca
                .sign_node(&NODE_NAMES)
                .map_err(|e| format!("node {id}'s certificate: {e}"))?;
            let files = NodeFiles {
                data_dir: dir.join("data"),
                cert_path: dir.join("cert.pem"),
                key_path: dir.join("key.pem"),
                ca_path: ca_path.clone(),
            };
            std::fs::create_dir_all(&files.data_dir)
                .map_err(|e| format!("create {}: {e}", files.data_dir.display()))?;
            write(&files.cert_path, &certificate.certificate_pem)?;
            write(&files.key_path, &certificate.key_pem)?;
            cluster.nodes.push(ClusterNode {
                port,
                dir,
                arguments: node_arguments(id, &ports, &files),
                data_dir: files.data_dir,
                process: None,
            });
            cluster.spawn(id)?;
        }
        Ok(cluster)
    }

    /// The ids of the nodes, 1 to `len()`.
    pub fn ids(&self) -> std::ops::RangeInclusive<u64> {
        1..=self.nodes.len() as u64
    }

    fn node(&self, id: u64) -> &ClusterNode {
        let index = usize::try_from(id).ok().and_then(|id| id.checked_sub(1));
        match index.and_then(|index| self.nodes.get(index)) {
            Some(node) => node,
            None => panic!("no node {id} in a cluster of {}", self.nodes.len()),
        }
    }

    fn node_mut(&mut self, id: u64) -> &mut ClusterNode {
        let len = self.nodes.len();
        let index = usize::try_from(id).ok().and_then(|id| id.checked_sub(1));
        match index.and_then(|index| self.nodes.get_mut(index)) {
            Some(node) => node,
            None => panic!("no node {id} in a cluster of {len}"),
        }
    }

    fn spawn(&mut self, id: u64) -> Result<(), String> {
        let (server, cores) = (self.server.clone(), self.cores);
        let node = self.node_mut(id);
        assert!(node.process.is_none(), "node {id} runs already");
        let mut command: Command = runnel_command(&server, &node.data_dir, node.port, cores);
        command.args(&node.arguments);
        // More detail in the nodes' logs only when asked for (their writes share the disk).
        command.env(
            "RUNNEL_LOG",
            std::env::var("RUNNEL_LOG").unwrap_or_else(|_| "warn".to_owned()),
        );
        command.env("NO_COLOR", "1");
        let log = node.dir.join("node.log");
        node.process = Some(ServerProcess::spawn(command, &format!("node {id}"), &log)?);
        Ok(())
    }

    /// The URL a client dials for node `id`.
    pub fn url(&self, id: u64) -> String {
        format!("runnel://127.0.0.1:{}", self.node(id).port)
    }

    /// Whether node `id`'s process was started and not killed.
    pub fn is_running(&self, id: u64) -> bool {
        self.node(id).process.is_some()
    }

    /// SDK options trusting the cluster's CA, with this time for one attempt of a request and
    /// at most `attempts` attempts.
    pub fn client_options(&self, request_timeout_ms: u64, attempts: u32) -> ClientOptions {
        ClientOptions {
            ca_cert_path: Some(self.ca_path.clone()),
            client_name: "runnel-bench cluster".into(),
            connect_timeout_ms: request_timeout_ms.max(POLL_REQUEST_TIMEOUT_MS),
            request_timeout_ms,
            request_attempts_max: attempts,
            ..ClientOptions::default()
        }
    }

    /// An SDK client of node `id` with `options`.
    pub async fn connect(&self, id: u64, options: &ClientOptions) -> Result<Client, String> {
        Client::connect(&self.url(id), options.clone())
            .await
            .map_err(|e| format!("connect to node {id} ({}): {e}", self.url(id)))
    }

    /// SIGKILL node `id` and wait until it is gone.
    pub fn kill(&mut self, id: u64) -> Result<(), String> {
        match self.node_mut(id).process.take() {
            Some(process) => process.kill(),
            None => Err(format!("node {id} is not running")),
        }
    }

    /// Starts node `id` again (after [`ClusterProcesses::kill`]) with the same flags, ports
    /// and data.
    pub fn restart(&mut self, id: u64) -> Result<(), String> {
        self.spawn(id)
    }

    /// SIGTERM to every running node, then waits for each; an error names the nodes that
    /// exited unsuccessfully.
    pub fn stop(mut self) -> Result<(), String> {
        let mut failures = Vec::new();
        for (index, node) in self.nodes.iter_mut().enumerate() {
            if let Some(process) = node.process.take() {
                match process.stop() {
                    Ok((_, status)) if status.success() => {}
                    Ok((_, status)) => {
                        failures.push(format!("node {} exited with {status}", index + 1))
                    }
                    Err(error) => failures.push(format!("node {}: {error}", index + 1)),
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }

    /// The last [`LOG_TAIL_LINES`] lines of every node's log, each under a header.
    pub fn log_tails(&self) -> String {
        let mut text = String::new();
        for (index, node) in self.nodes.iter().enumerate() {
            let log = node.dir.join("node.log");
            let content = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = content.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
            text.push_str(&format!(
                "--- node {} ({}, last {LOG_TAIL_LINES} lines) ---\n{tail}\n",
                index + 1,
                log.display()
            ));
        }
        text
    }

    /// `message` followed by every node's log tail: for failures.
    pub fn failure(&self, message: impl std::fmt::Display) -> String {
        format!("{message}\n{}", self.log_tails())
    }

    /// An error (with the log tails) if a node that should run has exited.
    pub fn check_running(&mut self) -> Result<(), String> {
        let mut exited = None;
        for node in &mut self.nodes {
            if let Some(process) = &mut node.process {
                if let Err(error) = process.check_running() {
                    exited = Some(error);
                    break;
                }
            }
        }
        match exited {
            Some(error) => Err(self.failure(error)),
            None => Ok(()),
        }
    }

    /// Waits until every node runs and serves: each answers `ListNodes` listing all the
    /// cluster's nodes `Running`, and all name the same metadata leader, whose id it returns.
    /// After `timeout`, or when a node exits, an error with the last reason and the log tails.
    pub async fn wait_serving(&mut self, timeout: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + timeout;
        let options = self.client_options(POLL_REQUEST_TIMEOUT_MS, 1);
        let mut clients: Vec<Option<Client>> = vec![None; self.nodes.len()];
        let mut last_reason;
        let outcome = loop {
            if let Err(error) = self.check_running() {
                break Err(error);
            }
            match self.agreed_leader(&options, &mut clients).await {
                Ok(leader) => break Ok(leader),
                Err(reason) => last_reason = reason,
            }
            if Instant::now() >= deadline {
                break Err(self.failure(format!(
                    "the cluster of {} nodes did not serve within {timeout:?}: {last_reason}",
                    self.nodes.len()
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        };
        for client in clients.into_iter().flatten() {
            client.close().await;
        }
        outcome
    }

    /// One poll of [`ClusterProcesses::wait_serving`]; keeps the connections it opened in
    /// `clients` for the next poll, and drops those that failed.
    async fn agreed_leader(
        &self,
        options: &ClientOptions,
        clients: &mut [Option<Client>],
    ) -> Result<u64, String> {
        let mut agreed = None;
        for id in self.ids() {
            if !self.is_running(id) {
                return Err(format!("node {id} is not running"));
            }
            let slot = &mut clients[id as usize - 1];
            let client = match slot {
                Some(client) => client.clone(),
                // Dialled only once its port is bound: a first handshake lost to a closed
                // port waits a second for QUIC's retransmission.
                None if !udp_port_bound(self.node(id).port) => {
                    return Err(format!("node {id} does not listen yet"))
                }
                None => slot.insert(self.connect(id, options).await?).clone(),
            };
            let listed = match client.list_nodes().await {
                Ok(listed) => listed,
                Err(error) => {
                    *slot = None;
                    client.close().await;
                    return Err(format!("node {id}: list nodes: {error}"));
                }
            };
            let leader = leader_if_all_running(&listed, self.nodes.len())
                .map_err(|reason| format!("node {id} {reason}"))?;
            match agreed {
                Some(other) if other != leader => {
                    return Err(format!(
                        "nodes disagree on the leader: {other} and {leader}"
                    ))
                }
                _ => agreed = Some(leader),
            }
        }
        agreed.ok_or_else(|| "no node".to_owned())
    }
}

/// Voters of the metadata group by default (`cluster.voters`); other nodes are learners.
pub const DEFAULT_VOTERS: usize = 3;

/// The metadata leader a node's `ListNodes` answer names, if it lists `nodes` nodes
/// `Running`, the group's voters all in (the smaller of `nodes` and [`DEFAULT_VOTERS`]: a
/// node joins as a learner and votes only once promoted, so a group killed before that has
/// no one to elect) and exactly one leader; otherwise what is missing.
pub fn leader_if_all_running(listed: &[NodeInfo], nodes: usize) -> Result<u64, String> {
    let running = listed
        .iter()
        .filter(|node| node.state == NodeState::Running)
        .count();
    if running < nodes {
        let states: Vec<String> = listed
            .iter()
            .map(|node| format!("{}:{}", node.id, node.state.name()))
            .collect();
        return Err(format!(
            "lists {running} of {nodes} nodes Running ({})",
            states.join(" ")
        ));
    }
    let voters = listed.iter().filter(|node| node.voter).count();
    let voters_wanted = nodes.min(DEFAULT_VOTERS);
    if voters < voters_wanted {
        return Err(format!(
            "lists {voters} of {voters_wanted} voters of the metadata group"
        ));
    }
    let leaders: Vec<u64> = listed
        .iter()
        .filter(|node| node.leader)
        .map(|node| node.id)
        .collect();
    match leaders[..] {
        [leader] => Ok(leader),
        _ => Err(format!("lists leaders {leaders:?}")),
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u64, state: NodeState, leader: bool) -> NodeInfo {
        NodeInfo {
            id,
            state,
            address: format!("127.0.0.1:{}", 7000 + id),
            version: None,
            cores: 1,
            leader,
            voter: true,
        }
    }

    /// Nodes take consecutive port ranges of `cores` ports; a range past 65535 is an error,
    /// not a wrapped port.
    #[test]
    fn ports_are_consecutive_ranges() {
        assert_eq!(node_ports(7100, 3, 1), Ok(vec![7100, 7101, 7102]));
        assert_eq!(node_ports(7100, 3, 2), Ok(vec![7100, 7102, 7104]));
        assert_eq!(node_ports(7100, 1, 4), Ok(vec![7100]));
        assert!(node_ports(65534, 3, 1).is_err());
    }

    /// Node 1 founds the group and every node gets the others, not itself, as seeds; a
    /// single node gets no seeds at all (a group of one).
    #[test]
    fn node_one_founds_and_the_others_are_seeds() {
        let files = NodeFiles {
            data_dir: "/d".into(),
            cert_path: "/c.pem".into(),
            key_path: "/k.pem".into(),
            ca_path: "/ca.pem".into(),
        };
        let value = |arguments: &[String], flag: &str| {
            let at = arguments.iter().position(|a| a == flag);
            at.and_then(|at| arguments.get(at + 1)).cloned()
        };
        let ports = [7100, 7101, 7102];
        let first = node_arguments(1, &ports, &files);
        assert_eq!(value(&first, "--init-cluster").as_deref(), Some("true"));
        assert_eq!(
            value(&first, "--seeds").as_deref(),
            Some("127.0.0.1:7101,127.0.0.1:7102")
        );
        let second = node_arguments(2, &ports, &files);
        assert_eq!(value(&second, "--init-cluster").as_deref(), Some("false"));
        assert_eq!(
            value(&second, "--seeds").as_deref(),
            Some("127.0.0.1:7100,127.0.0.1:7102")
        );
        assert_eq!(
            value(&second, "--advertised-address").as_deref(),
            Some("127.0.0.1:7101")
        );
        assert_eq!(value(&second, "--tls-ca-path").as_deref(), Some("/ca.pem"));
        let alone = node_arguments(1, &[7100], &files);
        assert_eq!(value(&alone, "--seeds"), None);
        assert_eq!(value(&alone, "--init-cluster").as_deref(), Some("true"));
    }

    /// A leader counts only when every node is listed Running and exactly one leads.
    #[test]
    fn a_leader_needs_every_node_running_and_one_leader() {
        let all = [
            info(1, NodeState::Running, false),
            info(2, NodeState::Running, true),
            info(3, NodeState::Running, false),
        ];
        assert_eq!(leader_if_all_running(&all, 3), Ok(2));
        let one_down = [
            info(1, NodeState::Running, false),
            info(2, NodeState::Unavailable, true),
            info(3, NodeState::Running, false),
        ];
        let reason = leader_if_all_running(&one_down, 3).expect_err("a node is down");
        assert!(
            reason.contains("2 of 3") && reason.contains("2:Unavailable"),
            "{reason}"
        );
        let no_leader = [
            info(1, NodeState::Running, false),
            info(2, NodeState::Running, false),
        ];
        assert!(leader_if_all_running(&no_leader, 2).is_err());
        let two_leaders = [
            info(1, NodeState::Running, true),
            info(2, NodeState::Running, true),
        ];
        assert!(leader_if_all_running(&two_leaders, 2).is_err());
        assert_eq!(
            leader_if_all_running(&[info(1, NodeState::Running, true)], 1),
            Ok(1)
        );
    }
}
