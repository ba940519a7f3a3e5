//! Raw protocol connections to a test server, below the SDK: for tests that send what the SDK
//! never would (broken frames, bad acks) or look at single frames.

use std::net::SocketAddr;
use std::time::Duration;

use runnel_net::protocol::{
    write_request, ErrorCode, FrameLimits, FrameReader, Hello, Request, Response,
};
use runnel_net::{client_config, TransportLimits};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::server::TestServer;

/// How long a raw read waits for a frame.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A raw QUIC connection to core `core` of the server, handshake done unless `skip_hello`.
/// Keep the endpoint alive as long as the connection.
pub async fn connect(
    server: &TestServer,
    core: u16,
    skip_hello: bool,
) -> (quinn::Endpoint, quinn::Connection) {
    connect_trusting(server, &server.certificate(), core, skip_hello).await
}

/// [`connect`], trusting the certificate (or CA) at `trusted`: a cluster's nodes present
/// certificates its CA signed (`LocalCluster::ca_path`).
pub async fn connect_trusting(
    server: &TestServer,
    trusted: &std::path::Path,
    core: u16,
    skip_hello: bool,
) -> (quinn::Endpoint, quinn::Connection) {
    let certificate = CertificateDer::from_pem_file(trusted).expect("server certificate");
    let config =
        client_config(&[certificate], &TransportLimits::DEFAULT).expect("client TLS config");
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("client endpoint");
    endpoint.set_default_client_config(config);
    let address = SocketAddr::from(([127, 0, 0, 1], server.base_port + core));
    let connection = endpoint
        .connect(address, "localhost")
        .expect("connect")
        .await
        .expect("QUIC handshake");
    if !skip_hello {
        let (mut send, mut recv) = connection.open_bi().await.expect("stream");
        write_request(
            &mut send,
            &Request::Hello(Hello::new("raw-test")),
            &[],
            &FrameLimits::DEFAULT,
        )
        .await
        .expect("send Hello");
        let _ = send.finish();
        let mut reader = FrameReader::new(FrameLimits::DEFAULT);
        let answer = reader
            .read_response(&mut recv)
            .await
            .expect("HelloOk frame");
        assert!(matches!(answer, Some((Response::HelloOk(_), _))));
    }
    (endpoint, connection)
}

/// Sends raw bytes on a new stream and returns the first response (or `None` if the server
/// reset the stream or closed the connection).
pub async fn send_bytes(connection: &quinn::Connection, bytes: &[u8]) -> Option<Response> {
    let (mut send, mut recv) = connection.open_bi().await.ok()?;
    send.write_all(bytes).await.ok()?;
    let _ = send.finish();
    let mut reader = FrameReader::new(FrameLimits::DEFAULT);
    match tokio::time::timeout(READ_TIMEOUT, reader.read_response(&mut recv)).await {
        Ok(Ok(Some((response, _)))) => Some(response),
        _ => None,
    }
}

/// Sends one request on a new stream, finishes it, and returns the one answer.
pub async fn request(
    connection: &quinn::Connection,
    request: &Request,
    payload: &[u8],
) -> Response {
    let (mut send, mut recv) = connection.open_bi().await.expect("stream");
    write_request(&mut send, request, payload, &FrameLimits::DEFAULT)
        .await
        .expect("send request");
    let _ = send.finish();
    let mut reader = FrameReader::new(FrameLimits::DEFAULT);
    let answer = tokio::time::timeout(READ_TIMEOUT, reader.read_response(&mut recv))
        .await
        .expect("an answer in time")
        .expect("a response frame");
    answer.map(|(response, _)| response).expect("a response")
}

/// A long-lived stream (join or consume): the first request is sent, the sending side stays
/// open for more frames.
pub struct RawStream {
    /// The sending side.
    pub send: quinn::SendStream,
    /// The receiving side.
    pub recv: quinn::RecvStream,
    /// Reads the server's frames.
    pub reader: FrameReader,
}

impl RawStream {
    /// Opens a stream and sends `first` without finishing.
    pub async fn open(connection: &quinn::Connection, first: &Request) -> RawStream {
        let (mut send, recv) = connection.open_bi().await.expect("stream");
        write_request(&mut send, first, &[], &FrameLimits::DEFAULT)
            .await
            .expect("send the first request");
        RawStream {
            send,
            recv,
            reader: FrameReader::new(FrameLimits::DEFAULT),
        }
    }

    /// Sends one more request frame on the stream.
    pub async fn send(&mut self, request: &Request) {
        write_request(&mut self.send, request, &[], &FrameLimits::DEFAULT)
            .await
            .expect("send a frame");
    }

    /// The next frame with its payload; `None` when the server finished the stream.
    pub async fn next(&mut self) -> Option<(Response, Vec<u8>)> {
        let frame = tokio::time::timeout(READ_TIMEOUT, self.reader.read_response(&mut self.recv))
            .await
            .expect("a frame in time")
            .expect("a valid frame");
        frame.map(|(response, payload)| (response, payload.to_vec()))
    }

    /// The next frame, if one comes within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<(Response, Vec<u8>)> {
        match tokio::time::timeout(wait, self.reader.read_response(&mut self.recv)).await {
            Ok(frame) => frame
                .expect("a valid frame")
                .map(|(response, payload)| (response, payload.to_vec())),
            Err(_) => None,
        }
    }
}

/// The code of an `Error` response.
pub fn error_code(response: &Response) -> Option<ErrorCode> {
    match response {
        Response::Error(error) => Some(error.code),
        _ => None,
    }
}
