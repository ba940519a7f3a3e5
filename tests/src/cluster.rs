//! A cluster of real `runnel-server` processes on loopback for end-to-end tests: the Rust twin
//! of `scripts/local-cluster`. Node `k` (1-based, its node id) has its own data directory,
//! free ports, a certificate signed by the cluster's CA, the other nodes as seeds and a shared
//! configuration file; node 1 founds the cluster. Tests kill (SIGKILL), pause (SIGSTOP),
//! resume (SIGCONT) and restart nodes, connect the SDK to any of them, and read the cluster's
//! view through `runnel node list --output json` (the SDK has no node list yet).
//!
//! The binaries come from the test's own profile directory: build them first with
//! `cargo build -p runnel-server -p runnel-cli`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use runnel_client::{Client, ClientOptions};
use serde::Deserialize;

use crate::certs::CertificateAuthority;
use crate::server::{free_ports, server_binary, TestServer};

/// The `[cluster]` settings `LocalCluster::start` gives every node: failure detection fast
/// enough for tests, and a node only declared `Dead` long after it is `Unavailable`.
pub const TEST_CLUSTER_CONFIG: &str =
    "[cluster]\nunavailable_after_ms = 1000\ndead_after_ms = 60000\n";

/// The fault file of a node started by [`LocalCluster::start_with_faults`], in its directory.
pub const FAULT_FILE: &str = "faults";
/// How long one `node list` call may take (connect and answer) before it counts as no answer.
const NODE_LIST_TIMEOUT_MS: u32 = 2_000;
/// Pause between two polls of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The `runnel` CLI binary next to `runnel-server`.
pub fn cli_binary() -> PathBuf {
    server_binary().with_file_name("runnel")
}

/// One node as `runnel node list --output json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NodeEntry {
    /// The node's id.
    pub id: u64,
    /// `Starting`, `Running`, `Unavailable` or `Dead`.
    pub state: String,
    /// Its advertised address, `host:base_port`.
    #[serde(default)]
    pub address: String,
    /// Its server version.
    #[serde(default)]
    pub version: String,
    /// Whether it leads the metadata group.
    #[serde(default)]
    pub leader: bool,
    /// Whether it votes in the metadata group (a learner does not).
    #[serde(default)]
    pub voter: bool,
}

#[derive(Deserialize)]
struct NodeListDocument {
    nodes: Vec<NodeEntry>,
}

/// A running cluster; every node is killed when it is dropped.
pub struct LocalCluster {
    // Dropped after the nodes (fields drop in order): their directories outlive them.
    nodes: Vec<ClusterNode>,
    ca_path: PathBuf,
    root: tempfile::TempDir,
}

struct ClusterNode {
    server: TestServer,
    /// The fault rules last written to its fault file.
    faults: String,
    paused: bool,
    killed: bool,
}

impl LocalCluster {
    /// Starts `n` nodes with `cores` executors each and [`TEST_CLUSTER_CONFIG`], and returns
    /// once each listens (not once they form a cluster: see [`LocalCluster::wait_running`]).
    pub fn start(n: usize, cores: u16) -> LocalCluster {
        LocalCluster::start_with_config(n, cores, TEST_CLUSTER_CONFIG)
    }

    /// Starts `n` nodes with `cores` executors each and this configuration file (TOML) shared
    /// by all of them. Node 1 founds the cluster (`--init-cluster true`); the others get
    /// `--init-cluster false` and every other node as a seed.
    pub fn start_with_config(n: usize, cores: u16, config_toml: &str) -> LocalCluster {
        LocalCluster::start_inner(n, cores, config_toml, false)
    }

    /// [`LocalCluster::start_with_config`] with fault injection on: each node reads the fault
    /// file `node-<k>/faults` (`--fault-injection-file`), which [`LocalCluster::isolate`],
    /// [`LocalCluster::set_faults`] and [`LocalCluster::heal_all`] write.
    pub fn start_with_faults(n: usize, cores: u16, config_toml: &str) -> LocalCluster {
        LocalCluster::start_inner(n, cores, config_toml, true)
    }

    fn start_inner(n: usize, cores: u16, config_toml: &str, faults: bool) -> LocalCluster {
        assert!(n >= 1, "a cluster has at least one node");
        for binary in [server_binary(), cli_binary()] {
            assert!(
                binary.is_file(),
                "{} is missing: run `cargo build -p runnel-server -p runnel-cli` first",
                binary.display()
            );
        }
        let root = tempfile::tempdir().expect("temp dir");
        let ca = CertificateAuthority::create(root.path());
        let config_path = root.path().join("cluster.toml");
        std::fs::write(&config_path, config_toml).expect("write the cluster configuration");
        let ports = distinct_port_ranges(n, cores);
        let mut nodes = Vec::with_capacity(n);
        for (index, &port) in ports.iter().enumerate() {
            let id = index as u64 + 1;
            let dir = root.path().join(format!("node-{id}"));
            let certificate = ca.issue_node(&dir, id);
            let seeds: Vec<String> = ports
                .iter()
                .filter(|&&other| other != port)
                .map(|other| format!("127.0.0.1:{other}"))
                .collect();
            let mut args = vec![
                "--config".to_owned(),
                path_arg(&config_path),
                "--node-id".to_owned(),
                id.to_string(),
                "--tls-cert-path".to_owned(),
                path_arg(&certificate.cert_path),
                "--tls-key-path".to_owned(),
                path_arg(&certificate.key_path),
                "--tls-ca-path".to_owned(),
                path_arg(&ca.ca_path),
                "--advertised-address".to_owned(),
                format!("127.0.0.1:{port}"),
                "--init-cluster".to_owned(),
                (id == 1).to_string(),
            ];
            if !seeds.is_empty() {
                args.push("--seeds".to_owned());
                args.push(seeds.join(","));
            }
            if faults {
                args.push("--fault-injection-file".to_owned());
                args.push(path_arg(&dir.join(FAULT_FILE)));
            }
            let server = TestServer::start_at(dir.join("data"), port, cores, args);
            nodes.push(ClusterNode {
                server,
                faults: String::new(),
                paused: false,
                killed: false,
            });
        }
        LocalCluster {
            nodes,
            ca_path: ca.ca_path.clone(),
            root,
        }
    }

    /// Nodes in the cluster, running or not.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The ids of the nodes, 1 to `len()`.
    pub fn ids(&self) -> std::ops::RangeInclusive<u64> {
        1..=self.nodes.len() as u64
    }

    fn node(&self, k: u64) -> &ClusterNode {
        let index = usize::try_from(k).ok().and_then(|k| k.checked_sub(1));
        index
            .and_then(|i| self.nodes.get(i))
            .unwrap_or_else(|| panic!("no node {k} in a cluster of {}", self.nodes.len()))
    }

    fn node_mut(&mut self, k: u64) -> &mut ClusterNode {
        let len = self.nodes.len();
        let index = usize::try_from(k).ok().and_then(|k| k.checked_sub(1));
        index
            .and_then(|i| self.nodes.get_mut(i))
            .unwrap_or_else(|| panic!("no node {k} in a cluster of {len}"))
    }

    /// The URL a client dials for node `k`: `runnel://127.0.0.1:<its base port>`.
    pub fn url(&self, k: u64) -> String {
        self.node(k).server.url()
    }

    /// Node `k`'s server (its ports and certificate, for raw protocol tests).
    pub fn server(&self, k: u64) -> &TestServer {
        &self.node(k).server
    }

    /// The CA certificate clients and nodes trust.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// The directory holding the CA, the configuration and every node's directory.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Node `k`'s process id, while it runs.
    pub fn pid(&self, k: u64) -> Option<u32> {
        self.node(k).server.pid()
    }

    /// Whether node `k` runs and is not paused: the nodes a test may ask.
    pub fn is_serving(&self, k: u64) -> bool {
        let node = self.node(k);
        !node.killed && !node.paused && node.server.pid().is_some()
    }

    /// SIGKILL node `k`: no flush, no goodbye.
    pub fn kill(&mut self, k: u64) {
        let node = self.node_mut(k);
        node.server.kill();
        node.killed = true;
        node.paused = false;
    }

    /// SIGSTOP node `k`: it stops answering without closing anything.
    pub fn pause(&mut self, k: u64) {
        self.signal(k, "STOP");
        self.node_mut(k).paused = true;
    }

    /// SIGCONT node `k` after [`LocalCluster::pause`].
    pub fn resume(&mut self, k: u64) {
        self.signal(k, "CONT");
        self.node_mut(k).paused = false;
    }

    fn signal(&self, k: u64, signal: &str) {
        let pid = self
            .pid(k)
            .unwrap_or_else(|| panic!("node {k} is not running"));
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed: {status}");
    }

    /// Restarts node `k` (after killing it if it runs) on the same data directory, ports,
    /// certificate and flags; returns once it listens again.
    pub fn restart(&mut self, k: u64) {
        let node = self.node_mut(k);
        node.server.restart();
        node.killed = false;
        node.paused = false;
    }

    /// Waits up to `timeout` for node `k` to exit by itself; its exit code (`None` for a
    /// signal), or `Err` if it still runs.
    pub fn wait_exit(&mut self, k: u64, timeout: Duration) -> Result<Option<i32>, String> {
        let node = self.node_mut(k);
        let code = node.server.wait_exit(timeout)?;
        node.killed = true;
        node.paused = false;
        Ok(code)
    }

    /// Starts node `k` again (it must have exited) with its data directory and flags,
    /// expecting it to exit by itself.
    pub fn run_to_exit(&self, k: u64) -> crate::server::Exited {
        self.node(k).server.run_again_to_exit()
    }

    /// Runs `runnel <args>` against node `k` (`--output json`): its standard output, or its
    /// exit status and standard error.
    pub fn cli(&self, k: u64, args: &[&str]) -> Result<String, String> {
        let output = Command::new(cli_binary())
            .args(["--url", &self.url(k)])
            .arg("--ca-cert")
            .arg(&self.ca_path)
            .args(["--output", "json"])
            .args(args)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", cli_binary().display()))?;
        if !output.status.success() {
            return Err(format!(
                "runnel {} through node {k} exited with {}: {}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// SIGKILLs every node (resuming paused ones first is not needed: SIGKILL ends a stopped
    /// process too). Also done on drop.
    pub fn stop_all(&mut self) {
        for node in &mut self.nodes {
            node.server.kill();
            node.killed = true;
            node.paused = false;
        }
    }

    /// Everything node `k` logged so far.
    pub fn log(&mut self, k: u64) -> String {
        self.node_mut(k).server.log_text()
    }

    /// The logs of every node, each under a header: for failure messages.
    pub fn logs(&mut self) -> String {
        let mut text = String::new();
        for k in self.ids() {
            text.push_str(&format!("--- node {k} ---\n{}\n", self.log(k)));
        }
        text
    }

    /// SDK options trusting the cluster's CA.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            ca_cert_path: Some(self.ca_path.clone()),
            client_name: "runnel-tests cluster".into(),
            ..ClientOptions::default()
        }
    }

    /// An SDK client connected to node `k`.
    pub async fn client(&self, k: u64) -> Client {
        Client::connect(&self.url(k), self.client_options())
            .await
            .unwrap_or_else(|e| panic!("connect to node {k} ({}): {e}", self.url(k)))
    }

    /// The cluster as node `k` sees it (`runnel node list --output json`), or why it did not
    /// answer.
    pub fn node_list(&self, k: u64) -> Result<Vec<NodeEntry>, String> {
        let output = Command::new(cli_binary())
            .args(["--url", &self.url(k)])
            .arg("--ca-cert")
            .arg(&self.ca_path)
            .args(["--output", "json"])
            .args(["--connect-timeout-ms", &NODE_LIST_TIMEOUT_MS.to_string()])
            .args(["--timeout-ms", &NODE_LIST_TIMEOUT_MS.to_string()])
            .args(["node", "list"])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", cli_binary().display()))?;
        if !output.status.success() {
            return Err(format!(
                "node {k}: runnel node list exited with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        let document: NodeListDocument = serde_json::from_slice(&output.stdout).map_err(|e| {
            format!(
                "node {k}: node list printed no node document ({e}): {}",
                String::from_utf8_lossy(&output.stdout)
            )
        })?;
        Ok(document.nodes)
    }

    /// Waits until every serving node (see [`LocalCluster::is_serving`]) lists at least `n`
    /// nodes `Running`; returns what node 1 (or the first serving node) listed. Panics with
    /// every node's log after `timeout`.
    pub fn wait_running(&mut self, n: usize, timeout: Duration) -> Vec<NodeEntry> {
        let serving: Vec<u64> = self.ids().filter(|&k| self.is_serving(k)).collect();
        assert!(!serving.is_empty(), "no node is serving");
        let result = poll(timeout, || {
            let mut first = None;
            for &k in &serving {
                let nodes = self.node_list(k)?;
                let running = nodes.iter().filter(|node| node.state == "Running").count();
                if running < n {
                    return Err(format!(
                        "node {k} lists {running} of {n} nodes Running: {nodes:?}"
                    ));
                }
                first.get_or_insert(nodes);
            }
            first.ok_or_else(|| "no node answered".to_owned())
        });
        self.or_panic_with_logs(result, "the cluster did not run")
    }

    /// Waits until the serving nodes agree on a leader of the metadata group that is not
    /// `except`, and returns its id.
    pub fn wait_leader(&mut self, except: Option<u64>, timeout: Duration) -> u64 {
        let serving: Vec<u64> = self.ids().filter(|&k| self.is_serving(k)).collect();
        let result = poll(timeout, || {
            let mut agreed = None;
            for &k in &serving {
                let nodes = self.node_list(k)?;
                let leaders: Vec<u64> = nodes.iter().filter(|n| n.leader).map(|n| n.id).collect();
                let [leader] = leaders[..] else {
                    return Err(format!("node {k} lists leaders {leaders:?}"));
                };
                if Some(leader) == except {
                    return Err(format!("node {k} still lists {leader} as leader"));
                }
                match agreed {
                    Some(other) if other != leader => {
                        return Err(format!(
                            "nodes disagree on the leader: {other} and {leader}"
                        ))
                    }
                    _ => agreed = Some(leader),
                }
            }
            agreed.ok_or_else(|| "no node serving".to_owned())
        });
        self.or_panic_with_logs(result, "no agreed metadata leader")
    }

    /// Replaces node `k`'s fault rules with `rules` (the fault file's text: `isolate N…`,
    /// `drop-to N…`, `drop-from N…`, one a line; empty heals). The file is replaced whole
    /// (written aside, then renamed); if the node is serving and the rules changed, this
    /// returns once its log says it applied them (it reads the file every 100 ms), so what
    /// happens afterwards happens under the new rules. A stopped or paused node applies them
    /// when it runs again. Needs [`LocalCluster::start_with_faults`].
    pub fn set_faults(&mut self, k: u64, rules: &str) {
        const APPLIED: &str = "fault injection: peer rules changed";
        let changed = self.node(k).faults != rules;
        let wait = changed && self.is_serving(k);
        let applied_before = if wait {
            self.log(k).matches(APPLIED).count()
        } else {
            0
        };
        let path = self.root.path().join(format!("node-{k}")).join(FAULT_FILE);
        let aside = path.with_extension("new");
        std::fs::write(&aside, rules).expect("write a fault file");
        std::fs::rename(&aside, &path).expect("replace a fault file");
        rules.clone_into(&mut self.node_mut(k).faults);
        if !wait {
            return;
        }
        let applied = poll(Duration::from_secs(60), || {
            let count = self.log(k).matches(APPLIED).count();
            if count > applied_before {
                Ok(())
            } else {
                Err(format!(
                    "node {k} has not applied the fault rules {rules:?}"
                ))
            }
        });
        self.or_panic_with_logs(applied, "fault rules");
    }

    /// Cuts node `k` off from every other node, both ways: it drops their peer frames and
    /// they drop its. Clients still reach every node.
    pub fn isolate(&mut self, k: u64) {
        let others: Vec<String> = self
            .ids()
            .filter(|&other| other != k)
            .map(|other| other.to_string())
            .collect();
        self.set_faults(k, &format!("isolate {}\n", others.join(" ")));
        let ids: Vec<u64> = self.ids().filter(|&other| other != k).collect();
        for other in ids {
            self.set_faults(other, &format!("isolate {k}\n"));
        }
    }

    /// Removes every fault rule of every node.
    pub fn heal_all(&mut self) {
        for k in self.ids().collect::<Vec<_>>() {
            self.set_faults(k, "");
        }
    }

    /// The value, or a panic with `what`, the last reason and every node's log.
    pub fn or_panic_with_logs<T>(&mut self, result: Result<T, String>, what: &str) -> T {
        match result {
            Ok(value) => value,
            Err(reason) => panic!("{what}: {reason}\n{}", self.logs()),
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// Serializes the tests of one test binary that start clusters: several three-node clusters on
/// a small machine starve each other's heartbeats, and nodes would be marked `Unavailable`
/// for that. Hold the guard for the test's length.
pub fn one_cluster_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE_CLUSTER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // A failed test poisons the lock; the next one may still run.
    ONE_CLUSTER_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Calls `check` until it returns `Ok` or `timeout` passes; then the last error. A liveness
/// bound, not a timing assertion: conditions that will hold are given far longer than needed.
pub fn poll<T>(
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return Ok(value),
            Err(reason) if Instant::now() >= deadline => {
                return Err(format!("after {timeout:?}: {reason}"))
            }
            Err(_) => std::thread::sleep(POLL_INTERVAL),
        }
    }
}

/// A current-thread tokio runtime for the SDK calls of a synchronous test (the harness's own
/// calls block, so tests drive the SDK with `block_on` between them).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// `n` base ports of `cores` free ports each, no two ranges overlapping: each probe releases
/// its ports, so two probes in a row may find the same ones.
fn distinct_port_ranges(n: usize, cores: u16) -> Vec<u16> {
    let mut bases: Vec<u16> = Vec::with_capacity(n);
    for _ in 0..n * 100 {
        if bases.len() == n {
            break;
        }
        let base = free_ports(cores);
        let (start, end) = (u32::from(base), u32::from(base) + u32::from(cores));
        let overlaps = bases.iter().any(|&other| {
            let other = u32::from(other);
            start < other + u32::from(cores) && other < end
        });
        if !overlaps {
            bases.push(base);
        }
    }
    assert_eq!(
        bases.len(),
        n,
        "no {n} disjoint ranges of {cores} free ports"
    );
    bases
}

fn path_arg(path: &Path) -> String {
    path.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", path.display()))
        .to_owned()
}
