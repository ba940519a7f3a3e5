//! A replicated shard under the deterministic simulator (`runnel_replicate::shard::sim`):
//! thousands of seeded runs with lost, duplicated, delayed and reordered messages, partitions
//! (one-way too), crashes that lose unsynced writes, paused nodes, false suspicions of the
//! sequencer and stale client routing; every run must keep the checks (the committed log only
//! grows and never changes, every replica's committed prefix is the committed log, one
//! sequencer commits per epoch, every acknowledged append stays where it was acknowledged) and
//! commit again once the faults stop. Two deliberate bugs (no sealing, acknowledging before a
//! quorum) must be caught.
//!
//! `RUNNEL_SIM_SEEDS` sets how many seeds per test (defaults: the CI setting below),
//! `RUNNEL_SIM_FIRST_SEED` where they start. The long run is
//! `RUNNEL_SIM_SEEDS=1000000 cargo test --release -p runnel-replicate --test shard_sim`.
//! A failure prints its seed; `RUNNEL_SIM_FIRST_SEED=<seed> RUNNEL_SIM_SEEDS=1` replays it.

use std::time::Instant;

use runnel_replicate::shard::sim::{run, SimConfig, SimReport};
use runnel_replicate::shard::{Durability, Mutation};

fn run_seeds(config: &SimConfig, default_seeds: u64) -> SimReport {
    let range = runnel_replicate::sim::seeds(default_seeds);
    let (first, seeds) = (range.start, range.end - range.start);
    let started = Instant::now();
    let mut total = SimReport::default();
    for seed in range {
        match run(seed, config) {
            Ok(report) => {
                total.committed += report.committed;
                total.acknowledged += report.acknowledged;
                total.committing_epochs += report.committing_epochs;
                total.crashes += report.crashes;
                total.failovers += report.failovers;
                total.delivered += report.delivered;
                total.catch_up_reads += report.catch_up_reads;
            }
            Err(failure) => panic!("{failure}"),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "{seeds} seeds from {first} (R={}, {:?}): {} committed offsets, {} acknowledged \
         appends, {} committing epochs, {} failovers, {} crashes, {} messages, {} catch-up reads; \
         {:.1} s, {:.0} seeds/hour",
        config.replicas,
        config.durability,
        total.committed,
        total.acknowledged,
        total.committing_epochs,
        total.failovers,
        total.crashes,
        total.delivered,
        total.catch_up_reads,
        seconds,
        seeds as f64 / seconds.max(1e-9) * 3600.0
    );
    total
}

#[test]
fn three_replicas_keep_every_check_under_faults() {
    let total = run_seeds(&SimConfig::default(), 7_000);
    // The runs did what they are for: appends acknowledged, epochs changed, nodes crashed.
    assert!(total.acknowledged > 0 && total.crashes > 0 && total.committing_epochs > 1);
    assert!(
        total.catch_up_reads > 0,
        "no lagging replica was caught up from a read"
    );
}

#[test]
fn five_replicas_keep_every_check_under_faults() {
    let config = SimConfig {
        replicas: 5,
        ..SimConfig::default()
    };
    let total = run_seeds(&config, 2_000);
    assert!(total.acknowledged > 0 && total.crashes > 0 && total.committing_epochs > 1);
}

/// `memory` durability: replicas answer once they hold a batch, before it is synced. Crashes
/// would lose acknowledged data by design, so these runs pause nodes and cut links instead.
#[test]
fn memory_durability_keeps_every_check_without_crashes() {
    let config = SimConfig {
        durability: Durability::Memory,
        ..SimConfig::default()
    };
    let total = run_seeds(&config, 1_000);
    assert!(total.acknowledged > 0 && total.failovers > 0);
}

/// The first failing seed of a mutation among the first `seeds`, if any.
fn first_failure(mutation: Mutation, seeds: u64) -> Option<String> {
    let config = SimConfig {
        mutation,
        ..SimConfig::default()
    };
    (1..=seeds).find_map(|seed| run(seed, &config).err().map(|f| f.to_string()))
}

/// Without sealing, a deposed sequencer still reaches W replicas and acknowledges appends the
/// new epoch's log does not hold: the checks must see it.
#[test]
fn skipping_the_seal_is_caught() {
    let failure = first_failure(Mutation::SkipSealing, 2_000);
    eprintln!("skip sealing: {failure:?}");
    assert!(
        failure.is_some(),
        "no seed caught a recovery that does not seal"
    );
}

/// Acknowledging when one replica holds a batch loses it when that replica is not among those
/// the next recovery hears: the checks must see it.
#[test]
fn acknowledging_before_a_quorum_is_caught() {
    let failure = first_failure(Mutation::AckBeforeQuorum, 2_000);
    eprintln!("ack before quorum: {failure:?}");
    assert!(
        failure.is_some(),
        "no seed caught acknowledgements before a quorum"
    );
}
