//! The table's answers, one rule at a time, and a property test: a network that loses,
//! duplicates and reorders a producer's batches, with restarts that rebuild the table from
//! the log, never makes the shard store a batch twice or lose an acknowledged one.

use super::*;
use proptest::prelude::*;

fn stamp(producer_id: u64, sequence: u64) -> ProducerStamp {
    ProducerStamp {
        producer_id,
        sequence,
    }
}

fn small() -> ProducerTableConfig {
    ProducerTableConfig {
        producers_max: 3,
        window_records: 100,
    }
}

/// Admits, then records at `base`: a batch stored.
fn store(table: &mut ProducerTable, producer: ProducerStamp, count: u32, base: u64) {
    assert_eq!(table.admit(producer, count), Ok(Admission::Fresh));
    table.record(StoredBatch {
        producer,
        record_count: count,
        base_offset: Offset(base),
    });
}

/// Fresh, then duplicate with the first offsets; gaps, old and mismatched sequences refused.
#[test]
fn answers_by_sequence() {
    let mut table = ProducerTable::new(ProducerTableConfig::default());
    assert_eq!(table.admit(stamp(0, 0), 3), Ok(Admission::NotIdempotent));
    assert_eq!(
        table.admit(stamp(7, 5), 1),
        Err(SequenceError::UnknownProducer {
            producer_id: 7,
            sequence: 5
        })
    );
    store(&mut table, stamp(7, 0), 3, 10);
    assert_eq!(
        table.admit(stamp(7, 0), 3),
        Ok(Admission::Duplicate {
            base_offset: Offset(10),
            last_offset: Offset(12)
        })
    );
    assert_eq!(
        table.admit(stamp(7, 4), 1),
        Err(SequenceError::OutOfOrder {
            producer_id: 7,
            expected: 3,
            found: 4
        })
    );
    assert!(matches!(
        table.admit(stamp(7, 0), 2),
        Err(SequenceError::Mismatch { .. })
    ));
    assert!(matches!(
        table.admit(stamp(7, 1), 2),
        Err(SequenceError::Mismatch { .. })
    ));
    for index in 0..BATCHES_PER_PRODUCER as u64 {
        store(&mut table, stamp(7, 3 + index), 1, 13 + index);
    }
    // Batch 0..3 fell out of the last five.
    assert_eq!(
        table.admit(stamp(7, 0), 3),
        Err(SequenceError::TooOld {
            producer_id: 7,
            sequence: 0,
            oldest: 3
        })
    );
    assert!(matches!(
        table.admit(stamp(7, 4), 1),
        Ok(Admission::Duplicate { .. })
    ));
    assert!(matches!(
        table.admit(stamp(7, u64::MAX), 1),
        Err(SequenceError::Overflow { .. })
    ));
}

/// While a batch is being stored, its producer's next attempts wait; an abandoned batch
/// leaves the producer as it was.
#[test]
fn one_batch_in_flight_per_producer() {
    let mut table = ProducerTable::new(ProducerTableConfig::default());
    assert_eq!(table.admit(stamp(1, 0), 2), Ok(Admission::Fresh));
    assert_eq!(
        table.admit(stamp(1, 0), 2),
        Err(SequenceError::InFlight { producer_id: 1 })
    );
    table.abandon(1);
    assert_eq!(table.producer_count(), 0, "a producer with nothing stored");
    assert_eq!(table.admit(stamp(1, 0), 2), Ok(Admission::Fresh));
    table.record(StoredBatch {
        producer: stamp(1, 0),
        record_count: 2,
        base_offset: Offset(0),
    });
    assert_eq!(table.admit(stamp(1, 2), 1), Ok(Admission::Fresh));
    table.abandon(1);
    assert!(matches!(
        table.admit(stamp(1, 0), 2),
        Ok(Admission::Duplicate { .. })
    ));
}

/// Idle producers expire by the log's progress, and at most producers_max are kept, the
/// least recent forgotten first.
#[test]
fn bounded_by_window_and_count() {
    let mut table = ProducerTable::new(small());
    store(&mut table, stamp(1, 0), 10, 0);
    store(&mut table, stamp(2, 0), 10, 10);
    store(&mut table, stamp(3, 0), 10, 20);
    store(&mut table, stamp(4, 0), 10, 30);
    assert_eq!(table.producer_count(), 3);
    assert!(matches!(
        table.admit(stamp(1, 10), 1),
        Err(SequenceError::UnknownProducer { .. })
    ));
    // Non-idempotent batches move the end: producer 2 (last end 20) falls out of the window
    // of 100 once the end passes 120.
    table.record(StoredBatch {
        producer: ProducerStamp::default(),
        record_count: 81,
        base_offset: Offset(40),
    });
    assert_eq!(table.end_offset(), Offset(121));
    assert!(matches!(
        table.admit(stamp(2, 10), 1),
        Err(SequenceError::UnknownProducer { .. })
    ));
    assert!(matches!(
        table.admit(stamp(3, 0), 10),
        Ok(Admission::Duplicate { .. })
    ));
    assert_eq!(
        ProducerTable::rebuild_from(&small(), Offset(5), Offset(121)),
        Offset(21)
    );
    assert_eq!(
        ProducerTable::rebuild_from(&small(), Offset(50), Offset(121)),
        Offset(50)
    );
}

/// A log written by something else (sequences that restart, overlap or overflow) is learnt
/// without a panic, and the producer's last batch is what counts.
#[test]
fn any_log_is_learnt() {
    let batches = [
        (stamp(9, 0), 2, 0),
        (stamp(9, 7), 1, 2),
        (stamp(9, u64::MAX), 1, 3),
        (stamp(8, 0), 1, 3),
        (stamp(9, 1), 3, 4),
    ];
    let table = ProducerTable::rebuild(
        ProducerTableConfig::default(),
        batches.map(|(producer, record_count, base)| StoredBatch {
            producer,
            record_count,
            base_offset: Offset(base),
        }),
    );
    let mut table = table;
    assert_eq!(table.admit(stamp(9, 4), 1), Ok(Admission::Fresh));
    assert!(matches!(
        table.admit(stamp(8, 0), 1),
        Ok(Admission::Duplicate { .. })
    ));
}

/// A shard in the property test: its log and its table.
struct Shard {
    log: Vec<StoredBatch>,
    table: ProducerTable,
}

impl Shard {
    /// The server's append: admit, store, record; the answer's base offset.
    fn append(&mut self, producer: ProducerStamp, count: u32) -> Result<Offset, SequenceError> {
        match self.table.admit(producer, count)? {
            Admission::Duplicate { base_offset, .. } => Ok(base_offset),
            Admission::NotIdempotent | Admission::Fresh => {
                let base_offset = Offset(self.log.last().map_or(0, |batch| {
                    batch.base_offset.0 + u64::from(batch.record_count)
                }));
                let batch = StoredBatch {
                    producer,
                    record_count: count,
                    base_offset,
                };
                self.log.push(batch);
                self.table.record(batch);
                Ok(base_offset)
            }
        }
    }

    /// A restart: the table is rebuilt from the log's tail.
    fn restart(&mut self, config: ProducerTableConfig) {
        let next = self
            .log
            .last()
            .map_or(Offset(0), |batch| batch.end_offset_for_test());
        let from = ProducerTable::rebuild_from(&config, Offset(0), next);
        let tail = self
            .log
            .iter()
            .filter(|batch| batch.base_offset >= from)
            .copied();
        self.table = ProducerTable::rebuild(config, tail);
    }
}

impl StoredBatch {
    fn end_offset_for_test(&self) -> Offset {
        Offset(self.base_offset.0 + u64::from(self.record_count))
    }
}

/// One step of the schedule.
#[derive(Debug, Clone)]
enum Step {
    /// The network delivers (again) the `pick`-th batch producer `producer` sent (acknowledged
    /// or not: a late copy), and the answer is lost if `lost`.
    Deliver {
        producer: usize,
        pick: usize,
        lost: bool,
    },
    /// A non-idempotent batch of `count` records.
    Other { count: u32 },
    /// The server restarts.
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..3usize, 0..8usize, proptest::bool::weighted(0.3))
            .prop_map(|(producer, pick, lost)| Step::Deliver { producer, pick, lost }),
        1 => (1..20u32).prop_map(|count| Step::Other { count }),
        1 => Just(Step::Restart),
    ]
}

/// A producer of the property test: batches of given sizes, up to `window` of them sent but
/// not acknowledged (sent in order, delivered in any order, any number of times).
struct Client {
    id: u64,
    sizes: Vec<u32>,
    /// Sequence of each batch.
    sequences: Vec<u64>,
    /// Batches acknowledged, with their base offset.
    acked: Vec<Option<Offset>>,
    /// Batches sent so far: 0..sent.
    sent: usize,
}

impl Client {
    fn new(id: u64, sizes: Vec<u32>) -> Client {
        let sequences = sizes
            .iter()
            .scan(0_u64, |next, &size| {
                let sequence = *next;
                *next += u64::from(size);
                Some(sequence)
            })
            .collect();
        let acked = vec![None; sizes.len()];
        Client {
            id,
            sizes,
            sequences,
            acked,
            sent: 0,
        }
    }

    /// Sends the next batch if it is fewer than `window` batches after the oldest one not
    /// acknowledged (a producer's in-flight window: at most [`BATCHES_PER_PRODUCER`], which
    /// the table remembers, so that every batch in flight can still be judged).
    fn send_next(&mut self, window: usize) {
        let oldest = self
            .acked
            .iter()
            .position(Option::is_none)
            .unwrap_or(self.sizes.len());
        if self.sent < self.sizes.len() && self.sent < oldest + window {
            self.sent += 1;
        }
    }

    /// Sends the next batch if the window allows, then delivers the
    /// `pick`-th batch sent (any, acknowledged or not) and learns the answer unless `lost`.
    /// An answer for a batch acknowledged before must name the same offsets.
    fn deliver(&mut self, shard: &mut Shard, pick: usize, lost: bool, window: usize) {
        self.send_next(window);
        if self.sent == 0 {
            return;
        }
        let index = pick % self.sent;
        let answer = shard.append(stamp(self.id, self.sequences[index]), self.sizes[index]);
        if let (Ok(base), Some(first)) = (answer, self.acked[index]) {
            assert_eq!(base, first, "a copy answered with other offsets");
        }
        if let (Ok(base), false) = (answer, lost) {
            self.acked[index] = Some(base);
        }
    }

    /// Delivers the oldest unacknowledged batch, answer kept.
    fn deliver_oldest(&mut self, shard: &mut Shard, window: usize) {
        let oldest = self.acked.iter().position(Option::is_none).unwrap_or(0);
        self.send_next(window);
        if oldest < self.sent {
            let answer = shard.append(stamp(self.id, self.sequences[oldest]), self.sizes[oldest]);
            if let Ok(base) = answer {
                self.acked[oldest] = Some(base);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random retries, reorders and restarts never store a batch twice nor lose one: at the
    /// end (each producer's oldest unacknowledged batch delivered until all are), every batch
    /// of every producer is in the log exactly once, in sequence order, at the offsets its
    /// acknowledgements named.
    #[test]
    fn retries_and_reorders_store_each_batch_once(
        sizes in proptest::collection::vec(proptest::collection::vec(1..6u32, 1..12), 3),
        steps in proptest::collection::vec(step(), 0..120),
        window in 1..=BATCHES_PER_PRODUCER,
    ) {
        let config = ProducerTableConfig { producers_max: 8, window_records: 1_000_000 };
        let mut shard = Shard { log: Vec::new(), table: ProducerTable::new(config) };
        let mut clients: Vec<Client> = sizes
            .into_iter()
            .enumerate()
            .map(|(index, sizes)| Client::new(index as u64 + 1, sizes))
            .collect();
        for step in steps {
            match step {
                Step::Deliver { producer, pick, lost } => {
                    clients[producer].deliver(&mut shard, pick, lost, window);
                }
                Step::Other { count } => {
                    shard.append(ProducerStamp::default(), count).expect("not checked");
                }
                Step::Restart => shard.restart(config),
            }
        }
        for client in &mut clients {
            let mut rounds = 0;
            while client.acked.iter().any(Option::is_none) {
                client.deliver_oldest(&mut shard, window);
                rounds += 1;
                prop_assert!(rounds < 1_000, "producer {} makes no progress", client.id);
            }
        }
        for client in &clients {
            let stored: Vec<&StoredBatch> = shard
                .log
                .iter()
                .filter(|batch| batch.producer.producer_id == client.id)
                .collect();
            prop_assert_eq!(stored.len(), client.sizes.len(), "each batch once");
            for (index, batch) in stored.iter().enumerate() {
                prop_assert_eq!(batch.producer.sequence, client.sequences[index]);
                prop_assert_eq!(Some(batch.base_offset), client.acked[index]);
            }
        }
    }
}
