//! The node-to-node transport (`runnel_server::peer`) between real QUIC endpoints on loopback,
//! each on its own executor (thread), with certificates from a test CA: messages in
//! order both ways, requests to a node and to an address, re-dialling a restarted peer, and the
//! connections a node must refuse (no client certificate, another CA's certificate, a
//! malformed frame, a dialler that meant another node) without disturbing the others.
//!
//! Waits have generous deadlines (a guard against hangs); nothing asserts on timing.

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use runnel_core::ShardId;
use runnel_net::tls::{cluster_server_config, peer_client_config, CertificateAuthority};
use runnel_net::{EndpointOptions, NodeCertificate, TransportLimits, PEER_ALPN};
use runnel_replicate::consumer::{MemberId, MemberInfo};
use runnel_replicate::metadata::SubscriptionId;
use runnel_segment::runtime::{self, Executor, Pinning};
use runnel_server::mesh::{RemoteService, Service};
use runnel_server::peer::{
    is_peer_connection, peer_transport_limits, Inbound, NodeHello, PeerCloseCode, PeerError,
    PeerLimits, PeerMessage, PeerRefusal, PeerRequest, PeerResponse, PeerTarget, Peers,
};
use runnel_server::subscription::services::Members;
use rustls::pki_types::CertificateDer;

/// A guard against hangs, not a performance bound.
const DEADLINE: Duration = Duration::from_secs(60);
/// The runtime pins about 3× `io_memory` per executor; small, so that several fit a tight memlock.
const TEST_IO_MEMORY_BYTES: usize = 64 << 10;

type TestResult<T = ()> = Result<T, String>;

/// Runs `make()`'s future on a fresh executor thread; `join` gives its output.
fn spawn<T, F, Fut>(name: &str, make: F) -> std::thread::JoinHandle<TestResult<T>>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = TestResult<T>> + 'static,
{
    let name = name.to_owned();
    std::thread::spawn(move || {
        let (sender, output) = mpsc::channel();
        let handle = Executor::start(
            &name,
            Pinning::Unbound,
            TEST_IO_MEMORY_BYTES,
            move || async move {
                let _ = sender.send(make().await);
            },
        )
        .map_err(|e| format!("start executor {name}: {e}"))?;
        let result = output
            .recv_timeout(DEADLINE * 2)
            .map_err(|e| format!("executor {name} gave no result: {e}"))?;
        handle.join().map_err(|e| format!("executor {name}: {e}"))?;
        result
    })
}

/// Logs to the test's output, filtered by `RUNNEL_LOG` (e.g. `RUNNEL_LOG=debug`).
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("RUNNEL_LOG"))
        .with_test_writer()
        .try_init();
}

fn join<T>(handle: std::thread::JoinHandle<TestResult<T>>) -> T {
    match handle.join() {
        Ok(Ok(value)) => value,
        Ok(Err(error)) => panic!("{error}"),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// What a node needs to take part: the CA's certificate and its own.
#[derive(Clone)]
struct Credentials {
    ca: CertificateDer<'static>,
    node: NodeCertificate,
}

fn credentials(ca: &CertificateAuthority) -> Credentials {
    Credentials {
        ca: ca.certificate(),
        node: ca
            .sign_node(&["127.0.0.1", "localhost"])
            .unwrap_or_else(|e| panic!("sign a node certificate: {e}")),
    }
}

/// A node's endpoint and transport on the current executor.
struct Node {
    endpoint: quinn::Endpoint,
    peers: Rc<Peers>,
    address: String,
}

/// Starts node `id` on `127.0.0.1:port` (0: any free port) with an accept loop that hands
/// peer connections to its transport, as `handler::serve` does on core 0.
fn start_node(id: u64, credentials: &Credentials, port: u16) -> TestResult<Node> {
    start_node_with(id, credentials, port, PeerLimits::DEFAULT)
}

/// [`start_node`] with other transport limits.
fn start_node_with(
    id: u64,
    credentials: &Credentials,
    port: u16,
    limits: PeerLimits,
) -> TestResult<Node> {
    let ca = [credentials.ca.clone()];
    let server = cluster_server_config(credentials.node.identity(), &ca, &TransportLimits::DEFAULT)
        .map_err(|e| e.to_string())?;
    let endpoint = runnel_net::endpoint(
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Some(server),
        &EndpointOptions::default(),
    )
    .map_err(|e| format!("node {id} endpoint on port {port}: {e}"))?;
    let client = peer_client_config(credentials.node.identity(), &ca, &peer_transport_limits())
        .map_err(|e| e.to_string())?;
    let peers = Peers::with_limits(id, endpoint.clone(), client, limits);
    let accepting = endpoint.clone();
    let weak = Rc::downgrade(&peers);
    runtime::spawn(async move {
        while let Some(incoming) = accepting.accept().await {
            let weak = weak.clone();
            runtime::spawn(async move {
                // A handshake that fails (e.g. a certificate of another CA) ends here.
                let Ok(connection) = incoming.await else {
                    return;
                };
                match weak.upgrade() {
                    Some(peers) if is_peer_connection(&connection) => peers.accept(connection),
                    _ => connection.close(0_u32.into(), b"not a peer"),
                }
            })
            .detach();
        }
    })
    .detach();
    let address = endpoint
        .local_addr()
        .map_err(|e| e.to_string())?
        .to_string();
    Ok(Node {
        endpoint,
        peers,
        address,
    })
}

/// Waits for the next value of a channel from another thread without blocking the executor.
async fn receive<T>(channel: &mpsc::Receiver<T>, what: &str) -> TestResult<T> {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match channel.try_recv() {
            Ok(value) => return Ok(value),
            Err(mpsc::TryRecvError::Disconnected) => {
                return Err(format!("{what}: the other thread is gone"))
            }
            Err(mpsc::TryRecvError::Empty) if Instant::now() > deadline => {
                return Err(format!("{what}: nothing within {DEADLINE:?}"))
            }
            Err(mpsc::TryRecvError::Empty) => {
                runtime::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Waits until `count` reaches `target` (every thread of a test counts itself done there).
async fn barrier(count: &AtomicUsize, target: usize) -> TestResult {
    count.fetch_add(1, Ordering::SeqCst);
    let deadline = Instant::now() + DEADLINE;
    while count.load(Ordering::SeqCst) < target {
        if Instant::now() > deadline {
            return Err("the other nodes did not finish".into());
        }
        runtime::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// The next inbound message or request, within the deadline.
async fn next(peers: &Peers) -> TestResult<Inbound> {
    runtime::timeout(DEADLINE, peers.next())
        .await
        .map_err(|e| format!("no inbound message: {e}"))
}

fn hello(node: u64, address: &str) -> NodeHello {
    NodeHello {
        node,
        address: address.to_owned(),
        cores: 1,
        version: "test".into(),
        running: true,
        cluster: None,
    }
}

/// The payload of message `sequence` from `from`: its sequence number, then filler.
fn payload(from: u64, sequence: u32) -> Vec<u8> {
    let mut bytes = sequence.to_le_bytes().to_vec();
    bytes.extend(std::iter::repeat_n(from as u8, (sequence % 7) as usize));
    bytes
}

const MESSAGES: u32 = 200;
const LARGE_MESSAGE_BYTES: usize = 20 << 20;

/// Collects `MESSAGES` small Raft messages and one large one from node `from`, in order, and
/// answers every request; returns how many requests it answered.
async fn receive_all(peers: &Peers, from: u64, requests: usize) -> TestResult<usize> {
    let mut expected = 0_u32;
    let mut answered = 0;
    let mut large = false;
    while expected < MESSAGES || !large || answered < requests {
        match next(peers).await? {
            Inbound::Message {
                from: sender,
                message: PeerMessage::Raft(bytes),
            } => {
                assert_eq!(sender, from);
                if expected == MESSAGES {
                    assert_eq!(
                        bytes.len(),
                        LARGE_MESSAGE_BYTES,
                        "the large message is last"
                    );
                    assert!(bytes.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
                    large = true;
                } else {
                    assert_eq!(
                        bytes,
                        payload(from, expected),
                        "message {expected} in order"
                    );
                    expected += 1;
                }
            }
            Inbound::Message { message, .. } => return Err(format!("unexpected {message:?}")),
            Inbound::Request {
                from: sender,
                request,
                reply,
            } => {
                assert_eq!(sender, from);
                answered += 1;
                reply.send(match request {
                    PeerRequest::Propose { command } => {
                        PeerResponse::Proposed(Ok(command.len() as u64))
                    }
                    PeerRequest::Join(hello) => PeerResponse::Joined(Err(PeerRefusal {
                        code: 18,
                        message: format!("node {} may not join", hello.node),
                        leader: Some(peers.my_id()),
                    })),
                    PeerRequest::Ask {
                        core,
                        applied_index,
                        service,
                        request,
                    } if service == Members::ID => {
                        let subscription =
                            Members::decode_request(&request).map_err(|e| e.to_string())?;
                        let members = vec![MemberInfo {
                            id: MemberId(applied_index),
                            name: format!("on core {core}"),
                            shards: vec![ShardId(subscription.0)],
                            session_timeout_ms: 10_000,
                            joined_ms: 1,
                            last_seen_ms: 2,
                        }];
                        let mut response = Vec::new();
                        Members::encode_response(&members, &mut response);
                        PeerResponse::Answered(Ok(response))
                    }
                    PeerRequest::Ask { .. } => {
                        PeerResponse::Answered(Err("not asked in this test".into()))
                    }
                });
            }
        }
    }
    Ok(answered)
}

/// Sends `MESSAGES` small Raft messages and one of 20 MiB to node `to`.
fn send_all(peers: &Rc<Peers>, to: u64) {
    for sequence in 0..MESSAGES {
        peers.send(to, PeerMessage::Raft(payload(peers.my_id(), sequence)));
    }
    let large: Vec<u8> = (0..LARGE_MESSAGE_BYTES).map(|i| (i % 251) as u8).collect();
    peers.send(to, PeerMessage::Raft(large));
}

/// Two nodes send each other 200 messages and a 20 MiB one; each side receives the other's
/// in order. Node 1 then asks node 2 by id (Propose) and by address (Join, as a seed) and gets
/// node 2's answers; a node with no known address and an address nobody serves fail.
#[test]
fn messages_flow_both_ways_in_order_and_requests_are_answered() {
    logs();
    let ca = CertificateAuthority::new("test cluster").expect("CA");
    let (one, two) = (credentials(&ca), credentials(&ca));
    let (address_one, address_of_one) = mpsc::channel::<String>();
    let (address_two, address_of_two) = mpsc::channel::<String>();
    let done = Arc::new(AtomicUsize::new(0));
    let done_two = Arc::clone(&done);
    let node_two = spawn("peer-2", move || async move {
        let node = start_node(2, &two, 0)?;
        address_two
            .send(node.address.clone())
            .map_err(|e| e.to_string())?;
        let one = receive(&address_of_one, "node 1's address").await?;
        node.peers.set_address(1, &one);
        send_all(&node.peers, 1);
        let answered = receive_all(&node.peers, 1, 3).await?;
        assert!(node.peers.last_heard(1).is_some());
        assert!(node.peers.last_heard(3).is_none());
        barrier(&done_two, 2).await?;
        Ok(answered)
    });
    let node_one = spawn("peer-1", move || async move {
        let node = start_node(1, &one, 0)?;
        address_one
            .send(node.address.clone())
            .map_err(|e| e.to_string())?;
        let two = receive(&address_of_two, "node 2's address").await?;
        node.peers.set_address(2, &two);
        send_all(&node.peers, 2);
        let peers = Rc::clone(&node.peers);
        let receiving = runtime::spawn(async move { receive_all(&peers, 2, 0).await });
        let proposed = node
            .peers
            .request(
                PeerTarget::Node(2),
                PeerRequest::Propose {
                    command: vec![7; 300],
                },
                DEADLINE,
            )
            .await
            .map_err(|e| e.to_string())?;
        assert_eq!(proposed, PeerResponse::Proposed(Ok(300)));
        let joined = node
            .peers
            .request(
                PeerTarget::Address(two.clone()),
                PeerRequest::Join(hello(1, &node.address)),
                DEADLINE,
            )
            .await
            .map_err(|e| e.to_string())?;
        assert_eq!(
            joined,
            PeerResponse::Joined(Err(PeerRefusal {
                code: 18,
                message: "node 1 may not join".into(),
                leader: Some(2),
            }))
        );
        let unknown = node
            .peers
            .request(
                PeerTarget::Node(9),
                PeerRequest::Join(hello(1, "")),
                DEADLINE,
            )
            .await;
        assert_eq!(unknown, Err(PeerError::NoAddress { node: 9 }));
        // A call of a service on one of node 2's cores comes back with its encoded response.
        let mut request = Vec::new();
        Members::encode_request(&SubscriptionId(7), &mut request);
        let asked = node
            .peers
            .request(
                PeerTarget::Node(2),
                PeerRequest::Ask {
                    core: 1,
                    applied_index: 42,
                    service: Members::ID,
                    request,
                },
                DEADLINE,
            )
            .await
            .map_err(|e| e.to_string())?;
        let PeerResponse::Answered(Ok(response)) = asked else {
            return Err(format!("node 2 answered {asked:?}"));
        };
        assert_eq!(
            Members::decode_response(&response).map_err(|e| e.to_string())?,
            vec![MemberInfo {
                id: MemberId(42),
                name: "on core 1".into(),
                shards: vec![ShardId(7)],
                session_timeout_ms: 10_000,
                joined_ms: 1,
                last_seen_ms: 2,
            }]
        );
        receiving.await?;
        barrier(&done, 2).await?;
        Ok(())
    });
    join(node_one);
    assert_eq!(join(node_two), 3, "node 2 answered the three requests");
}

/// A request to an address where nothing listens fails (within its timeout) instead of hanging.
#[test]
fn request_to_a_silent_address_fails() {
    logs();
    let ca = CertificateAuthority::new("test cluster").expect("CA");
    let one = credentials(&ca);
    join(spawn("peer-alone", move || async move {
        let node = start_node(1, &one, 0)?;
        // A port that was free a moment ago.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|socket| socket.local_addr())
            .map_err(|e| e.to_string())?;
        let outcome = node
            .peers
            .request(
                PeerTarget::Address(silent.to_string()),
                PeerRequest::Join(hello(1, &node.address)),
                Duration::from_millis(500),
            )
            .await;
        assert!(outcome.is_err(), "{outcome:?}");
        let malformed = node
            .peers
            .request(
                PeerTarget::Address("no port here".into()),
                PeerRequest::Join(hello(1, &node.address)),
                DEADLINE,
            )
            .await;
        assert!(
            matches!(malformed, Err(PeerError::InvalidAddress { .. })),
            "{malformed:?}"
        );
        Ok(())
    }));
}

/// Sending never waits: beyond a peer's queue bound, messages are dropped at once; to a node
/// without an address, or one nobody answers at, they are dropped and counted.
#[test]
fn sends_beyond_the_bounds_are_dropped_without_waiting() {
    logs();
    let ca = CertificateAuthority::new("test cluster").expect("CA");
    let one = credentials(&ca);
    join(spawn("peer-dropping", move || async move {
        let node = start_node(1, &one, 0)?;
        let mut limits = PeerLimits::DEFAULT;
        limits.queue_messages_max = 2;
        limits.dial_timeout_ms = 500;
        let client = peer_client_config(
            one.node.identity(),
            std::slice::from_ref(&one.ca),
            &peer_transport_limits(),
        )
        .map_err(|e| e.to_string())?;
        let peers = Peers::with_limits(1, node.endpoint.clone(), client, limits);
        let silent = std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|socket| socket.local_addr())
            .map_err(|e| e.to_string())?;
        peers.set_address(2, &silent.to_string());
        // No await between these sends: the writer has not run, two fit, three do not.
        for sequence in 0..5 {
            peers.send(2, PeerMessage::Raft(payload(1, sequence)));
        }
        assert_eq!(peers.dropped_messages(2), 3);
        peers.send(3, PeerMessage::Raft(vec![1]));
        assert_eq!(peers.dropped_messages(3), 1, "no address for node 3");
        // The two queued ones are dropped once the dial fails.
        let deadline = Instant::now() + DEADLINE;
        while peers.dropped_messages(2) < 5 {
            if Instant::now() > deadline {
                return Err("the queued messages were never dropped".into());
            }
            runtime::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }));
}

/// Node 2 stops (its transport and endpoint close) and starts again on the same port while
/// node 1 keeps sending: node 1 re-dials it and messages flow to the new incarnation.
#[test]
fn a_restarted_peer_is_dialled_again() {
    logs();
    let ca = CertificateAuthority::new("test cluster").expect("CA");
    let (one, two) = (credentials(&ca), credentials(&ca));
    let (address_two, address_of_two) = mpsc::channel::<String>();
    let (restarted, restarted_rx) = mpsc::channel::<()>();
    let (finished, finished_rx) = mpsc::channel::<()>();
    let node_two = spawn("restarting-2", move || async move {
        let node = start_node(2, &two, 0)?;
        let port = node
            .endpoint
            .local_addr()
            .map_err(|e| e.to_string())?
            .port();
        address_two
            .send(node.address.clone())
            .map_err(|e| e.to_string())?;
        // The first incarnation hears from node 1 at least once.
        loop {
            if let Inbound::Message { from: 1, .. } = next(&node.peers).await? {
                break;
            }
        }
        node.peers.close();
        node.endpoint.close(0_u32.into(), b"restarting");
        node.endpoint.wait_idle().await;
        drop(node);
        // The old socket closes once the old endpoint's tasks have ended: bind until it has.
        let deadline = Instant::now() + DEADLINE;
        let node = loop {
            match start_node(2, &two, port) {
                Ok(node) => break node,
                Err(error) if Instant::now() > deadline => return Err(error),
                Err(_) => runtime::sleep(Duration::from_millis(20)).await,
            }
        };
        restarted.send(()).map_err(|e| e.to_string())?;
        // The second incarnation hears a message node 1 sent after the restart.
        loop {
            match next(&node.peers).await? {
                Inbound::Message {
                    from: 1,
                    message: PeerMessage::Raft(bytes),
                } if bytes == [1] => break,
                _ => {}
            }
        }
        finished.send(()).map_err(|e| e.to_string())?;
        Ok(())
    });
    let node_one = spawn("sending-1", move || async move {
        let node = start_node(1, &one, 0)?;
        let two = receive(&address_of_two, "node 2's address").await?;
        node.peers.set_address(2, &two);
        let deadline = Instant::now() + DEADLINE;
        let mut phase = 0_u8;
        loop {
            if Instant::now() > deadline {
                return Err("node 2 never heard from node 1 after its restart".into());
            }
            if restarted_rx.try_recv().is_ok() {
                phase = 1;
            }
            if finished_rx.try_recv().is_ok() {
                return Ok(());
            }
            node.peers.send(2, PeerMessage::Raft(vec![phase]));
            runtime::sleep(Duration::from_millis(20)).await;
        }
    });
    join(node_two);
    join(node_one);
}

/// A node heard from is dialled at once, even inside a backoff earned while it was down: node 1
/// fails to reach node 2 (nothing listens yet) and would wait ten minutes before dialling again;
/// node 2 starts and speaks to node 1; node 1's next messages reach node 2 well within the
/// test's deadline. (Before, a restarted node got no Raft messages for up to `backoff_max_ms`.)
#[test]
fn a_peer_heard_from_is_dialled_without_waiting_out_its_backoff() {
    logs();
    let ca = CertificateAuthority::new("test cluster").expect("CA");
    let (one, two) = (credentials(&ca), credentials(&ca));
    // A port nobody serves until node 2 starts on it.
    let port_two = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|socket| socket.local_addr())
        .expect("a free port")
        .port();
    let (address_one, address_of_one) = mpsc::channel::<String>();
    let (backing_off, backing_off_rx) = mpsc::channel::<()>();
    let (finished, finished_rx) = mpsc::channel::<()>();
    let node_one = spawn("backing-off-1", move || async move {
        let mut limits = PeerLimits::DEFAULT;
        limits.dial_timeout_ms = 500;
        limits.backoff_initial_ms = 600_000;
        limits.backoff_max_ms = 600_000;
        let node = start_node_with(1, &one, 0, limits)?;
        address_one
            .send(node.address.clone())
            .map_err(|e| e.to_string())?;
        node.peers.set_address(
            2,
            &SocketAddr::from((Ipv4Addr::LOCALHOST, port_two)).to_string(),
        );
        // The first dial fails and starts the ten-minute backoff; messages are dropped.
        let deadline = Instant::now() + DEADLINE;
        while node.peers.dropped_messages(2) == 0 {
            if Instant::now() > deadline {
                return Err("a send to a port nobody serves was never dropped".into());
            }
            node.peers.send(2, PeerMessage::Raft(vec![0]));
            runtime::sleep(Duration::from_millis(20)).await;
        }
        backing_off.send(()).map_err(|e| e.to_string())?;
        loop {
            if let Inbound::Message { from: 2, .. } = next(&node.peers).await? {
                break;
            }
        }
        let deadline = Instant::now() + DEADLINE;
        loop {
            if finished_rx.try_recv().is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("node 2 never heard from node 1 after speaking to it".into());
            }
            node.peers.send(2, PeerMessage::Raft(vec![7]));
            runtime::sleep(Duration::from_millis(20)).await;
        }
    });
    let node_two = spawn("speaking-2", move || async move {
        receive(&backing_off_rx, "node 1 backing off").await?;
        let node = start_node(2, &two, port_two)?;
        let one = receive(&address_of_one, "node 1's address").await?;
        node.peers.set_address(1, &one);
        node.peers.send(1, PeerMessage::Raft(vec![2]));
        loop {
            match next(&node.peers).await? {
                Inbound::Message {
                    from: 1,
                    message: PeerMessage::Raft(bytes),
                } if bytes == [7] => break,
                _ => {}
            }
        }
        finished.send(()).map_err(|e| e.to_string())?;
        Ok(())
    });
    join(node_two);
    join(node_one);
}

/// A node of another cluster is refused (its Raft messages would be taken for this group's:
/// node ids repeat across clusters); a node of no cluster yet (joining) and a node of the same
/// cluster are let in.
#[test]
fn a_node_of_another_cluster_is_refused() {
    logs();
    let ca = CertificateAuthority::new("test cluster").expect("CA");
    let (one, two, three) = (credentials(&ca), credentials(&ca), credentials(&ca));
    let outcome = spawn("clusters", move || async move {
        let first = start_node(1, &one, 0)?;
        let second = start_node(2, &two, 0)?;
        let joining = start_node(3, &three, 0)?;
        first.peers.set_cluster(Some(0xa));
        second.peers.set_cluster(Some(0xb));
        let answering = Rc::clone(&second.peers);
        runtime::spawn(async move {
            loop {
                if let Inbound::Request { reply, .. } = answering.next().await {
                    reply.send(PeerResponse::Joined(Ok(())));
                }
            }
        })
        .detach();
        let join = |peers: Rc<Peers>, from: u64, address: String| async move {
            peers
                .request(
                    PeerTarget::Address(address),
                    PeerRequest::Join(hello(from, "")),
                    DEADLINE,
                )
                .await
        };
        let foreign = join(Rc::clone(&first.peers), 1, second.address.clone()).await;
        if foreign.is_ok() {
            return Err(format!("a node of cluster a joined cluster b: {foreign:?}"));
        }
        let new = join(Rc::clone(&joining.peers), 3, second.address.clone()).await;
        if new != Ok(PeerResponse::Joined(Ok(()))) {
            return Err(format!("a node of no cluster yet is let in: {new:?}"));
        }
        first.peers.set_cluster(Some(0xb));
        let same = join(Rc::clone(&first.peers), 1, second.address.clone()).await;
        if same != Ok(PeerResponse::Joined(Ok(()))) {
            return Err(format!("a node of the same cluster is let in: {same:?}"));
        }
        Ok(())
    });
    join(outcome);
}

/// A node that restarted (a `Hello` from another process of it) gets a new connection: the one
/// to its old process is dropped at once. (A SIGKILLed process sends no close, and its successor
/// ignores the old connection's packets, so messages went into it until its idle timeout.) The
/// restart is played by raw connections as node 2, two processes one after the other.
#[test]
fn a_restarted_peer_gets_a_new_connection_at_once() {
    logs();
    let ca = CertificateAuthority::new("test cluster").expect("CA");
    let (one, two) = (credentials(&ca), credentials(&ca));
    let outcome = spawn("restarts", move || async move {
        let first = start_node(1, &one, 0)?;
        let second = start_node(2, &two, 0)?;
        first.peers.set_address(2, &second.address);
        let deadline = Instant::now() + DEADLINE;
        let old_link = loop {
            first.peers.send(2, PeerMessage::Raft(vec![1]));
            if let Some(link) = first.peers.link_id(2) {
                break link;
            }
            if Instant::now() > deadline {
                return Err("node 1 never connected to node 2".into());
            }
            runtime::sleep(Duration::from_millis(10)).await;
        };
        let raw = runnel_net::endpoint(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            None,
            &EndpointOptions::default(),
        )
        .map_err(|e| e.to_string())?;
        let as_two = || {
            peer_client_config(
                two.node.identity(),
                std::slice::from_ref(&two.ca),
                &TransportLimits::DEFAULT,
            )
            .map_err(|e| e.to_string())
        };
        // Node 2's process 7 speaks to node 1: the first incarnation node 1 sees; nothing moves.
        let seven = raw_connect(&raw, as_two()?, &first.address)
            .await?
            .map_err(|e| e.to_string())?;
        let _seven = raw_uni(&seven, &incarnation_hello(2, 1, 7, &[])?).await?;
        while first.peers.last_heard(2).is_none() {
            if Instant::now() > deadline {
                return Err("node 1 never heard process 7".into());
            }
            runtime::sleep(Duration::from_millis(10)).await;
        }
        let heard = first.peers.last_heard(2);
        // Process 8 (node 2 restarted): the link to the old process goes.
        let eight = raw_connect(&raw, as_two()?, &first.address)
            .await?
            .map_err(|e| e.to_string())?;
        let _eight = raw_uni(&eight, &incarnation_hello(2, 1, 8, &[])?).await?;
        while first.peers.link_id(2) == Some(old_link) {
            if Instant::now() > deadline {
                return Err(format!(
                    "node 1 kept its connection to node 2's old process (heard {heard:?})"
                ));
            }
            runtime::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    });
    join(outcome);
}

/// Waits for a raw test client's connection to end, and checks the server's close code when
/// it arrives. (A close sent just after the handshake may not get out: quinn holds it back
/// while MTU discovery's large probes fill the congestion window, and the client then learns
/// of the closed connection from the server's stateless reset. Either way it is closed.)
async fn assert_closed_with(connection: &quinn::Connection, code: PeerCloseCode) {
    match connection.closed().await {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code.into_inner(), code as u64, "{close}")
        }
        quinn::ConnectionError::Reset => {}
        other => panic!("the connection ended otherwise than closed with {code:?}: {other}"),
    }
}

/// A client configuration for the peer ALPN that presents no certificate.
fn anonymous_peer_client(ca: &CertificateDer<'static>) -> TestResult<quinn::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| e.to_string())?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![PEER_ALPN.to_vec()];
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
    Ok(quinn::ClientConfig::new(Arc::new(crypto)))
}

/// A raw connection from `endpoint` to `address`.
async fn raw_connect(
    endpoint: &quinn::Endpoint,
    config: quinn::ClientConfig,
    address: &str,
) -> TestResult<Result<quinn::Connection, quinn::ConnectionError>> {
    let address: SocketAddr = address.parse().map_err(|e| format!("{e}"))?;
    let connecting = endpoint
        .connect_with(config, address, "127.0.0.1")
        .map_err(|e| e.to_string())?;
    Ok(connecting.await)
}

/// A `Hello` from `from` to `to`, followed by `after`.
fn hello_frame(from: u64, to: u64, after: &[u8]) -> TestResult<Vec<u8>> {
    incarnation_hello(from, to, 1, after)
}

/// A `Hello` from process `incarnation` of node `from` to `to`, followed by `after`.
fn incarnation_hello(from: u64, to: u64, incarnation: u64, after: &[u8]) -> TestResult<Vec<u8>> {
    let hello = runnel_server::peer::Hello {
        from,
        to: Some(to),
        cluster: None,
        incarnation,
    };
    let bytes = runnel_server::peer::encode(&runnel_server::peer::Frame::Hello(hello))
        .map_err(|e| e.to_string())?;
    Ok([bytes.as_slice(), after].concat())
}

/// Writes raw bytes on a new unidirectional stream (and keeps it open).
async fn raw_uni(connection: &quinn::Connection, bytes: &[u8]) -> TestResult<quinn::SendStream> {
    let mut stream = connection.open_uni().await.map_err(|e| e.to_string())?;
    stream.write_all(bytes).await.map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Node 1 refuses, each on its own: a peer connection without a client certificate, one with
/// a certificate of another CA, one whose Hello names another node, and one that sends a
/// malformed frame after a valid Hello. Node 2's connection, before and after all that, keeps
/// delivering its messages in order: a bad connection closes only itself.
#[test]
fn bad_connections_are_refused_and_others_keep_flowing() {
    logs();
    let ca = CertificateAuthority::new("test cluster").expect("CA");
    let stranger_ca = CertificateAuthority::new("another cluster").expect("CA");
    let (one, two, rogue) = (credentials(&ca), credentials(&ca), credentials(&ca));
    let stranger = credentials(&stranger_ca);
    let (address_one, address_of_one) = mpsc::channel::<String>();
    let done = Arc::new(AtomicUsize::new(0));
    let done_one = Arc::clone(&done);
    let node_one = spawn("guarded-1", move || async move {
        let node = start_node(1, &one, 0)?;
        address_one
            .send(node.address.clone())
            .map_err(|e| e.to_string())?;
        // Exactly node 2's two messages arrive, in order: nothing from the bad connections.
        for expected in [0_u8, 1] {
            match next(&node.peers).await? {
                Inbound::Message {
                    from: 2,
                    message: PeerMessage::Raft(bytes),
                } => assert_eq!(bytes, [expected]),
                other => return Err(format!("unexpected {other:?}")),
            }
        }
        barrier(&done_one, 2).await?;
        Ok(())
    });
    let node_two = spawn("clients-2", move || async move {
        let node = start_node(2, &two, 0)?;
        let one_address = receive(&address_of_one, "node 1's address").await?;
        node.peers.set_address(1, &one_address);
        node.peers.send(1, PeerMessage::Raft(vec![0]));
        let raw = runnel_net::endpoint(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            None,
            &EndpointOptions::default(),
        )
        .map_err(|e| e.to_string())?;

        // No client certificate: the handshake completes, then node 1 closes it.
        let anonymous = raw_connect(&raw, anonymous_peer_client(&two.ca)?, &one_address)
            .await?
            .map_err(|e| format!("anonymous handshake: {e}"))?;
        assert_closed_with(&anonymous, PeerCloseCode::Unauthenticated).await;

        // A certificate of another CA: the handshake fails (on one side or the other).
        let foreign = peer_client_config(
            stranger.node.identity(),
            std::slice::from_ref(&two.ca),
            &TransportLimits::DEFAULT,
        )
        .map_err(|e| e.to_string())?;
        match raw_connect(&raw, foreign, &one_address).await? {
            Err(_) => {}
            Ok(connection) => {
                let end = connection.closed().await;
                assert!(
                    matches!(
                        end,
                        quinn::ConnectionError::ConnectionClosed(_) | quinn::ConnectionError::Reset
                    ),
                    "refused by TLS, not by the application: {end}"
                );
            }
        }

        let member = || {
            peer_client_config(
                rogue.node.identity(),
                std::slice::from_ref(&two.ca),
                &TransportLimits::DEFAULT,
            )
            .map_err(|e| e.to_string())
        };
        // A Hello for node 5 reaches node 1: refused as the wrong node.
        let misdirected = raw_connect(&raw, member()?, &one_address)
            .await?
            .map_err(|e| e.to_string())?;
        let _stream = raw_uni(&misdirected, &hello_frame(9, 5, &[])?).await?;
        assert_closed_with(&misdirected, PeerCloseCode::WrongNode).await;

        // A valid Hello, then garbage: node 1 closes this connection as malformed.
        let garbled = raw_connect(&raw, member()?, &one_address)
            .await?
            .map_err(|e| e.to_string())?;
        let _stream = raw_uni(&garbled, &hello_frame(9, 1, &[0xff; 40])?).await?;
        assert_closed_with(&garbled, PeerCloseCode::MalformedFrame).await;

        // Node 2's own connection still delivers.
        node.peers.send(1, PeerMessage::Raft(vec![1]));
        barrier(&done, 2).await?;
        Ok(())
    });
    join(node_two);
    join(node_one);
}
