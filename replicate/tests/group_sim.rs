//! The metadata group under the deterministic simulator (`runnel_replicate::group::sim`):
//! thousands of seeded runs with lost, duplicated, delayed and reordered messages, partitions
//! (one-way too), and crashes that lose unsynced writes; every run must keep the checks (one
//! leader per term, committed entries never change, every member's state is the committed
//! log's) and make progress once the faults stop.
//!
//! `RUNNEL_SIM_SEEDS` sets how many seeds (default 2,000 here, the CI setting),
//! `RUNNEL_SIM_FIRST_SEED` where they start; the long run is
//! `RUNNEL_SIM_SEEDS=200000 cargo test --release -p runnel-replicate --test group_sim`.
//! A failure prints its seed; `RUNNEL_SIM_FIRST_SEED=<seed> RUNNEL_SIM_SEEDS=1` replays it.

use std::time::Instant;

use runnel_replicate::group::sim::{run, Mutation, SimConfig, SimReport};

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
                total.leader_terms += report.leader_terms;
                total.crashes += report.crashes;
                total.delivered += report.delivered;
                assert_eq!(report.voters_at_end, config.target_voters, "seed {seed}");
            }
            Err(failure) => panic!("{failure}"),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "{seeds} seeds from {first} ({} members): {} committed entries, {} acknowledged \
         proposals, {} leader terms, {} crashes, {} messages; {:.1} s, {:.0} seeds/hour",
        config.members,
        total.committed,
        total.acknowledged,
        total.leader_terms,
        total.crashes,
        total.delivered,
        seconds,
        seeds as f64 / seconds * 3600.0
    );
    total
}

#[test]
fn three_members_keep_every_check_under_faults() {
    let total = run_seeds(&SimConfig::default(), 2_000);
    // The runs did what they are for: commands committed, leaders changed, members crashed.
    assert!(total.acknowledged > 0 && total.crashes > 0 && total.leader_terms > 1);
}

#[test]
fn five_members_keep_every_check_under_faults() {
    let config = SimConfig {
        members: 5,
        initial_voters: 5,
        target_voters: 5,
        ..SimConfig::default()
    };
    let total = run_seeds(&config, 500);
    assert!(total.acknowledged > 0 && total.crashes > 0 && total.leader_terms > 1);
}

/// A cluster initialised on one node grows its group: the four others join as learners and
/// two are promoted, under the same faults, to three voters and two learners.
#[test]
fn a_group_of_one_grows_to_three_voters_under_faults() {
    let config = SimConfig {
        members: 5,
        initial_voters: 1,
        target_voters: 3,
        ..SimConfig::default()
    };
    let total = run_seeds(&config, 300);
    assert!(total.acknowledged > 0 && total.crashes > 0);
}

/// One of four voters is removed halfway through the faults (it may lead): the leader drops
/// it from the group (a removed leader hands its role over first), and the group of the
/// three left still commits after the faults.
#[test]
fn removed_members_leave_the_group_under_faults() {
    let config = SimConfig {
        members: 4,
        initial_voters: 4,
        target_voters: 3,
        removed_members: 1,
        ..SimConfig::default()
    };
    let total = run_seeds(&config, 300);
    assert!(total.acknowledged > 0 && total.crashes > 0);
}

/// Crashes and restarts every few tens of milliseconds (the setting that exposes a lost vote
/// below) break nothing when votes are kept.
#[test]
fn frequent_crashes_keep_every_check() {
    let config = SimConfig {
        chaos_every_ms: 40,
        crash_per_million: 500_000,
        restart_ms_max: 30,
        ..SimConfig::default()
    };
    let total = run_seeds(&config, 300);
    assert!(total.acknowledged > 0 && total.crashes > 1_000);
}

/// The checks can fail: with a disk that loses synced writes (a missing fsync), some seed
/// breaks them, or raft-rs's own assertions.
#[test]
fn a_disk_that_loses_synced_writes_is_caught() {
    let config = SimConfig {
        mutation: Mutation::SyncLost,
        ..SimConfig::default()
    };
    let caught = (1..=200).find_map(|seed| run(seed, &config).err());
    let failure = caught.expect("200 seeds with lost syncs all passed the checks");
    eprintln!("caught: {failure}");
}

/// A lost vote lets a restarted member vote twice in one term, which raft-rs cannot see from
/// inside one member: the simulator's one-leader-per-term check catches it (with crashes and
/// restarts frequent enough to hit the window between a vote and a rival's request).
#[test]
fn a_lost_vote_is_caught_as_two_leaders_in_a_term() {
    let config = SimConfig {
        mutation: Mutation::VoteLost,
        chaos_every_ms: 40,
        crash_per_million: 500_000,
        restart_ms_max: 30,
        ..SimConfig::default()
    };
    let caught = (1..=500).find_map(|seed| run(seed, &config).err());
    let failure = caught.expect("500 seeds with lost votes all passed the checks");
    eprintln!("caught: {failure}");
    assert!(failure.what.contains("two leaders in term"), "{failure}");
}

/// A command altered in flight is applied by a follower at an index where another was
/// committed: the committed-log check catches it.
#[test]
fn an_entry_altered_in_flight_is_caught() {
    let config = SimConfig {
        mutation: Mutation::AlteredEntries,
        ..SimConfig::default()
    };
    let caught = (1..=200).find_map(|seed| run(seed, &config).err());
    let failure = caught.expect("200 seeds with altered entries all passed the checks");
    eprintln!("caught: {failure}");
    assert!(
        failure.what.contains("applied a different entry")
            || failure.what.contains("differs from the committed log"),
        "{failure}"
    );
}

/// A seed replays exactly: the same run twice gives the same report (no randomness or clock
/// from outside the seed, raft-rs's own election-timeout draws included).
#[test]
fn a_seed_replays_exactly() {
    let config = SimConfig::default();
    for seed in 1..=20 {
        let first = run(seed, &config).map_err(|f| f.to_string());
        let second = run(seed, &config).map_err(|f| f.to_string());
        assert_eq!(first, second, "seed {seed} ran differently twice");
    }
}
