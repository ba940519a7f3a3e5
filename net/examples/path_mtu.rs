//! What MTU discovery finds on a real path, and whether data crosses it intact: a QUIC server
//! and client on glommio with Runnel's transport limits, one on each host (or network
//! namespace). The client streams `BYTES` of a pattern; the server checks every byte and
//! answers; both print their path statistics (MTU, lost packets, black holes detected).
//!
//! ```text
//! path_mtu server 0.0.0.0:7100 /tmp/path-mtu.der        # writes its certificate there
//! path_mtu client 10.0.0.2:7100 /tmp/path-mtu.der 256M  # reads it to trust the server
//! ```
//!
//! Use it to check a jumbo-frame LAN (the MTU should settle near the interface MTU less 28
//! bytes for IPv4 and UDP headers) or a path with a smaller MTU than its ends (discovery must
//! settle below it, with the transfer intact).

use std::net::SocketAddr;
use std::time::Instant;

use glommio::{LocalExecutorBuilder, Placement};
use quinn::rustls::pki_types::CertificateDer;
use runnel_net::{EndpointOptions, TransportLimits};

const SERVER_NAME: &str = "localhost";
const CHUNK_BYTES: usize = 64 << 10;

fn pattern(offset: u64) -> u8 {
    (offset % 251) as u8
}

fn usage() -> ! {
    eprintln!(
        "usage: path_mtu server ADDR CERT_FILE | path_mtu client ADDR CERT_FILE BYTES[K|M|G]"
    );
    std::process::exit(2)
}

fn parse_bytes(text: &str) -> Option<u64> {
    let (digits, unit) = match text.as_bytes().last()? {
        b'K' | b'k' => (&text[..text.len() - 1], 1 << 10),
        b'M' | b'm' => (&text[..text.len() - 1], 1 << 20),
        b'G' | b'g' => (&text[..text.len() - 1], 1 << 30),
        _ => (text, 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(unit)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mode, addr, cert_path) = match args.as_slice() {
        [mode, addr, cert_path, ..] => (mode.clone(), addr.clone(), cert_path.clone()),
        _ => usage(),
    };
    let addr: SocketAddr = addr.parse().unwrap_or_else(|_| usage());
    let bytes = match (mode.as_str(), args.get(3)) {
        ("server", None) => 0,
        ("client", Some(bytes)) => parse_bytes(bytes).unwrap_or_else(|| usage()),
        _ => usage(),
    };
    let outcome = LocalExecutorBuilder::new(Placement::Unbound)
        .name("path-mtu")
        .spawn(move || async move {
            match mode.as_str() {
                "server" => serve(addr, &cert_path).await,
                _ => send(addr, &cert_path, bytes).await,
            }
        })
        .expect("executor starts")
        .join()
        .expect("executor finishes");
    if let Err(error) = outcome {
        eprintln!("path_mtu: {error}");
        std::process::exit(1);
    }
}

/// Serves one connection after another: each stream is read to its end, checked against the
/// pattern, and answered with the byte count and the count of wrong bytes.
async fn serve(addr: SocketAddr, cert_path: &str) -> Result<(), String> {
    let identity = runnel_net::self_signed(&[SERVER_NAME]).map_err(|e| e.to_string())?;
    let certificate = identity.cert_chain.first().ok_or("no certificate")?;
    std::fs::write(cert_path, certificate.as_ref()).map_err(|e| format!("{cert_path}: {e}"))?;
    let config = runnel_net::server_config(identity, &TransportLimits::DEFAULT)
        .map_err(|e| e.to_string())?;
    let endpoint = runnel_net::endpoint(addr, Some(config), &EndpointOptions::default())
        .map_err(|e| format!("bind {addr}: {e}"))?;
    println!("listening on {addr}");
    while let Some(incoming) = endpoint.accept().await {
        let conn = match incoming.await {
            Ok(conn) => conn,
            Err(error) => {
                eprintln!("handshake: {error}");
                continue;
            }
        };
        let peer = conn.remote_address();
        let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let (mut received, mut wrong) = (0_u64, 0_u64);
        while let Some(chunk) = recv
            .read_chunk(usize::MAX, true)
            .await
            .map_err(|e| format!("read: {e}"))?
        {
            for byte in chunk.bytes.iter() {
                wrong += u64::from(*byte != pattern(received));
                received += 1;
            }
        }
        let mut answer = received.to_le_bytes().to_vec();
        answer.extend_from_slice(&wrong.to_le_bytes());
        send.write_all(&answer).await.map_err(|e| e.to_string())?;
        send.finish().map_err(|e| e.to_string())?;
        conn.closed().await;
        println!(
            "server: from {peer}: {received} bytes, {wrong} wrong; {:?}",
            conn.stats().path
        );
    }
    Ok(())
}

/// Streams `bytes` of the pattern to the server and prints what both sides saw.
async fn send(addr: SocketAddr, cert_path: &str, bytes: u64) -> Result<(), String> {
    let der = std::fs::read(cert_path).map_err(|e| format!("{cert_path}: {e}"))?;
    let limits = TransportLimits::DEFAULT;
    let bind: SocketAddr = match addr {
        SocketAddr::V4(_) => "0.0.0.0:0",
        SocketAddr::V6(_) => "[::]:0",
    }
    .parse()
    .map_err(|e| format!("{e}"))?;
    let mut endpoint = runnel_net::endpoint(bind, None, &EndpointOptions::default())
        .map_err(|e| format!("bind: {e}"))?;
    let config = runnel_net::client_config(&[CertificateDer::from(der)], &limits)
        .map_err(|e| e.to_string())?;
    endpoint.set_default_client_config(config);
    let conn = endpoint
        .connect(addr, SERVER_NAME)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let started = Instant::now();
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| e.to_string())?;
    let mut chunk = vec![0_u8; CHUNK_BYTES];
    let mut sent = 0_u64;
    while sent < bytes {
        let len = CHUNK_BYTES.min(usize::try_from(bytes - sent).unwrap_or(CHUNK_BYTES));
        let chunk = &mut chunk[..len];
        for (index, byte) in chunk.iter_mut().enumerate() {
            *byte = pattern(sent + index as u64);
        }
        send.write_all(chunk).await.map_err(|e| e.to_string())?;
        sent += len as u64;
    }
    send.finish().map_err(|e| e.to_string())?;
    let answer = recv.read_to_end(16).await.map_err(|e| e.to_string())?;
    let elapsed = started.elapsed();
    let (received, wrong) = match answer.split_at_checked(8) {
        Some((received, wrong)) if wrong.len() == 8 => (
            u64::from_le_bytes(received.try_into().map_err(|_| "answer")?),
            u64::from_le_bytes(wrong.try_into().map_err(|_| "answer")?),
        ),
        _ => return Err(format!("answer of {} bytes", answer.len())),
    };
    let stats = conn.stats();
    conn.close(0_u32.into(), b"done");
    endpoint.wait_idle().await;
    println!(
        "client: sent {sent} bytes in {elapsed:?} ({:.0} MB/s); server got {received}, {wrong} wrong",
        sent as f64 / elapsed.as_secs_f64() / 1e6
    );
    println!("client: {:?}", stats.path);
    println!("client: udp tx {:?}, rx {:?}", stats.udp_tx, stats.udp_rx);
    if received != sent || wrong != 0 {
        return Err("the transfer arrived damaged".into());
    }
    Ok(())
}
