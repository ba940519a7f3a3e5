//! `runnel-replicate`: Runnel's replicated state machines, as sans-IO code.
//!
//! Today: the cluster **metadata** state machine (streams, shards and their lineage), which a
//! node persists as a log of commands plus snapshots. Later: the sequencer/replica protocol of
//! a shard's data path and the Raft group that replicates metadata.
//!
//! Must never: touch a clock, a socket, a file, a thread or a random source. Time and inputs
//! are arguments; effects are returned values. That is what lets a deterministic simulator
//! drive it.

pub mod metadata;
