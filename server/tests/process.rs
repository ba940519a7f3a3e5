//! The `runnel-server` process itself: it starts with a data directory of its own, listens,
//! and exits 0 on SIGTERM; a bad configuration exits 2 with a message naming the problem.
//!
//! (This test also makes `cargo test` build the `runnel-server` binary, which the end-to-end
//! tests of `tests/` and `cli/` start.)

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SERVER: &str = env!("CARGO_BIN_EXE_runnel-server");

fn free_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("probe socket");
    socket.local_addr().expect("address").port()
}

#[test]
fn starts_listens_and_stops_cleanly_on_sigterm() {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(SERVER)
        .arg("--data-dir")
        .arg(temp.path().join("data"))
        .args([
            "--base-port",
            &free_port().to_string(),
            "--cores",
            "1",
            "--pin-cores",
            "false",
        ])
        .env("RUNNEL_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start runnel-server");
    let stdout = child.stdout.take().expect("stdout");
    let (sender, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("listening")) {
        assert!(Instant::now() < deadline, "no 'listening' line: {seen:?}");
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
            seen.push(line);
        }
    }
    assert!(
        temp.path().join("data/tls/cert.pem").is_file(),
        "a self-signed certificate was created"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("wait");
    assert_eq!(exit.code(), Some(0), "a clean stop exits 0");
}

#[test]
fn a_bad_configuration_exits_2_with_a_message() {
    let temp = tempfile::tempdir().expect("temp dir");
    let config = temp.path().join("runnel.toml");
    std::fs::write(&config, "cores = 2\nbase_port = 65535\n").expect("write config");
    let output = Command::new(SERVER)
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("65535"),
        "the message names the problem: {stderr}"
    );
}
