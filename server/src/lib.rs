//! `runnel-server`: the Runnel node.
//!
//! Responsibility: wire the storage engine (`runnel-segment`), the metadata state machine
//! (`runnel-replicate`) and the QUIC protocol (`runnel-net`) into one process that runs one
//! glommio executor per core, each owning its shards and serving its own QUIC endpoint.
//!
//! Invariants: a shard is owned by exactly one core and its state never leaves that core; an
//! append is acknowledged only as its stream's durability promises; the configuration is
//! validated before any executor starts.
//!
//! Must never: block an executor thread, half-start (a fatal error stops the process with a
//! reason), or acknowledge after a storage fault.

pub mod config;
