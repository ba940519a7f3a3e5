//! Fault injection in the peer transport, for tests only (the Jepsen-style tests in
//! `tests/tests/jepsen.rs`): the node drops peer frames to and from chosen nodes, both ways
//! (an isolated node) or one way (an asymmetric partition). Client traffic is untouched: a
//! node cut off from its peers still answers clients, which is the point (it must not commit
//! what needs its peers).
//!
//! Off unless the node's configuration names a **fault file** (`fault_injection_file`,
//! documented as test-only); then core 0 reads that file every [`FAULT_FILE_POLL_MS`] and
//! applies the rules it holds. Nothing on the network can turn it on. The file is text, one
//! rule a line, `#` starts a comment:
//!
//! ```text
//! isolate 2 3     # drop every frame to and from nodes 2 and 3
//! drop-to 2       # drop what this node sends to node 2 (messages, requests, answers)
//! drop-from 3     # drop what node 3 sends to this node
//! ```
//!
//! An empty or missing file heals every partition. A file that does not parse is reported
//! (warn) and the rules in force stay. Dropping happens where frames enter and leave the
//! transport (`Peers::send`, `Peers::request`, the reader of each connection and the answer to
//! each request), so connections stay up: only their frames vanish, as on a lossy network.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use runnel_segment::runtime::{sleep, spawn_blocking};

use super::Peers;

/// How often core 0 reads the fault file, in milliseconds.
pub const FAULT_FILE_POLL_MS: u64 = 100;
/// How long a request from a node cut off by a rule is held unanswered (then its stream is
/// dropped), in milliseconds: longer than any peer request's timeout, so the asker times out
/// as on a partitioned network.
pub const UNANSWERED_HOLD_MS: u64 = 60_000;
/// The longest fault file read, in bytes (a few rules; a larger file is refused).
pub const FAULT_FILE_BYTES_MAX: usize = 64 * 1024;

/// Which nodes this node drops peer frames to and from. Empty: no fault.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultRules {
    /// Nodes this node sends nothing to (their messages and requests vanish here, and so do
    /// answers to their requests).
    pub drop_to: BTreeSet<u64>,
    /// Nodes whose frames this node ignores (messages and requests are dropped on arrival;
    /// answers to requests sent to them never come).
    pub drop_from: BTreeSet<u64>,
}

impl FaultRules {
    /// Parses a fault file's text (see the module header).
    pub fn parse(text: &str) -> Result<FaultRules, String> {
        let mut rules = FaultRules::default();
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            let mut words = line.split_whitespace();
            let Some(verb) = words.next() else {
                continue;
            };
            let nodes = words
                .map(|word| {
                    word.parse::<u64>()
                        .map_err(|_| format!("line {}: {word:?} is not a node id", number + 1))
                })
                .collect::<Result<Vec<u64>, String>>()?;
            if nodes.is_empty() {
                return Err(format!("line {}: {verb} names no node", number + 1));
            }
            match verb {
                "isolate" => {
                    rules.drop_to.extend(&nodes);
                    rules.drop_from.extend(&nodes);
                }
                "drop-to" => rules.drop_to.extend(&nodes),
                "drop-from" => rules.drop_from.extend(&nodes),
                other => {
                    return Err(format!(
                        "line {}: unknown rule {other:?} (isolate, drop-to, drop-from)",
                        number + 1
                    ))
                }
            }
        }
        Ok(rules)
    }

    /// Whether frames this node sends to `node` are dropped.
    pub fn drops_to(&self, node: u64) -> bool {
        self.drop_to.contains(&node)
    }

    /// Whether frames `node` sends to this node are dropped.
    pub fn drops_from(&self, node: u64) -> bool {
        self.drop_from.contains(&node)
    }

    /// Whether a request exchange with `node` fails (it needs both directions).
    pub fn cuts(&self, node: u64) -> bool {
        self.drops_to(node) || self.drops_from(node)
    }
}

/// Reads `path` every [`FAULT_FILE_POLL_MS`] and gives its rules to `peers` until the transport
/// closes. Run on core 0 only when the configuration names a fault file.
pub async fn watch_fault_file(peers: Rc<Peers>, path: PathBuf) {
    tracing::warn!(
        file = %path.display(),
        "fault injection is on (test-only): peer frames are dropped as this file says"
    );
    let mut last_text: Option<String> = None;
    while !peers.is_closed() {
        let reading = path.clone();
        let text = spawn_blocking(move || read_fault_file(&reading)).await;
        match text {
            Ok(text) if last_text.as_deref() != Some(text.as_str()) => {
                match FaultRules::parse(&text) {
                    Ok(rules) => {
                        tracing::info!(
                            drop_to = ?rules.drop_to,
                            drop_from = ?rules.drop_from,
                            "fault injection: peer rules changed"
                        );
                        peers.set_faults(rules);
                    }
                    Err(reason) => tracing::warn!(
                        file = %path.display(),
                        %reason,
                        "fault injection: the fault file does not parse; the rules in force stay"
                    ),
                }
                last_text = Some(text);
            }
            Ok(_) => {}
            Err(reason) => tracing::warn!(
                file = %path.display(),
                %reason,
                "fault injection: cannot read the fault file"
            ),
        }
        sleep(Duration::from_millis(FAULT_FILE_POLL_MS)).await;
    }
}

/// The fault file's text; a missing file is an empty one (no fault).
fn read_fault_file(path: &std::path::Path) -> Result<String, String> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() > FAULT_FILE_BYTES_MAX => Err(format!(
            "{} bytes, more than {FAULT_FILE_BYTES_MAX}",
            bytes.len()
        )),
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(error) => Err(error.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each rule fills the sets it names; comments and blank lines are skipped; an empty file
    /// is no fault.
    #[test]
    fn rules_parse() {
        assert_eq!(FaultRules::parse(""), Ok(FaultRules::default()));
        let rules = FaultRules::parse("# a partition\nisolate 2\n\ndrop-to 3 4\ndrop-from 5 # x\n")
            .expect("parses");
        assert_eq!(rules.drop_to, BTreeSet::from([2, 3, 4]));
        assert_eq!(rules.drop_from, BTreeSet::from([2, 5]));
        assert!(rules.cuts(5) && rules.cuts(3) && !rules.cuts(1));
        assert!(rules.drops_to(3) && !rules.drops_from(3));
    }

    /// A wrong verb, a missing node or a word that is not a node id is refused with its line.
    #[test]
    fn bad_rules_are_refused() {
        for (text, says) in [
            ("partition 2", "line 1: unknown rule"),
            ("isolate 2\ndrop-to", "line 2: drop-to names no node"),
            ("drop-from two", "line 1: \"two\" is not a node id"),
        ] {
            let error = FaultRules::parse(text).expect_err(text);
            assert!(error.starts_with(says), "{text:?}: {error}");
        }
    }
}
