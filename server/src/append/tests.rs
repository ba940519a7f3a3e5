//! The append service called directly, not through QUIC, on a real core: core 0 of node 1 in
//! a metadata state of two nodes with one core each, its shard logs in real files under a
//! temporary directory. Each refusal is asserted as its typed error, and as appending nothing.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use runnel_core::batch::AlignedBytes;
use runnel_core::{
    BatchBuilder, BatchError, Limits, Record, ShardId, StreamName, BATCH_HEADER_LEN,
};
use runnel_net::protocol::{ErrorCode, ErrorResponse};
use runnel_replicate::metadata::{
    Applied, Command, Durability, Node, NodeId, Placement, Shard, StreamConfig,
};
use runnel_segment::runtime::channel::Mesh;

use super::{AppendError, AppendRequest, Appended};
use crate::cluster::ClusterView;
use crate::config::NodeConfig;
use crate::core::{Core, CoreMessage};
use crate::ownership::ShardError;
use crate::stop::NodeStop;

/// Node 1's core 0, its data directory, and the stream `orders` of two shards: one placed
/// here, one on node 2.
pub(crate) struct Fixture {
    pub core: Rc<Core>,
    _dir: tempfile::TempDir,
    pub stream: StreamName,
    pub here: Shard,
    elsewhere: Shard,
    next_index: u64,
}

/// Runs `test` on a fresh glommio executor (one test per executor, as a node's core runs).
pub(crate) fn on_a_core<F, Fut>(test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    runnel_segment::runtime::run("append-test", 1, test);
}

impl Fixture {
    pub async fn new(durability: Durability) -> Fixture {
        Fixture::replicated(durability, 1).await
    }

    /// The fixture with a stream of `replication_factor` replicas per shard.
    pub async fn replicated(durability: Durability, replication_factor: u8) -> Fixture {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = NodeConfig {
            node_id: 1,
            data_dir: dir.path().to_path_buf(),
            cores: 1,
            ..NodeConfig::default()
        };
        let (senders, _receivers) = Mesh::<CoreMessage>::full(1, 16)
            .join()
            .await
            .expect("a mesh of one core");
        let core = Rc::new(Core::new(
            0,
            Arc::new(config),
            Instant::now(),
            senders,
            Arc::new(NodeStop::default()),
            Arc::new(ClusterView::default()),
        ));
        let stream = StreamName::new("orders").expect("a valid name");
        let mut next_index = 1;
        for id in [1, 2] {
            let node = Node {
                id: NodeId(id),
                cores: 1,
                address: format!("127.0.0.1:{}", 7000 + id),
            };
            apply(&core, &mut next_index, Command::RegisterNode { node }).await;
        }
        let config = StreamConfig {
            name: stream.clone(),
            shard_count: 2,
            replication_factor,
            retention_ms: 86_400_000,
            durability,
        };
        let create = Command::CreateStream {
            config,
            now_ms: 1,
            avoid: Vec::new(),
        };
        let created = apply(&core, &mut next_index, create).await;
        let Applied::StreamCreated { shards, .. } = created else {
            panic!("the stream is created: {created:?}");
        };
        let (here, elsewhere): (Vec<Shard>, Vec<Shard>) = shards
            .into_iter()
            .partition(|shard| shard.placement.node == NodeId(1));
        let here = here.into_iter().next().expect("a shard on node 1");
        let elsewhere = elsewhere.into_iter().next().expect("a shard on node 2");
        core.create_logs(std::slice::from_ref(&here))
            .await
            .expect("the local shard's log is created");
        Fixture {
            core,
            _dir: dir,
            stream,
            here,
            elsewhere,
            next_index,
        }
    }

    /// Applies `command` at the next metadata index.
    async fn apply(&mut self, command: Command) -> Applied {
        apply(&self.core, &mut self.next_index, command).await
    }

    /// Appends `batch` to `shard` of the stream as a batch built in-process.
    pub async fn append(&self, shard: ShardId, batch: &[u8]) -> Result<Appended, AppendError> {
        self.core.append_batch(&self.stream, shard, batch).await
    }

    /// The offset the local shard's log gives its next record.
    pub async fn next_offset(&self) -> u64 {
        let owned = self
            .core
            .owned_log(&self.stream, self.here.id)
            .await
            .expect("the local shard is served here");
        owned.log.next_offset().0
    }

    /// A key that hashes into the local shard's range (`inside`) or out of it.
    pub fn key(&self, inside: bool) -> Vec<u8> {
        (0..10_000)
            .map(|i| format!("key-{i}").into_bytes())
            .find(|key| self.here.key_range.contains_key(key) == inside)
            .expect("two shards split the key space in halves")
    }

    pub async fn close(self) {
        self.core.close().await;
    }
}

/// Applies `command` at metadata index `next_index` (then counts it on), as a core does once
/// the command is committed.
async fn apply(core: &Core, next_index: &mut u64, command: Command) -> Applied {
    let index = *next_index;
    *next_index += 1;
    core.apply(index, &command)
        .await
        .expect("nothing fatal")
        .expect("the command applies")
}

/// A batch of records with these keys.
fn batch(keys: &[&[u8]]) -> AlignedBytes {
    let mut builder = BatchBuilder::new();
    for key in keys {
        builder.push(Record::new(b"value".to_vec()).with_key(key.to_vec()));
    }
    builder.finish(&Limits::DEFAULT).expect("a valid batch")
}

#[test]
fn an_append_to_an_owned_shard_is_acknowledged_durable_with_dense_offsets() {
    on_a_core(|| async {
        let fixture = Fixture::new(Durability::Fsync).await;
        let (a, b) = (fixture.key(true), fixture.key(true));
        let first = fixture
            .append(fixture.here.id, &batch(&[&a, &b]))
            .await
            .expect("appended");
        assert_eq!(
            (first.shard, first.base_offset.0, first.last_offset.0),
            (fixture.here.id, 0, 1)
        );
        let second = fixture
            .append(fixture.here.id, &batch(&[&a]))
            .await
            .expect("appended");
        assert_eq!((second.base_offset.0, second.last_offset.0), (2, 2));
        // `fsync` durability: acknowledged means durable.
        let owned = fixture
            .core
            .owned_log(&fixture.stream, fixture.here.id)
            .await
            .expect("served here");
        assert!(owned.log.durable_offset().0 >= 3);
        drop(owned);
        fixture.close().await;
    });
}

#[test]
fn a_batch_in_chunks_split_anywhere_appends_like_one_built_in_process() {
    on_a_core(|| async {
        let fixture = Fixture::new(Durability::Memory).await;
        let key = fixture.key(true);
        let bytes = batch(&[&key, &key, &key]);
        // Split inside the header, inside the payload, and a trailing empty chunk, as QUIC
        // may deliver them.
        let chunks: [&[u8]; 4] = [
            &bytes[..7],
            &bytes[7..BATCH_HEADER_LEN + 5],
            &bytes[BATCH_HEADER_LEN + 5..],
            &[],
        ];
        let appended = fixture
            .core
            .append(AppendRequest {
                stream: &fixture.stream,
                shard: fixture.here.id,
                batch: &chunks,
            })
            .await
            .expect("appended");
        assert_eq!((appended.base_offset.0, appended.last_offset.0), (0, 2));
        let whole = fixture
            .append(fixture.here.id, &bytes)
            .await
            .expect("appended");
        assert_eq!((whole.base_offset.0, whole.last_offset.0), (3, 5));
        fixture.close().await;
    });
}

#[test]
fn a_shard_of_another_node_is_refused_naming_its_owner() {
    on_a_core(|| async {
        let fixture = Fixture::new(Durability::Fsync).await;
        let key = fixture.key(false);
        let refusal = fixture
            .append(fixture.elsewhere.id, &batch(&[&key]))
            .await
            .expect_err("node 2 owns the shard");
        let AppendError::Shard(ShardError::NotOwner { shard, owner }) = &refusal else {
            panic!("expected NotOwner, got {refusal:?}");
        };
        assert_eq!(*shard, fixture.elsewhere.id);
        assert_eq!(
            *owner,
            Placement {
                node: NodeId(2),
                core: 0
            }
        );
        // The wire error names the owner, so that a client can go there.
        let wire = ErrorResponse::from(refusal);
        assert_eq!(wire.code, ErrorCode::NotOwner);
        let owner = wire.owner.expect("the owner is named");
        assert_eq!((owner.node, owner.core), (2, 0));
        // A corrupt batch to the wrong owner is still answered NotOwner: the owner is checked
        // before the bytes are looked at.
        let mut corrupt = batch(&[&key]).to_vec();
        corrupt[BATCH_HEADER_LEN + 1] ^= 0xff;
        let refusal = fixture
            .append(fixture.elsewhere.id, &corrupt)
            .await
            .expect_err("node 2 owns the shard");
        assert!(
            matches!(refusal, AppendError::Shard(ShardError::NotOwner { .. })),
            "{refusal:?}"
        );
        fixture.close().await;
    });
}

#[test]
fn unknown_streams_and_shards_are_refused_as_such() {
    on_a_core(|| async {
        let fixture = Fixture::new(Durability::Fsync).await;
        let bytes = batch(&[b"k"]);
        let other = StreamName::new("payments").expect("a valid name");
        let refusal = fixture
            .core
            .append_batch(&other, fixture.here.id, &bytes)
            .await
            .expect_err("no such stream");
        assert!(
            matches!(&refusal, AppendError::Shard(ShardError::UnknownStream { stream }) if *stream == other),
            "{refusal:?}"
        );
        assert_eq!(ErrorResponse::from(refusal).code, ErrorCode::UnknownStream);
        let refusal = fixture
            .append(ShardId(999), &bytes)
            .await
            .expect_err("no such shard");
        assert!(
            matches!(
                refusal,
                AppendError::Shard(ShardError::UnknownShard {
                    shard: ShardId(999),
                    ..
                })
            ),
            "{refusal:?}"
        );
        fixture.close().await;
    });
}

#[test]
fn a_sealed_shard_refuses_appends() {
    on_a_core(|| async {
        let mut fixture = Fixture::new(Durability::Fsync).await;
        let key = fixture.key(true);
        fixture
            .append(fixture.here.id, &batch(&[&key]))
            .await
            .expect("appended while open");
        let split = Command::SplitShard {
            shard: fixture.here.id,
            now_ms: 2,
        };
        fixture.apply(split).await;
        let refusal = fixture
            .append(fixture.here.id, &batch(&[&key]))
            .await
            .expect_err("sealed by the split");
        assert!(
            matches!(refusal, AppendError::Sealed { shard } if shard == fixture.here.id),
            "{refusal:?}"
        );
        assert_eq!(ErrorResponse::from(refusal).code, ErrorCode::ShardSealed);
        assert_eq!(fixture.next_offset().await, 1, "nothing more was appended");
        fixture.close().await;
    });
}

#[test]
fn a_record_keyed_outside_the_shard_refuses_the_whole_batch() {
    on_a_core(|| async {
        let fixture = Fixture::new(Durability::Fsync).await;
        let (inside, outside) = (fixture.key(true), fixture.key(false));
        let refusal = fixture
            .append(fixture.here.id, &batch(&[&inside, &outside, &inside]))
            .await
            .expect_err("record 1 belongs to the other shard");
        assert!(
            matches!(
                &refusal,
                AppendError::WrongShard { shard, record: 1, .. } if *shard == fixture.here.id
            ),
            "{refusal:?}"
        );
        assert_eq!(ErrorResponse::from(refusal).code, ErrorCode::WrongShard);
        assert_eq!(
            fixture.next_offset().await,
            0,
            "no record of it was appended"
        );
        let appended = fixture
            .append(fixture.here.id, &batch(&[&inside]))
            .await
            .expect("the next batch takes offset 0");
        assert_eq!(appended.base_offset.0, 0);
        fixture.close().await;
    });
}

#[test]
fn a_corrupt_batch_is_refused_with_its_batch_error() {
    on_a_core(|| async {
        let fixture = Fixture::new(Durability::Fsync).await;
        let key = fixture.key(true);
        let mut corrupt = batch(&[&key]).to_vec();
        corrupt[BATCH_HEADER_LEN + 1] ^= 0xff;
        let refusal = fixture
            .append(fixture.here.id, &corrupt)
            .await
            .expect_err("the payload CRC does not match");
        assert!(
            matches!(
                refusal,
                AppendError::Batch(BatchError::PayloadChecksumMismatch { .. })
            ),
            "{refusal:?}"
        );
        assert_eq!(ErrorResponse::from(refusal).code, ErrorCode::InvalidBatch);
        let truncated = batch(&[&key]);
        let refusal = fixture
            .append(fixture.here.id, &truncated[..truncated.len() - 16])
            .await
            .expect_err("the batch is cut short");
        assert!(
            matches!(refusal, AppendError::Batch(BatchError::Truncated { .. })),
            "{refusal:?}"
        );
        assert_eq!(fixture.next_offset().await, 0, "nothing was appended");
        fixture.close().await;
    });
}

/// Regression: bytes after the batch in an append's payload (a second batch, say) were
/// ignored, and the append acknowledged with the first batch's offsets: the rest was lost
/// while the client saw success.
#[test]
fn bytes_after_the_batch_refuse_the_append() {
    on_a_core(|| async {
        let fixture = Fixture::new(Durability::Fsync).await;
        let key = fixture.key(true);
        let one = batch(&[&key]);
        let mut two = one.to_vec();
        two.extend_from_slice(&one);
        let refusal = fixture
            .append(fixture.here.id, &two)
            .await
            .expect_err("two batches in one append");
        assert!(
            matches!(
                refusal,
                AppendError::NotOneBatch { batch_bytes, payload_bytes }
                    if batch_bytes == one.len() && payload_bytes == 2 * one.len()
            ),
            "{refusal:?}"
        );
        assert_eq!(ErrorResponse::from(refusal).code, ErrorCode::InvalidBatch);
        assert_eq!(fixture.next_offset().await, 0, "nothing was appended");
        fixture.close().await;
    });
}

/// Issue 11, Jepsen seed 2 at R = 3: a restarted sequencer took appends in the moments before
/// its replica's host opened, straight into the log at offsets no sequencer assigned,
/// acknowledged by this node alone; the host then restored a log that moved under it
/// ("the tail does not end the log"), and the shard's replicas disagreed. Until the host is
/// open, a replicated shard refuses appends as retriable and stores nothing.
#[test]
fn a_replicated_shard_without_its_host_refuses_appends_and_stores_nothing() {
    on_a_core(|| async {
        let fixture = Fixture::replicated(Durability::Fsync, 2).await;
        assert!(fixture.here.replicas.len() >= 2, "{:?}", fixture.here);
        let key = fixture.key(true);
        let refused = fixture.append(fixture.here.id, &batch(&[&key])).await;
        assert!(
            matches!(
                refused,
                Err(AppendError::Replication(
                    crate::replicated::ReplicationError::Recovering { shard }
                )) if shard == fixture.here.id
            ),
            "{refused:?}"
        );
        assert_eq!(fixture.next_offset().await, 0, "nothing stored");
        fixture.close().await;
    });
}
