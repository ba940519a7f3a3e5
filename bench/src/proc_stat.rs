//! CPU time from `/proc`: a process's user + system time (`/proc/<pid>/stat`, fields 14 and 15,
//! every thread of the process, io_uring workers included since they are threads of it) and
//! the whole machine's busy time (`/proc/stat`), so that a phase can print the server's
//! CPU-seconds per GB and how busy the machine was with other work meanwhile.
//!
//! Resolution is one clock tick (`getconf CLK_TCK`, 100 Hz here): 10 ms, small against phases
//! of seconds. Softirq work for loopback packets is charged to whichever process was running
//! when it happened, so a little of the client's network cost can land on the server and back.

use std::sync::OnceLock;

/// Clock ticks per second of `/proc` times (`getconf CLK_TCK`; 100 if that fails, the value
/// on every Linux architecture we run on).
pub fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse::<f64>().ok())
            .filter(|ticks| *ticks > 0.0)
            .unwrap_or(100.0)
    })
}

/// utime + stime, in clock ticks, from the text of `/proc/<pid>/stat`. The command name (field
/// 2) is in parentheses and may hold spaces or parentheses, so fields are counted after the
/// last `)`.
pub fn parse_process_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name: field 3 (state) is index 0, so utime (14) is 11 and stime (15) is 12.
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU-seconds (user + system) process `pid` has used so far; `None` once it is gone.
pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_process_ticks(&stat).map(|ticks| ticks as f64 / clock_ticks_per_second())
}

/// CPU-seconds this process (the benchmark: client, pacer, disk probe) has used so far.
pub fn own_cpu_seconds() -> f64 {
    process_cpu_seconds(std::process::id()).unwrap_or(f64::NAN)
}

/// (busy, total) ticks of all CPUs from the `cpu` line of `/proc/stat`: busy is everything but
/// idle and iowait.
pub fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice].
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4)?;
    Some((total - idle, total))
}

/// A reading of the CPU counters at the start of a phase.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    server_seconds: Option<f64>,
    own_seconds: f64,
    machine: Option<(u64, u64)>,
}

/// The CPU a phase used, from two marks.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    /// CPU-seconds of the server process (NaN when it could not be read).
    pub server_seconds: f64,
    /// CPU-seconds of this benchmark process (the client side).
    pub client_seconds: f64,
    /// CPU-seconds the whole machine was busy (all processes, all cores).
    pub machine_seconds: f64,
}

impl CpuUse {
    /// What neither the server nor this benchmark used: other work on the machine (other
    /// builds), in CPU-seconds. Kernel work not charged to a process counts here too.
    pub fn others_seconds(&self) -> f64 {
        self.machine_seconds - self.server_seconds - self.client_seconds
    }
}

impl CpuMark {
    /// Reads the counters now; `server` is the server's pid (if it runs as a process).
    pub fn now(server: Option<u32>) -> CpuMark {
        CpuMark {
            server_seconds: server.and_then(process_cpu_seconds),
            own_seconds: own_cpu_seconds(),
            machine: std::fs::read_to_string("/proc/stat")
                .ok()
                .as_deref()
                .and_then(parse_machine_ticks),
        }
    }

    /// What was used since this mark (the server's pid must be the same).
    pub fn since(&self, server: Option<u32>) -> CpuUse {
        let end = CpuMark::now(server);
        let ticks = clock_ticks_per_second();
        CpuUse {
            server_seconds: match (self.server_seconds, end.server_seconds) {
                (Some(start), Some(end)) => end - start,
                _ => f64::NAN,
            },
            client_seconds: end.own_seconds - self.own_seconds,
            machine_seconds: match (self.machine, end.machine) {
                (Some((busy_start, _)), Some((busy_end, _))) => {
                    busy_end.saturating_sub(busy_start) as f64 / ticks
                }
                _ => f64::NAN,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_ticks_skip_a_name_with_spaces_and_parentheses() {
        // A real line's shape: pid (comm) state ppid pgrp session tty tpgid flags minflt
        // cminflt majflt cmajflt utime stime ...
        let stat =
            "4242 (runnel (core) 0) S 1 4242 4242 0 -1 4194560 900 0 3 0 1234 567 0 0 20 0 9 0";
        assert_eq!(parse_process_ticks(stat), Some(1234 + 567));
        assert_eq!(parse_process_ticks("4242 (short) S 1"), None);
        assert_eq!(parse_process_ticks("no parenthesis"), None);
    }

    #[test]
    fn machine_ticks_count_busy_without_idle_and_iowait() {
        let stat = "cpu  100 5 50 1000 20 3 2 0 0 0\ncpu0 50 2 25 500 10 1 1 0 0 0\n";
        // busy = user 100 + nice 5 + system 50 + irq 3 + softirq 2 + steal 0.
        assert_eq!(parse_machine_ticks(stat), Some((160, 1180)));
        assert_eq!(parse_machine_ticks("intr 1 2 3"), None);
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        // Not a timing assertion: only that the counters of a live process can be read.
        assert!(process_cpu_seconds(std::process::id()).is_some());
        assert!(clock_ticks_per_second() > 0.0);
        let mark = CpuMark::now(Some(std::process::id()));
        let used = mark.since(Some(std::process::id()));
        assert!(used.server_seconds >= 0.0 && used.client_seconds >= 0.0);
    }
}
