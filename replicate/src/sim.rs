//! What the deterministic simulators share (`group::sim` for the metadata group, `shard::sim`
//! for a replicated shard, and their seed sweeps in `tests/`): turning a panic inside a run
//! into that run's failure, and the seeds a sweep runs.

use std::any::Any;
use std::ops::Range;

/// Runs `run` once; a panic inside (an assertion of the state machines, or of a library they
/// drive) becomes `Err` with its message, a failure of the run like a broken check.
pub fn catch_panic<T>(run: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(outcome) => outcome,
        Err(panic) => Err(format!("panic: {}", panic_message(panic.as_ref()))),
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
        .unwrap_or_default()
}

/// The seeds a sweep runs: `RUNNEL_SIM_SEEDS` of them (`default_seeds` when unset) from
/// `RUNNEL_SIM_FIRST_SEED` (1 when unset). A failure's seed is replayed with
/// `RUNNEL_SIM_FIRST_SEED=<seed> RUNNEL_SIM_SEEDS=1`.
pub fn seeds(default_seeds: u64) -> Range<u64> {
    let first = env_u64("RUNNEL_SIM_FIRST_SEED", 1);
    first..first.saturating_add(env_u64("RUNNEL_SIM_SEEDS", default_seeds))
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::catch_panic;

    /// A run's panic is its failure, with the message; its result otherwise.
    #[test]
    fn a_panic_is_a_failure_with_its_message() {
        assert_eq!(catch_panic(|| Ok::<_, String>(3)), Ok(3));
        assert_eq!(
            catch_panic(|| Err::<(), _>("broken".to_string())),
            Err("broken".into())
        );
        let formatted = catch_panic::<()>(|| panic!("seed {}", 7));
        assert_eq!(formatted, Err("panic: seed 7".into()));
        let literal = catch_panic::<()>(|| panic!("plain"));
        assert_eq!(literal, Err("panic: plain".into()));
    }
}
