//! An in-memory [`Transport`] for unit tests: a one-stream "server" that validates batches,
//! checks that every key belongs to the shard (`WrongShard`), refuses sealed shards
//! (`ShardSealed`), assigns dense offsets, and can be told to refuse or fail the next appends,
//! to hold them (to observe in-flight limits) or to delay them.
//!
//! A test double of the network, at unit level only: end-to-end tests run the real server.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use runnel_core::{hash128, BatchView, Limits, Offset, ProducerStamp, Record, ShardId, StreamName};
use runnel_net::protocol::{AppendOk, ErrorCode, ErrorResponse, ShardInfo, ShardStatus};

use crate::error::ClientError;
use crate::routing::tests::shard;
use crate::routing::ShardMap;
use crate::transport::{BoxFuture, Transport};

#[derive(Default)]
struct State {
    shards: Vec<ShardInfo>,
    next_offsets: HashMap<ShardId, u64>,
    cached: Option<Arc<ShardMap>>,
    /// Errors the next appends get, in order, before anything else is checked.
    failures: VecDeque<ClientError>,
    /// Every batch stored: its shard and records.
    stored: Vec<(ShardId, Vec<Record>)>,
    /// The producer stamp of every batch stored.
    stamps: Vec<ProducerStamp>,
    append_calls: usize,
    map_fetches: usize,
    in_flight: usize,
    in_flight_max_seen: usize,
}

/// The in-memory transport.
pub(crate) struct FakeTransport {
    state: Mutex<State>,
    limits: Limits,
    /// When set, each append waits for a permit (tests release them one by one).
    gate: Option<Arc<tokio::sync::Semaphore>>,
    /// Each append takes this long (in the test's virtual time).
    delay: Duration,
}

impl FakeTransport {
    /// A server with one stream of `shards` and the default limits.
    pub fn new(shards: Vec<ShardInfo>) -> FakeTransport {
        FakeTransport::with(shards, Limits::DEFAULT, None, Duration::ZERO)
    }

    /// A server whose appends wait for permits of the returned semaphore.
    pub fn gated(shards: Vec<ShardInfo>) -> (FakeTransport, Arc<tokio::sync::Semaphore>) {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let transport = FakeTransport::with(
            shards,
            Limits::DEFAULT,
            Some(Arc::clone(&gate)),
            Duration::ZERO,
        );
        (transport, gate)
    }

    /// A server with every knob.
    pub fn with(
        shards: Vec<ShardInfo>,
        limits: Limits,
        gate: Option<Arc<tokio::sync::Semaphore>>,
        delay: Duration,
    ) -> FakeTransport {
        FakeTransport {
            state: Mutex::new(State {
                shards,
                ..State::default()
            }),
            limits,
            gate,
            delay,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("no test thread panicked holding the state")
    }

    /// Splits open shard `id`: it is sealed and two open children take its halves.
    pub fn split(&self, id: ShardId) {
        let mut state = self.state();
        let next_id = state.shards.iter().map(|s| s.id.0).max().unwrap_or(0) + 1;
        let parent = state
            .shards
            .iter_mut()
            .find(|s| s.id == id)
            .expect("the shard exists");
        parent.status = ShardStatus::Sealed;
        let (low, high) = parent.key_range.split().expect("splittable");
        state.shards.push(shard(next_id, low, ShardStatus::Open, 0));
        state
            .shards
            .push(shard(next_id + 1, high, ShardStatus::Open, 1));
    }

    /// The next append is refused with `code`.
    pub fn refuse_next(&self, code: ErrorCode) {
        self.fail_next(ClientError::server(
            "Append",
            ErrorResponse::new(code, format!("refused by the fake: {code}")),
        ));
    }

    /// The next append fails with `error`.
    pub fn fail_next(&self, error: ClientError) {
        self.state().failures.push_back(error);
    }

    /// Records stored, over all shards.
    pub fn stored_records(&self) -> usize {
        self.state()
            .stored
            .iter()
            .map(|(_, records)| records.len())
            .sum()
    }

    /// Each stored batch: its shard and its records.
    pub fn stored(&self) -> Vec<(ShardId, Vec<Record>)> {
        self.state().stored.clone()
    }

    /// The producer stamp of the last batch stored (zeros if none).
    pub fn last_stamp(&self) -> ProducerStamp {
        self.state().stamps.last().copied().unwrap_or_default()
    }

    /// Appends attempted, refused ones included.
    pub fn append_calls(&self) -> usize {
        self.state().append_calls
    }

    /// Shard lists fetched.
    pub fn map_fetches(&self) -> usize {
        self.state().map_fetches
    }

    /// The most appends that were in progress at once.
    pub fn in_flight_max_seen(&self) -> usize {
        self.state().in_flight_max_seen
    }

    /// Appends in progress now (waiting at the gate or delayed).
    pub fn in_flight(&self) -> usize {
        self.state().in_flight
    }

    /// Stores `batch` on `shard` as the real server would, or refuses it.
    fn store(&self, shard_id: ShardId, batch: &[u8]) -> Result<AppendOk, ClientError> {
        let mut state = self.state();
        if let Some(error) = state.failures.pop_front() {
            return Err(error);
        }
        let refuse = |code, message: String| {
            Err(ClientError::server(
                "Append",
                ErrorResponse::new(code, message),
            ))
        };
        let Some(info) = state.shards.iter().find(|s| s.id == shard_id).cloned() else {
            return refuse(ErrorCode::UnknownShard, format!("no shard {shard_id}"));
        };
        if info.status == ShardStatus::Sealed {
            return refuse(
                ErrorCode::ShardSealed,
                format!("shard {shard_id} is sealed"),
            );
        }
        let view = match BatchView::validate(batch, &self.limits) {
            Ok(view) => view,
            Err(error) => return refuse(ErrorCode::InvalidBatch, error.to_string()),
        };
        let records: Vec<Record> = match view.records() {
            Ok(records) => records.map(|r| r.to_record()).collect(),
            Err(error) => return refuse(ErrorCode::InvalidBatch, error.to_string()),
        };
        if let Some(key) = records
            .iter()
            .filter_map(|r| r.key.as_deref())
            .find(|key| !info.key_range.contains(hash128(key)))
        {
            return refuse(
                ErrorCode::WrongShard,
                format!("key {key:?} is not in shard {shard_id}"),
            );
        }
        let next = state.next_offsets.entry(shard_id).or_insert(0);
        let base_offset = *next;
        *next += records.len() as u64;
        let last_offset = *next - 1;
        state.stored.push((shard_id, records));
        state.stamps.push(view.header().producer);
        Ok(AppendOk {
            shard: shard_id,
            base_offset: Offset(base_offset),
            last_offset: Offset(last_offset),
        })
    }
}

impl Transport for FakeTransport {
    fn plain(self: Arc<Self>) -> Arc<dyn Transport> {
        self
    }

    fn limits(&self) -> Limits {
        self.limits
    }

    fn shard_map<'a>(
        &'a self,
        stream: &'a StreamName,
        stale: Option<&'a Arc<ShardMap>>,
    ) -> BoxFuture<'a, Result<Arc<ShardMap>, ClientError>> {
        Box::pin(async move {
            let mut state = self.state();
            if let Some(cached) = &state.cached {
                if stale.is_none_or(|stale| !Arc::ptr_eq(stale, cached)) {
                    return Ok(Arc::clone(cached));
                }
            }
            state.map_fetches += 1;
            let map = Arc::new(ShardMap::new(stream.clone(), state.shards.clone())?);
            state.cached = Some(Arc::clone(&map));
            Ok(map)
        })
    }

    fn append<'a>(
        &'a self,
        _stream: &'a StreamName,
        shard: &'a ShardInfo,
        batch: &'a [u8],
    ) -> BoxFuture<'a, Result<AppendOk, ClientError>> {
        Box::pin(async move {
            {
                let mut state = self.state();
                state.append_calls += 1;
                state.in_flight += 1;
                state.in_flight_max_seen = state.in_flight_max_seen.max(state.in_flight);
            }
            if let Some(gate) = &self.gate {
                gate.acquire().await.expect("the gate stays open").forget();
            }
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            let outcome = self.store(shard.id, batch);
            self.state().in_flight -= 1;
            outcome
        })
    }
}
