//! PLACEHOLDER (replaced by branch peer-transport): node-to-node transport.
#![allow(missing_docs, unused_variables, clippy::unused_async)]
use std::rc::Rc;
use std::time::{Duration, Instant};

pub enum PeerMessage {
    Raft(Vec<u8>),
    Ping(NodeHello),
}
#[derive(Debug, Clone)]
pub struct NodeHello {
    pub node: u64,
    pub address: String,
    pub cores: u32,
    pub version: String,
    pub running: bool,
    pub cluster: Option<u64>,
}
pub enum PeerRequest {
    Propose { command: Vec<u8> },
    Join(NodeHello),
}
pub enum PeerResponse {
    Proposed(Result<u64, PeerRefusal>),
    Joined(Result<(), PeerRefusal>),
}
#[derive(Debug, Clone)]
pub struct PeerRefusal {
    pub code: u16,
    pub message: String,
    pub leader: Option<u64>,
}
pub enum PeerTarget {
    Node(u64),
    Address(String),
}
#[derive(Debug)]
pub struct PeerError;
impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "peer")
    }
}
pub struct Reply;
impl Reply {
    pub fn send(self, response: PeerResponse) {}
}
pub enum Inbound {
    Message {
        from: u64,
        message: PeerMessage,
    },
    Request {
        from: u64,
        request: PeerRequest,
        reply: Reply,
    },
}
pub struct Peers;
impl Peers {
    pub fn new(my_id: u64, endpoint: quinn::Endpoint, client: quinn::ClientConfig) -> Rc<Peers> {
        todo!()
    }
    pub fn set_address(&self, id: u64, address: &str) {}
    pub fn send(&self, to: u64, message: PeerMessage) {}
    pub async fn request(
        &self,
        to: PeerTarget,
        request: PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, PeerError> {
        todo!()
    }
    pub fn accept(self: &Rc<Self>, connection: quinn::Connection) {}
    pub async fn next(&self) -> Inbound {
        todo!()
    }
    pub fn last_heard(&self, id: u64) -> Option<Instant> {
        None
    }
}
pub fn client_config(
    config: &crate::config::NodeConfig,
) -> Result<quinn::ClientConfig, crate::error::FatalError> {
    todo!()
}
