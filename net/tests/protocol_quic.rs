//! The protocol over real QUIC between two glommio executors: the handshake on the first
//! stream, an `Append` carrying a batch answered by `AppendOk`, and a `Read` answered by
//! several `ReadChunk` frames and a `ReadEnd`. Proves the frame reader and writers work on
//! quinn's streams, and that a batch arrives 16-byte aligned and validates in place.

mod support;

use std::net::SocketAddr;
use std::sync::mpsc;

use quinn::rustls::pki_types::CertificateDer;
use runnel_core::batch::iter_batches;
use runnel_core::{BatchBuilder, BatchView, Limits, Offset, Record, ShardId, StreamName};
use runnel_net::protocol::*;
use runnel_net::TransportLimits;

type Rendezvous = (SocketAddr, Vec<CertificateDer<'static>>);

const READ_CHUNKS: usize = 3;
const BATCHES_PER_CHUNK: usize = 4;

fn batch(seed: u8, records: usize) -> Vec<u8> {
    let mut builder = BatchBuilder::new();
    for index in 0..records {
        builder.push(Record::at(vec![seed; 100 + index], i64::from(seed)));
    }
    builder.finish(&Limits::DEFAULT).expect("batch").to_vec()
}

fn stream() -> StreamName {
    StreamName::new("events").expect("valid name")
}

/// The server: handshake, then one Append and one Read, each on its own stream.
async fn serve(endpoint: quinn::Endpoint) -> Result<usize, String> {
    let limits = FrameLimits::DEFAULT;
    let conn = support::accept(&endpoint).await?;
    let mut reader = FrameReader::new(limits);

    // Handshake: the first stream.
    let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| format!("accept: {e}"))?;
    let hello = match reader.read_request(&mut recv).await {
        Ok(Some((Request::Hello(hello), _))) => hello,
        other => return Err(format!("expected Hello, got {other:?}")),
    };
    let version =
        negotiate(&hello, PROTOCOL_VERSION_MIN, PROTOCOL_VERSION_MAX).map_err(|e| e.to_string())?;
    let ok = Response::HelloOk(HelloOk {
        version,
        node_id: 1,
        core: 0,
        core_count: 1,
        base_port: 7000,
        server_version: "test".to_owned(),
        record_bytes_max: 1 << 20,
        batch_bytes_max: 8 << 20,
        frame_payload_bytes_max: limits.payload_bytes_max,
    });
    write_response(&mut send, &ok, &[], &limits)
        .await
        .map_err(|e| format!("HelloOk: {e}"))?;
    send.finish().map_err(|e| e.to_string())?;

    // Append: the batch arrives aligned and validates where it lies.
    let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| format!("accept: {e}"))?;
    let answer = match reader.read_request(&mut recv).await {
        Ok(Some((Request::Append(append), payload))) => {
            if !(payload.as_ptr() as usize).is_multiple_of(16) {
                return Err("payload not aligned".to_owned());
            }
            match BatchView::validate(payload, &Limits::DEFAULT) {
                Ok(view) => Response::AppendOk(AppendOk {
                    shard: append.shard,
                    base_offset: Offset(0),
                    last_offset: Offset(u64::from(view.record_count()) - 1),
                }),
                Err(error) => Response::Error(ErrorResponse::new(
                    ErrorCode::InvalidBatch,
                    error.to_string(),
                )),
            }
        }
        other => return Err(format!("expected Append, got {other:?}")),
    };
    write_response(&mut send, &answer, &[], &limits)
        .await
        .map_err(|e| format!("AppendOk: {e}"))?;
    send.finish().map_err(|e| e.to_string())?;

    // Read: chunks of whole batches, then the end.
    let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| format!("accept: {e}"))?;
    match reader.read_request(&mut recv).await {
        Ok(Some((Request::Read(_), _))) => {}
        other => return Err(format!("expected Read, got {other:?}")),
    }
    let mut sent = 0;
    for chunk in 0..READ_CHUNKS {
        let batches: Vec<Vec<u8>> = (0..BATCHES_PER_CHUNK)
            .map(|index| batch((chunk * BATCHES_PER_CHUNK + index) as u8, 50))
            .collect();
        let parts: Vec<&[u8]> = batches.iter().map(Vec::as_slice).collect();
        sent += batches.len();
        let frame = Response::ReadChunk(ReadChunk {
            next_offset: Offset(sent as u64 * 50),
            batch_count: batches.len() as u32,
        });
        write_response(&mut send, &frame, &parts, &limits)
            .await
            .map_err(|e| format!("ReadChunk: {e}"))?;
    }
    let end = Response::ReadEnd(ReadEnd {
        next_offset: Offset(sent as u64 * 50),
        reason: ReadEndReason::CaughtUp,
    });
    write_response(&mut send, &end, &[], &limits)
        .await
        .map_err(|e| format!("ReadEnd: {e}"))?;
    send.finish().map_err(|e| e.to_string())?;

    conn.closed().await;
    endpoint.wait_idle().await;
    Ok(sent)
}

/// What the client saw.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    version: u16,
    appended: AppendOk,
    batches_read: usize,
    end: ReadEnd,
}

async fn client(endpoint: quinn::Endpoint, addr: SocketAddr) -> Result<Seen, String> {
    let limits = FrameLimits::DEFAULT;
    let conn = support::connect(&endpoint, addr).await?;
    let mut reader = FrameReader::new(limits);

    let hello = Hello::new("protocol-quic-test");
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| format!("open: {e}"))?;
    write_request(&mut send, &Request::Hello(hello.clone()), &[], &limits)
        .await
        .map_err(|e| format!("Hello: {e}"))?;
    send.finish().map_err(|e| e.to_string())?;
    let ok = match reader.read_response(&mut recv).await {
        Ok(Some((Response::HelloOk(ok), _))) => ok,
        other => return Err(format!("expected HelloOk, got {other:?}")),
    };
    if !hello.accepts(&ok) {
        return Err(format!("server chose version {}", ok.version));
    }

    let batch = batch(200, 10);
    let append = Request::Append(Append {
        stream: stream(),
        shard: ShardId(5),
    });
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| format!("open: {e}"))?;
    write_request(&mut send, &append, &batch, &limits)
        .await
        .map_err(|e| format!("Append: {e}"))?;
    send.finish().map_err(|e| e.to_string())?;
    let appended = match reader.read_response(&mut recv).await {
        Ok(Some((Response::AppendOk(ok), _))) => ok,
        other => return Err(format!("expected AppendOk, got {other:?}")),
    };

    let read = Request::Read(Read {
        stream: stream(),
        shard: ShardId(5),
        from: ReadFrom::Earliest,
        until: None,
        max_bytes: 0,
        tail: false,
    });
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| format!("open: {e}"))?;
    write_request(&mut send, &read, &[], &limits)
        .await
        .map_err(|e| format!("Read: {e}"))?;
    send.finish().map_err(|e| e.to_string())?;
    let mut batches_read = 0;
    let end = loop {
        match reader.read_response(&mut recv).await {
            Ok(Some((Response::ReadChunk(chunk), payload))) => {
                let mut count = 0;
                for view in iter_batches(payload) {
                    let view = view.map_err(|e| format!("batch: {e}"))?;
                    let records = view.records().map_err(|e| format!("records: {e}"))?;
                    if records.count() != view.record_count() as usize {
                        return Err("record count differs from the header".to_owned());
                    }
                    count += 1;
                }
                if count != chunk.batch_count as usize {
                    return Err(format!("{count} batches, chunk said {}", chunk.batch_count));
                }
                batches_read += count;
            }
            Ok(Some((Response::ReadEnd(end), _))) => break end,
            other => return Err(format!("expected ReadChunk or ReadEnd, got {other:?}")),
        }
    };
    match reader.read_response(&mut recv).await {
        Ok(None) => {}
        other => return Err(format!("expected the stream's end, got {other:?}")),
    }

    conn.close(CloseCode::Done.varint(), b"done");
    endpoint.wait_idle().await;
    Ok(Seen {
        version: ok.version,
        appended,
        batches_read,
        end,
    })
}

#[test]
fn handshake_append_and_read_over_quic() {
    let (rendezvous, rendezvous_rx) = mpsc::channel::<Rendezvous>();
    let server = support::spawn("protocol-server", move || async move {
        let (endpoint, trusted) = support::server(&TransportLimits::DEFAULT)?;
        let addr = endpoint.local_addr().map_err(|e| e.to_string())?;
        rendezvous
            .send((addr, trusted))
            .map_err(|e| e.to_string())?;
        serve(endpoint).await
    });
    let (addr, trusted) = rendezvous_rx.recv().expect("server starts");
    let client = support::spawn("protocol-client", move || async move {
        let endpoint = support::client(&trusted, &TransportLimits::DEFAULT)?;
        client(endpoint, addr).await
    });

    let seen = client.join().expect("client succeeds");
    let sent = server.join().expect("server succeeds");
    assert_eq!(sent, READ_CHUNKS * BATCHES_PER_CHUNK);
    assert_eq!(
        seen,
        Seen {
            version: PROTOCOL_VERSION_MAX,
            appended: AppendOk {
                shard: ShardId(5),
                base_offset: Offset(0),
                last_offset: Offset(9),
            },
            batches_read: sent,
            end: ReadEnd {
                next_offset: Offset(sent as u64 * 50),
                reason: ReadEndReason::CaughtUp,
            },
        }
    );
}
