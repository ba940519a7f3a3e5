//! Routing across the nodes of a cluster, over real QUIC against in-process stand-in nodes
//! that share one cluster's streams (`support/mod.rs`): the client connects to node 1 only,
//! learns the other nodes with `ListNodes`, and sends each shard's requests straight to the
//! node that owns it; a stale route (`NotOwner` naming another node) is refreshed and the
//! append retried without duplicates; a node the cluster does not list is listed for once per
//! route, then reported as the typed `UnknownNode`.

mod support;

use std::time::Duration;

use runnel_client::{
    Client, ClientError, Durability, ReadFrom, Record, ShardId, StreamInfo, StreamSpec,
};
use support::{connect, MockNode};

/// A guard against hangs, not a performance bound.
const TEST_DEADLINE: Duration = Duration::from_secs(60);

/// Two stand-in nodes, a client connected to node 1, and a stream "orders" of `shards` shards
/// placed on node `place_on`.
async fn cluster_with_stream(place_on: u64, shards: u32) -> (Vec<MockNode>, Client, StreamInfo) {
    let nodes = MockNode::start_cluster(2).await;
    nodes[0].place_new_shards_on(place_on);
    let client = connect(&nodes[0]).await;
    let info = client
        .create_stream(StreamSpec::new("orders", Durability::Fsync).shard_count(shards))
        .await
        .expect("create");
    (nodes, client, info)
}

fn keyed(index: usize) -> Record {
    Record::at(format!("value-{index}").into_bytes(), index as i64)
        .with_key(format!("user-{}", index % 7).into_bytes())
}

/// Every value stored in `shards` of `stream`, read through the client.
async fn read_values(client: &Client, stream: &str, shards: &[ShardId]) -> Vec<String> {
    let mut values = Vec::new();
    for &shard in shards {
        let mut reader = client
            .reader(stream, shard, ReadFrom::Earliest, None)
            .expect("reader");
        while let Some(batch) = reader.next_batch().await.expect("read") {
            for record in batch.records() {
                let (_, record) = record.expect("record");
                values.push(String::from_utf8_lossy(record.value()).into_owned());
            }
        }
    }
    values.sort();
    values
}

/// The client reaches node 1; the stream's shards live on node 2. Appends, reads and trims go
/// to node 2 directly (node 1 serves only admin requests), after one `ListNodes`; the nodes
/// listed are what `list_nodes` returns.
#[tokio::test]
async fn shards_on_another_node_are_reached_directly() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let (nodes, client, info) = cluster_with_stream(2, 2).await;
        assert!(info.shards.iter().all(|shard| shard.node == 2));
        let producer = client.producer("orders").expect("producer");
        for index in 0..20 {
            producer.send(keyed(index)).await.expect("stored");
        }
        assert_eq!(nodes[1].requests(2, "Append"), 20);
        assert_eq!(nodes[0].requests(1, "Append"), 0);
        assert_eq!(nodes[0].requests(1, "ListNodes"), 1, "listed once");

        let shards: Vec<ShardId> = info.shards.iter().map(|shard| shard.id).collect();
        let mut expected: Vec<String> = (0..20).map(|index| format!("value-{index}")).collect();
        expected.sort();
        assert_eq!(read_values(&client, "orders", &shards).await, expected);
        assert_eq!(nodes[0].requests(1, "Read"), 0);
        assert!(nodes[1].requests(2, "Read") >= 2);
        client
            .trim("orders", shards[0], runnel_client::Offset(0))
            .await
            .expect("trim on node 2");
        assert_eq!(nodes[1].requests(2, "Trim"), 1);

        let listed = client.list_nodes().await.expect("list nodes");
        let ids: Vec<u64> = listed.iter().map(|node| node.id).collect();
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(
            listed[1].address,
            format!("127.0.0.1:{}", nodes[1].base_port)
        );
        client.close().await;
    })
    .await
    .expect("in time");
}

/// The shards move from node 2 to node 1 behind the client's back: node 2 answers `NotOwner`
/// naming node 1, the client describes the stream again and appends there. Each record is
/// stored exactly once.
#[tokio::test]
async fn a_stale_route_is_refreshed_and_nothing_is_duplicated() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let (nodes, client, _) = cluster_with_stream(2, 2).await;
        let producer = client.producer("orders").expect("producer");
        for index in 0..10 {
            producer.send(keyed(index)).await.expect("stored on node 2");
        }
        let describes_before = nodes[0].requests(1, "DescribeStream");
        nodes[0].move_shards("orders", 1);
        for index in 10..20 {
            producer.send(keyed(index)).await.expect("stored on node 1");
        }
        assert!(
            nodes[1].requests(2, "Append") > 10,
            "node 2 refused at least once"
        );
        assert_eq!(nodes[0].requests(1, "Append"), 10);
        assert!(nodes[0].requests(1, "DescribeStream") > describes_before);
        assert_eq!(nodes[0].stored_records("orders"), 20, "no duplicates");
        client.close().await;
    })
    .await
    .expect("in time");
}

/// Shards placed on node 7, which the cluster does not list: each route to it lists the
/// nodes once (one `ListNodes` per description of the stream), then the append fails with
/// `UnknownNode` naming node 7, and nothing is stored.
#[tokio::test]
async fn an_unknown_node_is_listed_for_once_then_a_typed_error() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let (nodes, client, _) = cluster_with_stream(7, 1).await;
        let producer = client.producer("orders").expect("producer");
        let error = producer.send(keyed(1)).await.expect_err("no such node");
        assert!(
            matches!(error, ClientError::UnknownNode { node: 7, .. }),
            "{error:?}"
        );
        assert_eq!(
            nodes[0].requests(1, "ListNodes"),
            nodes[0].requests(1, "DescribeStream"),
            "one listing per route"
        );
        assert!(nodes[0].requests(1, "ListNodes") >= 1);
        assert_eq!(nodes[0].stored_records("orders"), 0);
        client.close().await;
    })
    .await
    .expect("in time");
}
