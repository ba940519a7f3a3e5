//! The background task of a [`Consumer`](super::Consumer): keeps the member in its group and
//! its shards consumed.
//!
//! - **Membership** (`session.rs`): reads `Assignment`s from the join stream and sends a
//!   `Heartbeat` every `heartbeat_interval_ms`. When the join stream or its connection fails,
//!   or the server says the member was expelled, it rejoins with `previous_member` set (so the
//!   server replaces the old member rather than refusing its name), with the client's backoff
//!   capped at [`BACKOFF_MS_MAX`], for as long as the failure is transient; fatal refusals end
//!   the consumer (`join::is_fatal`).
//! - **Shards**: one task per assigned shard (`shard.rs`). A shard leaving the assignment is
//!   *drained*: it takes no new acks, its frames in flight get their answers (or are refused
//!   as `NotAssignee` if its stream ends first or within the request timeout), then its task
//!   is dropped. `NotAssigned` right after `Consume` is retried a few times (the assignment
//!   may not have reached the shard's core yet), then the next `Assignment` is awaited.
//! - **Acks**: the handles queue acks in the shared state (`shared.rs`); the worker turns a
//!   shard's queue into `Ack` frames (`ack_frames.rs`) when it is due by count or age, or at
//!   once for a flush, and hands them to the shard's task. A flush waits until every frame
//!   that existed when it began is answered, or the request timeout.
//!
//! Bounds: see `ack_frames.rs` for frames; one flush and one leave wait at a time (the handle
//! serialises them); shard tasks' events wait in a channel of [`TASK_EVENTS_MAX`]. Nothing
//! loops without waiting: each turn waits for an event, a command, an ack queued, or the
//! earliest deadline, and a deadline is only set for something that can happen then.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use runnel_core::ShardId;
use runnel_net::protocol::{
    AckRefusal, Assignment, ConsumeEndReason, ErrorCode, ErrorResponse, JoinSubscription,
    ProtocolError, Request, Response, ShardOwner,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::ack_frames::{AckBatching, AckFrames, Counters as FrameCounters, PendingAck};
use super::acks::AckSummary;
use super::delivery::Delivery;
use super::join::{self, is_fatal, JoinFailure, Joined};
use super::session::{Session, SessionEvent};
use super::shard::{self, ShardContext, ShardEvent, ShardTask, TaskEvent};
use super::shared::{Counters, Shared};
use crate::append::REROUTES_MAX;
use crate::client::ClientInner;
use crate::error::ClientError;

/// Longest wait between two rejoin attempts, or two attempts to open a shard's stream, in
/// milliseconds (the client's backoff, capped: a consumer should come back quickly).
const BACKOFF_MS_MAX: u64 = 1_000;
/// `NotAssigned` answers to a `Consume` tried again before waiting for the next `Assignment`.
const NOT_ASSIGNED_RETRIES_MAX: u32 = 5;
/// Wait before the n-th retry after `NotAssigned`: n times this, in milliseconds.
const NOT_ASSIGNED_DELAY_MS: u64 = 20;
/// Events of the shard tasks waiting for the worker (a task waits when it is full).
pub(super) const TASK_EVENTS_MAX: usize = 256;
/// Commands waiting for the worker.
pub(super) const COMMANDS_MAX: usize = 4;

/// What the consumer's handle asks of the worker.
pub(super) enum Command {
    /// Send every queued ack now; answer once every ack frame that exists then is answered.
    Flush(oneshot::Sender<Result<AckSummary, ClientError>>),
    /// Leave the group (`LeaveSubscription`, then `LeaveOk`) and stop.
    Leave(oneshot::Sender<Result<(), ClientError>>),
}

/// The worker's view of one shard it holds (or drains).
struct ShardState {
    /// The node and core to send `Consume` to.
    owner: ShardOwner,
    task: Option<ShardTask>,
    frames: AckFrames,
    /// Open the stream again at this time (after a failure).
    retry_at: Option<Instant>,
    /// Given up by the assignment: its frames in flight may be answered until then.
    draining_until: Option<Instant>,
    /// Consecutive failures, `NotAssigned` answers and reroutes since it last worked.
    failures: u32,
    not_assigned: u32,
    reroutes: u32,
}

impl ShardState {
    fn new(owner: ShardOwner) -> ShardState {
        ShardState {
            owner,
            task: None,
            frames: AckFrames::default(),
            retry_at: None,
            draining_until: None,
            failures: 0,
            not_assigned: 0,
            reroutes: 0,
        }
    }

    /// Drops the stream; its unanswered frames will be sent on the next one.
    fn stop(&mut self) {
        self.task = None;
        self.frames.unsend_all();
    }

    /// Whether new frames may be taken from its queue now: it has a stream and room.
    fn takes_acks(&self) -> bool {
        self.task.is_some() && self.draining_until.is_none() && self.frames.has_room()
    }
}

/// A flush waiting for the answers of every ack frame up to `last_id`.
struct FlushWaiter {
    last_id: u64,
    deadline: Instant,
    reply: oneshot::Sender<Result<AckSummary, ClientError>>,
}

/// A leave waiting for `LeaveOk`.
struct Leaving {
    deadline: Instant,
    reply: oneshot::Sender<Result<(), ClientError>>,
}

/// Why the worker stops.
enum Ending {
    /// Left the group (the leave's outcome).
    Left(Result<(), ClientError>),
    /// The consumer's handle was dropped.
    Dropped,
    /// A failure that retrying cannot fix.
    Fatal(ClientError),
}

/// Why the worker woke up.
enum Wake {
    Command(Option<Command>),
    Task(TaskEvent),
    Session(SessionEvent),
    AcksQueued,
    Timer,
}

/// What the worker needs to start.
pub(super) struct WorkerParts {
    pub inner: Arc<ClientInner>,
    pub shared: Arc<Shared>,
    pub join_request: JoinSubscription,
    pub joined: Joined,
    pub batching: AckBatching,
    pub commands: mpsc::Receiver<Command>,
    pub deliveries: mpsc::Sender<Result<Delivery, ClientError>>,
}

/// The worker.
pub(super) struct Worker {
    inner: Arc<ClientInner>,
    shared: Arc<Shared>,
    join_request: JoinSubscription,
    batching: AckBatching,
    commands: mpsc::Receiver<Command>,
    events_sender: mpsc::Sender<TaskEvent>,
    events: mpsc::Receiver<TaskEvent>,
    /// Handed to each shard task; dropped when the worker stops, which ends the channel.
    deliveries: mpsc::Sender<Result<Delivery, ClientError>>,
    session: Session,
    /// The coordinator's node and core of the last join (where rejoins go first).
    coordinator: ShardOwner,
    /// The member's session timeout: a rejoin refused with `ConsumerNameInUse` is retried
    /// this long, as the old member may hold the name until the server drops it.
    session_timeout: Duration,
    shards: BTreeMap<ShardId, ShardState>,
    counters: FrameCounters,
    next_task: u64,
    flushes: Vec<FlushWaiter>,
    leaving: Option<Leaving>,
}

impl Worker {
    pub fn new(parts: WorkerParts) -> Worker {
        let (events_sender, events) = mpsc::channel(TASK_EVENTS_MAX);
        let coordinator = parts.joined.stream.target;
        let session_timeout = Duration::from_millis(u64::from(parts.joined.ok.session_timeout_ms));
        Worker {
            session: Session::joined(parts.joined, Instant::now()),
            inner: parts.inner,
            shared: parts.shared,
            join_request: parts.join_request,
            batching: parts.batching,
            commands: parts.commands,
            events_sender,
            events,
            deliveries: parts.deliveries,
            coordinator,
            session_timeout,
            shards: BTreeMap::new(),
            counters: FrameCounters::default(),
            next_task: 0,
            flushes: Vec::new(),
            leaving: None,
        }
    }

    /// Runs until the consumer leaves, is dropped or fails.
    pub async fn run(mut self) {
        let ending = self.serve().await;
        self.finish(ending).await;
    }

    async fn serve(&mut self) -> Ending {
        loop {
            let now = Instant::now();
            if let Some(ending) = self.tick(now).await {
                return ending;
            }
            self.take_due_acks(now, false);
            self.send_frames();
            self.answer_flushes(now);
            let wake_at = self.next_wake(now);
            let wake = tokio::select! {
                command = self.commands.recv() => Wake::Command(command),
                Some(event) = self.events.recv() => Wake::Task(event),
                event = self.session.event() => Wake::Session(event),
                () = self.shared.wake.notified() => Wake::AcksQueued,
                () = sleep_until(wake_at) => Wake::Timer,
            };
            let now = Instant::now();
            let ending = match wake {
                Wake::Command(None) => Some(Ending::Dropped),
                Wake::Command(Some(command)) => self.on_command(command, now).await,
                Wake::Task(event) => self.on_task_event(event, now),
                Wake::Session(SessionEvent::Frame(frame)) => self.on_join_frame(frame, now),
                Wake::Session(SessionEvent::Attempt(outcome)) => self.on_attempt(outcome, now),
                Wake::AcksQueued | Wake::Timer => None,
            };
            if let Some(ending) = ending {
                return ending;
            }
        }
    }

    /// Everything due by `now`: a heartbeat, a rejoin attempt, shards to reopen, drained
    /// shards whose time is up, a leave that got no answer.
    async fn tick(&mut self, now: Instant) -> Option<Ending> {
        match &mut self.session {
            Session::Joined(member) if self.leaving.is_none() && now >= member.next_heartbeat => {
                member.next_heartbeat = now + member.heartbeat_every;
                if let Err(error) = member.write(&self.inner, &Request::Heartbeat).await {
                    tracing::debug!(consumer = %self.shared.name, %error, "heartbeat failed, rejoining");
                    self.start_rejoin(now);
                }
            }
            Session::Rejoining(rejoin)
                if rejoin.running.is_none() && now >= rejoin.next_attempt =>
            {
                let mut request = self.join_request.clone();
                request.previous_member = Some(self.shared.member());
                let attempt = join::join(Arc::clone(&self.inner), request, self.coordinator);
                rejoin.running = Some(Box::pin(attempt));
            }
            _ => {}
        }
        let reopen: Vec<ShardId> = self
            .shards
            .iter()
            .filter(|(_, state)| state.task.is_none() && state.retry_at.is_some_and(|at| now >= at))
            .map(|(shard, _)| *shard)
            .collect();
        for shard in reopen {
            self.spawn_shard(shard);
        }
        let drained: Vec<ShardId> = self
            .shards
            .iter()
            .filter(|(_, state)| state.draining_until.is_some_and(|until| now >= until))
            .map(|(shard, _)| *shard)
            .collect();
        for shard in drained {
            self.drop_shard(shard);
        }
        if self
            .leaving
            .as_ref()
            .is_some_and(|leaving| now >= leaving.deadline)
        {
            return Some(Ending::Left(Err(ClientError::Timeout {
                request: "LeaveSubscription",
                timeout_ms: self.inner.nodes.request_timeout().as_millis() as u64,
            })));
        }
        None
    }

    /// The earliest deadline, if any.
    fn next_wake(&self, now: Instant) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let mut at = |instant: Instant| {
            wake = Some(wake.map_or(instant, |wake| wake.min(instant)));
        };
        match &self.session {
            // No heartbeat after LeaveSubscription: the stream's sending side is finished.
            Session::Joined(member) if self.leaving.is_none() => at(member.next_heartbeat),
            Session::Rejoining(rejoin) if rejoin.running.is_none() => at(rejoin.next_attempt),
            _ => {}
        }
        for state in self.shards.values() {
            if let (None, Some(retry_at)) = (&state.task, state.retry_at) {
                at(retry_at);
            }
            if let Some(until) = state.draining_until {
                at(until);
            }
        }
        // The age of queued acks counts only where a frame could be taken now: acks waiting
        // for a stream or for room must not wake the worker again and again.
        {
            let queued = self.shared.lock();
            if let Some(oldest) = queued.oldest_ack {
                let takes = queued.queues.iter().any(|(shard, queue)| {
                    !queue.is_empty() && self.shards.get(shard).is_some_and(ShardState::takes_acks)
                });
                if takes {
                    at((oldest + self.batching.age).max(now));
                }
            }
        }
        for flush in &self.flushes {
            at(flush.deadline);
        }
        if let Some(leaving) = &self.leaving {
            at(leaving.deadline);
        }
        wake
    }

    async fn on_command(&mut self, command: Command, now: Instant) -> Option<Ending> {
        match command {
            Command::Flush(reply) => {
                // Every queued ack becomes a frame now; the flush waits for those and for
                // every frame before them.
                self.take_due_acks(now, true);
                self.flushes.push(FlushWaiter {
                    last_id: self.counters.last_id,
                    deadline: now + self.inner.nodes.request_timeout(),
                    reply,
                });
                None
            }
            Command::Leave(reply) => {
                self.leaving = Some(Leaving {
                    deadline: now + self.inner.nodes.request_timeout(),
                    reply,
                });
                let Session::Joined(member) = &mut self.session else {
                    // Not a member now: nothing to leave (the server drops the old member at
                    // its session timeout).
                    return Some(Ending::Left(Ok(())));
                };
                if let Err(error) = member.write(&self.inner, &Request::LeaveSubscription).await {
                    return Some(Ending::Left(Err(error)));
                }
                let _ = member.stream.send.finish();
                None
            }
        }
    }

    fn on_join_frame(
        &mut self,
        frame: Result<Option<Response>, ProtocolError>,
        now: Instant,
    ) -> Option<Ending> {
        let error = match frame {
            Ok(Some(Response::Assignment(assignment))) => {
                if self.leaving.is_none() {
                    self.assign(assignment, now);
                }
                return None;
            }
            Ok(Some(Response::LeaveOk)) if self.leaving.is_some() => {
                return Some(Ending::Left(Ok(())))
            }
            Ok(Some(Response::Error(error))) => ClientError::server("JoinSubscription", error),
            Ok(Some(other)) => ClientError::UnexpectedResponse {
                request: "JoinSubscription",
                response: other.kind().into(),
            },
            Ok(None) => ClientError::UnexpectedResponse {
                request: "JoinSubscription",
                response: "the join stream ended".into(),
            },
            Err(error) => ClientError::protocol("JoinSubscription", error),
        };
        if self.leaving.is_some() {
            return Some(Ending::Left(Err(error)));
        }
        if error.code() == Some(ErrorCode::NotAssigned) {
            tracing::info!(consumer = %self.shared.name, %error, "expelled from the group, rejoining");
        } else if is_fatal(&error) {
            return Some(Ending::Fatal(error));
        } else {
            tracing::info!(consumer = %self.shared.name, %error, "membership lost, rejoining");
        }
        self.start_rejoin(now);
        None
    }

    fn on_attempt(&mut self, outcome: Result<Joined, JoinFailure>, now: Instant) -> Option<Ending> {
        let Session::Rejoining(rejoin) = &mut self.session else {
            return None;
        };
        rejoin.running = None;
        let failure = match outcome {
            Ok(joined) => {
                tracing::info!(
                    consumer = %self.shared.name,
                    member = joined.ok.member,
                    previous = self.shared.member(),
                    "rejoined"
                );
                self.shared.set_member(joined.ok.member);
                self.coordinator = joined.stream.target;
                self.session_timeout =
                    Duration::from_millis(u64::from(joined.ok.session_timeout_ms));
                self.session = Session::joined(joined, now);
                Counters::add(&self.shared.counters.rejoins, 1);
                return None;
            }
            Err(failure) => failure,
        };
        let name_held_by_old_member = failure.error().code() == Some(ErrorCode::ConsumerNameInUse)
            && now < rejoin.since + self.session_timeout;
        if let JoinFailure::Fatal(error) = failure {
            if !name_held_by_old_member {
                return Some(Ending::Fatal(error));
            }
        }
        rejoin.attempts += 1;
        let delay = backoff(&self.inner, rejoin.attempts);
        rejoin.next_attempt = now + delay;
        tracing::debug!(consumer = %self.shared.name, attempts = rejoin.attempts, ?delay, "rejoin failed");
        None
    }

    /// The membership is lost: drops every shard stream (their unanswered frames wait for
    /// the next ones); the assignment and the queued acks stay until the next `Assignment`.
    fn start_rejoin(&mut self, now: Instant) {
        let draining: Vec<ShardId> = self
            .shards
            .iter()
            .filter(|(_, state)| state.draining_until.is_some())
            .map(|(shard, _)| *shard)
            .collect();
        for shard in draining {
            self.drop_shard(shard);
        }
        for state in self.shards.values_mut() {
            state.stop();
            state.retry_at = None;
        }
        self.session = Session::rejoining(now);
    }

    /// Applies the member's new set of shards.
    fn assign(&mut self, assignment: Assignment, now: Instant) {
        let mut shards: Vec<ShardId> = assignment.shards.iter().map(|a| a.shard).collect();
        shards.sort_unstable();
        shards.dedup();
        tracing::debug!(consumer = %self.shared.name, generation = assignment.generation, ?shards, "assignment");
        let refused = self.shared.lock().assign(&shards);
        Counters::add(&self.shared.counters.records_refused, refused);
        let given_up: Vec<ShardId> = self
            .shards
            .keys()
            .filter(|shard| shards.binary_search(shard).is_err())
            .copied()
            .collect();
        for shard in given_up {
            self.drain(shard, now);
        }
        for assigned in assignment.shards {
            let owner = ShardOwner {
                node: assigned.node,
                core: assigned.core,
            };
            let state = self
                .shards
                .entry(assigned.shard)
                .or_insert_with(|| ShardState::new(owner));
            if state.owner != owner || state.draining_until.is_some() {
                // Moved, or given up and given back: a fresh stream for this assignment.
                state.owner = owner;
                state.draining_until = None;
                state.stop();
            }
            if state.task.is_none() {
                state.failures = 0;
                state.not_assigned = 0;
                state.reroutes = 0;
                self.spawn_shard(assigned.shard);
            }
        }
    }

    /// A shard given up: refuses its frames not sent (they cannot be any more), waits for
    /// the answers of those in flight until the request timeout, then drops it.
    fn drain(&mut self, shard: ShardId, now: Instant) {
        let Some(state) = self.shards.get_mut(&shard) else {
            return;
        };
        if state.draining_until.is_some() {
            return;
        }
        if state.task.is_none() {
            self.drop_shard(shard);
            return;
        }
        refuse(&self.shared, shard, state.frames.take_unsent());
        if state.frames.is_empty() {
            self.shards.remove(&shard);
        } else {
            state.retry_at = None;
            state.draining_until = Some(now + self.inner.nodes.request_timeout());
        }
    }

    /// Drops a shard, refusing its frames still unanswered.
    fn drop_shard(&mut self, shard: ShardId) {
        if let Some(mut state) = self.shards.remove(&shard) {
            refuse(&self.shared, shard, state.frames.take_all());
        }
    }

    fn on_task_event(&mut self, event: TaskEvent, now: Instant) -> Option<Ending> {
        let shard = event.shard;
        let state = self.shards.get_mut(&shard)?;
        if state.task.as_ref().map(|task| task.id) != Some(event.task) {
            // From a stream already replaced.
            return None;
        }
        let draining = state.draining_until.is_some();
        let error = match event.event {
            ShardEvent::Consuming => {
                state.failures = 0;
                state.not_assigned = 0;
                state.reroutes = 0;
                return None;
            }
            ShardEvent::AckResult(result) => {
                if state.frames.answered(result.sequence).is_none() {
                    tracing::warn!(%shard, sequence = result.sequence, "an AckResult for no ack sent");
                    return None;
                }
                let refused = self.shared.lock().report.answered(
                    shard,
                    result.acked,
                    &result.refused,
                    result.refused_unlisted,
                    result.committed_offset,
                );
                let counters = &self.shared.counters;
                Counters::add(&counters.records_acked, result.acked);
                Counters::add(&counters.records_refused, refused);
                if draining && state.frames.is_empty() {
                    self.shards.remove(&shard);
                }
                return None;
            }
            ShardEvent::Ended(reason) => {
                state.stop();
                if draining {
                    self.drop_shard(shard);
                    return None;
                }
                match reason {
                    // The next Assignment says what became of the shard.
                    ConsumeEndReason::Revoked => {
                        tracing::debug!(%shard, "consume stream revoked");
                        return None;
                    }
                    ConsumeEndReason::SubscriptionDeleted => {
                        return Some(Ending::Fatal(ClientError::server(
                            "Consume",
                            ErrorResponse::new(
                                ErrorCode::UnknownSubscription,
                                "the subscription was deleted",
                            ),
                        )));
                    }
                    // The node is stopping (or a reason newer than this client): try again.
                    _ => ClientError::UnexpectedResponse {
                        request: "Consume",
                        response: format!("ConsumeEnd {reason:?}"),
                    },
                }
            }
            ShardEvent::Refused(error) | ShardEvent::Failed(error) => {
                state.stop();
                if draining {
                    self.drop_shard(shard);
                    return None;
                }
                error
            }
        };
        match error.code() {
            Some(ErrorCode::NotAssigned) => {
                // The coordinator tells the shard's core before the member, so this is rare:
                // a stale assignment. Retry a few times, then wait for the next one.
                state.not_assigned += 1;
                if state.not_assigned <= NOT_ASSIGNED_RETRIES_MAX {
                    let delay = NOT_ASSIGNED_DELAY_MS * u64::from(state.not_assigned);
                    state.retry_at = Some(now + Duration::from_millis(delay));
                } else {
                    tracing::debug!(%shard, "not assigned: waiting for the next assignment");
                }
            }
            Some(ErrorCode::UnknownShard | ErrorCode::UnknownStream) => {
                tracing::debug!(%shard, %error, "waiting for the next assignment");
            }
            Some(ErrorCode::NotOwner) if state.reroutes < REROUTES_MAX => {
                state.reroutes += 1;
                if let ClientError::Server {
                    owner: Some(owner), ..
                } = &error
                {
                    state.owner = *owner;
                }
                state.retry_at = Some(now);
            }
            _ if is_fatal(&error) => return Some(Ending::Fatal(error)),
            _ => {
                state.failures += 1;
                let delay = backoff(&self.inner, state.failures);
                tracing::debug!(%shard, %error, ?delay, "consume stream failed, reopening");
                state.retry_at = Some(now + delay);
            }
        }
        None
    }

    /// Starts the consume stream of `shard` (its unsent frames go out with the next
    /// `send_frames`).
    fn spawn_shard(&mut self, shard: ShardId) {
        let Some(state) = self.shards.get_mut(&shard) else {
            return;
        };
        state.retry_at = None;
        if !matches!(self.session, Session::Joined(_)) || self.leaving.is_some() {
            // No member to consume as: the next Assignment (after a rejoin) starts it.
            return;
        }
        self.next_task += 1;
        state.task = Some(shard::spawn(ShardContext {
            inner: Arc::clone(&self.inner),
            shared: Arc::clone(&self.shared),
            subscription: self.join_request.subscription.clone(),
            shard,
            member: self.shared.member(),
            owner: state.owner,
            deliveries: self.deliveries.clone(),
            events: self.events_sender.clone(),
            task: self.next_task,
        }));
    }

    /// Turns queued acks into frames: the queues due by count or age of shards that take
    /// acks now (within their room); or, for a flush (`everything`), every queue whole.
    fn take_due_acks(&mut self, now: Instant, everything: bool) {
        let mut queued = self.shared.lock();
        let aged = self.batching.aged(queued.oldest_ack, now);
        let (mut took, mut left) = (false, false);
        for (shard, queue) in queued.queues.iter_mut() {
            if queue.is_empty() {
                continue;
            }
            let due = self.batching.due(queue.offsets(), aged);
            match self.shards.get_mut(shard) {
                Some(state) if everything || (due && state.takes_acks()) => {
                    took |= state
                        .frames
                        .take_from(queue, &mut self.counters, everything);
                }
                _ => {}
            }
            left |= !queue.is_empty();
        }
        if !left {
            queued.oldest_ack = None;
        } else if took {
            // What is left waits for room, a stream or its batch: its age starts again.
            queued.oldest_ack = Some(now);
        }
    }

    /// Hands each shard's unsent frames to its stream, within the frames in flight allowed.
    fn send_frames(&mut self) {
        for state in self.shards.values_mut() {
            let Some(task) = &state.task else {
                continue;
            };
            for frame in state.frames.send_next(&mut self.counters) {
                // Never full: the channel holds at most ACKS_IN_FLIGHT_MAX frames and every
                // frame in it counts as sent until answered. Closed: the task ended, and its
                // last event makes the frame unsent again.
                let _ = task.acks.try_send(frame);
            }
        }
    }

    /// Answers the flushes whose frames are all answered, and those out of time.
    fn answer_flushes(&mut self, now: Instant) {
        let mut index = 0;
        while let Some(flush) = self.flushes.get(index) {
            let done = self.shards.values().all(|state| {
                state
                    .frames
                    .oldest_id()
                    .is_none_or(|oldest| oldest > flush.last_id)
            });
            if !done && now < flush.deadline {
                index += 1;
                continue;
            }
            let flush = self.flushes.swap_remove(index);
            let answer = if done {
                self.shared.lock().report.take()
            } else {
                Err(ClientError::Timeout {
                    request: "Ack",
                    timeout_ms: self.inner.nodes.request_timeout().as_millis() as u64,
                })
            };
            let _ = flush.reply.send(answer);
        }
    }

    /// Stops: leaves the group at best when the handle was dropped, ends every shard stream,
    /// answers whoever waits, and marks the consumer ended (its channel ends once the shard
    /// tasks are gone).
    async fn finish(mut self, ending: Ending) {
        if let (Ending::Dropped, Session::Joined(member)) = (&ending, &mut self.session) {
            // Best effort, without waiting for LeaveOk: the shards go to the other members
            // now rather than at the session timeout. Queued acks are not sent: their records
            // will be delivered again.
            let _ = member.write(&self.inner, &Request::LeaveSubscription).await;
            let _ = member.stream.send.finish();
        }
        self.shards.clear();
        let (fatal, left) = match ending {
            Ending::Fatal(error) => {
                tracing::warn!(consumer = %self.shared.name, %error, "consumer stopped");
                (Some(error), None)
            }
            Ending::Left(outcome) => (None, Some(outcome)),
            Ending::Dropped => (None, None),
        };
        let error = fatal.clone().unwrap_or(ClientError::Closed);
        self.shared.end(fatal);
        for flush in self.flushes.drain(..) {
            let _ = flush.reply.send(Err(error.clone()));
        }
        if let Some(leaving) = self.leaving.take() {
            let _ = leaving.reply.send(left.unwrap_or(Err(error)));
        }
    }
}

/// Refuses `frames` of `shard` (`NotAssignee`: the shard is not the consumer's any more).
fn refuse(shared: &Shared, shard: ShardId, frames: Vec<PendingAck>) {
    if frames.is_empty() {
        return;
    }
    let mut queued = shared.lock();
    let mut records = 0;
    for frame in frames {
        for range in frame.ranges {
            records += range.end - range.start;
            queued.report.refuse(shard, range, AckRefusal::NotAssignee);
        }
    }
    drop(queued);
    Counters::add(&shared.counters.records_refused, records);
}

/// The client's backoff after `attempts` failures, capped at [`BACKOFF_MS_MAX`].
fn backoff(inner: &ClientInner, attempts: u32) -> Duration {
    inner
        .nodes
        .policy()
        .delay(attempts, None)
        .min(Duration::from_millis(BACKOFF_MS_MAX))
}

/// Sleeps until `deadline`; forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
