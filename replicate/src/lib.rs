//! `runnel-replicate`: Runnel's replicated state machines, as sans-IO code.
//!
//! Today: the cluster **metadata** state machine ([`metadata`]: nodes, streams, shards and their
//! lineage, subscriptions and their committed progress), which a node persists as a log of
//! encoded commands plus snapshots; and the run-time **consumer groups** of subscriptions
//! ([`consumer`]: a group's membership and sticky shard assignment, and per shard the delivery
//! window with acks, ack timeouts and redelivery); and the **metadata group** ([`group`]: the
//! metadata state machine replicated by Raft, on raft-rs, with its deterministic simulator),
//! which the server does not run yet; and a replicated **shard's data path** ([`shard`]:
//! sequencer, replica and recovery, with their deterministic simulator), which the server does
//! not drive yet; and a shard's **idempotent producers** ([`producers`]: which batches a
//! shard stored per producer id and sequence, so that a retried batch is answered with its
//! first offsets instead of being stored twice).
//!
//! Invariants: applying the same commands in the same order gives the same state and
//! byte-identical snapshots on every replica; ids are never reused; a refused command changes
//! nothing but the applied log index.
//!
//! Must never: touch a clock, a socket, a file, a thread or a random source. Time and inputs
//! are arguments; effects are returned values. That is what lets a deterministic simulator
//! drive it.
//!
//! Fault model: any byte handed to a decoder may be wrong or hostile; the answer is a typed
//! error, never a panic. A broken internal invariant is a bug and stops the process.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::indexing_slicing))]

pub mod consumer;
pub mod group;
pub mod metadata;
pub mod producers;
pub mod shard;
pub mod sim;
