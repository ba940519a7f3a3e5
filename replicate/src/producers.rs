//! [`ProducerTable`]: what one shard remembers of its idempotent producers, so that a retried
//! batch is never stored twice (ARCHITECTURE §6, contract point 4).
//!
//! Every batch carries a [`ProducerStamp`] (producer id, sequence of its first record). A
//! producer numbers its records 0, 1, 2, … per shard; a batch of `n` records starting at `s`
//! is followed by one starting at `s + n`. The table is fed every stored batch of its shard in
//! log order ([`ProducerTable::record`]) and asked, before a batch is stored, what it is
//! ([`ProducerTable::admit`]): fresh (store it), a duplicate (answer with the offsets it got
//! the first time, store nothing), or a refusal (a gap, a sequence too old to judge, a producer
//! it does not know, an attempt while the same producer's previous batch is still being
//! stored). Producer id 0 means "not idempotent": never checked.
//!
//! Bounds: per producer the last [`BATCHES_PER_PRODUCER`] batches; at most
//! `producers_max` producers (the one whose last batch is oldest is forgotten first); a
//! producer whose last batch lies more than `window_records` offsets behind the shard's end is
//! forgotten (idle expiry, measured in the log's own progress, not in wall-clock time). The
//! table is therefore a function of the last `window_records` records of the log: rebuilding
//! it from them ([`ProducerTable::rebuild`]) after a restart or a failover gives the table the
//! live shard had (up to the in-flight marks, which a restart clears anyway).
//!
//! Soundness does not depend on remembering everything: a table that knows less (forgot a
//! producer, or some of its batches) refuses more, never answers "duplicate" for a batch it
//! did not store, and never stores a batch it remembers.
//!
//! Must never: touch a clock, a file or a socket. No input (from the network or the log)
//! makes it panic.

use std::collections::{BTreeMap, HashMap, VecDeque};

use runnel_core::{Offset, ProducerStamp};

/// Batches remembered per producer: retries of any of a producer's last five batches are
/// recognised (Kafka keeps as many, matching its five in-flight requests per connection).
pub const BATCHES_PER_PRODUCER: usize = 5;

/// The bounds of a [`ProducerTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerTableConfig {
    /// Most producers remembered per shard; beyond it, the producer whose last batch is oldest
    /// is forgotten. Default 4,096 (about 1 MiB per shard when full).
    pub producers_max: usize,
    /// A producer whose last batch ends more than this many records before the shard's end is
    /// forgotten; also how far back a rebuild reads. Default 1,000,000.
    pub window_records: u64,
}

impl Default for ProducerTableConfig {
    fn default() -> ProducerTableConfig {
        ProducerTableConfig {
            producers_max: 4_096,
            window_records: 1_000_000,
        }
    }
}

/// A stored batch, as the table learns it: its stamp, its record count and where it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredBatch {
    /// The batch's producer id and first sequence (zeros: not idempotent).
    pub producer: ProducerStamp,
    /// Its records, at least 1.
    pub record_count: u32,
    /// The offset of its first record.
    pub base_offset: Offset,
}

/// What to do with a batch, by its stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Producer id 0: not idempotent, store it without any check (and record it after).
    NotIdempotent,
    /// The producer's next batch: store it, then [`ProducerTable::record`] it (or
    /// [`ProducerTable::abandon`] if it could not be stored). The producer is marked in flight
    /// until then.
    Fresh,
    /// Stored before: answer with these offsets, store nothing.
    Duplicate {
        /// The offset its first record got.
        base_offset: Offset,
        /// The offset its last record got.
        last_offset: Offset,
    },
}

/// Why a stamped batch is refused. Nothing is stored in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SequenceError {
    /// The sequence skips ahead of the producer's next one: storing it would leave a gap
    /// (records the producer sent before were not stored).
    #[error("producer {producer_id}: sequence {found} skips ahead, the next is {expected}")]
    OutOfOrder {
        /// The producer.
        producer_id: u64,
        /// The sequence the producer's next batch must start at.
        expected: u64,
        /// The sequence the batch starts at.
        found: u64,
    },
    /// The producer is not known (new with a sequence other than 0, or forgotten: idle past
    /// the window, or displaced by `producers_max`): whether this batch was stored cannot be
    /// told.
    #[error(
        "producer {producer_id} is not known here (sequence {sequence}): expired or never seen"
    )]
    UnknownProducer {
        /// The producer.
        producer_id: u64,
        /// The sequence the batch starts at.
        sequence: u64,
    },
    /// The sequence is older than every batch remembered of the producer: whether it was
    /// stored cannot be told.
    #[error("producer {producer_id}: sequence {sequence} is older than the oldest remembered ({oldest})")]
    TooOld {
        /// The producer.
        producer_id: u64,
        /// The sequence the batch starts at.
        sequence: u64,
        /// The first sequence of the oldest batch remembered.
        oldest: u64,
    },
    /// A batch with this sequence was stored with other records (another count, or the
    /// sequence falls inside a stored batch): the producer reused a sequence.
    #[error("producer {producer_id}: sequence {sequence} with {record_count} records does not match a stored batch")]
    Mismatch {
        /// The producer.
        producer_id: u64,
        /// The sequence the batch starts at.
        sequence: u64,
        /// The batch's records.
        record_count: u32,
    },
    /// The producer's previous batch is still being stored: retry when it is done.
    #[error("producer {producer_id} has a batch being stored: retry")]
    InFlight {
        /// The producer.
        producer_id: u64,
    },
    /// `sequence + record_count` overflows a u64.
    #[error("producer {producer_id}: sequence {sequence} + {record_count} records overflows")]
    Overflow {
        /// The producer.
        producer_id: u64,
        /// The sequence the batch starts at.
        sequence: u64,
        /// The batch's records.
        record_count: u32,
    },
}

/// One remembered batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Remembered {
    sequence: u64,
    record_count: u32,
    base_offset: Offset,
}

impl Remembered {
    fn next_sequence(&self) -> u64 {
        // Recorded batches passed `admit` (no overflow) or came from the log, where
        // `record` refuses to remember an overflowing one.
        self.sequence + u64::from(self.record_count)
    }

    fn end_offset(&self) -> Offset {
        Offset(
            self.base_offset
                .0
                .saturating_add(u64::from(self.record_count)),
        )
    }
}

#[derive(Debug, Default)]
struct Producer {
    /// The last batches, oldest first, consecutive in sequence; at most
    /// [`BATCHES_PER_PRODUCER`].
    batches: VecDeque<Remembered>,
    /// A batch admitted as fresh is being stored.
    in_flight: bool,
}

/// What one shard remembers of its idempotent producers: see the module documentation.
#[derive(Debug)]
pub struct ProducerTable {
    config: ProducerTableConfig,
    producers: HashMap<u64, Producer>,
    /// Producers with remembered batches by the end offset of their last one (unique: batches
    /// do not overlap), oldest first: the order of expiry.
    by_last_end: BTreeMap<Offset, u64>,
    /// The end of the highest batch recorded: the shard's end as far as the table knows.
    end: Offset,
}

impl ProducerTable {
    /// An empty table.
    pub fn new(config: ProducerTableConfig) -> ProducerTable {
        assert!(config.producers_max > 0, "a table remembers some producer");
        ProducerTable {
            config,
            producers: HashMap::new(),
            by_last_end: BTreeMap::new(),
            end: Offset(0),
        }
    }

    /// The table of a log whose batches, in log order, are `batches`: the one function that
    /// both a restarted node and a new sequencer after failover call over the batches from
    /// [`ProducerTable::rebuild_from`] to the log's end.
    pub fn rebuild(
        config: ProducerTableConfig,
        batches: impl IntoIterator<Item = StoredBatch>,
    ) -> ProducerTable {
        let mut table = ProducerTable::new(config);
        for batch in batches {
            table.record(batch);
        }
        table
    }

    /// Where a rebuild of a log holding `[start, next)` starts reading: the last
    /// `window_records` records (anything earlier would be expired at once).
    pub fn rebuild_from(config: &ProducerTableConfig, start: Offset, next: Offset) -> Offset {
        Offset(next.0.saturating_sub(config.window_records).max(start.0))
    }

    /// The table's bounds.
    pub fn config(&self) -> &ProducerTableConfig {
        &self.config
    }

    /// Producers remembered.
    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    /// The end of the highest batch recorded.
    pub fn end_offset(&self) -> Offset {
        self.end
    }

    /// What to do with a batch of `record_count` records stamped `stamp`, before storing it.
    /// [`Admission::Fresh`] marks the producer in flight: the caller must then
    /// [`record`](Self::record) or [`abandon`](Self::abandon) the batch.
    pub fn admit(
        &mut self,
        stamp: ProducerStamp,
        record_count: u32,
    ) -> Result<Admission, SequenceError> {
        let ProducerStamp {
            producer_id,
            sequence,
        } = stamp;
        if producer_id == 0 {
            return Ok(Admission::NotIdempotent);
        }
        if sequence.checked_add(u64::from(record_count)).is_none() {
            return Err(SequenceError::Overflow {
                producer_id,
                sequence,
                record_count,
            });
        }
        let Some(producer) = self.producers.get_mut(&producer_id) else {
            if sequence != 0 {
                return Err(SequenceError::UnknownProducer {
                    producer_id,
                    sequence,
                });
            }
            self.producers.insert(
                producer_id,
                Producer {
                    batches: VecDeque::new(),
                    in_flight: true,
                },
            );
            return Ok(Admission::Fresh);
        };
        if producer.in_flight {
            return Err(SequenceError::InFlight { producer_id });
        }
        let (Some(oldest), Some(last)) = (producer.batches.front(), producer.batches.back()) else {
            // Only an in-flight first batch leaves a producer without batches, and abandoning
            // it removes the producer.
            unreachable!("a producer that is not in flight has remembered batches");
        };
        let expected = last.next_sequence();
        if sequence == expected {
            producer.in_flight = true;
            return Ok(Admission::Fresh);
        }
        if sequence > expected {
            return Err(SequenceError::OutOfOrder {
                producer_id,
                expected,
                found: sequence,
            });
        }
        if sequence < oldest.sequence {
            return Err(SequenceError::TooOld {
                producer_id,
                sequence,
                oldest: oldest.sequence,
            });
        }
        match producer
            .batches
            .iter()
            .find(|batch| batch.sequence == sequence && batch.record_count == record_count)
        {
            Some(batch) => Ok(Admission::Duplicate {
                base_offset: batch.base_offset,
                last_offset: Offset(batch.end_offset().0 - 1),
            }),
            None => Err(SequenceError::Mismatch {
                producer_id,
                sequence,
                record_count,
            }),
        }
    }

    /// A batch admitted as fresh was not stored: its producer is no longer in flight.
    pub fn abandon(&mut self, producer_id: u64) {
        let forget = match self.producers.get_mut(&producer_id) {
            Some(producer) => {
                producer.in_flight = false;
                producer.batches.is_empty()
            }
            None => false,
        };
        if forget {
            self.producers.remove(&producer_id);
        }
    }

    /// Learns a stored batch (every batch of the shard, idempotent or not, in log order; live
    /// appends of different producers may be recorded slightly out of order). Total: a batch
    /// that does not follow its producer's last one (possible in a log written by another
    /// client) replaces what was remembered of that producer.
    pub fn record(&mut self, batch: StoredBatch) {
        let StoredBatch {
            producer: stamp,
            record_count,
            base_offset,
        } = batch;
        let batch_end = Offset(base_offset.0.saturating_add(u64::from(record_count)));
        self.end = self.end.max(batch_end);
        if stamp.producer_id != 0 && record_count > 0 {
            self.remember(stamp, record_count, base_offset);
        }
        self.expire();
    }

    fn remember(&mut self, stamp: ProducerStamp, record_count: u32, base_offset: Offset) {
        let producer = self.producers.entry(stamp.producer_id).or_default();
        producer.in_flight = false;
        if let Some(last) = producer.batches.back() {
            self.by_last_end.remove(&last.end_offset());
            let follows =
                last.next_sequence() == stamp.sequence && last.end_offset() <= base_offset;
            if !follows {
                producer.batches.clear();
            }
        }
        if stamp
            .sequence
            .checked_add(u64::from(record_count))
            .is_none()
        {
            // Not from `admit` (it refuses these): a log written by something else. Nothing
            // can follow it, so remember nothing of the producer.
            self.producers.remove(&stamp.producer_id);
            return;
        }
        let remembered = Remembered {
            sequence: stamp.sequence,
            record_count,
            base_offset,
        };
        producer.batches.push_back(remembered);
        if producer.batches.len() > BATCHES_PER_PRODUCER {
            producer.batches.pop_front();
        }
        if let Some(displaced) = self
            .by_last_end
            .insert(remembered.end_offset(), stamp.producer_id)
        {
            // Two producers' batches ending at the same offset: only a log written by
            // something else (offsets overlap). Keep the newer.
            if displaced != stamp.producer_id {
                self.producers.remove(&displaced);
            }
        }
    }

    /// Forgets producers past the window or beyond `producers_max`, oldest first.
    fn expire(&mut self) {
        let horizon = self.end.0.saturating_sub(self.config.window_records);
        while let Some((&last_end, &producer_id)) = self.by_last_end.first_key_value() {
            let idle = last_end.0 < horizon;
            let crowded = self.by_last_end.len() > self.config.producers_max;
            if !idle && !crowded {
                break;
            }
            self.by_last_end.remove(&last_end);
            self.producers.remove(&producer_id);
        }
        assert!(
            self.by_last_end.len() <= self.config.producers_max,
            "the table holds at most producers_max producers with batches"
        );
    }
}

#[cfg(test)]
mod tests;
