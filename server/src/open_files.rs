//! The node's limit of open files. Every open shard log holds a file descriptor for its active
//! segment, so a node with many streams needs far more than the soft limit many systems start
//! processes with (often 1,024). At start the soft `RLIMIT_NOFILE` is raised to the hard limit,
//! which the operator controls (`LimitNOFILE=` in systemd, `ulimit -Hn`); a node with more
//! shards than the hard limit allows has its creates refused when the limit is reached.

/// The `RLIMIT_NOFILE` soft and hard limits, or `None` when they cannot be read.
#[allow(unsafe_code)]
pub fn limits() -> Option<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct we own and pass by pointer.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0).then_some((limit.rlim_cur, limit.rlim_max))
}

#[allow(unsafe_code)]
fn set_soft_limit(soft: u64, hard: u64) -> std::io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit only reads the struct we own and pass by pointer.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The most a soft limit is raised to when the hard limit is unlimited: Linux's default
/// `fs.nr_open`, above which setrlimit fails.
pub const OPEN_FILES_RAISE_MAX: u64 = 1 << 20;

/// Raises the soft limit of open files to the hard limit (at most [`OPEN_FILES_RAISE_MAX`]) and
/// logs it. Failing to raise it is not fatal: the node runs with the limit it was given, and
/// says so.
pub fn raise_limit() {
    let Some((soft, hard)) = limits() else {
        tracing::warn!("cannot read the limit of open files (RLIMIT_NOFILE)");
        return;
    };
    let target = hard.min(OPEN_FILES_RAISE_MAX);
    let limit = if soft < target {
        match set_soft_limit(target, hard) {
            Ok(()) => target,
            Err(error) => {
                tracing::warn!(soft, hard, %error, "cannot raise the limit of open files");
                soft
            }
        }
    } else {
        soft
    };
    tracing::info!(
        limit,
        "open files limit (one per open shard log, and sockets)"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node started with a soft limit below the hard one runs with the hard one.
    #[test]
    fn raise_limit_lifts_the_soft_limit_to_the_hard_one() {
        let (_, hard) = limits().expect("RLIMIT_NOFILE readable");
        let target = hard.min(OPEN_FILES_RAISE_MAX);
        // One below the target: low enough to see the raise, high enough not to starve the
        // other tests of this process.
        set_soft_limit(target - 1, hard).expect("lower the soft limit");
        assert_eq!(limits(), Some((target - 1, hard)));
        raise_limit();
        assert_eq!(limits(), Some((target, hard)));
    }
}
