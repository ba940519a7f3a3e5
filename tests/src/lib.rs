//! `runnel-tests`: helpers for end-to-end tests that run the real `runnel-server` binary on
//! loopback with a temporary data directory, and kill it with SIGKILL when a test says so; and
//! clusters of them (`cluster`), whose nodes trust one certificate authority (`certs`); and the
//! Jepsen-style workload, nemesis and checker run against such a cluster (`jepsen`).

pub mod certs;
pub mod cluster;
pub mod jepsen;
pub mod raw;
pub mod sdk;
pub mod server;
