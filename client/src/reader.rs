//! [`Reader`]: reads one shard from earliest, latest, an offset or a timestamp, up to a bound
//! or — tailing — forever, as [`RecordBatch`]es of the server's batch bytes, or as a
//! [`RecordStream`] of owned records.
//!
//! A read is one request answered by `ReadChunk` frames (each carrying whole batches) and a
//! `ReadEnd`. The reader keeps the offset after the last record it delivered, so when the
//! connection fails mid-read it reconnects and continues from there (reads are idempotent):
//! no record is skipped or delivered twice. It goes to the core that owns the shard and
//! follows the shard if the server says it moved.
//!
//! Checks: each chunk's batch headers (header CRC, lengths, count) are checked on arrival;
//! each batch's payload CRC and archive are checked when its records are first read
//! ([`RecordBatch::records`]). No record is handed out unchecked.

use std::collections::VecDeque;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use runnel_core::batch::AlignedBytes;
use runnel_core::{
    BatchHeader, BatchView, Offset, Record, RecordId, RecordRef, ShardId, StreamName,
};
use runnel_net::protocol::{
    CloseCode, ErrorCode, FrameReader, Read, ReadChunk, ReadEnd, ReadFrom, Request, Response,
};
use tokio::time::Instant;

use crate::append::REROUTES_MAX;
use crate::client::ClientInner;
use crate::error::ClientError;
use crate::retry::{Failure, Safety};
use crate::routing::ShardMap;
use crate::transport::BoxFuture;

/// Reads one shard. Created by [`Client::reader`](crate::Client::reader); sends nothing
/// until the first [`next_batch`](Reader::next_batch).
pub struct Reader {
    inner: Arc<ClientInner>,
    stream: StreamName,
    shard: ShardId,
    from: ReadFrom,
    until: Option<Offset>,
    tail: bool,
    /// The offset after the last record delivered, once a chunk or the end arrived.
    position: Option<Offset>,
    state: State,
    frames: FrameReader,
    map: Option<Arc<ShardMap>>,
    /// Consecutive failed attempts (reset by every chunk).
    failures: u32,
    /// Times the shard's owner was looked up again since the last chunk.
    reroutes: u32,
    /// Lost ranges the read passed (offsets a crash took before they were durable).
    lost: Vec<Range<Offset>>,
}

enum State {
    /// No read in progress: the next call sends one.
    Idle,
    /// A read's answer is arriving on this stream.
    Open(quinn::RecvStream),
    /// The read ended.
    Ended(ReadEnd),
}

/// What one frame of a read's answer meant.
enum Event {
    Chunk(RecordBatch),
    End(ReadEnd),
    Failed(Failure),
    /// The read reached a lost range; the log continues at this offset.
    Lost(Offset),
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("stream", &self.stream)
            .field("shard", &self.shard)
            .field("from", &self.from)
            .field("until", &self.until)
            .field("tail", &self.tail)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

impl Reader {
    pub(crate) fn new(
        inner: Arc<ClientInner>,
        stream: StreamName,
        shard: ShardId,
        from: ReadFrom,
        until: Option<Offset>,
    ) -> Reader {
        let frames = FrameReader::new(inner.nodes.frame_limits());
        Reader {
            inner,
            stream,
            shard,
            from,
            until,
            tail: false,
            position: None,
            state: State::Idle,
            frames,
            map: None,
            failures: 0,
            reroutes: 0,
            lost: Vec::new(),
        }
    }

    /// The lost ranges this reader passed, in order: offsets a `memory`-durability shard
    /// handed out (maybe acknowledged) and lost in a crash. They hold nothing, forever; the
    /// reader went on after each (and logged it). Empty unless such a loss happened.
    pub fn lost_ranges(&self) -> &[Range<Offset>] {
        &self.lost
    }

    /// The same reader, tailing if `tail`: once caught up it waits for new records instead
    /// of ending (no request timeout applies then; a dead connection is noticed by QUIC's
    /// idle timeout and the read resumes after reconnecting). Set before the first read.
    pub fn tail(mut self, tail: bool) -> Reader {
        self.tail = tail;
        self
    }

    /// The stream read.
    pub fn stream(&self) -> &StreamName {
        &self.stream
    }

    /// The shard read.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// The offset after the last record delivered (where a new reader would continue), once
    /// known.
    pub fn next_offset(&self) -> Option<Offset> {
        self.position
    }

    /// How the read ended, once it has: caught up, `until` reached, or the shard sealed
    /// (continue with its children, `ShardInfo::children`).
    pub fn end(&self) -> Option<ReadEnd> {
        match &self.state {
            State::Ended(end) => Some(*end),
            _ => None,
        }
    }

    /// The next chunk of batches; `None` once the read has ended ([`Reader::end`] says why).
    /// A tailing read waits for new records.
    ///
    /// After an error the reader can be called again: it sends a new read from where it
    /// stopped.
    pub async fn next_batch(&mut self) -> Result<Option<RecordBatch>, ClientError> {
        loop {
            let wanted = self.wanted();
            let event = match &mut self.state {
                State::Ended(_) => return Ok(None),
                State::Idle => match self.open().await {
                    Ok(recv) => {
                        self.frames = FrameReader::new(self.inner.nodes.frame_limits());
                        self.state = State::Open(recv);
                        continue;
                    }
                    Err(failure) => Event::Failed(failure),
                },
                State::Open(recv) => {
                    let read = read_event(&mut self.frames, recv, self.shard, wanted);
                    if self.tail {
                        read.await
                    } else {
                        let timeout = self.inner.nodes.request_timeout();
                        match tokio::time::timeout(timeout, read).await {
                            Ok(event) => event,
                            Err(_) => {
                                Event::Failed(Failure::maybe_delivered(ClientError::Timeout {
                                    request: "Read",
                                    timeout_ms: timeout.as_millis() as u64,
                                }))
                            }
                        }
                    }
                }
            };
            match event {
                Event::Chunk(batch) => {
                    self.position = Some(batch.next_offset());
                    self.failures = 0;
                    self.reroutes = 0;
                    return Ok(Some(batch));
                }
                Event::End(end) => {
                    self.position = Some(end.next_offset);
                    self.state = State::Ended(end);
                    return Ok(None);
                }
                Event::Failed(failure) => self.recover(failure).await?,
                Event::Lost(to) => {
                    let from = Offset(self.wanted().start);
                    self.stop_stream();
                    if to <= from {
                        return Err(ClientError::UnexpectedResponse {
                            request: "Read",
                            response: format!("a lost range ending at {to}, reading at {from}"),
                        });
                    }
                    tracing::warn!(stream = %self.stream, shard = %self.shard, %from, %to, "offsets lost in a crash before they were durable (memory durability); reading on at {to}");
                    self.lost.push(from..to);
                    self.position = Some(to);
                }
            }
        }
    }

    /// After a failed attempt: decide whether to try again (returning `Ok` to loop) or give
    /// up (returning the error). Either way the next attempt starts a new read.
    async fn recover(&mut self, failure: Failure) -> Result<(), ClientError> {
        self.stop_stream();
        // Stale shards, or the owner's node gone (a failover): route again with fresh ones.
        let reroute = failure.error.is_routing() || failure.error.is_connect_failure();
        if reroute && self.reroutes < REROUTES_MAX {
            self.reroutes += 1;
            let stale = self.map.take();
            self.map = Some(
                self.inner
                    .current_shards(&self.stream, stale.as_ref())
                    .await?,
            );
            return Ok(());
        }
        self.failures += 1;
        let policy = self.inner.nodes.policy();
        if self.failures >= policy.attempts_max || !failure.may_retry(Safety::Idempotent) {
            self.failures = 0;
            return Err(failure.into_error("Read", Safety::Idempotent, false));
        }
        let delay = policy.delay(self.failures, failure.retry_after_ms());
        tracing::debug!(stream = %self.stream, shard = %self.shard, error = %failure.error, ?delay, "read failed, resuming");
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// Sends the read from where the reader stands, to the core owning the shard.
    async fn open(&mut self) -> Result<quinn::RecvStream, Failure> {
        let map = match &self.map {
            Some(map) => Arc::clone(map),
            None => {
                let map = self
                    .inner
                    .current_shards(&self.stream, None)
                    .await
                    .map_err(Failure::not_sent)?;
                self.map = Some(Arc::clone(&map));
                map
            }
        };
        let owner = self.inner.owner_of(&map, self.shard);
        let request = Request::Read(Read {
            stream: self.stream.clone(),
            shard: self.shard,
            from: self.position.map_or(self.from, ReadFrom::Offset),
            until: self.until,
            max_bytes: 0,
            tail: self.tail,
        });
        let deadline = Instant::now() + self.inner.nodes.request_timeout();
        self.inner
            .nodes
            .send_request(owner, &request, &[], Some(deadline))
            .await
    }

    /// The offsets this reader delivers: from the start offset asked for (or where it
    /// resumed) to `until`.
    fn wanted(&self) -> Range<u64> {
        let start = match (self.position, self.from) {
            (Some(position), _) => position.0,
            (None, ReadFrom::Offset(offset)) => offset.0,
            (None, _) => 0,
        };
        start..self.until.map_or(u64::MAX, |until| until.0)
    }

    fn stop_stream(&mut self) {
        if let State::Open(recv) = &mut self.state {
            // Already stopped or finished streams refuse; nothing is lost either way.
            let _ = recv.stop(CloseCode::Done.varint());
        }
        self.state = State::Idle;
    }

    /// The records read, one at a time, as owned values with their ids. The stream ends with
    /// the read, or after yielding an error. Convenient, but each record is copied into an
    /// owned [`Record`] (an allocation or two per record): to read without allocating per
    /// record, loop over [`Reader::next_batch`] and [`RecordBatch::records`], which reads the
    /// records in place.
    pub fn into_stream(self) -> RecordStream {
        RecordStream {
            reader: Some(self),
            pending: None,
            buffered: VecDeque::new(),
            done: false,
        }
    }

    /// Stops the read (the server stops sending; code `Done`). Same as dropping the reader.
    pub fn close(mut self) {
        self.stop_stream();
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.stop_stream();
    }
}

/// Reads one frame of a read's answer and says what it meant.
async fn read_event(
    frames: &mut FrameReader,
    recv: &mut quinn::RecvStream,
    shard: ShardId,
    wanted: Range<u64>,
) -> Event {
    match frames.read_response(recv).await {
        Ok(Some((Response::ReadChunk(chunk), payload))) => {
            let bytes = std::mem::take(payload);
            match RecordBatch::new(shard, bytes, chunk, wanted) {
                Ok(batch) => Event::Chunk(batch),
                Err(error) => Event::Failed(Failure::maybe_delivered(error)),
            }
        }
        Ok(Some((Response::ReadEnd(end), _))) => Event::End(end),
        Ok(Some((Response::Error(error), _))) => match (error.code, error.next_offset) {
            (ErrorCode::LostRange, Some(to)) => Event::Lost(to),
            _ => Event::Failed(Failure::refused(ClientError::server("Read", error))),
        },
        Ok(Some((other, _))) => {
            Event::Failed(Failure::maybe_delivered(ClientError::UnexpectedResponse {
                request: "Read",
                response: other.kind().into(),
            }))
        }
        Ok(None) => Event::Failed(Failure::maybe_delivered(ClientError::UnexpectedResponse {
            request: "Read",
            response: "the stream ended without a ReadEnd".into(),
        })),
        Err(error) => Event::Failed(Failure::maybe_delivered(ClientError::protocol(
            "Read", error,
        ))),
    }
}

/// The offsets a [`RecordBatch`] yields: ascending, disjoint ranges (end exclusive). A read
/// wants one range; a subscription's delivery names a few.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OffsetRanges(Vec<Range<u64>>);

impl OffsetRanges {
    /// One range (possibly empty: a read positioned at its bound yields nothing).
    pub(crate) fn one(range: Range<u64>) -> OffsetRanges {
        OffsetRanges(vec![range])
    }

    /// `ranges`, after checking that they are non-empty, ascending and disjoint.
    pub(crate) fn many(ranges: Vec<Range<u64>>) -> Result<OffsetRanges, &'static str> {
        let mut after = 0;
        for (index, range) in ranges.iter().enumerate() {
            if range.start >= range.end {
                return Err("an empty or inverted range");
            }
            if index > 0 && range.start < after {
                return Err("ranges out of order or overlapping");
            }
            after = range.end;
        }
        Ok(OffsetRanges(ranges))
    }

    /// The ranges, ascending.
    pub(crate) fn as_slice(&self) -> &[Range<u64>] {
        &self.0
    }

    /// How many offsets the ranges hold.
    pub(crate) fn offset_count(&self) -> u64 {
        self.0
            .iter()
            .map(|range| range.end.saturating_sub(range.start))
            .sum()
    }

    /// Whether `offset` lies in one of the ranges (binary search: records are filtered one
    /// by one, and a redelivery may name many small ranges).
    fn contains(&self, offset: u64) -> bool {
        let index = self.0.partition_point(|range| range.end <= offset);
        self.0
            .get(index)
            .is_some_and(|range| range.start <= offset && offset < range.end)
    }
}

/// Whole batches, back to back, exactly as the server stores them: one chunk of a read, or
/// the payload of a subscription's delivery. Only the records whose offsets were asked for
/// (a read's bounds, a delivery's ranges) are counted and yielded.
pub struct RecordBatch {
    shard: ShardId,
    bytes: AlignedBytes,
    /// Where each batch lies in `bytes`.
    batches: Vec<Range<usize>>,
    /// The offsets asked for: the server sends whole batches, so some may hold records
    /// outside (before a read's start offset, at or after its `until`, between a delivery's
    /// ranges); those are skipped.
    wanted: OffsetRanges,
    record_count: u64,
    next_offset: Offset,
}

impl std::fmt::Debug for RecordBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBatch")
            .field("shard", &self.shard)
            .field("batches", &self.batches.len())
            .field("records", &self.record_count)
            .field("next_offset", &self.next_offset)
            .finish()
    }
}

impl RecordBatch {
    /// Checks the chunk's batch headers (CRC, lengths) and that it holds `chunk.batch_count`
    /// whole batches in offset order; payloads are checked when read. Only records with
    /// offsets in `wanted` are counted and yielded.
    pub(crate) fn new(
        shard: ShardId,
        bytes: AlignedBytes,
        chunk: ReadChunk,
        wanted: Range<u64>,
    ) -> Result<RecordBatch, ClientError> {
        RecordBatch::parse(
            "Read",
            shard,
            bytes,
            chunk.batch_count,
            OffsetRanges::one(wanted),
            chunk.next_offset,
        )
    }

    /// The payload of a subscription's `Delivery`: `batch_count` whole batches holding every
    /// offset of `ranges` (checked, so that every record delivered can be read and acked).
    pub(crate) fn delivered(
        shard: ShardId,
        bytes: AlignedBytes,
        batch_count: u32,
        ranges: Vec<Range<u64>>,
    ) -> Result<RecordBatch, ClientError> {
        let unexpected = |response: String| ClientError::UnexpectedResponse {
            request: "Consume",
            response,
        };
        let wanted = OffsetRanges::many(ranges)
            .map_err(|reason| unexpected(format!("a Delivery with {reason}")))?;
        let next_offset = Offset(wanted.as_slice().last().map_or(0, |range| range.end));
        let named = wanted.offset_count();
        let batch = RecordBatch::parse("Consume", shard, bytes, batch_count, wanted, next_offset)?;
        if batch.record_count != named {
            return Err(unexpected(format!(
                "a Delivery naming {named} records carries {} of them",
                batch.record_count
            )));
        }
        Ok(batch)
    }

    fn parse(
        request: &'static str,
        shard: ShardId,
        bytes: AlignedBytes,
        batch_count: u32,
        wanted: OffsetRanges,
        next_offset: Offset,
    ) -> Result<RecordBatch, ClientError> {
        let mut batches = Vec::new();
        let mut record_count = 0_u64;
        let mut start = 0_usize;
        // The offset after the previous batch, and the first range that may still overlap
        // a batch (batches ascend, so the ranges are swept once).
        let mut previous_after = 0_u64;
        let mut range_index = 0_usize;
        let ranges = wanted.as_slice();
        while start < bytes.len() {
            let rest = bytes.get(start..).unwrap_or_default();
            let header = BatchHeader::decode(rest)?;
            let end = start + header.batch_len as usize;
            if end > bytes.len() {
                return Err(runnel_core::BatchError::Truncated {
                    needed: u64::from(header.batch_len),
                    available: rest.len() as u64,
                }
                .into());
            }
            let first = header.base_offset.0;
            let after = first.saturating_add(u64::from(header.record_count));
            if !batches.is_empty() && first < previous_after {
                return Err(ClientError::UnexpectedResponse {
                    request,
                    response: format!(
                        "a batch at offset {first} follows one ending at {previous_after}"
                    ),
                });
            }
            while ranges
                .get(range_index)
                .is_some_and(|range| range.end <= first)
            {
                range_index += 1;
            }
            for range in ranges.get(range_index..).unwrap_or_default() {
                if range.start >= after {
                    break;
                }
                record_count += after.min(range.end).saturating_sub(first.max(range.start));
            }
            batches.push(start..end);
            previous_after = after;
            start = end;
        }
        if batches.len() != batch_count as usize {
            let frame = if request == "Read" {
                "ReadChunk"
            } else {
                "Delivery"
            };
            return Err(ClientError::UnexpectedResponse {
                request,
                response: format!(
                    "a {frame} announcing {batch_count} batches holds {}",
                    batches.len()
                ),
            });
        }
        Ok(RecordBatch {
            shard,
            bytes,
            batches,
            wanted,
            record_count,
            next_offset,
        })
    }

    /// The shard the records come from.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    /// The offset after the chunk's last record.
    pub fn next_offset(&self) -> Offset {
        self.next_offset
    }

    /// Records in the chunk within the offsets asked for (the server sends whole batches; a
    /// read from an offset inside a batch, or up to `until`, skips the records outside).
    pub fn len(&self) -> usize {
        self.record_count as usize
    }

    /// Whether the chunk holds no record.
    pub fn is_empty(&self) -> bool {
        self.record_count == 0
    }

    /// The raw batch bytes (format: `docs/format/batch.md`), e.g. to store or forward them
    /// unchanged: whole batches, so possibly with records outside the offsets asked for.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The offsets asked for, ascending.
    pub(crate) fn wanted(&self) -> &[Range<u64>] {
        self.wanted.as_slice()
    }

    /// The records within the offsets asked for, read in place (no copy), with their ids.
    /// Each batch's payload CRC and archive are checked before its first record; a failed
    /// check is yielded as an error and that batch's records are skipped.
    pub fn records(
        &self,
    ) -> impl Iterator<Item = Result<(RecordId, RecordRef<'_>), ClientError>> + '_ {
        let shard = self.shard;
        let wanted = &self.wanted;
        self.batches.iter().flat_map(move |range| {
            let bytes = self.bytes.get(range.clone()).unwrap_or_default();
            let checked =
                BatchView::check(bytes).and_then(|view| Ok((view.base_offset(), view.records()?)));
            match checked {
                Ok((base, records)) => {
                    BatchRecords::Checked(records.enumerate().filter_map(move |(index, record)| {
                        let offset = base.0 + index as u64;
                        wanted.contains(offset).then_some(Ok((
                            RecordId {
                                shard,
                                offset: Offset(offset),
                            },
                            record,
                        )))
                    }))
                }
                Err(error) => BatchRecords::Failed(Some(error.into())),
            }
        })
    }

    /// The records as owned values with their ids (allocates each record).
    pub fn to_records(&self) -> Result<Vec<(RecordId, Record)>, ClientError> {
        self.records()
            .map(|item| item.map(|(id, record)| (id, record.to_record())))
            .collect()
    }
}

/// The records of one batch of a [`RecordBatch`]: its checked records, or the one error that
/// its check gave (an enum rather than a boxed iterator: no allocation per batch).
enum BatchRecords<I> {
    Checked(I),
    Failed(Option<ClientError>),
}

impl<'a, I> Iterator for BatchRecords<I>
where
    I: Iterator<Item = Result<(RecordId, RecordRef<'a>), ClientError>>,
{
    type Item = Result<(RecordId, RecordRef<'a>), ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            BatchRecords::Checked(records) => records.next(),
            BatchRecords::Failed(error) => error.take().map(Err),
        }
    }
}

/// The reader, handed back with the outcome of its `next_batch`.
type NextBatch = (Reader, Result<Option<RecordBatch>, ClientError>);

/// The records of a [`Reader`] as a [`futures_core::Stream`] of owned values with their ids.
/// Created by [`Reader::into_stream`].
pub struct RecordStream {
    reader: Option<Reader>,
    pending: Option<BoxFuture<'static, NextBatch>>,
    buffered: VecDeque<Result<(RecordId, Record), ClientError>>,
    done: bool,
}

impl std::fmt::Debug for RecordStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordStream")
            .field("buffered", &self.buffered.len())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl futures_core::Stream for RecordStream {
    type Item = Result<(RecordId, Record), ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(item) = this.buffered.pop_front() {
                if item.is_err() {
                    this.done = true;
                    this.buffered.clear();
                }
                return Poll::Ready(Some(item));
            }
            if this.done {
                return Poll::Ready(None);
            }
            if this.pending.is_none() {
                let Some(mut reader) = this.reader.take() else {
                    this.done = true;
                    continue;
                };
                this.pending = Some(Box::pin(async move {
                    let result = reader.next_batch().await;
                    (reader, result)
                }));
            }
            let Some(pending) = this.pending.as_mut() else {
                continue;
            };
            let (reader, result) = match pending.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(output) => output,
            };
            this.pending = None;
            this.reader = Some(reader);
            match result {
                Ok(Some(batch)) => this.buffered.extend(
                    batch
                        .records()
                        .map(|item| item.map(|(id, record)| (id, record.to_record()))),
                ),
                Ok(None) => this.done = true,
                Err(error) => this.buffered.push_back(Err(error)),
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use runnel_core::{BatchBuilder, Epoch, Limits};

    /// A stamped batch of `count` records starting at `base`.
    pub(crate) fn stored_batch(base: u64, count: usize) -> Vec<u8> {
        let mut builder = BatchBuilder::new();
        for index in 0..count {
            builder.push(Record::at(
                format!("r{}", base + index as u64).into_bytes(),
                5,
            ));
        }
        let mut bytes = builder.finish(&Limits::DEFAULT).expect("encodes");
        runnel_core::batch::stamp(&mut bytes, Offset(base), Epoch(1)).expect("stamps");
        bytes.to_vec()
    }

    /// `batches` back to back, as a read or a delivery carries them.
    pub(crate) fn chunk_of(batches: &[Vec<u8>]) -> AlignedBytes {
        let mut bytes = AlignedBytes::new();
        for batch in batches {
            bytes.extend_from_slice(batch);
        }
        bytes
    }

    /// A chunk of several batches yields every record with its id, in order.
    #[test]
    fn chunks_yield_records_with_their_ids() {
        let bytes = chunk_of(&[stored_batch(10, 2), stored_batch(12, 3)]);
        let chunk = ReadChunk {
            next_offset: Offset(15),
            batch_count: 2,
        };
        let batch = RecordBatch::new(ShardId(7), bytes.clone(), chunk, 0..u64::MAX).expect("valid");
        assert_eq!(batch.len(), 5);
        assert_eq!(batch.next_offset(), Offset(15));
        let records = batch.to_records().expect("valid");
        let ids: Vec<String> = records.iter().map(|(id, _)| id.to_string()).collect();
        assert_eq!(ids, vec!["7-10", "7-11", "7-12", "7-13", "7-14"]);
        assert_eq!(records[3].1.value, b"r13".to_vec());
        // Whole batches arrive; records outside the offsets asked for are skipped.
        let batch = RecordBatch::new(ShardId(7), bytes, chunk, 11..14).expect("valid");
        assert_eq!(batch.len(), 3);
        let ids: Vec<String> = batch
            .to_records()
            .expect("valid")
            .iter()
            .map(|(id, _)| id.to_string())
            .collect();
        assert_eq!(ids, vec!["7-11", "7-12", "7-13"]);
    }

    /// A wrong batch count or a truncated batch is refused on arrival; a corrupt payload is
    /// an error when read, never a record.
    #[test]
    fn broken_chunks_are_refused() {
        let good = stored_batch(0, 2);
        let miscounted = RecordBatch::new(
            ShardId(1),
            chunk_of(std::slice::from_ref(&good)),
            ReadChunk {
                next_offset: Offset(2),
                batch_count: 2,
            },
            0..u64::MAX,
        );
        assert!(matches!(
            miscounted,
            Err(ClientError::UnexpectedResponse { .. })
        ));
        let truncated = RecordBatch::new(
            ShardId(1),
            chunk_of(&[good[..good.len() - 16].to_vec()]),
            ReadChunk {
                next_offset: Offset(2),
                batch_count: 1,
            },
            0..u64::MAX,
        );
        assert!(
            matches!(truncated, Err(ClientError::Batch { .. })),
            "{truncated:?}"
        );
        let mut corrupt = good.clone();
        let last_payload_byte = corrupt.len() - 20;
        corrupt[last_payload_byte] ^= 0xff;
        let batch = RecordBatch::new(
            ShardId(1),
            chunk_of(&[corrupt]),
            ReadChunk {
                next_offset: Offset(2),
                batch_count: 1,
            },
            0..u64::MAX,
        )
        .expect("headers are fine");
        let items: Vec<_> = batch.records().collect();
        assert_eq!(items.len(), 1);
        assert!(matches!(
            items[0],
            Err(ClientError::Batch {
                source: runnel_core::BatchError::PayloadChecksumMismatch { .. }
            })
        ));
        assert!(batch.to_records().is_err());
    }

    /// Several ranges: membership by binary search, and the checks deliveries rely on
    /// (non-empty, ascending, disjoint).
    #[test]
    fn offset_ranges_hold_exactly_their_offsets() {
        let ranges = OffsetRanges::many(vec![2..4, 7..8, 10..20]).expect("valid");
        let held: Vec<u64> = (0..25).filter(|offset| ranges.contains(*offset)).collect();
        assert_eq!(held, vec![2, 3, 7, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
        assert_eq!(ranges.offset_count(), 13);
        assert!(
            OffsetRanges::many(vec![2..4, 4..5]).is_ok(),
            "adjacent is fine"
        );
        assert!(OffsetRanges::many(vec![2..4, 3..5]).is_err());
        assert!(OffsetRanges::many(vec![5..9, 0..1]).is_err());
        assert!(OffsetRanges::many(std::iter::once(3..3).collect()).is_err());
        assert!(OffsetRanges::many(Vec::new()).is_ok());
        // A reader's one range may be empty (positioned at its bound): it holds nothing.
        let empty = OffsetRanges::one(5..5);
        assert!(!(0..10).any(|offset| empty.contains(offset)));
    }

    /// An empty chunk (zero batches) is valid and empty.
    #[test]
    fn empty_chunks_are_empty() {
        let batch = RecordBatch::new(
            ShardId(1),
            AlignedBytes::new(),
            ReadChunk {
                next_offset: Offset(3),
                batch_count: 0,
            },
            0..u64::MAX,
        )
        .expect("valid");
        assert!(batch.is_empty());
        assert_eq!(batch.records().count(), 0);
    }
}
