//! Core 0's metadata proposer: **group commit** of metadata commands.
//!
//! Every metadata write of the node (from core 0, or forwarded by another core) is queued
//! here, and one task ([`Proposer::run`]) drains the queue in batches of at most
//! [`BATCH_COMMANDS_MAX`] commands and [`BATCH_BYTES_MAX`] encoded bytes. A batch:
//!
//! 1. is **staged**: each command is checked against, then applied to, a second
//!    [`MetadataState`] that is the committed state plus the batch so far, so a command sees
//!    the ones before it (two creates of one name: the second is refused; ids follow on).
//!    Refused commands consume no index and are not recorded;
//! 2. has the logs of every shard its accepted commands create **prepared** concurrently and
//!    made durable (with their `shards/` entries) before anything names them;
//! 3. is **recorded**: proposed to the metadata group (`crate::group`) as one entry per accepted
//!    command, which reach the group's log together (one write, one fdatasync, one round of
//!    replication), and awaited until committed and applied on this node — to the committed
//!    state in order (which opens the logs of this node's new shards) and on every other
//!    core; then every proposer of the batch is answered.
//!
//! The proposer runs only while its node leads the group: a batch first waits until nothing
//! else is in flight in the group's log ([`Host::begin_batch`]), so the indexes staging
//! predicts are the indexes the entries get. A batch whose node stops leading before it is
//! applied is answered `Unavailable` (its outcome is unknown to this node).
//!
//! Readers (the rest of core 0, the other cores) only ever see the committed state. A batch
//! that fails without harm (a full disk while preparing logs or recording) is undone (its logs
//! removed, the staged state reset to the committed one) and its commands run again one at a
//! time, so each gets exactly the answer it would get alone. Any other failure is fatal to
//! the node. Every proposal is answered exactly once; proposals still queued when the node
//! stops are answered `Unavailable`.
//!
//! This module knows nothing of cores, channels, Raft or shard directories: what it needs from
//! the node is the [`Host`] trait.

use std::cell::{Cell, Ref, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use runnel_net::protocol::{ErrorCode, ErrorResponse};
use runnel_replicate::metadata::{
    encode_command, Applied, Command, MetadataError, MetadataState, Shard,
};
use runnel_segment::runtime::Event;

use crate::core::metadata_error;
use crate::error::FatalError;
use crate::group::RecordError;
use crate::metadata_log::COMMAND_BATCH_BYTES_MAX;

/// Most commands in one batch.
pub const BATCH_COMMANDS_MAX: usize = 256;
/// Most encoded command bytes in one batch (a batch holds at least one command). The command
/// log takes batches of up to 512 KiB, record framing included.
pub const BATCH_BYTES_MAX: usize = 256 << 10;
/// Most proposals queued; a proposer finding the queue full waits for room.
pub const QUEUED_MAX: usize = 4096;

/// A generous bound on what one record adds to a batch besides its value (rkyv framing).
const RECORD_FRAMING_BYTES_MAX: usize = 256;
const _: () = assert!(
    BATCH_BYTES_MAX + BATCH_COMMANDS_MAX * RECORD_FRAMING_BYTES_MAX + runnel_core::BATCH_HEADER_LEN
        <= COMMAND_BATCH_BYTES_MAX as usize,
    "a full proposer batch fits one batch of the command log"
);

/// What the proposer needs from the node around it.
pub trait Host {
    /// The committed state: what readers see, every recorded command applied.
    fn committed(&self) -> Ref<'_, MetadataState>;

    /// Creates the logs of `shards` (new shards of accepted commands, not yet recorded) and
    /// makes them durable, their directory entries included. On failure nothing of them is
    /// left and the error is the refusal to answer with (the node goes on). Returns what to
    /// give [`Host::remove_logs`] if the batch is then not recorded.
    fn prepare_logs(
        &self,
        shards: &[Shard],
    ) -> impl Future<Output = Result<Vec<PathBuf>, ErrorResponse>>;

    /// Removes logs prepared for a batch that was then not recorded.
    fn remove_logs(&self, prepared: &[PathBuf]);

    /// Waits until this node leads and nothing is in flight in the group's log; refused
    /// (`Unavailable`, naming the leader) when another node leads.
    fn begin_batch(&self) -> impl Future<Output = Result<(), ErrorResponse>>;

    /// The shards whose logs were prepared for the batch about to be recorded.
    fn prepared(&self, shards: &[Shard]);

    /// Proposes the encoded commands, in order, and waits until each is committed and applied
    /// here (to the committed state, and handed to the other replicas); each one's index and
    /// what applying it did.
    #[allow(clippy::type_complexity)]
    fn record(
        &self,
        commands: Vec<Vec<u8>>,
    ) -> impl Future<Output = Result<Vec<(u64, Result<Applied, MetadataError>)>, RecordError>>;

    /// The batch is done.
    fn end_batch(&self);

    /// Stops the node because of a fatal fault.
    fn fail(&self, error: FatalError);

    /// Whether the node is stopping because of a fatal fault.
    fn failed(&self) -> bool;
}

/// The answer to one proposal, filled in once by the proposer and taken by the proposer's
/// caller.
#[derive(Default)]
struct Ticket {
    outcome: RefCell<Option<Result<u64, ErrorResponse>>>,
    answered: Event,
}

impl Ticket {
    async fn wait(&self) -> Result<u64, ErrorResponse> {
        loop {
            let answered = self.answered.listen();
            if let Some(outcome) = self.outcome.borrow_mut().take() {
                return outcome;
            }
            answered.await;
        }
    }
}

/// A queued proposal. It is answered by [`Proposal::answer`], which consumes it; one dropped
/// unanswered (the node stops) answers `Unavailable`, so no caller waits forever.
struct Proposal {
    command: Command,
    encoded: Vec<u8>,
    ticket: Option<Rc<Ticket>>,
}

impl Proposal {
    fn answer(mut self, outcome: Result<u64, ErrorResponse>) {
        if let Some(ticket) = self.ticket.take() {
            let previous = ticket.outcome.replace(Some(outcome));
            assert!(previous.is_none(), "a proposal answered twice");
            ticket.answered.notify();
        }
    }
}

impl Drop for Proposal {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            ticket.outcome.replace(Some(Err(stopping())));
            ticket.answered.notify();
        }
    }
}

fn stopping() -> ErrorResponse {
    ErrorResponse::new(ErrorCode::Unavailable, "the node is stopping")
}

fn failed() -> ErrorResponse {
    ErrorResponse::new(
        ErrorCode::Unavailable,
        "the node is stopping after a fatal error",
    )
}

/// What staging decided for one proposal of a batch.
enum Staged {
    /// Accepted at this index.
    Accepted(u64),
    /// Refused (answered once the batch is done: the refusal may depend on commands before
    /// it in the batch).
    Refused(ErrorResponse),
}

/// What staging a batch gave.
struct Staging {
    /// Each proposal's fate, in order.
    fates: Vec<Staged>,
    /// The shards the accepted commands create.
    new_shards: Vec<Shard>,
    /// Whether the staged state moved ahead of the committed one (then a failed batch must
    /// reset it).
    ahead: bool,
    /// Whether the last accepted command is still to be applied to the staged state.
    last_deferred: bool,
}

/// How a batch ended.
enum Outcome {
    /// Every proposal was answered.
    Answered,
    /// Nothing was recorded and nothing changed, but a failure (a full disk) may have hit an
    /// innocent command: the proposals, to run again one at a time.
    Retry(Vec<Proposal>),
}

/// The queue of proposals, the staged state and the metadata log.
pub struct Proposer {
    queue: RefCell<VecDeque<Proposal>>,
    /// Notified when a proposal is queued or the proposer is asked to stop.
    queued: Event,
    /// Notified when the queue has room again, or the proposer stops.
    room: Event,
    /// The committed state plus the batch in flight; `None` until the first batch and after a
    /// failed one (then cloned from the committed state).
    staged: RefCell<Option<MetadataState>>,
    stopping: Cell<bool>,
    running: Cell<bool>,
    finished: Event,
}

impl Default for Proposer {
    fn default() -> Self {
        Proposer::new()
    }
}

impl Proposer {
    /// A proposer with nothing queued.
    pub fn new() -> Proposer {
        Proposer {
            queue: RefCell::new(VecDeque::new()),
            queued: Event::default(),
            room: Event::default(),
            staged: RefCell::new(None),
            stopping: Cell::new(false),
            running: Cell::new(false),
            finished: Event::default(),
        }
    }

    /// Queues `command` and waits for its outcome: committed and applied on this node (its
    /// index), or refused (nothing recorded), or `Unavailable` if the node stops or stops
    /// leading first.
    pub async fn propose(&self, command: Command) -> Result<u64, ErrorResponse> {
        loop {
            let room = self.room.listen();
            if self.stopping.get() {
                return Err(stopping());
            }
            if self.queue.borrow().len() < QUEUED_MAX {
                break;
            }
            room.await;
        }
        let ticket = Rc::new(Ticket::default());
        let encoded = encode_command(&command);
        self.queue.borrow_mut().push_back(Proposal {
            command,
            encoded,
            ticket: Some(Rc::clone(&ticket)),
        });
        self.queued.notify();
        ticket.wait().await
    }

    /// Drains the queue, one batch at a time, until [`Proposer::stop`]. One task runs this.
    pub async fn run<H: Host>(&self, host: &H) {
        assert!(!self.running.get(), "two proposer tasks");
        self.running.set(true);
        loop {
            let queued = self.queued.listen();
            if self.stopping.get() {
                break;
            }
            if host.failed() {
                // The node stops; the metadata log may be what failed.
                self.answer_queued(failed);
            }
            let batch = self.next_batch();
            if batch.is_empty() {
                queued.await;
                continue;
            }
            self.run_batch(host, batch).await;
        }
        self.answer_queued(stopping);
        self.running.set(false);
        self.finished.notify();
    }

    /// Stops [`Proposer::run`] after the batch in flight (whose commands are then recorded
    /// and applied as usual); proposals still queued, and any made later, are answered
    /// `Unavailable`.
    pub async fn stop(&self) {
        self.stopping.set(true);
        self.queued.notify();
        self.room.notify();
        loop {
            let finished = self.finished.listen();
            if !self.running.get() {
                break;
            }
            finished.await;
        }
        self.answer_queued(stopping);
    }

    fn answer_queued(&self, error: impl Fn() -> ErrorResponse) {
        let queued: Vec<Proposal> = self.queue.borrow_mut().drain(..).collect();
        for proposal in queued {
            proposal.answer(Err(error()));
        }
        self.room.notify();
    }

    /// Takes the next batch off the queue: at least one proposal if any is queued, then as
    /// many as the bounds allow.
    fn next_batch(&self) -> Vec<Proposal> {
        let mut queue = self.queue.borrow_mut();
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(next) = queue.front() {
            let full = batch.len() >= BATCH_COMMANDS_MAX
                || (!batch.is_empty() && bytes + next.encoded.len() > BATCH_BYTES_MAX);
            if full {
                break;
            }
            bytes += next.encoded.len();
            batch.extend(queue.pop_front());
        }
        if !batch.is_empty() {
            self.room.notify();
        }
        batch
    }

    /// Runs one batch to the end: every proposal of it is answered.
    async fn run_batch<H: Host>(&self, host: &H, batch: Vec<Proposal>) {
        if let Outcome::Retry(proposals) = self.commit(host, batch).await {
            for proposal in proposals {
                if host.failed() {
                    // A command before this one failed fatally: the committed state may be
                    // behind the log, and the node stops.
                    proposal.answer(Err(failed()));
                    continue;
                }
                let alone = self.commit(host, vec![proposal]).await;
                assert!(
                    matches!(alone, Outcome::Answered),
                    "a batch of one is answered, never retried"
                );
            }
        }
    }

    /// A fatal error during a batch: stops the node with it and answers every proposal of the
    /// batch with it; the staged state is dropped.
    fn fail_batch<H: Host>(&self, host: &H, batch: Vec<Proposal>, fatal: FatalError) -> Outcome {
        let message = fatal.to_string();
        host.fail(fatal);
        *self.staged.borrow_mut() = None;
        answer(
            batch,
            std::iter::repeat_with(|| {
                Err(ErrorResponse::new(ErrorCode::StorageFault, message.clone()))
            }),
        );
        Outcome::Answered
    }

    /// Stages, records and applies one batch, and answers its proposals; or gives them back
    /// to run one at a time.
    async fn commit<H: Host>(&self, host: &H, batch: Vec<Proposal>) -> Outcome {
        if let Err(error) = host.begin_batch().await {
            answer(batch, std::iter::repeat_with(|| Err(error.clone())));
            return Outcome::Answered;
        }
        let outcome = self.commit_led(host, batch).await;
        host.end_batch();
        outcome
    }

    /// [`Proposer::commit`] while this node leads, nothing else in flight.
    async fn commit_led<H: Host>(&self, host: &H, batch: Vec<Proposal>) -> Outcome {
        let Staging {
            fates: staged,
            new_shards,
            ahead,
            last_deferred,
        } = self.stage(host, &batch);
        let accepted: Vec<(u64, &Proposal)> = staged
            .iter()
            .zip(&batch)
            .filter_map(|(staged, proposal)| match staged {
                Staged::Accepted(index) => Some((*index, proposal)),
                Staged::Refused(_) => None,
            })
            .collect();
        let Some(&(last, _)) = accepted.last() else {
            // Nothing to record: every refusal was against the committed state.
            assert!(!ahead, "a batch with nothing accepted staged a command");
            answer(batch, staged.into_iter().map(Staged::into_outcome));
            return Outcome::Answered;
        };
        let retry = |batch: Vec<Proposal>, error: ErrorResponse| {
            if ahead {
                // O(state), on this rare path only: the next batch stages on a fresh clone.
                *self.staged.borrow_mut() = None;
            }
            if batch.len() > 1 {
                tracing::warn!(
                    proposals = batch.len(),
                    error = %error.message,
                    "a metadata batch was not recorded; its commands run again one at a time"
                );
                return Outcome::Retry(batch);
            }
            // Alone, the one command was the last staged and never applied to the staged
            // state: nothing to undo.
            answer(batch, [Err(error)]);
            Outcome::Answered
        };

        // The logs of this node's new shards exist, durably, before the commands naming them
        // are recorded: a full disk refuses here, atomically, instead of failing an apply after
        // the command was committed. (Other nodes create theirs when they apply the command.)
        // Where a batch's time goes, for the debug log (`RUNNEL_LOG=runnel_server::proposer=debug`).
        let started = Instant::now();
        let prepared = if new_shards.is_empty() {
            Vec::new()
        } else {
            match host.prepare_logs(&new_shards).await {
                Ok(prepared) => prepared,
                Err(error) => return retry(batch, error),
            }
        };
        host.prepared(&new_shards);

        let encoded: Vec<Vec<u8>> = accepted
            .iter()
            .map(|(_, proposal)| proposal.encoded.clone())
            .collect();
        let prepared_at = Instant::now();
        let applied = match host.record(encoded).await {
            Ok(applied) => applied,
            Err(RecordError::NoSpace(message)) => {
                host.remove_logs(&prepared);
                return retry(batch, ErrorResponse::new(ErrorCode::StorageFault, message));
            }
            Err(RecordError::NotLeader(error)) => {
                // Some entries may still commit under the next leader: the logs prepared for
                // them stay (applying a command whose log exists keeps it; one that never
                // commits leaves an empty log its shard id's next create replaces).
                *self.staged.borrow_mut() = None;
                answer(batch, std::iter::repeat_with(|| Err(error.clone())));
                return Outcome::Answered;
            }
            Err(RecordError::Stopping) => {
                *self.staged.borrow_mut() = None;
                answer(batch, std::iter::repeat_with(|| Err(stopping())));
                return Outcome::Answered;
            }
        };
        let recorded_at = Instant::now();
        for (&(index, _), (got, outcome)) in accepted.iter().zip(&applied) {
            let fatal = if *got != index {
                Some(FatalError::Metadata(format!(
                    "a staged command predicted at index {index} was committed at {got}"
                )))
            } else {
                outcome.as_ref().err().map(|refusal| {
                    FatalError::Metadata(format!(
                        "the committed state refused command {index}, which the staged state \
                         accepted: {refusal}"
                    ))
                })
            };
            if let Some(fatal) = fatal {
                return self.fail_batch(host, batch, fatal);
            }
        }

        // The staged state catches up with the committed one: the last accepted command may
        // have been checked on it but not applied yet.
        {
            let mut slot = self.staged.borrow_mut();
            let staged_state = slot
                .as_mut()
                .expect("a batch with accepted commands has a staged state");
            if last_deferred {
                let (index, proposal) = accepted
                    .last()
                    .copied()
                    .expect("a batch with accepted commands");
                stage_apply(staged_state, index, &proposal.command);
            }
            if staged_state.applied_index() != host.committed().applied_index() {
                // Entries of the group itself (a membership change) were applied meanwhile.
                *slot = None;
            }
        }
        tracing::debug!(
            proposals = batch.len(),
            recorded = accepted.len(),
            new_shards = new_shards.len(),
            first_index = accepted[0].0,
            last_index = last,
            prepare_us = micros(started, prepared_at),
            record_us = micros(prepared_at, recorded_at),
            "metadata batch committed"
        );
        drop(accepted);
        answer(batch, staged.into_iter().map(Staged::into_outcome));
        Outcome::Answered
    }

    /// Checks each proposal of `batch` on the staged state and applies the accepted ones to
    /// it; an accepted command is applied only when a later one is checked, so the last
    /// one is applied once the batch is recorded, and a batch of one never changes the staged
    /// state before it is recorded (and needs no undo).
    fn stage<H: Host>(&self, host: &H, batch: &[Proposal]) -> Staging {
        let mut slot = self.staged.borrow_mut();
        let committed_index = host.committed().applied_index();
        if slot
            .as_ref()
            .is_some_and(|staged| staged.applied_index() != committed_index)
        {
            // The group applied entries of its own (a new leader's empty entry, a membership
            // change) since the last batch: stage on a fresh copy. Rare: leader changes only.
            *slot = None;
        }
        let staged = slot.get_or_insert_with(|| host.committed().clone());
        let mut fates = Vec::with_capacity(batch.len());
        let mut new_shards = Vec::new();
        let mut pending: Option<(u64, &Command)> = None;
        let mut ahead = false;
        for proposal in batch {
            if let Some((index, command)) = pending.take() {
                stage_apply(staged, index, command);
                ahead = true;
            }
            let index = staged.applied_index() + 1;
            match staged.check(index, &proposal.command) {
                Ok(shards) => {
                    new_shards.extend(shards);
                    fates.push(Staged::Accepted(index));
                    pending = Some((index, &proposal.command));
                }
                Err(refusal) => fates.push(Staged::Refused(metadata_error(&refusal))),
            }
        }
        Staging {
            fates,
            new_shards,
            ahead,
            last_deferred: pending.is_some(),
        }
    }
}

fn micros(from: Instant, to: Instant) -> u64 {
    to.saturating_duration_since(from).as_micros() as u64
}

/// Applies to the staged state a command its `check` accepted.
fn stage_apply(staged: &mut MetadataState, index: u64, command: &Command) {
    if let Err(error) = staged.apply(index, command) {
        // `check` runs `apply`'s own checks (a property test holds them to it).
        panic!("command {index} passed check but apply refused it: {error}");
    }
}

impl Staged {
    fn into_outcome(self) -> Result<u64, ErrorResponse> {
        match self {
            Staged::Accepted(index) => Ok(index),
            Staged::Refused(refusal) => Err(refusal),
        }
    }
}

/// Answers each proposal with the next outcome.
fn answer(batch: Vec<Proposal>, outcomes: impl IntoIterator<Item = Result<u64, ErrorResponse>>) {
    let mut outcomes = outcomes.into_iter();
    for proposal in batch {
        let outcome = outcomes
            .next()
            .expect("an outcome for every proposal of a batch");
        proposal.answer(outcome);
    }
}

#[cfg(test)]
mod tests {
    //! The batch logic against a fake node (no cores, no shard logs) and a real metadata log
    //! in a temporary directory, on an executor of the runtime.

    use std::cell::{Cell, Ref, RefCell};
    use std::path::PathBuf;
    use std::rc::Rc;

    use runnel_core::StreamName;
    use runnel_net::protocol::{ErrorCode, ErrorResponse};
    use runnel_replicate::metadata::{
        Applied, Command, Durability, MetadataError, MetadataState, Node, NodeId, Shard,
        StreamConfig,
    };
    use runnel_segment::runtime::{spawn, yield_now};

    use super::{Host, Proposer};
    use crate::error::FatalError;
    use crate::group::RecordError;
    use runnel_replicate::metadata::decode_command;

    /// A node whose disk has room for `room` more shard logs.
    struct FakeHost {
        committed: RefCell<MetadataState>,
        room: Cell<usize>,
        prepares: RefCell<Vec<usize>>,
        distributed: RefCell<Vec<Vec<u64>>>,
    }

    impl FakeHost {
        fn new(room: usize) -> FakeHost {
            FakeHost {
                committed: RefCell::new(MetadataState::new()),
                room: Cell::new(room),
                prepares: RefCell::new(Vec::new()),
                distributed: RefCell::new(Vec::new()),
            }
        }
    }

    impl Host for FakeHost {
        fn committed(&self) -> Ref<'_, MetadataState> {
            self.committed.borrow()
        }

        async fn prepare_logs(&self, shards: &[Shard]) -> Result<Vec<PathBuf>, ErrorResponse> {
            self.prepares.borrow_mut().push(shards.len());
            if shards.len() > self.room.get() {
                return Err(ErrorResponse::new(
                    ErrorCode::StorageFault,
                    "no space left on device",
                ));
            }
            self.room.set(self.room.get() - shards.len());
            Ok(shards
                .iter()
                .map(|s| PathBuf::from(s.id.0.to_string()))
                .collect())
        }

        fn remove_logs(&self, prepared: &[PathBuf]) {
            self.room.set(self.room.get() + prepared.len());
        }

        async fn begin_batch(&self) -> Result<(), ErrorResponse> {
            Ok(())
        }

        fn prepared(&self, _shards: &[Shard]) {}

        /// A group of one that commits at once: applies each command at the next index.
        async fn record(
            &self,
            commands: Vec<Vec<u8>>,
        ) -> Result<Vec<(u64, Result<Applied, MetadataError>)>, RecordError> {
            // Another task may run meanwhile, as on a real core.
            yield_now().await;
            let mut outcomes = Vec::new();
            for bytes in commands {
                let command = decode_command(&bytes).expect("an encoded command");
                let mut committed = self.committed.borrow_mut();
                let index = committed.applied_index() + 1;
                outcomes.push((index, committed.apply(index, &command)));
            }
            self.distributed
                .borrow_mut()
                .push(outcomes.iter().map(|(index, _)| *index).collect());
            Ok(outcomes)
        }

        fn end_batch(&self) {}

        fn fail(&self, error: FatalError) {
            panic!("unexpected fatal error: {error}");
        }

        fn failed(&self) -> bool {
            false
        }
    }

    fn register() -> Command {
        Command::RegisterNode {
            node: Node {
                id: NodeId(1),
                cores: 2,
                address: "127.0.0.1:7000".into(),
            },
        }
    }

    fn create(name: &str) -> Command {
        Command::CreateStream {
            config: StreamConfig {
                name: StreamName::new(name).expect("a valid name"),
                shard_count: 1,
                replication_factor: 1,
                retention_ms: 3_600_000,
                durability: Durability::Fsync,
            },
            now_ms: 1_700_000_000_000,
            avoid: Vec::new(),
        }
    }

    fn code(outcome: &Result<u64, ErrorResponse>) -> Option<ErrorCode> {
        outcome.as_ref().err().map(|e| e.code)
    }

    /// Runs `test` on an executor with a fresh proposer.
    fn with_proposer<F, Fut>(test: F)
    where
        F: FnOnce(Rc<Proposer>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        runnel_segment::runtime::run("proposer-test", 1, move || async move {
            test(Rc::new(Proposer::new())).await;
        });
    }

    /// Queues `commands` in order (each proposer waits in its own task), runs them as one
    /// batch, and returns their outcomes.
    async fn propose_all(
        proposer: &Rc<Proposer>,
        host: &FakeHost,
        commands: Vec<Command>,
    ) -> Vec<Result<u64, ErrorResponse>> {
        let count = commands.len();
        let tasks: Vec<_> = commands
            .into_iter()
            .map(|command| {
                let proposer = Rc::clone(proposer);
                spawn(async move { proposer.propose(command).await })
            })
            .collect();
        while proposer.queue.borrow().len() < count {
            yield_now().await;
        }
        let batch = proposer.next_batch();
        assert_eq!(batch.len(), count, "one batch");
        proposer.run_batch(host, batch).await;
        let mut outcomes = Vec::new();
        for task in tasks {
            outcomes.push(task.await);
        }
        outcomes
    }

    /// One batch: each command is checked on the ones before it (the second create of a name
    /// is refused, ids follow on), refusals consume no index, everything is recorded with one
    /// append and distributed once, and the committed state is the state applying the
    /// accepted commands one by one gives.
    #[test]
    fn a_batch_stages_each_command_on_the_ones_before_it() {
        with_proposer(|proposer| async move {
            let host = FakeHost::new(100);
            let commands = vec![
                register(),
                create("a"),
                create("a"),
                create("b"),
                Command::DeleteStream {
                    name: StreamName::new("missing").expect("name"),
                    force: false,
                },
                create("c"),
            ];
            let outcomes = propose_all(&proposer, &host, commands.clone()).await;
            let codes: Vec<_> = outcomes.iter().map(code).collect();
            assert_eq!(
                codes,
                vec![
                    None,
                    None,
                    Some(ErrorCode::StreamExists),
                    None,
                    Some(ErrorCode::UnknownStream),
                    None
                ]
            );
            assert_eq!(*host.prepares.borrow(), vec![3], "one prepare of 3 shards");
            assert_eq!(*host.distributed.borrow(), vec![vec![1, 2, 3, 4]]);
            let mut alone = MetadataState::new();
            let mut index = 0;
            for command in &commands {
                if alone.check(index + 1, command).is_ok() {
                    index += 1;
                    alone.apply(index, command).expect("accepted");
                }
            }
            assert_eq!(*host.committed.borrow(), alone);
            let shard_ids: Vec<u64> = alone.shards().map(|s| s.id.0).collect();
            assert_eq!(shard_ids, vec![1, 2, 3], "ids follow each other");
            let indexes: Vec<u64> = outcomes
                .iter()
                .filter_map(|o| o.as_ref().ok())
                .copied()
                .collect();
            assert_eq!(indexes, vec![1, 2, 3, 4], "each accepted command's index");
        });
    }

    /// A full disk during a batch refuses only what it would refuse alone: the batch is undone
    /// and its commands run one at a time, each getting the answer it gets alone; the staged
    /// state does not stay ahead (later batches get the right ids).
    #[test]
    fn a_failed_batch_runs_again_one_command_at_a_time() {
        with_proposer(|proposer| async move {
            // Room for two of the three new shard logs.
            let host = FakeHost::new(2);
            let outcomes = propose_all(&proposer, &host, vec![register()]).await;
            assert!(outcomes[0].is_ok());
            let commands = vec![create("a"), create("b"), create("a"), create("c")];
            let outcomes = propose_all(&proposer, &host, commands).await;
            let codes: Vec<_> = outcomes.iter().map(code).collect();
            assert_eq!(
                codes,
                vec![
                    None,
                    None,
                    Some(ErrorCode::StreamExists),
                    Some(ErrorCode::StorageFault)
                ]
            );
            // The batch (3 shards) failed; then a, b and c alone.
            assert_eq!(*host.prepares.borrow(), vec![3, 1, 1, 1]);
            assert_eq!(host.room.get(), 0);
            assert_eq!(*host.distributed.borrow(), vec![vec![1], vec![2], vec![3]]);

            // Space again: the next batch stages on the committed state.
            host.room.set(10);
            let outcomes = propose_all(&proposer, &host, vec![create("c"), create("d")]).await;
            assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
            let committed = host.committed.borrow();
            assert_eq!(committed.applied_index(), 5);
            let shard_ids: Vec<u64> = committed.shards().map(|s| s.id.0).collect();
            assert_eq!(shard_ids, vec![1, 2, 3, 4]);
        });
    }

    /// The proposer task under concurrent proposers: every proposal is answered once, the
    /// creates of distinct names all succeed with distinct ids, duplicates are refused, and
    /// the state replayed from the log is the committed one.
    #[test]
    fn the_proposer_task_answers_concurrent_proposers() {
        with_proposer(|proposer| async move {
            let host = Rc::new(FakeHost::new(1_000));
            let runner = {
                let (proposer, host) = (Rc::clone(&proposer), Rc::clone(&host));
                spawn(async move { proposer.run(&*host).await })
            };
            assert!(proposer.propose(register()).await.is_ok());
            let tasks: Vec<_> = (0..300)
                .map(|i| {
                    let proposer = Rc::clone(&proposer);
                    // Every tenth create repeats the name of the one before it.
                    let name = format!("s{}", if i % 10 == 9 { i - 1 } else { i });
                    spawn(async move { proposer.propose(create(&name)).await })
                })
                .collect();
            let mut outcomes = Vec::new();
            for task in tasks {
                outcomes.push(task.await);
            }
            let refused = outcomes.iter().filter(|o| o.is_err()).count();
            assert_eq!(refused, 30, "{outcomes:?}");
            assert!(outcomes
                .iter()
                .filter_map(|o| o.as_ref().err())
                .all(|e| e.code == ErrorCode::StreamExists));
            let committed = host.committed.borrow().clone();
            assert_eq!(committed.streams().len(), 270);
            assert_eq!(committed.shards().len(), 270);
            assert_eq!(committed.applied_index(), 271);
            assert!(
                host.distributed.borrow().len() < 271,
                "several commands per batch"
            );
            proposer.stop().await;
            runner.await;
        });
    }

    /// Proposals queued when the proposer stops, and any made after, are answered
    /// `Unavailable`; nothing of them is recorded.
    #[test]
    fn a_stopping_proposer_answers_what_is_queued() {
        with_proposer(|proposer| async move {
            let tasks: Vec<_> = ["a", "b"]
                .into_iter()
                .map(|name| {
                    let proposer = Rc::clone(&proposer);
                    spawn(async move { proposer.propose(create(name)).await })
                })
                .collect();
            while proposer.queue.borrow().len() < 2 {
                yield_now().await;
            }
            proposer.stop().await;
            for task in tasks {
                assert_eq!(code(&task.await), Some(ErrorCode::Unavailable));
            }
            assert_eq!(
                code(&proposer.propose(register()).await),
                Some(ErrorCode::Unavailable)
            );
        });
    }
}
