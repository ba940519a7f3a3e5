//! [`Client`]: the connections to the cluster's nodes (`nodes.rs`), the cache of streams'
//! shards, and the factories of producers and readers. Admin calls are in `admin.rs`.
//!
//! The shard cache holds one [`ShardMap`] per stream used, replaced (never edited) when the
//! server says it is stale; it is bounded by [`SHARD_MAPS_MAX`] streams.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use runnel_core::{BatchHeader, Limits, Offset, ShardId, StreamName};
use runnel_net::protocol::{
    Append, AppendOk, HelloOk, ReadFrom, Request, Response, ShardInfo, ShardOwner,
};

use crate::address::ServerAddress;
use crate::buffered::{BufferedProducer, BufferedProducerConfig};
use crate::connection::Node;
use crate::error::ClientError;
use crate::nodes::Nodes;
use crate::options::ClientOptions;
use crate::producer::Producer;
use crate::reader::Reader;
use crate::retry::Safety;
use crate::routing::ShardMap;
use crate::transport::{BoxFuture, Transport};

/// Most streams whose shards are cached; the cache is emptied when it would grow past this.
const SHARD_MAPS_MAX: usize = 1024;

/// A connection to a Runnel cluster: admin calls, producers, readers and consumers.
///
/// Cheap to clone (the clones share the connections). Connects to the URL's port (core 0 of
/// any node) at [`Client::connect`]; other cores, and the other nodes of a cluster (learned
/// with `ListNodes`), are connected when a request first needs them: each shard's requests go
/// straight to the node and core that own it.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
}

/// What a client's clones, producers and readers share.
pub(crate) struct ClientInner {
    pub(crate) nodes: Nodes,
    limits: Limits,
    shard_maps: Mutex<HashMap<StreamName, Arc<ShardMap>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", self.inner.nodes.hello())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to the node at `url` (`runnel://host:port`, the port of the node's core 0) and
    /// completes the versioned handshake. Other cores are connected when first needed.
    ///
    /// The URL may name several nodes of one cluster (`runnel://host1:6570,host2:6570`): they
    /// are tried in order, each within `connect_timeout_ms`, and the first that answers is the
    /// node the client reached; admin requests turn to the others (and to the nodes the
    /// cluster lists) when it cannot be reached any more. Fails with the last node's error
    /// when none answers.
    ///
    /// Must be called within a tokio runtime (quinn's driver runs on it).
    pub async fn connect(url: &str, options: ClientOptions) -> Result<Client, ClientError> {
        let addresses = ServerAddress::parse_list(url)?;
        options.validate()?;
        let mut last = None;
        let mut reached = None;
        for (index, address) in addresses.iter().enumerate() {
            match Node::connect(address.clone(), &options).await {
                Ok(node) => {
                    reached = Some((index, node));
                    break;
                }
                Err(error) => {
                    tracing::warn!(%address, %error, "cannot reach a node of the URL");
                    last = Some(error);
                }
            }
        }
        let Some((index, node)) = reached else {
            return Err(last.unwrap_or_else(|| ClientError::InvalidUrl {
                url: url.chars().take(256).collect(),
                reason: "no node".into(),
            }));
        };
        let seeds = addresses
            .into_iter()
            .enumerate()
            .filter(|&(i, _)| i != index)
            .map(|(_, address)| address)
            .collect();
        let nodes = Nodes::new(node, seeds, &options);
        let hello = nodes.hello();
        // A batch must fit both the server's batch limit and one frame payload.
        let limits = Limits {
            record_bytes_max: u64::from(hello.record_bytes_max),
            batch_bytes_max: u64::from(hello.batch_bytes_max.min(hello.frame_payload_bytes_max)),
            batch_records_max: Limits::DEFAULT.batch_records_max,
        };
        Ok(Client {
            inner: Arc::new(ClientInner {
                nodes,
                limits,
                shard_maps: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The handshake answer of the node the URL reached: its id, cores, ports, version and
    /// limits.
    pub fn server_info(&self) -> &HelloOk {
        self.inner.nodes.hello()
    }

    /// The URL's node the client reached (the first of the URL's nodes that answered).
    pub fn server_address(&self) -> &ServerAddress {
        self.inner.nodes.bootstrap_address()
    }

    /// The batch limits appends keep: the server's record and batch sizes.
    pub fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// A producer of records to `stream`: one request per `send` (or per shard for
    /// `send_batch`), answered when the records are stored.
    pub fn producer(&self, stream: &str) -> Result<Producer, ClientError> {
        let stream = StreamName::new(stream).map_err(ClientError::stream_name)?;
        Ok(Producer::new(self.transport(), stream))
    }

    /// A producer that batches records per shard (by count, bytes and linger time) in a
    /// background task, bounded in memory. Must be called within a tokio runtime.
    pub fn buffered_producer(
        &self,
        stream: &str,
        config: BufferedProducerConfig,
    ) -> Result<BufferedProducer, ClientError> {
        let stream = StreamName::new(stream).map_err(ClientError::stream_name)?;
        BufferedProducer::start(self.transport(), stream, config)
    }

    /// A reader of one shard of `stream`, from `from` up to `until` (exclusive; `None`: to the
    /// end, or forever with [`Reader::tail`]). Nothing is sent before the first read.
    pub fn reader(
        &self,
        stream: &str,
        shard: ShardId,
        from: ReadFrom,
        until: Option<Offset>,
    ) -> Result<Reader, ClientError> {
        let stream = StreamName::new(stream).map_err(ClientError::stream_name)?;
        Ok(Reader::new(
            Arc::clone(&self.inner),
            stream,
            shard,
            from,
            until,
        ))
    }

    /// Closes every connection. Requests in progress fail; the client (and its clones) can
    /// not be used afterwards.
    pub async fn close(&self) {
        self.inner.nodes.close().await;
    }

    fn transport(&self) -> Arc<dyn Transport> {
        Arc::clone(&self.inner) as Arc<dyn Transport>
    }
}

impl ClientInner {
    fn shard_maps(&self) -> MutexGuard<'_, HashMap<StreamName, Arc<ShardMap>>> {
        // The map holds plain values; a panic elsewhere cannot leave it half-edited.
        self.shard_maps
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets the cached shards of `stream` (after it was deleted).
    pub(crate) fn forget_shards(&self, stream: &StreamName) {
        self.shard_maps().remove(stream);
    }

    /// The cached shards of `stream`, or fresh ones when none are cached or the cached ones
    /// are `stale`.
    pub(crate) async fn current_shards(
        &self,
        stream: &StreamName,
        stale: Option<&Arc<ShardMap>>,
    ) -> Result<Arc<ShardMap>, ClientError> {
        if let Some(cached) = self.shard_maps().get(stream) {
            if stale.is_none_or(|stale| !Arc::ptr_eq(stale, cached)) {
                return Ok(Arc::clone(cached));
            }
        }
        let info = self.describe(stream).await?;
        let map = Arc::new(ShardMap::new(stream.clone(), info.shards)?);
        let mut maps = self.shard_maps();
        if maps.len() >= SHARD_MAPS_MAX {
            maps.clear();
        }
        maps.insert(stream.clone(), Arc::clone(&map));
        Ok(map)
    }

    /// Sends a request about one shard to the core that owns it, refreshing the shards and
    /// trying again when the server says another core owns it, or its node cannot be
    /// connected to (at most a few times).
    pub(crate) async fn call_shard(
        &self,
        stream: &StreamName,
        shard: ShardId,
        request: &Request,
        safety: Safety,
    ) -> Result<Response, ClientError> {
        let mut map = self.current_shards(stream, None).await?;
        let mut reroutes = 0;
        loop {
            let owner = self.owner_of(&map, shard);
            match self.nodes.call(owner, request, &[], safety).await {
                Err(error)
                    if (error.is_routing() || error.is_connect_failure())
                        && reroutes < crate::append::REROUTES_MAX =>
                {
                    reroutes += 1;
                    map = self.current_shards(stream, Some(&map)).await?;
                }
                outcome => return outcome,
            }
        }
    }

    /// The node and core owning `shard`; the admin node and core for a shard not listed (the
    /// server then answers `UnknownShard`).
    pub(crate) fn owner_of(&self, map: &ShardMap, shard: ShardId) -> ShardOwner {
        map.shard(shard).map_or(self.nodes.admin(), owner)
    }
}

impl Transport for ClientInner {
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
        Box::pin(self.current_shards(stream, stale))
    }

    fn append<'a>(
        &'a self,
        stream: &'a StreamName,
        shard: &'a ShardInfo,
        batch: &'a [u8],
    ) -> BoxFuture<'a, Result<AppendOk, ClientError>> {
        Box::pin(async move {
            let request = Request::Append(Append {
                stream: stream.clone(),
                shard: shard.id,
            });
            // A batch an idempotent producer stamped is recognised by the server if it arrives
            // twice, so it may be sent again whatever happened to the first attempt.
            let stamped =
                BatchHeader::decode(batch).is_ok_and(|header| header.producer.producer_id != 0);
            let safety = if stamped {
                Safety::Deduplicated
            } else {
                Safety::AtMostOnce
            };
            match self
                .nodes
                .call(owner(shard), &request, batch, safety)
                .await?
            {
                Response::AppendOk(ok) => Ok(ok),
                other => Err(ClientError::UnexpectedResponse {
                    request: "Append",
                    response: other.kind().into(),
                }),
            }
        })
    }
}

/// Where a shard's requests go: the node and core metadata placed it on.
pub(crate) fn owner(shard: &ShardInfo) -> ShardOwner {
    ShardOwner {
        node: shard.node,
        core: shard.core,
    }
}
