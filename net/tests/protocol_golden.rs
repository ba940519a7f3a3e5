//! Compatibility test of frame format 1 / protocol version 1: fixed bytes, checked in here and
//! drawn in docs/format/protocol.md, must decode to the same messages forever. A round-trip
//! test cannot catch a layout change (encoder and decoder change together); this one can.

use runnel_core::{Offset, ShardId, StreamName};
use runnel_net::protocol::*;

/// `Hello { version_min: 1, version_max: 1, client_name: "cli" }`, framed, no payload: the
/// worked example of docs/format/protocol.md.
const HELLO_FRAME: &str = "
    52 46 01 00 3c 00 00 00 00 00 00 00 5c fc c8 a8
    10 00 00 00 52 4e 52 51 08 00 0e 00 07 00 08 00
    08 00 00 00 00 00 00 01 10 00 00 00 00 00 0a 00
    0c 00 04 00 06 00 08 00 0a 00 00 00 01 00 01 00
    04 00 00 00 03 00 00 00 63 6c 69 00 00 00 00 00";

/// The head of `Append { stream: "orders", shard: 3 }` for a 208-byte batch.
const APPEND_HEAD: &str = "
    52 46 01 00 48 00 00 00 d0 00 00 00 af da 86 a6
    14 00 00 00 52 4e 52 51 00 00 00 00 08 00 0c 00
    07 00 08 00 08 00 00 00 00 00 00 07 0c 00 00 00
    08 00 14 00 04 00 08 00 08 00 00 00 10 00 00 00
    03 00 00 00 00 00 00 00 00 00 00 00 06 00 00 00
    6f 72 64 65 72 73 00 00 00 00 00 00 00 00 00 00";

/// `AppendOk { shard: 3, base_offset: 42, last_offset: 43 }`, framed.
const APPEND_OK_FRAME: &str = "
    52 46 01 00 48 00 00 00 00 00 00 00 36 63 d2 80
    14 00 00 00 52 4e 52 53 00 00 00 00 08 00 0e 00
    07 00 08 00 08 00 00 00 00 00 00 07 10 00 00 00
    00 00 0a 00 1c 00 04 00 0c 00 14 00 0a 00 00 00
    03 00 00 00 00 00 00 00 2a 00 00 00 00 00 00 00
    2b 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00";

/// `Error { NotOwner, "shard 3 is on core 1", owner node 1 core 1 }`, framed.
const NOT_OWNER_FRAME: &str = "
    52 46 01 00 60 00 00 00 00 00 00 00 d5 1a 41 aa
    10 00 00 00 52 4e 52 53 08 00 0c 00 07 00 08 00
    08 00 00 00 00 00 00 01 10 00 00 00 0c 00 1c 00
    06 00 08 00 10 00 0c 00 0c 00 00 00 00 00 08 00
    14 00 00 00 01 00 00 00 01 00 00 00 00 00 00 00
    00 00 00 00 14 00 00 00 73 68 61 72 64 20 33 20
    69 73 20 6f 6e 20 63 6f 72 65 20 31 00 00 00 00";

fn bytes(hex: &str) -> Vec<u8> {
    hex.split_whitespace()
        .map(|byte| u8::from_str_radix(byte, 16).expect("hex byte"))
        .collect()
}

fn header(frame: &[u8]) -> FrameHeader {
    let header: [u8; FRAME_HEADER_LEN] = frame[..FRAME_HEADER_LEN].try_into().expect("16 bytes");
    FrameHeader::decode(&header, &FrameLimits::DEFAULT).expect("valid header")
}

/// The envelope of a frame whose header is valid.
fn envelope(frame: &[u8]) -> &[u8] {
    let len = header(frame).envelope_len as usize;
    &frame[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len]
}

fn hello() -> Request {
    Request::Hello(Hello {
        version_min: 1,
        version_max: 1,
        client_name: "cli".to_owned(),
    })
}

fn append() -> Request {
    Request::Append(Append {
        stream: StreamName::new("orders").expect("valid name"),
        shard: ShardId(3),
    })
}

fn append_ok() -> Response {
    Response::AppendOk(AppendOk {
        shard: ShardId(3),
        base_offset: Offset(42),
        last_offset: Offset(43),
    })
}

fn not_owner() -> Response {
    Response::Error(ErrorResponse {
        owner: Some(ShardOwner { node: 1, core: 1 }),
        ..ErrorResponse::new(ErrorCode::NotOwner, "shard 3 is on core 1")
    })
}

/// The fixed bytes decode to the same messages: this must hold for as long as protocol
/// version 1 is spoken.
#[test]
fn version_1_bytes_decode() {
    let frame = bytes(HELLO_FRAME);
    assert_eq!(
        header(&frame),
        FrameHeader {
            envelope_len: 60,
            payload_len: 0
        }
    );
    assert_eq!(Request::decode(envelope(&frame)), Ok(hello()));

    let head = bytes(APPEND_HEAD);
    assert_eq!(header(&head).payload_len, 208);
    assert_eq!(head.len() % 16, 0, "the payload starts 16-aligned");
    assert_eq!(Request::decode(envelope(&head)), Ok(append()));

    let frame = bytes(APPEND_OK_FRAME);
    assert_eq!(Response::decode(envelope(&frame)), Ok(append_ok()));

    let frame = bytes(NOT_OWNER_FRAME);
    assert_eq!(Response::decode(envelope(&frame)), Ok(not_owner()));
}

/// This build still writes exactly these bytes. Unlike the test above, this one may change
/// legitimately (a `flatbuffers` upgrade may lay out the same message differently, which
/// stays compatible): then check that `version_1_bytes_decode` still passes with the old
/// bytes, and update the worked example in docs/format/protocol.md.
#[test]
fn this_build_writes_the_documented_bytes() {
    let limits = FrameLimits::DEFAULT;
    let encoded = encode_frame(&hello().encode(), 0, &limits).expect("frame");
    assert_eq!(encoded, bytes(HELLO_FRAME));
    let encoded = encode_frame(&append().encode(), 208, &limits).expect("frame");
    assert_eq!(encoded, bytes(APPEND_HEAD));
    let encoded = encode_frame(&append_ok().encode(), 0, &limits).expect("frame");
    assert_eq!(encoded, bytes(APPEND_OK_FRAME));
    let encoded = encode_frame(&not_owner().encode(), 0, &limits).expect("frame");
    assert_eq!(encoded, bytes(NOT_OWNER_FRAME));
}
