//! Group commit of metadata commands, end to end: many creates in flight at once through the
//! SDK are recorded as multi-command batches of the metadata log (core 0's proposer), and
//! each one is answered as if it ran alone; the batches replay after a restart, with or
//! without snapshots taken between them.

use std::collections::{BTreeMap, BTreeSet};

use runnel_client::{Client, ClientError, Durability, ErrorCode, Record, StreamSpec};
use runnel_tests::sdk::read_all_values;
use runnel_tests::server::TestServer;

/// Tasks creating streams at once.
const TASKS: usize = 8;
/// Streams each task creates, one after another.
const CREATES_PER_TASK: usize = 25;

/// Where a stream's shards are: `(shard id, core)` of each.
type Placement = Vec<(u64, u32)>;

/// Creates `names` from `TASKS` concurrent tasks (task `t` takes every `TASKS`-th name from
/// `t`); returns each name's outcome.
async fn create_concurrently(
    client: &Client,
    names: &[String],
) -> BTreeMap<String, Result<Placement, ClientError>> {
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let client = client.clone();
        let mine: Vec<String> = names.iter().skip(task).step_by(TASKS).cloned().collect();
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for name in mine {
                let created = client
                    .create_stream(StreamSpec::new(name.clone(), Durability::Fsync).shard_count(1))
                    .await
                    .map(|info| {
                        info.shards
                            .iter()
                            .map(|shard| (shard.id.0, shard.core))
                            .collect()
                    });
                outcomes.push((name, created));
            }
            outcomes
        }));
    }
    let mut outcomes = BTreeMap::new();
    for task in tasks {
        for (name, outcome) in task.await.expect("a create task") {
            let previous = outcomes.insert(name, outcome);
            assert!(previous.is_none(), "one outcome per create");
        }
    }
    outcomes
}

/// Every stream's placement as the node describes it now.
async fn placements(client: &Client) -> BTreeMap<String, Placement> {
    let mut out = BTreeMap::new();
    for stream in client.list_streams().await.expect("list") {
        let name = stream.name.to_string();
        let info = client.describe_stream(&name).await.expect("describe");
        let shards = info
            .shards
            .iter()
            .map(|shard| (shard.id.0, shard.core))
            .collect();
        out.insert(name, shards);
    }
    out
}

/// 200 creates from 8 tasks all succeed with distinct shard ids, on both cores; every stream
/// takes appends on the core that owns it; a SIGKILL and a clean stop later, the node has
/// exactly these streams with these shards, and the appended records.
async fn concurrent_creates_survive_restarts(extra_args: &[&str]) {
    let temp = tempfile::tempdir().expect("temp dir");
    let mut server = TestServer::start_with(temp.path(), 2, extra_args);
    let names: Vec<String> = (0..TASKS * CREATES_PER_TASK)
        .map(|i| format!("stream-{i:03}"))
        .collect();
    let created: BTreeMap<String, Placement> = {
        let client = server.connect().await;
        let outcomes = create_concurrently(&client, &names).await;
        let created: BTreeMap<String, Placement> = outcomes
            .into_iter()
            .map(|(name, outcome)| {
                let shards = outcome.unwrap_or_else(|e| panic!("create {name}: {e}"));
                (name, shards)
            })
            .collect();
        assert_eq!(created.len(), names.len());
        let ids: BTreeSet<u64> = created.values().flatten().map(|(id, _)| *id).collect();
        assert_eq!(ids.len(), names.len(), "every shard has its own id");
        assert_eq!(
            ids.iter().copied().collect::<Vec<_>>(),
            (1..=names.len() as u64).collect::<Vec<_>>(),
            "shard ids are handed out densely, as one create after another would"
        );
        let cores: BTreeSet<u32> = created.values().flatten().map(|(_, core)| *core).collect();
        assert_eq!(cores, BTreeSet::from([0, 1]), "shards on both cores");
        assert_eq!(placements(&client).await, created);
        for name in names.iter().step_by(20) {
            client
                .producer(name)
                .expect("producer")
                .send(Record::at(name.clone().into_bytes(), 1_700_000_000_000))
                .await
                .expect("append to a new stream");
        }
        created
    };

    server.restart();
    let client = server.connect().await;
    assert_eq!(
        placements(&client).await,
        created,
        "after SIGKILL: the same streams with the same shards"
    );
    for name in names.iter().step_by(20) {
        assert_eq!(
            read_all_values(&client, name).await,
            vec![name.clone().into_bytes()]
        );
    }
    drop(client);
    assert_eq!(server.stop(), Some(0), "a clean stop");
    let server = TestServer::start_at(
        server.data_dir.clone(),
        server.base_port,
        2,
        extra_args.iter().map(|a| (*a).to_owned()).collect(),
    );
    let client = server.connect().await;
    assert_eq!(
        placements(&client).await,
        created,
        "after a clean stop: the same streams with the same shards"
    );
    client
        .create_stream(StreamSpec::new("after", Durability::Fsync))
        .await
        .expect("creates go on after restarts");
    drop(client);
    drop(server);
    drop(temp);
}

/// With the default snapshot interval (256) none is taken: the restart replays every
/// multi-command batch of the command log.
#[tokio::test]
async fn concurrent_creates_get_distinct_ids_and_survive_restarts() {
    concurrent_creates_survive_restarts(&[]).await;
}

/// With a snapshot due every 16 commands (and the size rule), snapshots are taken between
/// batches while creates are in flight: a restart loads the newest and replays the batches
/// after it.
#[tokio::test]
async fn concurrent_creates_survive_restarts_with_snapshots_between_batches() {
    concurrent_creates_survive_restarts(&["--metadata-snapshot-interval", "16"]).await;
}

/// Two creates of one name at once (often in one batch, where the second is checked against
/// the first): exactly one succeeds and the other is refused with `StreamExists`, for each of
/// 20 names.
#[tokio::test]
async fn concurrent_creates_of_one_name_give_one_stream() {
    let temp = tempfile::tempdir().expect("temp dir");
    let server = TestServer::start(temp.path(), 2);
    let client = server.connect().await;
    for i in 0..20 {
        let name = format!("twin-{i}");
        let spec = || StreamSpec::new(name.clone(), Durability::Fsync).shard_count(2);
        let (first, second) =
            tokio::join!(client.create_stream(spec()), client.create_stream(spec()));
        let (created, refused) = match (first, second) {
            (Ok(created), Err(refused)) | (Err(refused), Ok(created)) => (created, refused),
            (first, second) => panic!("{name}: {first:?} and {second:?}"),
        };
        assert_eq!(created.shards.len(), 2);
        assert_eq!(refused.code(), Some(ErrorCode::StreamExists), "{refused}");
    }
    let streams = client.list_streams().await.expect("list");
    assert_eq!(streams.len(), 20);
    let ids: BTreeSet<u64> = placements(&client)
        .await
        .values()
        .flatten()
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(
        ids,
        (1..=40).collect(),
        "a refused create takes no shard id"
    );
}
