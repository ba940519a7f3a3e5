//! A server the benchmark runs as a separate process (`runnel-server`, `redis-server`,
//! `nats-server`), so that its CPU time is its own in `/proc/<pid>/stat`, with its output in a
//! log file beside its data. Stopped with SIGTERM; killed if the benchmark fails before that.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A server process of a benchmark.
pub struct ServerProcess {
    child: Child,
    name: String,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts `command` with stdin closed and stdout and stderr appended to `log`.
    pub fn spawn(mut command: Command, name: &str, log: &Path) -> Result<ServerProcess, String> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{name} log {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = command
            .spawn()
            .map_err(|e| format!("start {name} ({:?}): {e}", command.get_program()))?;
        Ok(ServerProcess {
            child,
            name: name.to_string(),
            log: log.to_path_buf(),
        })
    }

    /// The process id (for `/proc/<pid>/…`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An error if the process already exited (with the end of its log).
    pub fn check_running(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => Err(format!(
                "{} exited with {status}; its log ends with:\n{}",
                self.name,
                self.log_tail()
            )),
            Err(e) => Err(format!("{}: {e}", self.name)),
        }
    }

    /// The last lines of the log, for error messages.
    pub fn log_tail(&self) -> String {
        self.log_tail_lines(10)
    }

    /// SIGKILL (no flush, no goodbye) and waits until the process is gone.
    pub fn kill(mut self) -> Result<(), String> {
        self.child
            .kill()
            .map_err(|e| format!("SIGKILL to {}: {e}", self.name))?;
        self.child
            .wait()
            .map(drop)
            .map_err(|e| format!("{}: {e}", self.name))
    }

    /// The last `count` lines of the log, for error messages.
    pub fn log_tail_lines(&self, count: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(count)..].join("\n")
    }

    /// SIGTERM, then waits for the exit; returns how long the stop took and the exit status.
    pub fn stop(mut self) -> Result<(Duration, ExitStatus), String> {
        let started = Instant::now();
        // The workspace forbids unsafe code, so kill(2) goes through kill(1).
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .map_err(|e| format!("SIGTERM: {e}"))?;
        if !sent.success() {
            return Err(format!("SIGTERM to {}: kill exited with {sent}", self.name));
        }
        let status = self.child.wait().map_err(|e| e.to_string())?;
        Ok((started.elapsed(), status))
    }

    /// SIGTERM and wait; an error if the server exits unsuccessfully.
    pub fn stop_cleanly(self) -> Result<Duration, String> {
        let name = self.name.clone();
        let log = self.log.clone();
        let (took, status) = self.stop()?;
        if status.success() {
            Ok(took)
        } else {
            Err(format!(
                "{name} exited with {status} after SIGTERM (log {})",
                log.display()
            ))
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // Only a server left behind by an error is still running here.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The `runnel-server` beside this benchmark's binary (where `cargo build --release
/// -p runnel-server -p runnel-bench` puts both), unless a path is given.
pub fn runnel_server_path(given: Option<&Path>) -> Result<PathBuf, String> {
    match given {
        Some(path) => Ok(path.to_path_buf()),
        None => Ok(std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("runnel-server")),
    }
}

/// The command line of a `runnel-server` on `data_dir`, loopback, `cores` executors (not
/// pinned: the benchmark's client shares the machine), warnings only in its log.
pub fn runnel_command(server: &Path, data_dir: &Path, base_port: u16, cores: usize) -> Command {
    runnel_command_pinned(server, data_dir, base_port, cores, false)
}

/// [`runnel_command`], with the executors pinned to CPUs 0.. when `pin_cores` is set.
pub fn runnel_command_pinned(
    server: &Path,
    data_dir: &Path,
    base_port: u16,
    cores: usize,
    pin_cores: bool,
) -> Command {
    let mut command = Command::new(server);
    command
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--base-port")
        .arg(base_port.to_string())
        .arg("--cores")
        .arg(cores.to_string())
        .arg("--pin-cores")
        .arg(pin_cores.to_string())
        .env("RUNNEL_LOG", "warn");
    command
}

/// A UDP port free now on loopback, with the `count - 1` ports after it free too (a node with
/// several cores listens on base, base + 1, …). Racy by nature, as every such probe is.
pub fn free_udp_ports(count: usize) -> Result<u16, String> {
    for _ in 0..100 {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let base = probe.local_addr().map_err(|e| e.to_string())?.port();
        drop(probe);
        let all_free = (0..count).all(|i| {
            base.checked_add(i as u16)
                .is_some_and(|port| std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok())
        });
        if all_free {
            return Ok(base);
        }
    }
    Err(format!("no {count} consecutive free UDP ports on loopback"))
}

/// A TCP port free now on loopback.
pub fn free_tcp_port() -> Result<u16, String> {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(probe.local_addr().map_err(|e| e.to_string())?.port())
}

/// Whether a UDP socket is bound to `port` on this machine (`/proc/net/udp`).
pub fn udp_port_bound(port: u16) -> bool {
    let suffix = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/udp").is_ok_and(|table| {
        table.lines().skip(1).any(|line| {
            line.split_whitespace()
                .nth(1)
                .is_some_and(|local| local.ends_with(&suffix))
        })
    })
}

/// Waits until something accepts TCP connections on `127.0.0.1:port` (at most `timeout`).
pub fn wait_for_tcp(port: u16, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!(
        "nothing listens on 127.0.0.1:{port} after {timeout:?}"
    ))
}

/// Starts a peer server (`name`, installed by `scripts/install-peers`) logging to `log`, and
/// waits until it accepts TCP connections on `port` (at most `timeout`); on failure the error
/// carries the tail of its log.
pub fn spawn_tcp_peer(
    command: Command,
    name: &str,
    log: &Path,
    port: u16,
    timeout: Duration,
) -> Result<ServerProcess, String> {
    let mut process = ServerProcess::spawn(command, name, log)
        .map_err(|e| format!("{e} (install it with scripts/install-peers)"))?;
    wait_for_tcp(port, timeout).map_err(|e| {
        let _ = process.check_running();
        format!("{name}: {e}\n{}", process.log_tail())
    })?;
    Ok(process)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value the command passes after `--pin-cores`.
    fn pin_cores_argument(command: &Command) -> Option<String> {
        let args: Vec<String> = command
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let at = args.iter().position(|a| a == "--pin-cores")?;
        args.get(at + 1).cloned()
    }

    /// `--server-pin-cores` reaches the server's command line, and without it the server runs
    /// unpinned as before (the two differ by 5× in append p50 on the development VM).
    #[test]
    fn the_server_is_pinned_only_when_asked() {
        let (server, data) = (Path::new("runnel-server"), Path::new("data"));
        let pinned = runnel_command_pinned(server, data, 6570, 1, true);
        assert_eq!(pin_cores_argument(&pinned).as_deref(), Some("true"));
        let unpinned = runnel_command(server, data, 6570, 1);
        assert_eq!(pin_cores_argument(&unpinned).as_deref(), Some("false"));
    }
}
