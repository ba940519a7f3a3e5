//! The cluster tools themselves, on what a node does today: the `LocalCluster` harness starts,
//! kills, pauses, resumes and restarts real nodes that serve clients trusting the cluster's
//! CA; `scripts/local-cluster` starts nodes with their files, refuses to start over running
//! nodes, and stops them (twice without harm). Whether the nodes form one cluster is
//! `cluster.rs`'s question.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use runnel_client::{Client, ClientOptions};
use runnel_tests::cluster::{runtime, LocalCluster};
use runnel_tests::server::server_binary;

/// The node id node `k`'s URL answers with, or why it did not answer.
async fn node_id(url: &str, options: ClientOptions) -> Result<u64, String> {
    let client = Client::connect(url, options)
        .await
        .map_err(|e| e.to_string())?;
    let status = client.node_status().await.map_err(|e| e.to_string())?;
    Ok(status.node_id)
}

/// Options that give up quickly: a paused node never answers, so waiting longer proves nothing.
fn impatient(options: ClientOptions) -> ClientOptions {
    ClientOptions {
        connect_timeout_ms: 1_000,
        request_timeout_ms: 1_000,
        request_attempts_max: 1,
        ..options
    }
}

#[test]
fn the_harness_kills_pauses_resumes_and_restarts_nodes() {
    let mut cluster = LocalCluster::start(3, 1);
    let rt = runtime();
    for k in cluster.ids() {
        let id = rt.block_on(node_id(&cluster.url(k), cluster.client_options()));
        assert_eq!(id, Ok(k), "node {k} answers through the cluster's CA");
    }

    cluster.kill(2);
    assert_eq!(cluster.pid(2), None);
    assert!(!cluster.is_serving(2));
    let gone = rt.block_on(node_id(
        &cluster.url(2),
        impatient(cluster.client_options()),
    ));
    assert!(gone.is_err(), "a killed node answered: {gone:?}");
    cluster.restart(2);
    assert!(cluster.is_serving(2));
    let id = rt.block_on(node_id(&cluster.url(2), cluster.client_options()));
    assert_eq!(id, Ok(2), "node 2 serves again on its data and ports");

    cluster.pause(3);
    assert!(!cluster.is_serving(3) && cluster.pid(3).is_some());
    let paused = rt.block_on(node_id(
        &cluster.url(3),
        impatient(cluster.client_options()),
    ));
    assert!(paused.is_err(), "a paused node answered: {paused:?}");
    cluster.resume(3);
    let id = rt.block_on(node_id(&cluster.url(3), cluster.client_options()));
    assert_eq!(id, Ok(3), "node 3 answers after SIGCONT");

    let log = cluster.log(1);
    assert!(log.contains("listening"), "node 1's log: {log}");
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scripts")
        .join("local-cluster")
}

/// Runs `scripts/local-cluster` with the binaries of this build.
fn run_script(args: &[&str]) -> Output {
    let bin_dir = server_binary()
        .parent()
        .expect("target/<profile>")
        .to_owned();
    Command::new(script())
        .args(args)
        .env("RUNNEL_BIN_DIR", bin_dir)
        .output()
        .expect("run scripts/local-cluster")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Whether `pid` is a running `runnel-server` (a zombie has no command line).
fn runs_server(pid: &str) -> bool {
    std::fs::read(Path::new("/proc").join(pid).join("cmdline"))
        .map(|cmdline| String::from_utf8_lossy(&cmdline).contains("runnel-server"))
        .unwrap_or(false)
}

#[test]
fn the_script_starts_refuses_to_start_twice_and_stops() {
    let temp = tempfile::tempdir().expect("temp dir");
    let dir = temp.path().join("cluster");
    let dir_arg = dir.to_str().expect("a UTF-8 path");

    let usage = run_script(&["start", "x", dir_arg]);
    assert_eq!(usage.status.code(), Some(2), "{}", text(&usage));
    assert!(text(&usage).contains("N must be"), "{}", text(&usage));

    let started = run_script(&["start", "3", dir_arg, "--cores", "1", "--no-wait"]);
    assert!(started.status.success(), "{}", text(&started));
    assert!(dir.join("ca.pem").is_file() && dir.join("ca-key.pem").is_file());
    let ca = dir.join("ca.pem");
    let mut pids = Vec::new();
    let rt = runtime();
    for k in 1..=3u64 {
        let node = dir.join(format!("node-{k}"));
        for file in ["cert.pem", "key.pem", "url", "pid", "node.log"] {
            assert!(node.join(file).is_file(), "node-{k}/{file} is missing");
        }
        assert!(node.join("data").is_dir());
        let pid = std::fs::read_to_string(node.join("pid")).expect("pid file");
        let pid = pid.trim().to_owned();
        assert!(runs_server(&pid), "node {k} (pid {pid}) runs");
        pids.push(pid);
        let url = std::fs::read_to_string(node.join("url")).expect("url file");
        let url = url.trim();
        assert!(url.starts_with("runnel://127.0.0.1:"), "{url}");
        let options = ClientOptions {
            ca_cert_path: Some(ca.clone()),
            connect_timeout_ms: 30_000,
            ..ClientOptions::default()
        };
        let id = rt.block_on(node_id(url, options));
        assert_eq!(
            id,
            Ok(k),
            "node {k} answers at {url} with a certificate from ca.pem"
        );
    }

    let again = run_script(&["start", "3", dir_arg, "--no-wait"]);
    assert!(!again.status.success(), "started over running nodes");
    assert!(text(&again).contains("is running"), "{}", text(&again));

    let status = run_script(&["status", dir_arg]);
    assert!(status.status.success(), "{}", text(&status));
    assert_eq!(
        text(&status).matches(" yes").count(),
        3,
        "{}",
        text(&status)
    );

    let stopped = run_script(&["stop", dir_arg]);
    assert!(stopped.status.success(), "{}", text(&stopped));
    for (k, pid) in pids.iter().enumerate() {
        let node = dir.join(format!("node-{}", k + 1));
        assert!(!node.join("pid").exists(), "node-{}/pid left behind", k + 1);
        assert!(!runs_server(pid), "node {} (pid {pid}) still runs", k + 1);
    }
    let status = run_script(&["status", dir_arg]);
    assert_eq!(status.status.code(), Some(1), "{}", text(&status));
    let twice = run_script(&["stop", dir_arg]);
    assert!(
        twice.status.success(),
        "stopping a stopped cluster: {}",
        text(&twice)
    );
}
