//! A `runnel-server` process for a test: started on free loopback ports with its own data
//! directory, waited for until every core listens, stopped (SIGTERM) or killed (SIGKILL).

use std::io::{BufRead, BufReader, Read};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a server expected to exit by itself may run before the test calls it a hang.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The `runnel-server` binary next to the test executable (`target/<profile>/`).
pub fn server_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    profile_dir.join("runnel-server")
}

/// `count` consecutive free UDP ports on loopback (probed, then released: a small race with
/// other processes remains, and `TestServer::start` retries on it).
pub fn free_ports(count: u16) -> u16 {
    for _ in 0..200 {
        let probe = UdpSocket::bind("127.0.0.1:0").expect("bind a probe socket");
        let base = probe.local_addr().expect("probe address").port();
        if base.checked_add(count).is_none() {
            continue;
        }
        let rest: Vec<_> = (1..count)
            .map(|i| UdpSocket::bind(("127.0.0.1", base + i)))
            .collect();
        if rest.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no {count} consecutive free UDP ports on loopback");
}

/// A running server process.
pub struct TestServer {
    child: Option<Child>,
    /// Its data directory (kept across restarts).
    pub data_dir: PathBuf,
    /// UDP port of core 0.
    pub base_port: u16,
    /// Executors.
    pub cores: u16,
    extra_args: Vec<String>,
    log: mpsc::Receiver<String>,
    /// Every line the server logged so far.
    pub log_lines: Vec<String>,
}

impl TestServer {
    /// Starts a server with `cores` executors on a data directory under `root`.
    pub fn start(root: &Path, cores: u16) -> TestServer {
        TestServer::start_with(root, cores, &[])
    }

    /// Starts a server with extra command-line flags (kept for restarts).
    pub fn start_with(root: &Path, cores: u16, extra_args: &[&str]) -> TestServer {
        let data_dir = root.join("data");
        let base_port = free_ports(cores);
        let extra_args = extra_args.iter().map(|a| (*a).to_owned()).collect();
        TestServer::start_at(data_dir, base_port, cores, extra_args)
    }

    /// Starts (or restarts) a server on `data_dir` and `base_port`.
    pub fn start_at(
        data_dir: PathBuf,
        base_port: u16,
        cores: u16,
        extra_args: Vec<String>,
    ) -> TestServer {
        let mut child = Command::new(server_binary())
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--base-port", &base_port.to_string()])
            .args(["--cores", &cores.to_string()])
            .args(["--pin-cores", "false"])
            .args(&extra_args)
            .env("RUNNEL_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", server_binary().display()));
        let (sender, log) = mpsc::channel();
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if sender.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        let mut server = TestServer {
            child: Some(child),
            data_dir,
            base_port,
            cores,
            extra_args,
            log,
            log_lines: Vec::new(),
        };
        server.wait_listening();
        server
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut listening = 0;
        while listening < self.cores {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    if line.contains("listening") {
                        listening += 1;
                    }
                    self.log_lines.push(line);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!(
                        "runnel-server exited before listening:\n{}",
                        self.log_lines.join("\n")
                    )
                }
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.drain();
                panic!(
                    "runnel-server exited with {status} before listening:\n{}",
                    self.log_lines.join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "runnel-server did not listen in time:\n{}",
                self.log_lines.join("\n")
            );
        }
    }

    fn drain(&mut self) {
        while let Ok(line) = self.log.try_recv() {
            self.log_lines.push(line);
        }
    }

    /// Everything the server logged so far, one line each.
    pub fn log_text(&mut self) -> String {
        self.drain();
        self.log_lines.join("\n")
    }

    /// The server process's id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `runnel://127.0.0.1:<base_port>`.
    pub fn url(&self) -> String {
        format!("runnel://127.0.0.1:{}", self.base_port)
    }

    /// An SDK client trusting this server's certificate, with default options.
    pub async fn connect(&self) -> runnel_client::Client {
        let options = runnel_client::ClientOptions {
            ca_cert_path: Some(self.certificate()),
            client_name: "runnel-tests".into(),
            ..runnel_client::ClientOptions::default()
        };
        runnel_client::Client::connect(&self.url(), options)
            .await
            .expect("connect to the test server")
    }

    /// The node's self-signed certificate.
    pub fn certificate(&self) -> PathBuf {
        self.data_dir.join("tls").join("cert.pem")
    }

    /// SIGKILL: no flush, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.drain();
    }

    /// SIGTERM, then waits for a clean exit; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = child.wait().ok()?;
        self.drain();
        status.code()
    }

    /// Waits up to `timeout` for the process to exit by itself; its exit code (`None` for a
    /// signal), or `Err` if it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<i32>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let Some(child) = self.child.as_mut() else {
                return Err("the server is not running".to_owned());
            };
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                self.child = None;
                self.drain();
                return Ok(status.code());
            }
            if Instant::now() >= deadline {
                return Err(format!("still running after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same data directory, ports and flags, expecting it to
    /// exit by itself (see [`run_to_exit`]).
    pub fn run_again_to_exit(&self) -> Exited {
        let args: Vec<&str> = self.extra_args.iter().map(String::as_str).collect();
        run_to_exit(&self.data_dir, self.base_port, self.cores, &args)
    }

    /// Restarts on the same data directory and ports.
    pub fn restart(&mut self) {
        self.kill();
        let mut earlier = std::mem::take(&mut self.log_lines);
        let mut next = TestServer::start_at(
            self.data_dir.clone(),
            self.base_port,
            self.cores,
            self.extra_args.clone(),
        );
        // The log of every run of this server, the runs one after the other.
        earlier.push("--- restarted ---".to_string());
        earlier.append(&mut next.log_lines);
        next.log_lines = earlier;
        *self = next;
    }
}

/// A `runnel-server` run that ended by itself.
#[derive(Debug)]
pub struct Exited {
    /// Its exit code (`None` if a signal ended it).
    pub code: Option<i32>,
    /// Everything it printed, standard output then standard error.
    pub output: String,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Runs `runnel-server` on `data_dir` with these flags (after the test defaults: ports,
/// cores, no pinning) and waits for it to exit by itself. A server still running after
/// `EXIT_TIMEOUT` is killed and the test fails: these runs are expected to refuse to start or
/// to stop, and a hang is the bug.
pub fn run_to_exit(data_dir: &Path, base_port: u16, cores: u16, extra_args: &[&str]) -> Exited {
    let started = Instant::now();
    let mut child = Command::new(server_binary())
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--base-port", &base_port.to_string()])
        .args(["--cores", &cores.to_string()])
        .args(["--pin-cores", "false"])
        .args(extra_args)
        .env("RUNNEL_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", server_binary().display()));
    loop {
        if let Some(status) = child.try_wait().expect("wait for runnel-server") {
            let elapsed = started.elapsed();
            let mut output = String::new();
            for pipe in [
                child
                    .stdout
                    .take()
                    .map(|p| Box::new(p) as Box<dyn std::io::Read>),
                child
                    .stderr
                    .take()
                    .map(|p| Box::new(p) as Box<dyn std::io::Read>),
            ]
            .into_iter()
            .flatten()
            {
                let mut text = String::new();
                let _ = BufReader::new(pipe).read_to_string(&mut text);
                output.push_str(&text);
            }
            return Exited {
                code: status.code(),
                output,
                elapsed,
            };
        }
        if started.elapsed() > EXIT_TIMEOUT {
            let _ = child.kill();
            let output = child.wait_with_output().map_or_else(
                |e| e.to_string(),
                |o| {
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                },
            );
            panic!("runnel-server was still running after {EXIT_TIMEOUT:?} (killed):\n{output}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}
