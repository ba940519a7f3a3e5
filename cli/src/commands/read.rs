//! `stream read`: the records of every shard of a stream (or of one), printed as
//! `<record id>\t<key>\t<value>` lines or JSON lines.
//!
//! Without `--tail` the shards are read one after the other, in id order, each to its end
//! (or its `--until`), so the output is deterministic. With `--tail` every shard is read at
//! once, by a task each, and records are printed as they arrive. Either way the tasks hand
//! whole chunks to the printer through a bounded channel, and `--total N` stops everything
//! after N records.
//!
//! `--until <time>` is applied here: the server bounds reads by offset only, so a shard stops
//! at its first record whose timestamp is at or after the time (record timestamps are set
//! by producers and usually, not necessarily, ascending).

use runnel_client::{Client, ClientError, ErrorCode, Offset, ReadFrom, Record, RecordId, ShardId};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::args::{OutputFormat, ReadArgs};
use crate::error::CliError;
use crate::output::{record_line, Output, RecordDocument};
use crate::position::{ReadEndAt, ReadStart};

/// Chunks read ahead of the printer.
const CHUNKS_QUEUED_MAX: usize = 16;

type Chunk = Result<Vec<(RecordId, Record)>, ClientError>;

/// What every shard's read shares.
#[derive(Clone)]
struct ReadPlan {
    client: Client,
    stream: String,
    from: ReadFrom,
    until_offset: Option<Offset>,
    until_ms: Option<i64>,
    tail: bool,
}

/// Reads and prints.
pub async fn run(client: &Client, args: ReadArgs, output: &mut Output) -> Result<(), CliError> {
    let shards = client.list_shards(&args.name).await?;
    let selected: Vec<ShardId> = match args.shard {
        Some(id) if shards.iter().any(|shard| shard.id == ShardId(id)) => vec![ShardId(id)],
        Some(id) => {
            return Err(CliError::not_found(
                ErrorCode::UnknownShard,
                format!("stream {} has no shard {id}", args.name),
            ))
        }
        None => shards.iter().map(|shard| shard.id).collect(),
    };
    let (until_offset, until_ms) = match args.until {
        None => (None, None),
        Some(ReadEndAt::Offset(offset)) => (Some(Offset(offset)), None),
        Some(ReadEndAt::Timestamp(ms)) => (None, Some(ms)),
    };
    let plan = ReadPlan {
        client: client.clone(),
        stream: args.name.clone(),
        from: match args.from {
            ReadStart::Earliest => ReadFrom::Earliest,
            ReadStart::Latest => ReadFrom::Latest,
            ReadStart::Offset(offset) => ReadFrom::Offset(Offset(offset)),
            ReadStart::Timestamp(ms) => ReadFrom::Timestamp(ms),
        },
        until_offset,
        until_ms,
        tail: args.tail,
    };
    let groups: Vec<Vec<ShardId>> = if args.tail {
        selected.into_iter().map(|shard| vec![shard]).collect()
    } else {
        vec![selected]
    };
    let (sender, mut receiver) = mpsc::channel::<Chunk>(CHUNKS_QUEUED_MAX);
    let mut tasks = JoinSet::new();
    for group in groups {
        tasks.spawn(read_shards(plan.clone(), group, sender.clone()));
    }
    drop(sender);

    let mut printed: u64 = 0;
    'chunks: while let Some(chunk) = receiver.recv().await {
        for (id, record) in chunk? {
            match output.format() {
                OutputFormat::Table => {
                    output.text(&record_line(id, record.key.as_deref(), &record.value))?
                }
                OutputFormat::Json => output.json(&RecordDocument::new(id, &record))?,
            }
            printed += 1;
            if args.total.is_some_and(|total| printed >= total) {
                break 'chunks;
            }
        }
        output.flush()?;
    }
    // Stops the reads still running (a tail, or shards after `--total`).
    tasks.abort_all();
    Ok(())
}

/// Reads `shards` one after the other, sending each chunk's records; stops at the first
/// error (sent too) or when the printer is gone.
async fn read_shards(plan: ReadPlan, shards: Vec<ShardId>, sender: mpsc::Sender<Chunk>) {
    for shard in shards {
        let mut reader = match plan
            .client
            .reader(&plan.stream, shard, plan.from, plan.until_offset)
        {
            Ok(reader) => reader.tail(plan.tail),
            Err(error) => {
                let _ = sender.send(Err(error)).await;
                return;
            }
        };
        loop {
            let batch = match reader.next_batch().await {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(error) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
            };
            let (records, outcome) = take_records(&batch, plan.until_ms);
            if !records.is_empty() && sender.send(Ok(records)).await.is_err() {
                return;
            }
            match outcome {
                ChunkEnd::More => {}
                ChunkEnd::UntilReached => break,
                ChunkEnd::Failed(error) => {
                    let _ = sender.send(Err(error)).await;
                    return;
                }
            }
        }
    }
}

enum ChunkEnd {
    More,
    UntilReached,
    Failed(ClientError),
}

/// The chunk's records before `until_ms`, as owned values, and whether the shard goes on.
fn take_records(
    batch: &runnel_client::RecordBatch,
    until_ms: Option<i64>,
) -> (Vec<(RecordId, Record)>, ChunkEnd) {
    let mut records = Vec::with_capacity(batch.len());
    for item in batch.records() {
        match item {
            Ok((_, record)) if until_ms.is_some_and(|until| record.timestamp_ms() >= until) => {
                return (records, ChunkEnd::UntilReached);
            }
            Ok((id, record)) => records.push((id, record.to_record())),
            Err(error) => return (records, ChunkEnd::Failed(error)),
        }
    }
    (records, ChunkEnd::More)
}
