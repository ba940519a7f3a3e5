//! The checker of a Jepsen-style run: from what producers were told, what readers saw during
//! the run and the final log (every shard read from the start after healing), it counts
//! acknowledged records, lost ones, inconsistent offsets, duplicates, reads of records that
//! were never committed, gaps, and acknowledgements from a minority side; then it says which
//! of those break what the stream's replication promises ([`Promise`]).
//!
//! It is pure (no I/O, no clock): a [`History`] in, a [`Report`] out, so its own tests feed it
//! fabricated histories and show that each violation is reported.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// One record the workload wrote: producer `producer`'s `n`-th (unique across the run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordKey {
    /// The producer.
    pub producer: u32,
    /// Its sequence number at that producer.
    pub n: u64,
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}#{}", self.producer, self.n)
    }
}

impl RecordKey {
    /// The record's value: a JSON object naming it (`{"producer":1,"n":7}`).
    pub fn value(&self) -> Vec<u8> {
        format!("{{\"producer\":{},\"n\":{}}}", self.producer, self.n).into_bytes()
    }

    /// The record a value names, if it is one of the workload's.
    pub fn parse(value: &[u8]) -> Option<RecordKey> {
        #[derive(serde::Deserialize)]
        struct Named {
            producer: u32,
            n: u64,
        }
        let named: Named = serde_json::from_slice(value).ok()?;
        Some(RecordKey {
            producer: named.producer,
            n: named.n,
        })
    }
}

/// A record's place: shard id and offset.
pub type Position = (u64, u64);

/// An acknowledged append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The record.
    pub record: RecordKey,
    /// Where the server said it stored it.
    pub at: Position,
    /// When the send started, in milliseconds since the run began.
    pub sent_ms: u64,
    /// When the acknowledgement came, in milliseconds since the run began.
    pub acked_ms: u64,
}

/// A time when one node was cut off from the others (the nemesis's isolation), with the
/// shards whose sequencer it was when the cut began.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isolation {
    /// The node cut off.
    pub node: u64,
    /// When the cut began, in milliseconds since the run began.
    pub from_ms: u64,
    /// When it was healed.
    pub until_ms: u64,
    /// Shards whose sequencer was that node when the cut began.
    pub sequenced_shards: BTreeSet<u64>,
}

/// Everything the run observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// Appends acknowledged to producers.
    pub acks: Vec<Ack>,
    /// Appends whose outcome is unknown (an error: they may or may not be stored).
    pub unknown: BTreeSet<RecordKey>,
    /// What readers and consumers saw while the faults went on (repeats allowed).
    pub live_reads: Vec<(RecordKey, Position)>,
    /// Of `live_reads`, those a subscription's consumer was delivered (the others a tailing
    /// reader read): the examples name which path showed a record.
    pub consumed: BTreeSet<(RecordKey, Position)>,
    /// Every shard's log after healing, read from its first offset: (offset, record), in
    /// the order read.
    pub final_log: BTreeMap<u64, Vec<(u64, RecordKey)>>,
    /// The first offset of each shard's final read (0 unless trimmed).
    pub final_start: BTreeMap<u64, u64>,
    /// Lost ranges the final read was told of, per shard (`start..end` offsets): offsets a
    /// `memory`-durability shard handed out and a crash took before they were durable.
    pub final_lost: BTreeMap<u64, Vec<std::ops::Range<u64>>>,
    /// The node cut-offs of the run.
    pub isolations: Vec<Isolation>,
}

/// What the stream promises, which decides what counts as a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Promise {
    /// The stream's replication factor.
    pub replication_factor: u8,
    /// Whether producers are idempotent (then a duplicate is a failure).
    pub idempotent: bool,
    /// Whether the stream acknowledges after fdatasync (`fsync` durability). With `memory`
    /// and R = 1, a SIGKILL may lose acknowledged records: then a loss is no failure.
    pub fsync: bool,
}

/// What the checker found. Lists are capped at [`EXAMPLES_MAX`] examples; counts are exact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Acknowledged appends.
    pub acked: usize,
    /// Appends with an unknown outcome.
    pub unknown: usize,
    /// Records in the final log.
    pub final_records: usize,
    /// Acknowledged records absent from the final log.
    pub lost: usize,
    /// Offsets seen holding two different records (by any reader, the final read or an
    /// acknowledgement), or acknowledged records stored elsewhere than acknowledged.
    pub inconsistent: usize,
    /// Records stored at more than one offset of the final log.
    pub duplicates: usize,
    /// Records seen by readers during the run that were never acknowledged and are not in
    /// the final log (reads of something never committed).
    pub uncommitted_reads: usize,
    /// Offsets missing inside a shard's final log (offsets not dense) where no lost range was
    /// reported, or the same offset twice.
    pub gaps: usize,
    /// Reported lost ranges the final log skips (allowed only with `memory` and R = 1, like a
    /// loss).
    pub lost_ranges: usize,
    /// Records in the final log that no producer sent (not the workload's, or invented).
    pub unexpected: usize,
    /// Appends acknowledged entirely while the sequencer of their shard was cut off from the
    /// other nodes (a minority side committing: allowed only when R = 1).
    pub minority_acks: usize,
    /// Per shard: acknowledged appends, and the offset after the last record of its final
    /// log (where a stuck shard shows).
    pub shards: BTreeMap<u64, (usize, u64)>,
    /// Examples of each problem, for the failure message.
    pub examples: Vec<String>,
}

/// Examples kept per report.
pub const EXAMPLES_MAX: usize = 20;

impl Report {
    fn example(&mut self, text: String) {
        if self.examples.len() < EXAMPLES_MAX {
            self.examples.push(text);
        }
    }

    /// What breaks the promise: one line per kind of violation; empty when the run passed.
    pub fn violations(&self, promise: Promise) -> Vec<String> {
        let mut broken = Vec::new();
        let mut must_be_zero = |count: usize, what: &str| {
            if count > 0 {
                broken.push(format!("{count} {what}"));
            }
        };
        // With `memory` durability and one replica, a SIGKILL takes what only memory held:
        // acknowledged records, and records readers saw, may vanish within that promise.
        if promise.fsync || promise.replication_factor > 1 {
            must_be_zero(self.lost, "acknowledged records lost");
            must_be_zero(self.uncommitted_reads, "reads of never-committed records");
            must_be_zero(self.lost_ranges, "lost ranges");
        }
        must_be_zero(self.inconsistent, "inconsistent offsets");
        must_be_zero(self.gaps, "gaps in a shard's offsets");
        must_be_zero(self.unexpected, "records no producer sent");
        if promise.idempotent {
            must_be_zero(self.duplicates, "duplicates with an idempotent producer");
        }
        if promise.replication_factor > 1 {
            must_be_zero(self.minority_acks, "acknowledgements by a minority side");
        }
        broken
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "acked {} (unknown outcome {}), final log {} records",
            self.acked, self.unknown, self.final_records
        )?;
        writeln!(
            f,
            "lost {}, inconsistent offsets {}, duplicates {}, uncommitted reads {}, gaps {}, \
             lost ranges {}, unexpected {}, minority acks {}",
            self.lost,
            self.inconsistent,
            self.duplicates,
            self.uncommitted_reads,
            self.gaps,
            self.lost_ranges,
            self.unexpected,
            self.minority_acks
        )?;
        for (shard, (acked, end)) in &self.shards {
            writeln!(f, "  shard {shard}: {acked} acked, final log ends at {end}")?;
        }
        for example in &self.examples {
            writeln!(f, "  {example}")?;
        }
        Ok(())
    }
}

/// Checks a history (see the module header).
pub fn check(history: &History) -> Report {
    let mut report = Report {
        acked: history.acks.len(),
        unknown: history.unknown.len(),
        ..Report::default()
    };
    // Where each record is in the final log, and what each offset holds.
    let mut stored: BTreeMap<RecordKey, BTreeSet<Position>> = BTreeMap::new();
    let mut holds: BTreeMap<Position, RecordKey> = BTreeMap::new();
    for (&shard, log) in &history.final_log {
        let mut expected = history.final_start.get(&shard).copied().unwrap_or(0);
        for &(offset, record) in log {
            report.final_records += 1;
            let reported = history
                .final_lost
                .get(&shard)
                .is_some_and(|ranges| ranges.contains(&(expected..offset)));
            if offset != expected && reported {
                report.lost_ranges += 1;
                report.example(format!(
                    "shard {shard}: offsets {expected} to {offset} (exclusive) reported lost"
                ));
            } else if offset != expected {
                report.gaps += 1;
                report.example(format!(
                    "shard {shard}: offset {offset} follows {} in the final read",
                    expected.wrapping_sub(1)
                ));
            }
            expected = offset + 1;
            stored.entry(record).or_default().insert((shard, offset));
            if let Some(other) = holds.insert((shard, offset), record) {
                report.inconsistent += 1;
                report.example(format!(
                    "{shard}-{offset} read as {other} and as {record} in the final read"
                ));
            }
        }
    }
    for (record, positions) in &stored {
        if positions.len() > 1 {
            report.duplicates += 1;
            report.example(format!(
                "{record} stored {} times: {positions:?}",
                positions.len()
            ));
        }
    }
    // Every observation of an offset must agree with the final log and with each other.
    let mut seen: BTreeMap<Position, RecordKey> = holds.clone();
    let observations = history
        .acks
        .iter()
        .map(|ack| (ack.record, ack.at, "acknowledged"))
        .chain(history.live_reads.iter().map(|&(record, at)| {
            let how = if history.consumed.contains(&(record, at)) {
                "delivered to the consumer during the run"
            } else {
                "read during the run"
            };
            (record, at, how)
        }));
    for (record, at, how) in observations {
        match seen.get(&at) {
            Some(&other) if other != record => {
                report.inconsistent += 1;
                report.example(format!(
                    "{}-{} {how} as {record}, elsewhere as {other}",
                    at.0, at.1
                ));
            }
            Some(_) => {}
            None => {
                seen.insert(at, record);
            }
        }
    }
    for ack in &history.acks {
        report.shards.entry(ack.at.0).or_default().0 += 1;
    }
    for (&shard, log) in &history.final_log {
        report.shards.entry(shard).or_default().1 = log.last().map_or(0, |(offset, _)| offset + 1);
    }
    let acked: BTreeSet<RecordKey> = history.acks.iter().map(|ack| ack.record).collect();
    for ack in &history.acks {
        match stored.get(&ack.record) {
            None => {
                report.lost += 1;
                report.example(format!(
                    "{} acknowledged at {}-{} is not in the final log",
                    ack.record, ack.at.0, ack.at.1
                ));
            }
            Some(positions) if !positions.contains(&ack.at) => {
                report.inconsistent += 1;
                report.example(format!(
                    "{} acknowledged at {}-{} is stored at {positions:?}",
                    ack.record, ack.at.0, ack.at.1
                ));
            }
            Some(_) => {}
        }
    }
    let read_records: BTreeSet<RecordKey> = history.live_reads.iter().map(|(r, _)| *r).collect();
    for record in read_records {
        if !acked.contains(&record) && !stored.contains_key(&record) {
            report.uncommitted_reads += 1;
            let consumed = history.consumed.iter().any(|(r, _)| *r == record);
            let how = if consumed {
                "delivered to the consumer"
            } else {
                "read by a reader"
            };
            report.example(format!(
                "{record} was {how} during the run, never acknowledged, and is not in the final log"
            ));
        }
    }
    for record in stored.keys() {
        if !acked.contains(record) && !history.unknown.contains(record) {
            report.unexpected += 1;
            report.example(format!("{record} is stored but no send of it is recorded"));
        }
    }
    for ack in &history.acks {
        let inside = history.isolations.iter().find(|cut| {
            cut.sequenced_shards.contains(&ack.at.0)
                && cut.from_ms <= ack.sent_ms
                && ack.acked_ms <= cut.until_ms
        });
        if let Some(cut) = inside {
            report.minority_acks += 1;
            if report.minority_acks <= 3 {
                report.example(format!(
                    "{} acknowledged at {}-{} while its sequencer, node {}, was cut off",
                    ack.record, ack.at.0, ack.at.1, cut.node
                ));
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(producer: u32, n: u64) -> RecordKey {
        RecordKey { producer, n }
    }

    fn ack(record: RecordKey, shard: u64, offset: u64) -> Ack {
        Ack {
            record,
            at: (shard, offset),
            sent_ms: 10,
            acked_ms: 20,
        }
    }

    const R1: Promise = Promise {
        replication_factor: 1,
        idempotent: false,
        fsync: true,
    };
    const R3_IDEMPOTENT: Promise = Promise {
        replication_factor: 3,
        idempotent: true,
        fsync: true,
    };

    /// A clean history: three acknowledged records, read back at their offsets.
    fn clean() -> History {
        let mut history = History::default();
        for n in 0..3 {
            history.acks.push(ack(key(1, n), 7, n));
            history.live_reads.push((key(1, n), (7, n)));
        }
        history
            .final_log
            .insert(7, (0..3).map(|n| (n, key(1, n))).collect());
        history
    }

    /// The clean history passes every promise, and the values round-trip through JSON.
    #[test]
    fn a_clean_history_passes() {
        let report = check(&clean());
        assert_eq!(report.acked, 3);
        assert_eq!(report.final_records, 3);
        assert_eq!(report.shards.get(&7), Some(&(3, 3)), "{report}");
        assert!(report.violations(R3_IDEMPOTENT).is_empty(), "{report}");
        assert_eq!(RecordKey::parse(&key(4, 99).value()), Some(key(4, 99)));
        assert_eq!(RecordKey::parse(b"not json"), None);
    }

    /// An acknowledged record missing from the final log is lost, under any promise.
    #[test]
    fn a_loss_is_reported() {
        let mut history = clean();
        history.acks.push(ack(key(2, 0), 7, 3));
        let report = check(&history);
        assert_eq!(report.lost, 1, "{report}");
        assert!(report.violations(R1)[0].contains("lost"), "{report}");
        let memory = Promise { fsync: false, ..R1 };
        assert!(report.violations(memory).is_empty(), "{report}");
    }

    /// A record stored twice (a retried append) is a duplicate: reported always, a failure
    /// with the idempotent producer only.
    #[test]
    fn a_duplicate_is_reported() {
        let mut history = clean();
        history.unknown.insert(key(1, 3));
        let log = history.final_log.entry(7).or_default();
        log.push((3, key(1, 3)));
        log.push((4, key(1, 3)));
        let report = check(&history);
        assert_eq!(report.duplicates, 1, "{report}");
        assert!(report.violations(R1).is_empty(), "{report}");
        assert_eq!(report.violations(R3_IDEMPOTENT).len(), 1, "{report}");
    }

    /// One offset seen with two records (a reader saw another record there than the final
    /// read), and a record acknowledged at one offset but stored at another, are inconsistent.
    #[test]
    fn an_inconsistent_offset_is_reported() {
        let mut history = clean();
        history.unknown.insert(key(9, 9));
        history.live_reads.push((key(9, 9), (7, 1)));
        let report = check(&history);
        assert_eq!(report.inconsistent, 1, "{report}");
        let violations = report.violations(R1);
        assert!(
            violations.iter().any(|line| line.contains("inconsistent")),
            "{report}"
        );

        let mut moved = clean();
        moved.acks[2].at = (7, 5);
        let report = check(&moved);
        assert!(report.inconsistent >= 1, "{report}");
    }

    /// A reader that saw a record never acknowledged and absent from the final log read
    /// something uncommitted; a hole in a shard's offsets is a gap.
    #[test]
    fn uncommitted_reads_and_gaps_are_reported() {
        let mut history = clean();
        history.live_reads.push((key(3, 0), (7, 3)));
        history.final_log.entry(8).or_default().push((1, key(1, 9)));
        history.acks.push(ack(key(1, 9), 8, 1));
        let report = check(&history);
        assert_eq!(report.uncommitted_reads, 1, "{report}");
        assert_eq!(report.gaps, 1, "{report}");
        assert_eq!(report.violations(R1).len(), 2, "{report}");
        // The same hole reported by the reader as a lost range is no gap, but a lost range,
        // which only `memory` durability with one replica allows.
        history
            .final_lost
            .insert(8, std::iter::once(0..1).collect());
        let report = check(&history);
        assert_eq!((report.gaps, report.lost_ranges), (0, 1), "{report}");
    }

    /// An append acknowledged while its shard's sequencer was cut off is a minority commit:
    /// allowed with R = 1, a failure with R = 3.
    #[test]
    fn a_minority_commit_is_reported() {
        let mut history = clean();
        history.isolations.push(Isolation {
            node: 2,
            from_ms: 5,
            until_ms: 30,
            sequenced_shards: BTreeSet::from([7]),
        });
        let report = check(&history);
        assert_eq!(report.minority_acks, 3, "{report}");
        assert!(report.violations(R1).is_empty(), "{report}");
        assert_eq!(report.violations(R3_IDEMPOTENT).len(), 1, "{report}");
    }
}
