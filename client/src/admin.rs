//! Admin calls of [`Client`]: create, list, describe and delete streams, list shards, trim a
//! shard, the node's status, the cluster's nodes and its founding. Lists are followed page by page until the server says there
//! is no more, within [`LIST_PAGES_MAX`] pages.
//!
//! Retries: describe, list, status and trim are idempotent and retried after any transient
//! failure; create, delete and cluster init are not retried once sent (a second attempt could answer
//! `StreamExists` or `UnknownStream` for the first one's success), so a failure after sending
//! is [`ClientError::OutcomeUnknown`].

use std::time::Duration;

use runnel_core::key::KEY_RANGE_SPLIT_MAX;
use runnel_core::{Offset, ShardId, StreamName};
use runnel_net::protocol::{
    CreateStream, DeleteStream, DescribeStream, Durability, ListShards, ListStreams, NodeInfo,
    NodeStatus, Request, Response, ShardInfo, StreamInfo, Trim,
};

use crate::client::{Client, ClientInner};
use crate::error::ClientError;
use crate::retry::Safety;

/// Most pages one list call follows: a server that always says "more" cannot keep us forever.
pub(crate) const LIST_PAGES_MAX: usize = 100_000;

/// What [`Client::create_stream`] creates.
///
/// ```
/// use std::time::Duration;
/// use runnel_client::{Durability, StreamSpec};
///
/// let spec = StreamSpec::new("orders", Durability::Fsync)
///     .shard_count(8)
///     .replication_factor(3)
///     .retention(Duration::from_secs(3 * 24 * 3600));
/// assert_eq!(spec.shard_count, 8);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSpec {
    /// The stream's name: 1 to 255 characters of `[A-Za-z0-9_.-]`, not starting with `-`
    /// or `.`.
    pub name: String,
    /// Shards to create, dividing the key-hash space evenly: 1 to 65 536. Default 1.
    pub shard_count: u32,
    /// Replicas of each shard, at least 1. Default 1.
    pub replication_factor: u8,
    /// How long records are kept (whole milliseconds, at least 1). Default 7 days.
    pub retention: Duration,
    /// When appends are acknowledged. Always chosen explicitly.
    pub durability: Durability,
}

impl StreamSpec {
    /// The default retention: 7 days.
    pub const RETENTION_DEFAULT: Duration = Duration::from_secs(7 * 24 * 3600);

    /// A stream of one shard, one replica and 7 days of retention, with `durability`.
    pub fn new(name: impl Into<String>, durability: Durability) -> StreamSpec {
        StreamSpec {
            name: name.into(),
            shard_count: 1,
            replication_factor: 1,
            retention: StreamSpec::RETENTION_DEFAULT,
            durability,
        }
    }

    /// The same spec with `shard_count` shards.
    pub fn shard_count(mut self, shard_count: u32) -> StreamSpec {
        self.shard_count = shard_count;
        self
    }

    /// The same spec with `replication_factor` replicas.
    pub fn replication_factor(mut self, replication_factor: u8) -> StreamSpec {
        self.replication_factor = replication_factor;
        self
    }

    /// The same spec with `retention`.
    pub fn retention(mut self, retention: Duration) -> StreamSpec {
        self.retention = retention;
        self
    }

    /// The request, after checking every field.
    fn to_request(&self) -> Result<CreateStream, ClientError> {
        let invalid = |what, reason: &str| ClientError::InvalidArgument {
            what,
            reason: reason.to_owned(),
        };
        let name = StreamName::new(self.name.clone()).map_err(ClientError::stream_name)?;
        if self.shard_count == 0 || u64::from(self.shard_count) > KEY_RANGE_SPLIT_MAX {
            return Err(invalid("shard count", "must be 1 to 65536"));
        }
        if self.replication_factor == 0 {
            return Err(invalid("replication factor", "must be at least 1"));
        }
        let retention_ms = u64::try_from(self.retention.as_millis())
            .map_err(|_| invalid("retention", "too long"))?;
        if retention_ms == 0 {
            return Err(invalid("retention", "must be at least 1 ms"));
        }
        Ok(CreateStream {
            name,
            shard_count: self.shard_count,
            replication_factor: self.replication_factor,
            retention_ms,
            durability: self.durability,
        })
    }
}

pub(crate) fn unexpected(request: &'static str, response: &Response) -> ClientError {
    ClientError::UnexpectedResponse {
        request,
        response: response.kind().into(),
    }
}

impl Client {
    /// Creates a stream; returns it with its shards. Not retried once sent (see the module
    /// documentation): `OutcomeUnknown` means "describe it to find out".
    pub async fn create_stream(&self, spec: StreamSpec) -> Result<StreamInfo, ClientError> {
        let request = Request::CreateStream(spec.to_request()?);
        let nodes = &self.inner.nodes;
        match nodes.call_admin(&request, Safety::AtMostOnce).await? {
            Response::StreamInfo(info) => Ok(info),
            other => Err(unexpected("CreateStream", &other)),
        }
    }

    /// Every stream, in name order, without their shards (all pages).
    pub async fn list_streams(&self) -> Result<Vec<StreamInfo>, ClientError> {
        let nodes = &self.inner.nodes;
        let mut streams: Vec<StreamInfo> = Vec::new();
        for _ in 0..LIST_PAGES_MAX {
            let request = Request::ListStreams(ListStreams {
                start_after: streams.last().map(|stream| stream.name.clone()),
                limit: 0,
            });
            let page = match nodes.call_admin(&request, Safety::Idempotent).await? {
                Response::StreamList(page) => page,
                other => return Err(unexpected("ListStreams", &other)),
            };
            check_progress("ListStreams", &streams, &page.streams, page.more, |s| {
                s.name.clone()
            })?;
            streams.extend(page.streams);
            if !page.more {
                return Ok(streams);
            }
        }
        Err(too_many_pages("ListStreams"))
    }

    /// A stream with all its shards (following `ListShards` pages when the description was
    /// cut to fit the envelope).
    pub async fn describe_stream(&self, name: &str) -> Result<StreamInfo, ClientError> {
        let name = StreamName::new(name).map_err(ClientError::stream_name)?;
        self.inner.describe(&name).await
    }

    /// Deletes a stream; `force` also while subscriptions or queries use it. Not retried once
    /// sent (see the module documentation).
    pub async fn delete_stream(&self, name: &str, force: bool) -> Result<(), ClientError> {
        let name = StreamName::new(name).map_err(ClientError::stream_name)?;
        let request = Request::DeleteStream(DeleteStream {
            name: name.clone(),
            force,
        });
        let nodes = &self.inner.nodes;
        let outcome = nodes.call_admin(&request, Safety::AtMostOnce).await;
        self.inner.forget_shards(&name);
        match outcome? {
            Response::DeleteStreamOk(_) => Ok(()),
            other => Err(unexpected("DeleteStream", &other)),
        }
    }

    /// Every shard of a stream, open and sealed, in id order (all pages).
    pub async fn list_shards(&self, stream: &str) -> Result<Vec<ShardInfo>, ClientError> {
        let stream = StreamName::new(stream).map_err(ClientError::stream_name)?;
        self.inner.list_shards(&stream).await
    }

    /// The status of the node this client is connected to.
    pub async fn node_status(&self) -> Result<NodeStatus, ClientError> {
        let nodes = &self.inner.nodes;
        match nodes
            .call_bootstrap(&Request::GetNodeStatus, Safety::Idempotent)
            .await?
        {
            Response::NodeStatus(status) => Ok(status),
            other => Err(unexpected("GetNodeStatus", &other)),
        }
    }

    /// The cluster's nodes as the node the client reached sees them, in id order: state,
    /// advertised address, version, cores, and which one leads the metadata group. The
    /// client also learns their addresses (it routes shards' requests with them).
    pub async fn list_nodes(&self) -> Result<Vec<NodeInfo>, ClientError> {
        self.inner.nodes.list().await
    }

    /// Founds the cluster on the node the client reached (once per cluster, on one node:
    /// it starts the metadata group with itself as first voter). A node that belongs to a
    /// cluster already refuses with `InvalidRequest`. Not retried once sent.
    pub async fn init_cluster(&self) -> Result<(), ClientError> {
        match self
            .inner
            .nodes
            .call_bootstrap(&Request::InitCluster, Safety::AtMostOnce)
            .await?
        {
            Response::InitClusterOk => Ok(()),
            other => Err(unexpected("InitCluster", &other)),
        }
    }

    /// Makes every record of `shard` before `offset` unreadable; returns the shard's first
    /// readable offset now. Sent to the core that owns the shard.
    pub async fn trim(
        &self,
        stream: &str,
        shard: ShardId,
        offset: Offset,
    ) -> Result<Offset, ClientError> {
        let stream = StreamName::new(stream).map_err(ClientError::stream_name)?;
        let request = Request::Trim(Trim {
            stream: stream.clone(),
            shard,
            offset,
        });
        match self
            .inner
            .call_shard(&stream, shard, &request, Safety::Idempotent)
            .await?
        {
            Response::TrimOk(ok) if ok.shard == shard => Ok(ok.start_offset),
            other => Err(unexpected("Trim", &other)),
        }
    }
}

impl ClientInner {
    /// `DescribeStream`, completed with `ListShards` pages when its shard list was cut.
    pub(crate) async fn describe(&self, name: &StreamName) -> Result<StreamInfo, ClientError> {
        let request = Request::DescribeStream(DescribeStream { name: name.clone() });
        let mut info = match self.nodes.call_admin(&request, Safety::Idempotent).await? {
            Response::StreamInfo(info) => info,
            other => return Err(unexpected("DescribeStream", &other)),
        };
        if info.shards_truncated {
            info.shards = self.list_shards(name).await?;
            info.shards_truncated = false;
        }
        Ok(info)
    }

    /// Every shard of `stream`, following pages.
    pub(crate) async fn list_shards(
        &self,
        stream: &StreamName,
    ) -> Result<Vec<ShardInfo>, ClientError> {
        let mut shards: Vec<ShardInfo> = Vec::new();
        for _ in 0..LIST_PAGES_MAX {
            let request = Request::ListShards(ListShards {
                stream: stream.clone(),
                start_after: shards.last().map(|shard| shard.id),
                limit: 0,
            });
            let page = match self.nodes.call_admin(&request, Safety::Idempotent).await? {
                Response::ShardList(page) => page,
                other => return Err(unexpected("ListShards", &other)),
            };
            check_progress("ListShards", &shards, &page.shards, page.more, |s| s.id)?;
            shards.extend(page.shards);
            if !page.more {
                return Ok(shards);
            }
        }
        Err(too_many_pages("ListShards"))
    }
}

pub(crate) fn too_many_pages(request: &'static str) -> ClientError {
    ClientError::UnexpectedResponse {
        request,
        response: format!("more than {LIST_PAGES_MAX} pages"),
    }
}

/// A page that says more follow must list something past what was already listed, or paging
/// would never end.
pub(crate) fn check_progress<T, K: Ord>(
    request: &'static str,
    listed: &[T],
    page: &[T],
    more: bool,
    key: impl Fn(&T) -> K,
) -> Result<(), ClientError> {
    let progressed = page
        .first()
        .is_some_and(|first| listed.last().is_none_or(|last| key(first) > key(last)));
    if more && !progressed {
        return Err(ClientError::UnexpectedResponse {
            request,
            response: "a page that says more follow but lists nothing new".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(spec: StreamSpec) -> &'static str {
        match spec.to_request() {
            Err(ClientError::InvalidArgument { what, .. }) => what,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// A valid spec becomes exactly the request; each invalid field is named.
    #[test]
    fn stream_specs_are_checked_before_sending() {
        let spec = StreamSpec::new("orders", Durability::Memory)
            .shard_count(3)
            .replication_factor(2)
            .retention(Duration::from_secs(60));
        let request = spec.to_request().expect("valid");
        assert_eq!(request.name.as_str(), "orders");
        assert_eq!(request.shard_count, 3);
        assert_eq!(request.replication_factor, 2);
        assert_eq!(request.retention_ms, 60_000);
        assert_eq!(request.durability, Durability::Memory);
        let base = || StreamSpec::new("orders", Durability::Fsync);
        assert_eq!(
            refused(StreamSpec::new("-bad", Durability::Fsync)),
            "stream name"
        );
        assert_eq!(
            refused(StreamSpec::new("", Durability::Fsync)),
            "stream name"
        );
        assert_eq!(refused(base().shard_count(0)), "shard count");
        assert_eq!(refused(base().shard_count(65_537)), "shard count");
        assert!(base().shard_count(65_536).to_request().is_ok());
        assert_eq!(refused(base().replication_factor(0)), "replication factor");
        assert_eq!(
            refused(base().retention(Duration::from_micros(999))),
            "retention"
        );
        assert_eq!(refused(base().retention(Duration::MAX)), "retention");
    }
}
