//! The two operations the producers need from the network, as a trait: the current shards of
//! a stream, and one append to one shard.
//!
//! The client implements it over QUIC (`client.rs`); unit tests implement it in memory
//! (`testing.rs`) to drive the producers' batching, routing and error handling without a
//! server. It is internal: the public types hide it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use runnel_core::{Limits, StreamName};
use runnel_net::protocol::{AppendOk, ShardInfo};

use crate::error::ClientError;
use crate::routing::ShardMap;

/// A boxed future that can move between threads.
pub(crate) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What producers need from the network.
pub(crate) trait Transport: Send + Sync + 'static {
    /// The batch limits appends must keep: the server's record and batch sizes.
    fn limits(&self) -> Limits;

    /// The stream's shards: the cached snapshot, or a fresh one if none is cached or if the
    /// cached one is `stale` (the snapshot whose routing the server just refused).
    fn shard_map<'a>(
        &'a self,
        stream: &'a StreamName,
        stale: Option<&'a Arc<ShardMap>>,
    ) -> BoxFuture<'a, Result<Arc<ShardMap>, ClientError>>;

    /// Appends one encoded batch to `shard`, on the core that owns it. Retries only when no
    /// duplicate can result (see `retry.rs`).
    fn append<'a>(
        &'a self,
        stream: &'a StreamName,
        shard: &'a ShardInfo,
        batch: &'a [u8],
    ) -> BoxFuture<'a, Result<AppendOk, ClientError>>;

    /// The transport without idempotent stamping (itself unless it is the idempotent
    /// producer's wrapper, `idempotence.rs`).
    fn plain(self: Arc<Self>) -> Arc<dyn Transport>;
}
