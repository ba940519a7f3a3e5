//! What the end-to-end tests of `runnel` share: running the binary (always within
//! [`RUN_TIMEOUT`], so a command that hangs fails its test instead of blocking it), reading
//! its tables and JSON, and a shell pointed at one test server. A command can also run in the
//! background and be stopped by a signal, as a user's Ctrl-C would.

// Each test binary uses a part of this module.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use runnel_tests::server::{server_binary, TestServer};
use serde_json::Value;

/// Longest one run of `runnel` may take.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a running command is checked for its exit.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// What one run of `runnel` left behind.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(self, what: &str) -> Run {
        assert_eq!(
            self.code, 0,
            "{what}: exit {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    pub fn failed(self, what: &str, code: i32, stderr_prefix: &str) -> Run {
        assert_eq!(
            self.code, code,
            "{what}: expected exit {code}, got {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        assert!(
            self.stderr.starts_with(stderr_prefix),
            "{what}: stderr should start with {stderr_prefix:?}:\n{}",
            self.stderr
        );
        self
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("not one JSON document ({error}):\n{}", self.stdout))
    }

    /// Every line of stdout as a JSON document (JSON lines).
    pub fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|error| panic!("not a JSON line ({error}): {line:?}"))
            })
            .collect()
    }

    /// The data rows of a table: cells trimmed, borders and the header skipped.
    pub fn table_rows(&self) -> Vec<Vec<String>> {
        table_rows(&self.stdout)
    }
}

/// The data rows of the first table in `text`.
pub fn table_rows(text: &str) -> Vec<Vec<String>> {
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 3, "not a table:\n{text}");
    lines
        .iter()
        .skip(3)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            line.trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect()
}

/// A `runnel` started and not yet waited for.
pub struct Running {
    what: String,
    child: Child,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
}

impl Running {
    /// Starts `runnel` in `cwd` (so no `./runnel-data` certificate is picked up by accident)
    /// with a clean environment for its own variables, `args`, and `stdin` if given (then
    /// closed).
    pub fn start(cwd: &Path, args: &[&str], stdin: Option<&str>) -> Running {
        Running::start_with_env(cwd, args, &[], stdin)
    }

    /// [`Running::start`] with the variables of `env` set.
    pub fn start_with_env(
        cwd: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&str>,
    ) -> Running {
        let mut child = Command::new(env!("CARGO_BIN_EXE_runnel"))
            .args(args)
            .current_dir(cwd)
            .env_remove("RUNNEL_URL")
            .env_remove("RUNNEL_CA_CERT")
            .env_remove("RUNNEL_INSECURE")
            .env_remove("RUNNEL_CONNECT_TIMEOUT_MS")
            .envs(env.iter().copied())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start runnel");
        // Read both pipes meanwhile, so a chatty command never blocks on a full pipe.
        let stdout = drain(child.stdout.take().expect("piped stdout"));
        let stderr = drain(child.stderr.take().expect("piped stderr"));
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).expect("write stdin");
        }
        Running {
            what: args.join(" "),
            child,
            stdout,
            stderr,
        }
    }

    /// Sends `signal` (`INT`, `TERM`) to the command, as a terminal or a supervisor would.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {}", self.what);
    }

    /// Waits for the command's exit, at most [`RUN_TIMEOUT`]; kills it and fails the test
    /// after that.
    pub fn finish(mut self) -> Run {
        let deadline = Instant::now() + RUN_TIMEOUT;
        let status = loop {
            match self.child.try_wait().expect("wait for runnel") {
                Some(status) => break status,
                None if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let stdout = self.stdout.join().unwrap_or_default();
                    let stderr = self.stderr.join().unwrap_or_default();
                    panic!(
                        "runnel {} did not end within {RUN_TIMEOUT:?}\nstdout:\n{}\nstderr:\n{}",
                        self.what,
                        String::from_utf8_lossy(&stdout),
                        String::from_utf8_lossy(&stderr)
                    );
                }
                None => std::thread::sleep(POLL_INTERVAL),
            }
        };
        let stdout = self.stdout.join().expect("stdout reader");
        let stderr = self.stderr.join().expect("stderr reader");
        Run {
            code: status.code().expect("runnel exited, not killed"),
            stdout: String::from_utf8(stdout).expect("utf-8 stdout"),
            stderr: String::from_utf8(stderr).expect("utf-8 stderr"),
        }
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Runs `runnel` to its end (see [`Running::start`]).
pub fn runnel(cwd: &Path, args: &[&str], stdin: Option<&str>) -> Run {
    Running::start(cwd, args, stdin).finish()
}

/// A shell pointed at one server: every call passes `--url` and `--ca-cert`.
pub struct Shell<'a> {
    pub cwd: &'a Path,
    pub url: String,
    pub cert: String,
}

impl Shell<'_> {
    /// A shell in `cwd` for `server`.
    pub fn new<'a>(cwd: &'a Path, server: &TestServer) -> Shell<'a> {
        Shell {
            cwd,
            url: server.url(),
            cert: server.certificate().display().to_string(),
        }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_stdin(args, None)
    }

    pub fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Run {
        Running::start(self.cwd, &self.full(args), stdin).finish()
    }

    /// Starts a command in the background.
    pub fn start(&self, args: &[&str]) -> Running {
        Running::start(self.cwd, &self.full(args), None)
    }

    fn full<'s>(&'s self, args: &[&'s str]) -> Vec<&'s str> {
        let mut full = vec!["--url", self.url.as_str(), "--ca-cert", self.cert.as_str()];
        full.extend_from_slice(args);
        full
    }
}

/// One test's node: a two-core server on its own data directory, and a working directory for
/// `runnel` beside it. Fields drop in order: the server stops before the directory goes.
pub struct Node {
    pub server: TestServer,
    pub cwd: PathBuf,
    _temp: tempfile::TempDir,
}

impl Node {
    /// Starts the server (its binary must be built: `cargo build -p runnel-server`).
    pub fn start() -> Node {
        Self::start_with_config(None)
    }

    /// Starts the server with `toml`, if any, as its configuration file.
    pub fn start_with_config(toml: Option<&str>) -> Node {
        assert!(
            server_binary().is_file(),
            "{} is missing: run `cargo build -p runnel-server` first",
            server_binary().display()
        );
        let temp = tempfile::tempdir().expect("temp dir");
        let server = match toml {
            Some(toml) => {
                let config = temp.path().join("runnel.toml");
                std::fs::write(&config, toml).expect("write the configuration");
                let config = config.to_str().expect("a UTF-8 path").to_owned();
                TestServer::start_with(temp.path(), 2, &["--config", &config])
            }
            None => TestServer::start(temp.path(), 2),
        };
        let cwd = temp.path().join("cwd");
        std::fs::create_dir_all(&cwd).expect("cwd");
        Node {
            server,
            cwd,
            _temp: temp,
        }
    }

    /// A shell pointed at the server.
    pub fn shell(&self) -> Shell<'_> {
        Shell::new(&self.cwd, &self.server)
    }
}
