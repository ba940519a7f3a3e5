//! The nodes of a cluster as a client reaches them: the node the URL reached (the
//! *bootstrap* node, where admin requests go), the nodes learned from `ListNodes` (id →
//! advertised `host:base_port`), and a [`Node`] (connections per core) for each one a request
//! needed, opened on demand with the same TLS trust and the address's host as server name.
//!
//! A request goes to a [`ShardOwner`] — a node and a core, as metadata places shards. A node
//! id the table does not know makes the client list the nodes once (concurrent callers share
//! that one `ListNodes`); still unknown, it is [`ClientError::UnknownNode`], which the routing
//! loops treat like `NotOwner`: the stream's shards are described again. An address that
//! cannot be dialled, or answers as another node, is forgotten, so the next request for that
//! node lists the nodes again.
//!
//! A single node never lists nodes: its shards name its own id, which is the bootstrap node's.
//! The table is bounded by [`NODES_MAX`] entries.
//!
//! Admin requests go to one node at a time, the bootstrap node first. When that node cannot be
//! reached (the request failed on the connection, not with an answer, and sending it again is
//! safe: it is idempotent or certainly never left), they turn to the other nodes the client
//! knows — those of the last `NodeList`, then the URL's other nodes — in order, and stay with
//! the first that answers. A request that may have been applied is never sent elsewhere: it
//! fails with `OutcomeUnknown`, as on one node. `GetNodeStatus` and `InitCluster` are about
//! the URL's node and always go there.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use runnel_net::protocol::{
    FrameLimits, HelloOk, NodeInfo, NodeList, Request, Response, ShardOwner,
};
use tokio::time::Instant;

use crate::address::ServerAddress;
use crate::connection::Node;
use crate::error::ClientError;
use crate::options::ClientOptions;
use crate::retry::{Failure, RetryPolicy, Safety};

/// Most nodes a client keeps addresses of: bounds what one `NodeList` can make it hold.
pub(crate) const NODES_MAX: usize = 4096;

/// What the table says of a node id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup<C> {
    /// Connected: use this.
    Connected(C),
    /// Known at this advertised address, not connected yet.
    Address(ServerAddress),
    /// Not listed by the last `NodeList`.
    Unknown,
}

/// The routing table: node id → advertised address and, once dialled, its connection `C`
/// (a [`Node`] in the client; plain values in unit tests). Pure data, no I/O.
#[derive(Debug)]
pub(crate) struct NodeTable<C> {
    entries: BTreeMap<u64, Entry<C>>,
    /// Grows with every [`NodeTable::learn`]: a caller that saw generation *g* and finds a
    /// later one knows someone listed the nodes meanwhile.
    generation: u64,
}

#[derive(Debug)]
struct Entry<C> {
    address: ServerAddress,
    connection: Option<C>,
}

impl<C: Clone> NodeTable<C> {
    /// An empty table (the bootstrap node is not in it: [`Nodes`] serves it directly).
    pub fn new() -> NodeTable<C> {
        NodeTable {
            entries: BTreeMap::new(),
            generation: 0,
        }
    }

    /// How many times the nodes were learned.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Replaces the addresses with those of `nodes` (all but `bootstrap`, whose connection is
    /// the client's own). A node whose address is unchanged keeps its connection; the
    /// connections of nodes gone or moved are returned, for the caller to close. Addresses a
    /// client cannot dial are skipped with a warning (the server checks them too).
    pub fn learn(&mut self, bootstrap: u64, nodes: &[NodeInfo]) -> Vec<C> {
        let mut entries = BTreeMap::new();
        let mut gone = Vec::new();
        for node in nodes.iter().filter(|node| node.id != bootstrap) {
            if entries.len() >= NODES_MAX {
                tracing::warn!(nodes = nodes.len(), "more nodes listed than a client keeps");
                break;
            }
            let address = match ServerAddress::parse(&format!("runnel://{}", node.address)) {
                Ok(address) => address,
                Err(error) => {
                    tracing::warn!(node = node.id, %error, "a node's advertised address cannot be dialled");
                    continue;
                }
            };
            let connection = match self.entries.remove(&node.id) {
                Some(old) if old.address == address => old.connection,
                Some(moved) => {
                    gone.extend(moved.connection);
                    None
                }
                None => None,
            };
            entries.insert(
                node.id,
                Entry {
                    address,
                    connection,
                },
            );
        }
        let unlisted = std::mem::replace(&mut self.entries, entries);
        self.generation += 1;
        gone.extend(unlisted.into_values().filter_map(|entry| entry.connection));
        gone
    }

    /// What the table knows of node `id`.
    pub fn lookup(&self, id: u64) -> Lookup<C> {
        match self.entries.get(&id) {
            Some(Entry {
                connection: Some(connection),
                ..
            }) => Lookup::Connected(connection.clone()),
            Some(entry) => Lookup::Address(entry.address.clone()),
            None => Lookup::Unknown,
        }
    }

    /// Keeps `connection` to node `id`, dialled at `address`, unless the node moved (or was
    /// connected) meanwhile; returns the connection to use, or `None` when the node moved or
    /// is no longer listed (the caller drops `connection` and asks again).
    pub fn connected(&mut self, id: u64, address: &ServerAddress, connection: C) -> Option<C> {
        let entry = self.entries.get_mut(&id)?;
        if &entry.address != address {
            return None;
        }
        Some(entry.connection.get_or_insert(connection).clone())
    }

    /// Forgets node `id` (its address answered as another node, or could not be dialled):
    /// the next request for it lists the nodes again. Returns its connection, to close.
    pub fn forget(&mut self, id: u64) -> Option<C> {
        self.entries.remove(&id).and_then(|entry| entry.connection)
    }
}

/// The bootstrap node and the other nodes of the cluster, with their connections.
pub(crate) struct Nodes {
    bootstrap: Arc<Node>,
    /// The URL's other nodes, in its order: where admin requests turn when no listed node
    /// answers.
    seeds: Vec<ServerAddress>,
    /// Where admin requests go now: the bootstrap node until it cannot be reached.
    admin: Mutex<Arc<Node>>,
    /// For dialling other nodes: the same trust, limits and timeouts as the bootstrap node,
    /// the server name taken from each address.
    options: ClientOptions,
    table: Mutex<NodeTable<Arc<Node>>>,
    /// One `ListNodes` at a time; callers that waited for it use its answer.
    listing: tokio::sync::Mutex<()>,
    /// One dial of another node at a time, so concurrent requests open one connection.
    dialling: tokio::sync::Mutex<()>,
}

impl Nodes {
    /// The cluster as reached through `bootstrap`; other nodes are learned when needed.
    /// `seeds` are the URL's other nodes, tried for admin requests when the bootstrap node
    /// and the listed nodes cannot be reached.
    pub fn new(bootstrap: Node, seeds: Vec<ServerAddress>, options: &ClientOptions) -> Nodes {
        let bootstrap = Arc::new(bootstrap);
        Nodes {
            admin: Mutex::new(Arc::clone(&bootstrap)),
            bootstrap,
            seeds,
            options: ClientOptions {
                server_name: None,
                ..options.clone()
            },
            table: Mutex::new(NodeTable::new()),
            listing: tokio::sync::Mutex::new(()),
            dialling: tokio::sync::Mutex::new(()),
        }
    }

    fn table(&self) -> MutexGuard<'_, NodeTable<Arc<Node>>> {
        // The table holds plain values; a panic elsewhere cannot leave it half-edited.
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The address the bootstrap node was dialled at (one of the URL's).
    pub fn bootstrap_address(&self) -> &ServerAddress {
        self.bootstrap.address()
    }

    /// The bootstrap node's handshake answer.
    pub fn hello(&self) -> &HelloOk {
        self.bootstrap.hello()
    }

    /// The node admin requests go to now.
    fn admin_node(&self) -> Arc<Node> {
        // Holds one pointer; a panic elsewhere cannot leave it half-written.
        Arc::clone(
            &self
                .admin
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Where admin requests go: the bootstrap node on the core the URL reached, or the node
    /// they turned to (its core 0) when the bootstrap node could not be reached.
    pub fn admin(&self) -> ShardOwner {
        let node = self.admin_node();
        ShardOwner {
            node: node.hello().node_id,
            core: node.bootstrap_core(),
        }
    }

    /// Frame limits of the connections (the bootstrap node's: the nodes of a cluster share
    /// their limits).
    pub fn frame_limits(&self) -> FrameLimits {
        self.bootstrap.frame_limits()
    }

    /// Attempts and backoff of requests.
    pub fn policy(&self) -> RetryPolicy {
        self.bootstrap.policy()
    }

    /// Time allowed for one attempt of a request.
    pub fn request_timeout(&self) -> Duration {
        self.bootstrap.request_timeout()
    }

    /// A request about the URL's node itself (its status, initialising the cluster there):
    /// to the bootstrap node only.
    pub async fn call_bootstrap(
        &self,
        request: &Request,
        safety: Safety,
    ) -> Result<Response, ClientError> {
        self.bootstrap
            .call(self.bootstrap.bootstrap_core(), request, &[], safety)
            .await
    }

    /// An admin request (streams, subscriptions, nodes): to the admin node, which forwards
    /// metadata changes to the metadata group's leader; to the next node the client knows
    /// when that one cannot be reached and sending the request again is safe (see the module
    /// documentation).
    pub async fn call_admin(
        &self,
        request: &Request,
        safety: Safety,
    ) -> Result<Response, ClientError> {
        let mut tried: Vec<u64> = Vec::new();
        let mut node = self.admin_node();
        loop {
            let error = match node.call(node.bootstrap_core(), request, &[], safety).await {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            if !unreachable(&error) {
                return Err(error);
            }
            tried.push(node.hello().node_id);
            let Some(next) = self.next_admin(&tried).await else {
                return Err(error);
            };
            tracing::warn!(
                request = request.kind(),
                from = node.hello().node_id,
                to = next.hello().node_id,
                %error,
                "admin node unreachable; turning to another node"
            );
            *self
                .admin
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::clone(&next);
            node = next;
        }
    }

    /// The first node not in `tried` that answers: a listed node, then one of the URL's.
    async fn next_admin(&self, tried: &[u64]) -> Option<Arc<Node>> {
        let listed: Vec<u64> = {
            let table = self.table();
            table.entries.keys().copied().collect()
        };
        let bootstrap = self.hello().node_id;
        for id in std::iter::once(bootstrap).chain(listed) {
            if tried.contains(&id) {
                continue;
            }
            if id == bootstrap {
                return Some(Arc::clone(&self.bootstrap));
            }
            // Not `node()`: a node the table no longer knows is skipped, not listed for.
            let lookup = self.table().lookup(id);
            match lookup {
                Lookup::Connected(node) => return Some(node),
                Lookup::Address(address) => match self.dial(id, address).await {
                    Ok(node) => return Some(node),
                    Err(error) => tracing::debug!(node = id, %error, "cannot reach a node"),
                },
                Lookup::Unknown => {}
            }
        }
        for address in &self.seeds {
            match Node::connect(address.clone(), &self.options).await {
                Ok(node) if !tried.contains(&node.hello().node_id) => return Some(Arc::new(node)),
                Ok(node) => node.close().await,
                Err(error) => tracing::debug!(%address, %error, "cannot reach a node"),
            }
        }
        None
    }

    /// Lists the cluster's nodes (asking the bootstrap node) and learns their addresses.
    pub async fn list(&self) -> Result<Vec<NodeInfo>, ClientError> {
        let answer = self
            .call_admin(&Request::ListNodes, Safety::Idempotent)
            .await?;
        let Response::NodeList(NodeList { nodes }) = answer else {
            return Err(ClientError::UnexpectedResponse {
                request: "ListNodes",
                response: answer.kind().into(),
            });
        };
        let gone = self.table().learn(self.hello().node_id, &nodes);
        for node in gone {
            node.close().await;
        }
        Ok(nodes)
    }

    /// Lists the nodes unless someone did since the table was at `seen` (then their answer
    /// serves).
    async fn relist(&self, seen: u64) -> Result<(), ClientError> {
        let _listing = self.listing.lock().await;
        if self.table().generation() != seen {
            return Ok(());
        }
        self.list().await.map(|_| ())
    }

    /// The connections to node `id`: the bootstrap node's, an open one, or a new one to its
    /// advertised address (listing the nodes once when the table does not know it).
    pub async fn node(&self, id: u64) -> Result<Arc<Node>, ClientError> {
        if id == self.hello().node_id {
            return Ok(Arc::clone(&self.bootstrap));
        }
        let admin = self.admin_node();
        if admin.hello().node_id == id {
            return Ok(admin);
        }
        let mut listed = false;
        loop {
            let (lookup, seen) = {
                let table = self.table();
                (table.lookup(id), table.generation())
            };
            match lookup {
                Lookup::Connected(node) => return Ok(node),
                Lookup::Address(address) => return self.dial(id, address).await,
                Lookup::Unknown if !listed => {
                    listed = true;
                    self.relist(seen).await?;
                }
                Lookup::Unknown => {
                    return Err(ClientError::UnknownNode {
                        node: id,
                        reason: "the cluster does not list it".into(),
                    })
                }
            }
        }
    }

    /// Opens connections to node `id` at `address` (once: a concurrent caller's connection
    /// serves) and checks that the node there is `id`.
    async fn dial(&self, id: u64, address: ServerAddress) -> Result<Arc<Node>, ClientError> {
        let _dialling = self.dialling.lock().await;
        if let Lookup::Connected(node) = self.table().lookup(id) {
            return Ok(node);
        }
        let node = match Node::connect(address.clone(), &self.options).await {
            Ok(node) => node,
            Err(error) => {
                tracing::debug!(node = id, %address, %error, "cannot reach a node; forgetting its address");
                self.table().forget(id);
                return Err(error);
            }
        };
        if node.hello().node_id != id {
            let reached = node.hello().node_id;
            self.table().forget(id);
            node.close().await;
            return Err(ClientError::UnknownNode {
                node: id,
                reason: format!("its address {address} answers as node {reached}"),
            });
        }
        let node = Arc::new(node);
        let kept = self.table().connected(id, &address, Arc::clone(&node));
        match kept {
            Some(kept) => Ok(kept),
            None => {
                node.close().await;
                Err(ClientError::UnknownNode {
                    node: id,
                    reason: "it moved while being connected".into(),
                })
            }
        }
    }

    /// [`Node::call`] on `target`'s node.
    pub async fn call(
        &self,
        target: ShardOwner,
        request: &Request,
        payload: &[u8],
        safety: Safety,
    ) -> Result<Response, ClientError> {
        let node = self.node(target.node).await?;
        node.call(target.core, request, payload, safety).await
    }

    /// [`Node::send_request`] on `target`'s node.
    pub async fn send_request(
        &self,
        target: ShardOwner,
        request: &Request,
        payload: &[u8],
        deadline: Option<Instant>,
    ) -> Result<quinn::RecvStream, Failure> {
        let node = self.node(target.node).await.map_err(Failure::not_sent)?;
        node.send_request(target.core, request, payload, deadline)
            .await
    }

    /// [`Node::open_stream`] on `target`'s node.
    pub async fn open_stream(
        &self,
        target: ShardOwner,
        request: &Request,
        payload: &[u8],
        deadline: Option<Instant>,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), Failure> {
        let node = self.node(target.node).await.map_err(Failure::not_sent)?;
        node.open_stream(target.core, request, payload, deadline)
            .await
    }

    /// Closes every connection, the other nodes' first.
    pub async fn close(&self) {
        let others: Vec<Arc<Node>> = {
            let mut table = self.table();
            let ids: Vec<u64> = table.entries.keys().copied().collect();
            ids.into_iter().filter_map(|id| table.forget(id)).collect()
        };
        for node in others {
            node.close().await;
        }
        let admin = self.admin_node();
        if !Arc::ptr_eq(&admin, &self.bootstrap) {
            admin.close().await;
        }
        self.bootstrap.close().await;
    }
}

/// Whether `error` says the node could not be reached (the connection failed or timed out,
/// or no connection could be opened) rather than that it answered. Failures of requests that
/// may have been applied arrive as `OutcomeUnknown` and are not among these.
fn unreachable(error: &ClientError) -> bool {
    match error {
        ClientError::Connect { .. } | ClientError::Unreachable { .. } => true,
        ClientError::Connection { .. } | ClientError::Timeout { .. } => true,
        ClientError::Protocol { .. } => error.is_retriable(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use runnel_net::protocol::NodeState;

    use super::*;

    fn info(id: u64, address: &str) -> NodeInfo {
        NodeInfo {
            id,
            state: NodeState::Running,
            address: address.into(),
            version: Some("0.1.0".into()),
            cores: 2,
            leader: id == 1,
            voter: true,
        }
    }

    fn address(text: &str) -> ServerAddress {
        ServerAddress::parse(&format!("runnel://{text}")).expect("address")
    }

    /// A listed node is learned at its advertised address (IPv6 and DNS names too), the
    /// bootstrap node is left out, and a connection once made is what later lookups get.
    #[test]
    fn listed_nodes_are_learned_and_connected_once() {
        let mut table: NodeTable<&str> = NodeTable::new();
        assert_eq!(table.lookup(2), Lookup::Unknown);
        let gone = table.learn(
            1,
            &[
                info(1, "127.0.0.1:6570"),
                info(2, "127.0.0.1:6580"),
                info(3, "[::1]:6590"),
                info(4, "node-4.example:6570"),
            ],
        );
        assert!(gone.is_empty());
        assert_eq!(table.generation(), 1);
        assert_eq!(
            table.lookup(1),
            Lookup::Unknown,
            "the bootstrap is served apart"
        );
        assert_eq!(table.lookup(2), Lookup::Address(address("127.0.0.1:6580")));
        assert_eq!(table.lookup(3), Lookup::Address(address("[::1]:6590")));
        match table.lookup(4) {
            Lookup::Address(found) => {
                assert_eq!((found.host(), found.port()), ("node-4.example", 6570))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            table.connected(2, &address("127.0.0.1:6580"), "first"),
            Some("first")
        );
        // A second dial that raced the first keeps the first connection.
        assert_eq!(
            table.connected(2, &address("127.0.0.1:6580"), "second"),
            Some("first")
        );
        assert_eq!(table.lookup(2), Lookup::Connected("first"));
    }

    /// A stale route is replaced: a node that moved loses its connection (returned to be
    /// closed) and is dialled at its new address; an unchanged node keeps its connection; a
    /// node no longer listed is forgotten; a dial finishing after its node moved is refused.
    #[test]
    fn stale_routes_are_refreshed() {
        let mut table: NodeTable<&str> = NodeTable::new();
        table.learn(
            1,
            &[
                info(2, "127.0.0.1:6580"),
                info(3, "127.0.0.1:6590"),
                info(4, "h:1"),
            ],
        );
        table.connected(2, &address("127.0.0.1:6580"), "to-2");
        table.connected(3, &address("127.0.0.1:6590"), "to-3");
        table.connected(4, &address("h:1"), "to-4");
        let gone = table.learn(1, &[info(2, "127.0.0.1:7580"), info(3, "127.0.0.1:6590")]);
        assert_eq!(gone, vec!["to-2", "to-4"]);
        assert_eq!(table.generation(), 2);
        assert_eq!(table.lookup(2), Lookup::Address(address("127.0.0.1:7580")));
        assert_eq!(table.lookup(3), Lookup::Connected("to-3"));
        assert_eq!(table.lookup(4), Lookup::Unknown);
        assert_eq!(table.connected(2, &address("127.0.0.1:6580"), "late"), None);
        assert_eq!(table.connected(4, &address("h:1"), "late"), None);
        // An address that answered as another node is forgotten until the nodes are listed.
        assert_eq!(table.forget(3), Some("to-3"));
        assert_eq!(table.lookup(3), Lookup::Unknown);
    }

    /// Addresses a client cannot dial are skipped, not stored; the table stays bounded.
    #[test]
    fn undialable_and_excess_nodes_are_not_kept() {
        let mut table: NodeTable<&str> = NodeTable::new();
        table.learn(1, &[info(2, "no-port-here:"), info(3, "user@host:1")]);
        assert_eq!(table.lookup(2), Lookup::Unknown);
        assert_eq!(table.lookup(3), Lookup::Unknown);
        let many: Vec<NodeInfo> = (2..NODES_MAX as u64 + 10)
            .map(|id| info(id, "127.0.0.1:6570"))
            .collect();
        table.learn(1, &many);
        assert_eq!(table.entries.len(), NODES_MAX);
    }
}
