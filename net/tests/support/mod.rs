//! Shared helpers of the net tests: glommio executors small enough for a tight memlock limit,
//! endpoints on loopback, and a deterministic payload.

#![allow(dead_code, missing_docs)]

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::mpsc;
use std::time::Duration;

use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};
use quinn::rustls::pki_types::CertificateDer;
use runnel_net::{EndpointOptions, TransportLimits};

/// glommio pins about 3× `io_memory` per executor; 64 KiB keeps several test executors within
/// an 8 MiB `RLIMIT_MEMLOCK` (without registered buffers glommio still works, just slower).
pub const TEST_IO_MEMORY_BYTES: usize = 64 << 10;

/// A guard against hangs, not a performance bound: every test here finishes in seconds.
pub const TEST_DEADLINE: Duration = Duration::from_secs(120);

/// The server name every test certificate carries.
pub const SERVER_NAME: &str = "localhost";

/// A glommio executor on its own thread, running one future.
pub struct Executor<T> {
    name: String,
    output: mpsc::Receiver<T>,
    handle: ExecutorJoinHandle<()>,
}

/// Starts an unpinned executor named `name` that runs `make()`'s future.
pub fn spawn<T, F, Fut>(name: &str, make: F) -> Executor<T>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let (sender, output) = mpsc::channel();
    let handle = LocalExecutorBuilder::new(Placement::Unbound)
        .name(name)
        .io_memory(TEST_IO_MEMORY_BYTES)
        .spawn(move || async move {
            // The receiver is gone only if the test already failed.
            let _ = sender.send(make().await);
        })
        .unwrap_or_else(|error| panic!("cannot start executor {name}: {error}"));
    Executor {
        name: name.to_owned(),
        output,
        handle,
    }
}

impl<T> Executor<T> {
    /// Waits for the future's output; re-raises the executor's panic, fails on a hang.
    pub fn join(self) -> T {
        match self.output.recv_timeout(TEST_DEADLINE) {
            Ok(output) => {
                if let Err(error) = self.handle.join() {
                    panic!("executor {} failed after its output: {error}", self.name);
                }
                output
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!(
                    "executor {} still running after {TEST_DEADLINE:?}",
                    self.name
                )
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => match self.handle.join() {
                Err(error) => panic!("executor {} failed: {error}", self.name),
                Ok(()) => panic!("executor {} ended without output", self.name),
            },
        }
    }
}

/// `127.0.0.1:0`.
pub fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

/// A server endpoint on the current executor with a fresh self-signed certificate; returns the
/// endpoint and the certificate a client must trust.
pub fn server(
    limits: &TransportLimits,
) -> Result<(quinn::Endpoint, Vec<CertificateDer<'static>>), String> {
    let identity = runnel_net::self_signed(&[SERVER_NAME]).map_err(|e| e.to_string())?;
    let trusted = identity.cert_chain.clone();
    let config = runnel_net::server_config(identity, limits).map_err(|e| e.to_string())?;
    let endpoint = runnel_net::endpoint(loopback(), Some(config), &EndpointOptions::default())
        .map_err(|e| format!("server endpoint: {e}"))?;
    Ok((endpoint, trusted))
}

/// A client endpoint on the current executor trusting `trusted`.
pub fn client(
    trusted: &[CertificateDer<'static>],
    limits: &TransportLimits,
) -> Result<quinn::Endpoint, String> {
    let mut endpoint = runnel_net::endpoint(loopback(), None, &EndpointOptions::default())
        .map_err(|e| format!("client endpoint: {e}"))?;
    let config = runnel_net::client_config(trusted, limits).map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// Connects `endpoint` to the test server at `addr`.
pub async fn connect(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
) -> Result<quinn::Connection, String> {
    endpoint
        .connect(addr, SERVER_NAME)
        .map_err(|e| format!("connect: {e}"))?
        .await
        .map_err(|e| format!("handshake: {e}"))
}

/// Accepts the next connection on a server endpoint.
pub async fn accept(endpoint: &quinn::Endpoint) -> Result<quinn::Connection, String> {
    let incoming = endpoint
        .accept()
        .await
        .ok_or_else(|| "server endpoint closed".to_owned())?;
    incoming.await.map_err(|e| format!("handshake: {e}"))
}

/// Deterministic bytes (xorshift64), so both sides can agree on content without sharing it.
pub struct Pattern(u64);

impl Pattern {
    pub fn new(seed: u64) -> Pattern {
        Pattern(seed | 1)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let bytes = self.0.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut bytes = vec![0_u8; len];
        Pattern::new(seed).fill(&mut bytes);
        bytes
    }
}

/// What a checksum server answers for a stream: CRC-32 and length of everything received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub crc32: u32,
    pub len: u64,
}

impl Summary {
    pub const ENCODED_LEN: usize = 12;

    pub fn encode(&self) -> [u8; Summary::ENCODED_LEN] {
        let mut out = [0_u8; Summary::ENCODED_LEN];
        out[..4].copy_from_slice(&self.crc32.to_le_bytes());
        out[4..].copy_from_slice(&self.len.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Summary, String> {
        if bytes.len() != Summary::ENCODED_LEN {
            return Err(format!("summary of {} bytes", bytes.len()));
        }
        let crc32 = u32::from_le_bytes(bytes[..4].try_into().map_err(|_| "crc bytes")?);
        let len = u64::from_le_bytes(bytes[4..].try_into().map_err(|_| "len bytes")?);
        Ok(Summary { crc32, len })
    }
}

/// The byte a checksum server sends as soon as it has read [`ACK_AFTER_BYTES`].
pub const ACK: u8 = b'+';
/// How much a checksum server reads before sending [`ACK`].
pub const ACK_AFTER_BYTES: u64 = 64 << 10;

/// Serves one checksum stream: reads to the end (sending [`ACK`] once [`ACK_AFTER_BYTES`] are
/// in, or at the end if the stream is shorter), then answers the [`Summary`].
pub async fn serve_checksum(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> Result<Summary, String> {
    let mut hasher = crc32fast::Hasher::new();
    let mut len = 0_u64;
    let mut acked = false;
    while let Some(chunk) = recv
        .read_chunk(usize::MAX, true)
        .await
        .map_err(|e| match e {
            quinn::ReadError::ConnectionLost(cause) => format!("read: connection lost: {cause}"),
            other => format!("read: {other}"),
        })?
    {
        hasher.update(&chunk.bytes);
        len += chunk.bytes.len() as u64;
        if !acked && len >= ACK_AFTER_BYTES {
            send.write_all(&[ACK])
                .await
                .map_err(|e| format!("ack: {e}"))?;
            acked = true;
        }
    }
    if !acked {
        send.write_all(&[ACK])
            .await
            .map_err(|e| format!("ack: {e}"))?;
    }
    let summary = Summary {
        crc32: hasher.finalize(),
        len,
    };
    send.write_all(&summary.encode())
        .await
        .map_err(|e| format!("summary: {e}"))?;
    send.finish().map_err(|e| format!("finish: {e}"))?;
    Ok(summary)
}

/// Reads a checksum server's answer: the [`ACK`] then the [`Summary`].
pub async fn read_answer(recv: &mut quinn::RecvStream) -> Result<Summary, String> {
    let answer = recv
        .read_to_end(1 + Summary::ENCODED_LEN)
        .await
        .map_err(|e| format!("answer: {e}"))?;
    match answer.split_first() {
        Some((&ACK, summary)) => Summary::decode(summary),
        _ => Err(format!("answer without ack: {answer:?}")),
    }
}
