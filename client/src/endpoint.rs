//! The SDK's QUIC endpoint: quinn on the current tokio runtime, accepting datagrams as large
//! as the transport limits allow, with every GSO send cut to what the kernel accepts.
//!
//! quinn's `Endpoint::client` accepts at most 1,472-byte datagrams, which caps what MTU
//! discovery can find; the limits raise it (`TransportLimits::udp_payload_bytes_max`). Once
//! the path MTU passes ~6.5 KB, quinn's GSO batches exceed what one `sendmsg` may carry and
//! would be dropped whole, so the sockets are tokio's wrapped in `runnel_net::gso`'s batching.

use std::net::SocketAddr;
use std::sync::Arc;

use runnel_net::gso::BatchingRuntime;
use runnel_net::TransportLimits;

/// A client endpoint bound to `bind`, on the current tokio runtime.
pub(crate) fn client_endpoint(
    bind: SocketAddr,
    limits: &TransportLimits,
) -> std::io::Result<quinn::Endpoint> {
    let socket = std::net::UdpSocket::bind(bind)?;
    let tokio = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for QUIC (tokio) is running"))?;
    let runtime = Arc::new(BatchingRuntime::new(tokio));
    quinn::Endpoint::new(limits.endpoint_config(), None, socket, runtime)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use glommio::{LocalExecutorBuilder, Placement};
    use quinn::rustls::pki_types::CertificateDer;
    use runnel_net::EndpointOptions;
    use tokio::sync::oneshot;

    use super::*;

    const TRANSFER_BYTES: usize = 16 << 20;
    const CHUNK_BYTES: usize = 64 << 10;
    /// A guard against hangs, not a performance bound.
    const TEST_DEADLINE: Duration = Duration::from_secs(60);

    /// The byte at `offset` of the transfer.
    fn pattern(offset: usize) -> u8 {
        (offset % 251) as u8
    }

    /// Writes `TRANSFER_BYTES` of the pattern to `send` and finishes the stream.
    async fn send_pattern(send: &mut quinn::SendStream) -> Result<(), String> {
        let mut chunk = vec![0_u8; CHUNK_BYTES];
        for start in (0..TRANSFER_BYTES).step_by(CHUNK_BYTES) {
            for (index, byte) in chunk.iter_mut().enumerate() {
                *byte = pattern(start + index);
            }
            send.write_all(&chunk)
                .await
                .map_err(|e| format!("write at {start}: {e}"))?;
        }
        send.finish().map_err(|e| e.to_string())
    }

    /// Reads `recv` to its end: how many bytes came, and how many differ from the pattern.
    async fn receive_pattern(recv: &mut quinn::RecvStream) -> Result<(usize, usize), String> {
        let (mut received, mut mismatched) = (0, 0);
        while let Some(chunk) = recv
            .read_chunk(usize::MAX, true)
            .await
            .map_err(|e| format!("read at {received}: {e}"))?
        {
            for (index, byte) in chunk.bytes.iter().enumerate() {
                if *byte != pattern(received + index) {
                    mismatched += 1;
                }
            }
            received += chunk.bytes.len();
        }
        Ok((received, mismatched))
    }

    /// What one side saw: bytes received, bytes that differed from the pattern, and the path
    /// MTU its own sends reached.
    #[derive(Debug, PartialEq, Eq)]
    struct Seen {
        received: usize,
        mismatched: usize,
        mtu: u16,
    }

    /// The server's half, on a glommio executor as in the node: accepts one connection, reads
    /// one stream to its end, sends as much back, and waits for the client to close.
    async fn serve(
        rendezvous: oneshot::Sender<(SocketAddr, Vec<CertificateDer<'static>>)>,
    ) -> Result<Seen, String> {
        let identity = runnel_net::self_signed(&["localhost"]).map_err(|e| e.to_string())?;
        let trusted = identity.cert_chain.clone();
        let config = runnel_net::server_config(identity, &TransportLimits::DEFAULT)
            .map_err(|e| e.to_string())?;
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let endpoint = runnel_net::endpoint(loopback, Some(config), &EndpointOptions::default())
            .map_err(|e| format!("server endpoint: {e}"))?;
        let addr = endpoint.local_addr().map_err(|e| e.to_string())?;
        rendezvous
            .send((addr, trusted))
            .map_err(|_| "the test is gone".to_owned())?;
        let incoming = endpoint.accept().await.ok_or("endpoint closed")?;
        let conn = incoming.await.map_err(|e| format!("handshake: {e}"))?;
        let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let (received, mismatched) = receive_pattern(&mut recv).await?;
        send_pattern(&mut send).await?;
        conn.closed().await;
        let mtu = conn.stats().path.current_mtu;
        endpoint.wait_idle().await;
        Ok(Seen {
            received,
            mismatched,
            mtu,
        })
    }

    /// The SDK's endpoint (quinn on tokio, through `BatchingRuntime`) and a server endpoint on
    /// glommio (the node's runtime) send each other 16 MiB over loopback: everything arrives
    /// intact, and MTU discovery takes both directions far above quinn's default ceiling of
    /// 1,452 bytes. Before issue 9's fix, quinn's `Endpoint::client` capped it at 1,452; with
    /// a larger ceiling but tokio's socket unwrapped, every GSO batch above 64 KiB was refused
    /// by the kernel, dropped without a word, and the MTU fell back to 1,200.
    #[tokio::test]
    async fn loopback_mtu_grows_between_the_sdk_and_a_glommio_server() {
        let (rendezvous, arrived) = oneshot::channel();
        let (served_tx, served) = oneshot::channel();
        let executor = LocalExecutorBuilder::new(Placement::Unbound)
            .name("mtu-server")
            // glommio pins ~3× this; tests share an 8 MiB memlock limit.
            .io_memory(64 << 10)
            .spawn(move || async move {
                let _ = served_tx.send(serve(rendezvous).await);
            })
            .expect("the server's executor starts");

        let client = async {
            let (addr, trusted) = arrived.await.map_err(|_| "the server did not start")?;
            let limits = TransportLimits::DEFAULT;
            let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
            let mut endpoint = client_endpoint(loopback, &limits).map_err(|e| e.to_string())?;
            endpoint.set_default_client_config(
                runnel_net::client_config(&trusted, &limits).map_err(|e| e.to_string())?,
            );
            let conn = endpoint
                .connect(addr, "localhost")
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
            send_pattern(&mut send).await?;
            let (received, mismatched) = receive_pattern(&mut recv).await?;
            let mtu = conn.stats().path.current_mtu;
            conn.close(0_u32.into(), b"done");
            endpoint.wait_idle().await;
            Ok::<_, String>(Seen {
                received,
                mismatched,
                mtu,
            })
        };
        let client = tokio::time::timeout(TEST_DEADLINE, client)
            .await
            .expect("the client finishes in time")
            .expect("the client's transfers succeed");
        let server = tokio::time::timeout(TEST_DEADLINE, served)
            .await
            .expect("the server finishes in time")
            .expect("the server reports")
            .expect("the server's transfers succeed");
        executor.join().expect("the server's executor ends");

        // Both directions arrived whole, and both directions' MTU discovery went far above
        // 1,452 bytes: the client's large datagrams reach glommio's socket, the server's
        // reach tokio's.
        for (side, seen) in [("client", &client), ("server", &server)] {
            assert_eq!(
                (seen.received, seen.mismatched),
                (TRANSFER_BYTES, 0),
                "{side}"
            );
            assert!(
                seen.mtu > 16_000,
                "the {side}'s path MTU stayed at {} bytes on loopback",
                seen.mtu
            );
        }
    }
}
