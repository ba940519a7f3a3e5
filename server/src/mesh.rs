//! The core mesh: typed request/response calls between the cores of a node, one **service**
//! per feature, each feature registering its own handler when a core starts.
//!
//! A feature declares a [`Service`] (a name, a `Request` and a `Response` type) and registers a
//! handler for it on every core ([`Mesh::register`]); any code on a core then calls
//! `core.call::<S>(to_core, request).await` and gets `Result<S::Response, MeshError>`. A call
//! to another core travels over glommio's channel mesh as an [`Envelope`] (the request boxed
//! as `dyn Any`); the asked core runs the handler in a task of its own (it may await I/O) and
//! sends the response back; a call to this core runs the handler in place. Nothing here knows
//! the features: there is no central enum or match to edit.
//!
//! A service whose requests may cross nodes is a [`RemoteService`]: it also encodes and decodes
//! its request and response ([`codec`]), and its id (a hash of its name) says on the wire which
//! service a peer frame is for (`remote.rs`, `docs/format/peer.md`).
//!
//! Invariants: every call is answered exactly once, by its response or a [`MeshError`]; a
//! waiting caller's slot goes however the wait ends ([`Pending`]). Must never: panic on a
//! request or response of an unexpected type (that is a [`MeshError::Internal`] answer), or
//! block a core. Metadata distribution and the cores' lifecycle (`CoreMessage` in
//! `crate::core`) are not services: they are ordered one-way messages of core 0, not calls.

pub mod codec;
mod pending;
pub mod remote;
#[cfg(test)]
mod tests;

use std::any::Any;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use runnel_replicate::metadata::NodeId;
use thiserror::Error;

pub use codec::WireError;
pub use pending::Pending;

/// A service's id on the wire: the 32-bit FNV-1a hash of its name, so features pick names, not
/// numbers, and two services with one id are found when the second registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId(pub u32);

impl ServiceId {
    /// The id of the service named `name`.
    pub const fn of(name: &str) -> ServiceId {
        let bytes = name.as_bytes();
        let mut hash: u32 = 0x811c_9dc5;
        let mut at = 0;
        while at < bytes.len() {
            hash ^= bytes[at] as u32;
            hash = hash.wrapping_mul(0x0100_0193);
            at += 1;
        }
        ServiceId(hash)
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#010x}", self.0)
    }
}

/// A typed request/response service of the core mesh.
pub trait Service: 'static {
    /// Its name, `feature.verb` (e.g. `subscription.assign`); unique in the node.
    const NAME: &'static str;
    /// Its id, derived from the name (never overridden).
    const ID: ServiceId = ServiceId::of(Self::NAME);
    /// What a caller sends.
    type Request: Send + 'static;
    /// What the handler answers.
    type Response: Send + 'static;
}

/// A service whose calls may go to a core of another node: it encodes its requests and
/// responses (with the helpers of [`codec`]), and decodes them from untrusted bytes without
/// panicking.
pub trait RemoteService: Service {
    /// Appends the encoding of `request` to `out`.
    fn encode_request(request: &Self::Request, out: &mut Vec<u8>);
    /// The request `bytes` encode (all of them).
    fn decode_request(bytes: &[u8]) -> Result<Self::Request, WireError>;
    /// Appends the encoding of `response` to `out`.
    fn encode_response(response: &Self::Response, out: &mut Vec<u8>);
    /// The response `bytes` encode (all of them).
    fn decode_response(bytes: &[u8]) -> Result<Self::Response, WireError>;
}

/// Why a call got no response.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MeshError {
    /// The calling core closed (the node is stopping) before the answer came.
    #[error("the node is stopping")]
    Stopping,
    /// The asked core has no handler for the service.
    #[error("core {core} has no handler for service {service}")]
    NoHandler {
        /// The service's id.
        service: ServiceId,
        /// The asked core.
        core: u32,
    },
    /// The asked core does not exist.
    #[error("there is no core {core}: the node runs {cores}")]
    NoCore {
        /// The core asked.
        core: u32,
        /// The node's cores.
        cores: usize,
    },
    /// The handler could not do what was asked, and why (for the client's error message).
    #[error("{reason}")]
    Failed {
        /// Why.
        reason: String,
    },
    /// Another node could not be asked, or did not answer in time.
    #[error("node {node} did not answer: {reason}")]
    Unreachable {
        /// The node.
        node: NodeId,
        /// Why.
        reason: String,
    },
    /// Another node answered with an error, described here.
    #[error("node {node}: {reason}")]
    Remote {
        /// The node.
        node: NodeId,
        /// Its error, as it describes it.
        reason: String,
    },
    /// A request or response from another node does not decode.
    #[error("service {service}: {error}")]
    Malformed {
        /// The service's name.
        service: &'static str,
        /// What is wrong with the bytes.
        error: WireError,
    },
    /// A broken invariant of the mesh (a request or response of another type than the
    /// service's: two services with one id), answered rather than panicking a core.
    #[error("internal error of the core mesh: {reason}")]
    Internal {
        /// What was wrong.
        reason: String,
    },
}

impl MeshError {
    /// The handler's refusal, with its reason.
    pub fn failed(reason: impl Into<String>) -> MeshError {
        MeshError::Failed {
            reason: reason.into(),
        }
    }
}

/// A request or response crossing the mesh, its type erased.
pub type AnyValue = Box<dyn Any + Send>;
/// The outcome of a call, its response's type erased.
pub type Outcome = Result<AnyValue, MeshError>;
type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;
type Handler<H> = Rc<dyn Fn(Rc<H>, AnyValue) -> LocalFuture<Outcome>>;

/// What travels between cores for a call.
pub enum Envelope {
    /// A request to the receiving core.
    Call {
        /// Matches the reply to the call.
        id: u64,
        /// The calling core.
        from: u32,
        /// The service called.
        service: ServiceId,
        /// The request, of the service's `Request` type.
        request: AnyValue,
    },
    /// The answer to a call of the receiving core.
    Reply {
        /// The call's id.
        id: u64,
        /// The response (of the service's `Response` type) or why none.
        outcome: Outcome,
    },
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Envelope::Call {
                id, from, service, ..
            } => write!(f, "Call {{ id: {id}, from: {from}, service: {service} }}"),
            Envelope::Reply { id, outcome } => match outcome {
                Ok(_) => write!(f, "Reply {{ id: {id}, ok }}"),
                Err(error) => write!(f, "Reply {{ id: {id}, error: {error} }}"),
            },
        }
    }
}

/// What the mesh needs from the core it runs on.
pub trait MeshHost: Sized + 'static {
    /// The core's mesh.
    fn mesh(&self) -> &Mesh<Self>;
    /// Sends `envelope` to core `to` (which exists and is not this core).
    fn send_envelope(&self, to: u32, envelope: Envelope) -> impl Future<Output = ()>;
    /// Whether the core closed: waits for answers end then.
    fn mesh_closing(&self) -> bool;
}

/// The encodings of a remote service, type-erased, for the core that relays calls from other
/// nodes.
struct RemoteCodec {
    decode_request: fn(&[u8]) -> Result<AnyValue, WireError>,
    encode_response: fn(&AnyValue, &mut Vec<u8>) -> Result<(), MeshError>,
}

struct Entry<H> {
    name: &'static str,
    handler: Handler<H>,
    remote: Option<RemoteCodec>,
}

/// One core's side of the mesh: its handlers by service, and the answers it awaits.
pub struct Mesh<H> {
    index: u32,
    cores: usize,
    entries: RefCell<HashMap<ServiceId, Entry<H>>>,
    pending: Pending<Outcome>,
}

impl<H: MeshHost> Mesh<H> {
    /// The mesh side of core `index` of a node of `cores` cores, with no handlers yet.
    pub fn new(index: u32, cores: usize) -> Mesh<H> {
        assert!((index as usize) < cores, "core {index} of {cores}");
        Mesh {
            index,
            cores,
            entries: RefCell::new(HashMap::new()),
            pending: Pending::default(),
        }
    }

    /// Registers the handler of service `S` on this core. Two services with one id (or one
    /// service registered twice) are a bug in the code: it stops the core at start.
    pub fn register<S, F, Fut>(&self, handler: F)
    where
        S: Service,
        F: Fn(Rc<H>, S::Request) -> Fut + 'static,
        Fut: Future<Output = Result<S::Response, MeshError>> + 'static,
    {
        self.insert::<S>(erase::<H, S, F, Fut>(handler), None);
    }

    /// Registers the handler of remote service `S` on this core: as [`Mesh::register`], and
    /// calls from other nodes are relayed to it (decoded and encoded with `S`'s codec).
    pub fn register_remote<S, F, Fut>(&self, handler: F)
    where
        S: RemoteService,
        F: Fn(Rc<H>, S::Request) -> Fut + 'static,
        Fut: Future<Output = Result<S::Response, MeshError>> + 'static,
    {
        let codec = RemoteCodec {
            decode_request: decode_request::<S>,
            encode_response: encode_response::<S>,
        };
        self.insert::<S>(erase::<H, S, F, Fut>(handler), Some(codec));
    }

    fn insert<S: Service>(&self, handler: Handler<H>, remote: Option<RemoteCodec>) {
        let entry = Entry {
            name: S::NAME,
            handler,
            remote,
        };
        let previous = self.entries.borrow_mut().insert(S::ID, entry);
        if let Some(previous) = previous {
            panic!(
                "services {} and {} both have id {} on core {}",
                previous.name,
                S::NAME,
                S::ID,
                self.index
            );
        }
    }

    /// Whether this core has a handler for `service`.
    pub fn handles(&self, service: ServiceId) -> bool {
        self.entries.borrow().contains_key(&service)
    }

    /// Calls service `S` on core `to` (in place when `to` is this core).
    pub async fn call<S: Service>(
        host: &Rc<H>,
        to: u32,
        request: S::Request,
    ) -> Result<S::Response, MeshError> {
        let response = Self::call_any(host, to, S::ID, Box::new(request)).await?;
        response
            .downcast::<S::Response>()
            .map(|response| *response)
            .map_err(|_| MeshError::Internal {
                reason: format!(
                    "service {} answered another type than its response",
                    S::NAME
                ),
            })
    }

    /// Calls `service` on core `to` with a type-erased request.
    pub async fn call_any(host: &Rc<H>, to: u32, service: ServiceId, request: AnyValue) -> Outcome {
        let mesh = host.mesh();
        if to as usize >= mesh.cores {
            return Err(MeshError::NoCore {
                core: to,
                cores: mesh.cores,
            });
        }
        if to == mesh.index {
            return mesh.handle(host, service, request).await;
        }
        let id = mesh.pending.register();
        let call = Envelope::Call {
            id,
            from: mesh.index,
            service,
            request,
        };
        host.send_envelope(to, call).await;
        mesh.pending
            .wait(id, || host.mesh_closing())
            .await
            .unwrap_or(Err(MeshError::Stopping))
    }

    /// The future of this core's handler of `service` for `request`.
    fn handle(&self, host: &Rc<H>, service: ServiceId, request: AnyValue) -> LocalFuture<Outcome> {
        let handler = self
            .entries
            .borrow()
            .get(&service)
            .map(|entry| Rc::clone(&entry.handler));
        match handler {
            Some(handler) => handler(Rc::clone(host), request),
            None => Box::pin(std::future::ready(Err(MeshError::NoHandler {
                service,
                core: self.index,
            }))),
        }
    }

    /// Handles an envelope from another core: a call runs its handler in a task of its own
    /// and replies; a reply ends the wait of its call.
    pub fn receive(host: &Rc<H>, envelope: Envelope) {
        match envelope {
            Envelope::Call {
                id,
                from,
                service,
                request,
            } => {
                let answering = host.mesh().handle(host, service, request);
                let host = Rc::clone(host);
                runnel_segment::runtime::spawn(async move {
                    let outcome = answering.await;
                    host.send_envelope(from, Envelope::Reply { id, outcome })
                        .await;
                })
                .detach();
            }
            Envelope::Reply { id, outcome } => host.mesh().pending.fulfil(id, outcome),
        }
    }

    /// Decodes a request for remote service `service` from another node. `None` when this
    /// core has no remote service of that id.
    pub fn decode_remote(
        &self,
        service: ServiceId,
        bytes: &[u8],
    ) -> Option<Result<AnyValue, MeshError>> {
        let entries = self.entries.borrow();
        let entry = entries.get(&service)?;
        let codec = entry.remote.as_ref()?;
        Some(
            (codec.decode_request)(bytes).map_err(|error| MeshError::Malformed {
                service: entry.name,
                error,
            }),
        )
    }

    /// Encodes the response of remote service `service` for another node.
    pub fn encode_remote(
        &self,
        service: ServiceId,
        response: &AnyValue,
    ) -> Result<Vec<u8>, MeshError> {
        let entries = self.entries.borrow();
        let codec = entries
            .get(&service)
            .and_then(|entry| entry.remote.as_ref())
            .ok_or(MeshError::NoHandler {
                service,
                core: self.index,
            })?;
        let mut out = Vec::new();
        (codec.encode_response)(response, &mut out)?;
        Ok(out)
    }

    /// Wakes every waiting caller (this core closes: they end with [`MeshError::Stopping`]).
    pub fn wake_all(&self) {
        self.pending.wake_all();
    }
}

/// `handler` as a handler of type-erased requests and responses.
fn erase<H, S, F, Fut>(handler: F) -> Handler<H>
where
    H: 'static,
    S: Service,
    F: Fn(Rc<H>, S::Request) -> Fut + 'static,
    Fut: Future<Output = Result<S::Response, MeshError>> + 'static,
{
    Rc::new(
        move |host: Rc<H>, request: AnyValue| -> LocalFuture<Outcome> {
            match request.downcast::<S::Request>() {
                Ok(request) => {
                    let answering = handler(host, *request);
                    Box::pin(async move {
                        answering
                            .await
                            .map(|response| Box::new(response) as AnyValue)
                    })
                }
                Err(_) => Box::pin(std::future::ready(Err(MeshError::Internal {
                    reason: format!("service {} got another type than its request", S::NAME),
                }))),
            }
        },
    )
}

fn decode_request<S: RemoteService>(bytes: &[u8]) -> Result<AnyValue, WireError> {
    S::decode_request(bytes).map(|request| Box::new(request) as AnyValue)
}

fn encode_response<S: RemoteService>(
    response: &AnyValue,
    out: &mut Vec<u8>,
) -> Result<(), MeshError> {
    let response = response
        .downcast_ref::<S::Response>()
        .ok_or_else(|| MeshError::Internal {
            reason: format!(
                "service {} answered another type than its response",
                S::NAME
            ),
        })?;
    S::encode_response(response, out);
    Ok(())
}
