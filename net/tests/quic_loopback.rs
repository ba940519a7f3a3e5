//! Real QUIC over loopback between glommio executors on different threads: bulk transfer,
//! many concurrent streams, and a client that vanishes without closing.

mod support;

use std::net::SocketAddr;
use std::sync::mpsc;

use quinn::rustls::pki_types::CertificateDer;
use runnel_net::TransportLimits;
use support::{Pattern, Summary};

/// What the server of a test hands the client: where to connect and what to trust.
type Rendezvous = (SocketAddr, Vec<CertificateDer<'static>>);

const BULK_BYTES: usize = 64 << 20;
const BULK_CHUNK_BYTES: usize = 64 << 10;

/// Sends `total_bytes` of [`Pattern`] `seed` on a new stream of `conn` and finishes it;
/// returns the stream's receiving half and the summary the server must answer.
async fn send_pattern(
    conn: &quinn::Connection,
    seed: u64,
    total_bytes: usize,
) -> Result<(quinn::RecvStream, Summary), String> {
    let (mut send, recv) = conn.open_bi().await.map_err(|e| format!("open: {e}"))?;
    let mut pattern = Pattern::new(seed);
    let mut chunk = vec![0_u8; BULK_CHUNK_BYTES];
    let mut hasher = crc32fast::Hasher::new();
    let mut sent = 0;
    while sent < total_bytes {
        let len = BULK_CHUNK_BYTES.min(total_bytes - sent);
        let chunk = &mut chunk[..len];
        pattern.fill(chunk);
        hasher.update(chunk);
        send.write_all(chunk)
            .await
            .map_err(|e| format!("write at {sent}: {e}"))?;
        sent += len;
    }
    send.finish().map_err(|e| format!("finish: {e}"))?;
    let expected = Summary {
        crc32: hasher.finalize(),
        len: total_bytes as u64,
    };
    Ok((recv, expected))
}

/// A client on one executor streams 64 MiB to a server on another; the server's CRC-32 and
/// length of what arrived match what was sent. Proves the runtime's send path (GSO, full send
/// buffers), receive path (GRO, readiness probes) and timers under sustained load.
#[test]
fn bulk_stream_arrives_intact() {
    let (rendezvous, rendezvous_rx) = mpsc::channel::<Rendezvous>();
    let server = support::spawn("bulk-server", move || async move {
        let (endpoint, trusted) = support::server(&TransportLimits::DEFAULT)?;
        let addr = endpoint.local_addr().map_err(|e| e.to_string())?;
        rendezvous
            .send((addr, trusted))
            .map_err(|e| e.to_string())?;
        let conn = support::accept(&endpoint).await?;
        let (send, recv) = conn.accept_bi().await.map_err(|e| format!("accept: {e}"))?;
        let summary = support::serve_checksum(send, recv).await?;
        // The client closes once it has the answer.
        conn.closed().await;
        endpoint.wait_idle().await;
        Ok::<Summary, String>(summary)
    });
    let (addr, trusted) = rendezvous_rx.recv().expect("server starts");

    let client = support::spawn("bulk-client", move || async move {
        let endpoint = support::client(&trusted, &TransportLimits::DEFAULT)?;
        let conn = support::connect(&endpoint, addr).await?;
        let (mut recv, expected) = send_pattern(&conn, 0x5eed, BULK_BYTES).await?;
        let answered = support::read_answer(&mut recv).await?;
        let mtu = conn.stats().path.current_mtu;
        conn.close(0_u32.into(), b"done");
        endpoint.wait_idle().await;
        Ok::<(Summary, Summary, u16), String>((expected, answered, mtu))
    });

    let (expected, answered, mtu) = client.join().expect("client succeeds");
    let served = server.join().expect("server succeeds");
    assert_eq!(expected.len, BULK_BYTES as u64);
    assert_eq!(answered, expected, "server's checksum of what arrived");
    assert_eq!(served, expected);
    // Loopback carries 64 KiB datagrams: MTU discovery found far more than quinn's default
    // ceiling of 1,452 bytes (fewer packets, headers, AEAD calls and acknowledgements).
    assert!(
        mtu > 16_000,
        "the path MTU stayed at {mtu} bytes on loopback"
    );
}

const STREAMS: usize = 200;

/// The payload of stream `index`: a few KiB, different for every stream.
fn stream_payload(index: usize) -> Vec<u8> {
    Pattern::bytes(index as u64 + 1, 2048 + 37 * index)
}

/// What the echo server answers for `request`: the bytes reversed.
fn echo_answer(request: &[u8]) -> Vec<u8> {
    request.iter().rev().copied().collect()
}

/// 200 streams open at once on one connection, each answered with its own payload reversed:
/// no answer lands on the wrong stream, none is lost, and the server sees every stream.
#[test]
fn concurrent_streams_are_answered_independently() {
    let (rendezvous, rendezvous_rx) = mpsc::channel::<Rendezvous>();
    let server = support::spawn("streams-server", move || async move {
        let (endpoint, trusted) = support::server(&TransportLimits::DEFAULT)?;
        let addr = endpoint.local_addr().map_err(|e| e.to_string())?;
        rendezvous
            .send((addr, trusted))
            .map_err(|e| e.to_string())?;
        let conn = support::accept(&endpoint).await?;
        let mut handlers = Vec::new();
        // Until the client closes the connection (after it has every answer).
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            handlers.push(glommio::spawn_local(async move {
                let request = recv
                    .read_to_end(1 << 20)
                    .await
                    .map_err(|e| format!("read: {e}"))?;
                send.write_all(&echo_answer(&request))
                    .await
                    .map_err(|e| format!("write: {e}"))?;
                send.finish().map_err(|e| format!("finish: {e}"))
            }));
        }
        let served = handlers.len();
        for handler in handlers {
            handler.await?;
        }
        endpoint.wait_idle().await;
        Ok::<usize, String>(served)
    });
    let (addr, trusted) = rendezvous_rx.recv().expect("server starts");

    let client = support::spawn("streams-client", move || async move {
        let endpoint = support::client(&trusted, &TransportLimits::DEFAULT)?;
        let conn = support::connect(&endpoint, addr).await?;
        let requests: Vec<_> = (0..STREAMS)
            .map(|index| {
                let conn = conn.clone();
                glommio::spawn_local(async move {
                    let payload = stream_payload(index);
                    let (mut send, mut recv) =
                        conn.open_bi().await.map_err(|e| format!("open: {e}"))?;
                    send.write_all(&payload)
                        .await
                        .map_err(|e| format!("write {index}: {e}"))?;
                    send.finish().map_err(|e| format!("finish {index}: {e}"))?;
                    let answer = recv
                        .read_to_end(1 << 20)
                        .await
                        .map_err(|e| format!("read {index}: {e}"))?;
                    Ok::<bool, String>(answer == echo_answer(&payload))
                })
            })
            .collect();
        let mut correct = 0;
        for request in requests {
            if request.await? {
                correct += 1;
            }
        }
        conn.close(0_u32.into(), b"done");
        endpoint.wait_idle().await;
        Ok::<usize, String>(correct)
    });

    let correct = client.join().expect("client succeeds");
    let served = server.join().expect("server succeeds");
    assert_eq!(correct, STREAMS, "answers matching their stream's payload");
    assert_eq!(served, STREAMS, "streams the server accepted");
}

/// Idle timeout of the server in the vanishing-client test: how long it takes to notice.
const VANISH_IDLE_TIMEOUT_MS: u32 = 1_000;

/// A client that disappears mid-stream (as if its process were killed: no CONNECTION_CLOSE,
/// no more packets) costs the server only that connection, which ends by idle timeout; a
/// second client is served meanwhile and its data arrives intact.
#[test]
fn vanished_client_does_not_stop_the_server() {
    let (rendezvous, rendezvous_rx) = mpsc::channel::<Rendezvous>();
    let server = support::spawn("vanish-server", move || async move {
        let mut limits = TransportLimits::default();
        limits.idle_timeout_ms = VANISH_IDLE_TIMEOUT_MS;
        let (endpoint, trusted) = support::server(&limits)?;
        let addr = endpoint.local_addr().map_err(|e| e.to_string())?;
        rendezvous
            .send((addr, trusted))
            .map_err(|e| e.to_string())?;
        let mut handlers = Vec::new();
        for _ in 0..2 {
            let conn = support::accept(&endpoint).await?;
            handlers.push(glommio::spawn_local(async move {
                let (send, recv) = conn.accept_bi().await.map_err(|e| format!("accept: {e}"))?;
                let summary = support::serve_checksum(send, recv).await?;
                conn.closed().await;
                Ok::<Summary, String>(summary)
            }));
        }
        let mut outcomes = Vec::new();
        for handler in handlers {
            outcomes.push(handler.await);
        }
        endpoint.close(0_u32.into(), b"bye");
        endpoint.wait_idle().await;
        Ok::<Vec<Result<Summary, String>>, String>(outcomes)
    });
    let (addr, trusted) = rendezvous_rx.recv().expect("server starts");

    // Client 1 sends 1 MiB without finishing, waits until the server has read the first
    // 64 KiB (the ack), then vanishes: its handles are leaked so no close is ever sent, and
    // its executor stops, so nothing else is sent either.
    let vanishing_trusted = trusted.clone();
    let vanishing = support::spawn("vanishing-client", move || async move {
        let endpoint = support::client(&vanishing_trusted, &TransportLimits::DEFAULT)?;
        let conn = support::connect(&endpoint, addr).await?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| format!("open: {e}"))?;
        send.write_all(&Pattern::bytes(7, 1 << 20))
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut ack = [0_u8; 1];
        recv.read_exact(&mut ack)
            .await
            .map_err(|e| format!("ack: {e}"))?;
        std::mem::forget((send, recv, conn, endpoint));
        Ok::<u8, String>(ack[0])
    });
    assert_eq!(
        vanishing.join().expect("vanishing client gets its ack"),
        support::ACK
    );

    let staying = support::spawn("staying-client", move || async move {
        let endpoint = support::client(&trusted, &TransportLimits::DEFAULT)?;
        let conn = support::connect(&endpoint, addr).await?;
        let (mut recv, expected) = send_pattern(&conn, 99, 3 << 20).await?;
        let answered = support::read_answer(&mut recv).await?;
        conn.close(0_u32.into(), b"done");
        endpoint.wait_idle().await;
        Ok::<(Summary, Summary), String>((expected, answered))
    });
    let (expected, answered) = staying.join().expect("second client is served");
    assert_eq!(answered, expected);

    let outcomes = server.join().expect("server survives");
    assert_eq!(outcomes.len(), 2);
    match &outcomes[0] {
        Err(error) => assert!(error.contains("timed out"), "vanished client: {error}"),
        Ok(summary) => panic!("vanished client's stream completed: {summary:?}"),
    }
    assert_eq!(outcomes[1], Ok(expected));
}
