//! `runnel-server`: the Runnel node.
//!
//! Responsibility: wire the storage engine (`runnel-segment`), the metadata state machine
//! (`runnel-replicate`) and the QUIC protocol (`runnel-net`) into one process that runs one
//! executor per core, each owning its shards and serving its own QUIC endpoint. Executors,
//! tasks, timers, channels and wake-ups come from `runnel_segment::runtime`, the one module
//! that knows the async runtime (glommio): this crate never names it.
//!
//! Invariants: a shard is owned by exactly one core and its state never leaves that core; an
//! append is acknowledged only as its stream's durability promises; the configuration is
//! validated before any executor starts; core 0 writes a metadata command durably before any
//! core applies it.
//!
//! Must never: block an executor thread, half-start (a fatal error stops the process with a
//! reason and an exit code), or acknowledge after a storage fault.

pub mod allocations;
pub mod append;
pub mod cluster;
pub mod config;
pub mod convert;
pub mod core;
pub mod data_dir;
pub mod dedup;
pub mod error;
pub mod failover;
pub mod group;
pub mod group_log;
pub mod handler;
pub mod identity;
pub mod local;
pub mod malloc;
pub mod mesh;
pub mod metadata_log;
pub mod node;
pub mod open_files;
pub mod ownership;
pub mod peer;
pub mod proposal;
pub mod proposer;
pub mod replicated;
pub mod sql;
pub mod stop;
pub mod subscription;
