//! Issue 11's Jepsen-style acceptance on real processes: three nodes on loopback, continuous
//! producers, tailing readers and a subscription's consumer, while a seeded nemesis SIGKILLs
//! the node holding most sequencers (and restarts it), SIGSTOPs a node past its failure
//! timeout (then SIGCONTs it) and cuts a node off from its peers (then heals). The checker
//! then fails the test on anything the stream's replication factor does not allow (see
//! `runnel_tests::jepsen::checker` and `docs/testing.md`).
//!
//! CI runs the small setting (`Settings::ci`, about a minute); `RUNNEL_JEPSEN_FAULTS`,
//! `RUNNEL_JEPSEN_SEED`, `RUNNEL_JEPSEN_R` and `RUNNEL_JEPSEN_IDEMPOTENT` make it longer or
//! stricter. Needs `cargo build -p runnel-server -p runnel-cli`.

use runnel_tests::jepsen::{run, Settings};

/// The run keeps every promise of its replication factor: nothing acknowledged is lost (with
/// R = 1 once killed nodes restart), offsets are dense and each holds one record, readers saw
/// nothing that was never committed, nothing is stored twice (idempotent producers), and with
/// R = 3 (`RUNNEL_JEPSEN_R=3`) a minority side acknowledges nothing. CI runs R = 1 until
/// subscriptions of replicated shards stop at the committed offset (docs/testing.md).
#[test]
fn a_nemesis_breaks_no_promise() {
    let settings = Settings::from_env();
    eprintln!("jepsen: {settings:?}");
    let outcome = run(&settings);
    let report = &outcome.report;
    eprintln!("jepsen report (seed {}):\n{report}", settings.seed);
    let violations = report.violations(settings.promise());
    assert!(
        violations.is_empty(),
        "seed {} broke promises {violations:?}\n{report}\nnemesis:\n{}\nreplay: \
         RUNNEL_JEPSEN_SEED={} RUNNEL_JEPSEN_FAULTS={} RUNNEL_JEPSEN_R={} cargo test -p \
         runnel-tests --test jepsen",
        settings.seed,
        outcome.nemesis.join("\n"),
        settings.seed,
        settings.faults,
        settings.replication_factor
    );
    // A run that acknowledged almost nothing checked almost nothing.
    assert!(
        report.acked >= settings.progress_acks * (settings.faults + 1),
        "only {} appends acknowledged\n{report}",
        report.acked
    );
    assert!(
        !outcome.history.live_reads.is_empty(),
        "the readers saw nothing\n{report}"
    );
}
