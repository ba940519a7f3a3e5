//! Fuzz target: the wire protocol (`runnel_net::protocol`) — the incremental frame reader and
//! the request and response envelope decoders, subscription messages included.
//!
//! Each input is read as a byte stream of frames (as a server reads a client's stream, and a
//! client a server's), and decoded as a bare envelope both ways. Never a panic, never a
//! payload beyond the reader's limit; anything that decodes re-encodes to an envelope that
//! decodes to the same message (flatbuffers allows several encodings of one value, so the
//! bytes themselves may differ).
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use runnel_net::protocol::{FrameLimits, FrameReader, Request, Response};

/// Small limits, so that the fuzzer reaches "payload too large" without allocating much.
const LIMITS: FrameLimits = FrameLimits {
    payload_bytes_max: 1 << 16,
};

/// Runs a future over an in-memory source: it never waits, so one poll finishes it.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("an in-memory source never waits"),
    }
}

fn round_trip_request(request: &Request) {
    assert_eq!(Request::decode(&request.encode()).as_ref(), Ok(request));
}

fn round_trip_response(response: &Response) {
    assert_eq!(Response::decode(&response.encode()).as_ref(), Ok(response));
}

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = Request::decode(data) {
        round_trip_request(&request);
    }
    if let Ok(response) = Response::decode(data) {
        round_trip_response(&response);
    }
    // Frames as a server reads them from a client's stream, until the first error.
    let mut source = data;
    let mut reader = FrameReader::new(LIMITS);
    while let Ok(Some((request, payload))) = ready(reader.read_request(&mut source)) {
        assert!(payload.len() <= LIMITS.payload_bytes_max as usize);
        round_trip_request(&request);
    }
    // And as a client reads a server's answers.
    let mut source = data;
    let mut reader = FrameReader::new(LIMITS);
    while let Ok(Some((response, payload))) = ready(reader.read_response(&mut source)) {
        assert!(payload.len() <= LIMITS.payload_bytes_max as usize);
        round_trip_response(&response);
    }
});
