//! Bad input against the real server: garbage and truncated frames, a batch with a wrong
//! checksum, an oversized record, a key sent to the wrong shard, unknown streams and offsets,
//! a first stream that is not `Hello`, and a client that vanishes mid-request. Each gets a
//! clear error (or a closed connection), and the server keeps serving every other client with
//! nothing acknowledged lost.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use runnel_client::{Client, ClientOptions, Durability, ErrorCode, ReadFrom, Record, StreamSpec};
use runnel_core::{hash128, BatchBuilder, Limits, Offset, ShardId, StreamName};
use runnel_net::protocol::{
    write_request, Append, FrameLimits, Read, ReadFrom as WireFrom, Request, Response,
};
use runnel_tests::raw::{connect, error_code, request, send_bytes};
use runnel_tests::server::TestServer;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_loses_nothing() {
    let temp = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(temp.path(), 1);
    let options = ClientOptions {
        ca_cert_path: Some(server.certificate()),
        ..ClientOptions::default()
    };
    let client = Client::connect(&server.url(), options.clone())
        .await
        .expect("connect");
    let info = client
        .create_stream(StreamSpec::new("guarded", Durability::Fsync).shard_count(2))
        .await
        .expect("create");
    let producer = client.producer("guarded").expect("producer");
    let mut acknowledged = Vec::new();
    for i in 0..20u8 {
        acknowledged.push(
            producer
                .send(Record::at(vec![i; 100], now_ms()).with_key(vec![i]))
                .await
                .expect("send"),
        );
    }
    let stream = StreamName::new("guarded").expect("name");
    let shard_a = info.shards[0].clone();
    let shard_b = info.shards[1].clone();

    let (_endpoint, connection) = connect(&server, 0, false).await;
    // Garbage and truncated frames: an InvalidRequest error (or a reset), never a crash.
    let garbage = send_bytes(&connection, &[0xab; 97]).await;
    assert!(
        garbage.is_none() || error_code(&garbage.expect("some")) == Some(ErrorCode::InvalidRequest)
    );
    let mut truncated = Vec::new();
    truncated.extend_from_slice(b"RF");
    truncated.extend_from_slice(&[1, 0]);
    truncated.extend_from_slice(&1000u32.to_le_bytes());
    let truncated_answer = send_bytes(&connection, &truncated).await;
    assert!(
        truncated_answer.is_none()
            || error_code(&truncated_answer.expect("some")) == Some(ErrorCode::InvalidRequest)
    );

    // A batch whose payload fails its checksum.
    let key_for_a = (0u32..)
        .map(|i| i.to_le_bytes().to_vec())
        .find(|k| shard_a.key_range.contains(hash128(k)))
        .expect("a key");
    let mut builder = BatchBuilder::new();
    builder.push(Record::at(b"fine".to_vec(), now_ms()).with_key(key_for_a.clone()));
    let good = builder.finish(&Limits::DEFAULT).expect("batch");
    let mut damaged = good.clone();
    let at = damaged.len() - 20;
    damaged[at] ^= 0x55;
    let append_a = Request::Append(Append {
        stream: stream.clone(),
        shard: shard_a.id,
    });
    assert_eq!(
        error_code(&request(&connection, &append_a, &damaged).await),
        Some(ErrorCode::InvalidBatch)
    );

    // A record over the 1 MiB limit.
    let mut big = BatchBuilder::new();
    big.push(Record::at(vec![7u8; (1 << 20) + 1], now_ms()).with_key(key_for_a.clone()));
    let big = big
        .finish(&Limits {
            record_bytes_max: 2 << 20,
            ..Limits::DEFAULT
        })
        .expect("batch");
    assert_eq!(
        error_code(&request(&connection, &append_a, &big).await),
        Some(ErrorCode::RecordTooLarge)
    );

    // A key sent to the wrong shard.
    let append_b = Request::Append(Append {
        stream: stream.clone(),
        shard: shard_b.id,
    });
    assert_eq!(
        error_code(&request(&connection, &append_b, &good).await),
        Some(ErrorCode::WrongShard)
    );

    // Unknown stream, unknown shard, unknown offset.
    let unknown_stream = Request::Append(Append {
        stream: StreamName::new("missing").expect("name"),
        shard: shard_a.id,
    });
    assert_eq!(
        error_code(&request(&connection, &unknown_stream, &good).await),
        Some(ErrorCode::UnknownStream)
    );
    let unknown_shard = Request::Append(Append {
        stream: stream.clone(),
        shard: ShardId(999_999),
    });
    assert_eq!(
        error_code(&request(&connection, &unknown_shard, &good).await),
        Some(ErrorCode::UnknownShard)
    );
    let far = Request::Read(Read {
        stream: stream.clone(),
        shard: shard_a.id,
        from: WireFrom::Offset(Offset(1 << 40)),
        until: None,
        max_bytes: 0,
        tail: false,
    });
    assert_eq!(
        error_code(&request(&connection, &far, &[]).await),
        Some(ErrorCode::OffsetOutOfRange)
    );

    // The good batch is accepted on the same connection after all that.
    assert!(matches!(
        request(&connection, &append_a, &good).await,
        Response::AppendOk(_)
    ));

    // A first stream that is not Hello closes the connection.
    let (_endpoint2, rude) = connect(&server, 0, true).await;
    let (mut send, _recv) = rude.open_bi().await.expect("stream");
    write_request(&mut send, &append_a, &good, &FrameLimits::DEFAULT)
        .await
        .expect("send");
    let _ = send.finish();
    let closed = tokio::time::timeout(Duration::from_secs(10), rude.closed())
        .await
        .expect("the server closes it");
    assert!(
        matches!(closed, quinn::ConnectionError::ApplicationClosed(_)),
        "closed with a code: {closed:?}"
    );

    // A client that vanishes in the middle of a request.
    {
        let (endpoint, vanishing) = connect(&server, 0, false).await;
        let (mut send, _recv) = vanishing.open_bi().await.expect("stream");
        let mut frame = Vec::new();
        write_request(&mut frame, &append_a, &good, &FrameLimits::DEFAULT)
            .await
            .expect("encode");
        send.write_all(&frame[..frame.len() / 2])
            .await
            .expect("half a frame");
        drop(send);
        drop(vanishing);
        drop(endpoint);
    }

    // Every other client is still served, and nothing acknowledged was lost.
    let other = Client::connect(&server.url(), options)
        .await
        .expect("a new client connects");
    let mut count = 0;
    for shard in [&shard_a, &shard_b] {
        let mut reader = other
            .reader("guarded", shard.id, ReadFrom::Earliest, None)
            .expect("reader");
        while let Some(batch) = reader.next_batch().await.expect("read") {
            for record in batch.records() {
                let (id, _) = record.expect("record");
                if acknowledged.contains(&id) {
                    count += 1;
                }
            }
        }
    }
    assert_eq!(
        count,
        acknowledged.len(),
        "every acknowledged record is still there"
    );
}
