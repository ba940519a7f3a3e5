//! Cluster nodes: the machines that host shards, how many cores each offers, where to reach it.

use std::fmt;

use super::error::MetadataError;

/// Most nodes a cluster registers.
pub const NODES_MAX: usize = 1024;

/// Most cores (executors) one node may offer.
pub const NODE_CORES_MAX: u32 = 1024;

/// Longest node address, in bytes.
pub const NODE_ADDRESS_BYTES_MAX: usize = 255;

/// A node's id, chosen by the operator (or the node's configuration), stable across restarts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A registered node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node's id.
    pub id: NodeId,
    /// Cores (executors) the node runs; shards are placed on cores `0..cores`.
    pub cores: u32,
    /// `host:base_port`: core *c* listens on `base_port + c`. The host is a name, an IPv4
    /// address or a bracketed IPv6 address.
    pub address: String,
}

impl Node {
    /// Checks the node against the rules: 1 to [`NODE_CORES_MAX`] cores, and an address of at
    /// most [`NODE_ADDRESS_BYTES_MAX`] visible ASCII characters of the form `host:port`, where
    /// the host is not empty and the port is a decimal `u16`.
    pub fn validate(&self) -> Result<(), MetadataError> {
        let invalid = |reason: String| MetadataError::InvalidNode {
            node: self.id,
            reason,
        };
        if self.cores == 0 || self.cores > NODE_CORES_MAX {
            return Err(invalid(format!(
                "cores must be between 1 and {NODE_CORES_MAX}, got {}",
                self.cores
            )));
        }
        let address = self.address.as_str();
        if address.len() > NODE_ADDRESS_BYTES_MAX {
            return Err(invalid(format!(
                "address must be at most {NODE_ADDRESS_BYTES_MAX} bytes, got {}",
                address.len()
            )));
        }
        if !address.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(invalid(
                "address may hold only visible ASCII characters".to_string(),
            ));
        }
        let Some((host, port)) = address.rsplit_once(':') else {
            return Err(invalid(format!(
                "address {address:?} is not of the form host:port"
            )));
        };
        let port_is_decimal = !port.is_empty() && port.bytes().all(|byte| byte.is_ascii_digit());
        if host.is_empty() || !port_is_decimal || port.parse::<u16>().is_err() {
            return Err(invalid(format!(
                "address {address:?} is not of the form host:port with a port from 0 to 65535"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(cores: u32, address: &str) -> Node {
        Node {
            id: NodeId(1),
            cores,
            address: address.to_string(),
        }
    }

    #[test]
    fn usual_nodes_are_valid_and_bad_ones_are_refused() {
        for good in [
            "localhost:7000",
            "10.0.0.1:0",
            "[::1]:65535",
            "node-1.eu.example:7000",
        ] {
            assert_eq!(node(4, good).validate(), Ok(()), "{good:?}");
        }
        for bad in [
            "",
            "localhost",
            ":7000",
            "host:",
            "host:65536",
            "host:+1",
            "host:7a",
            "ho st:1",
            "hé:1",
        ] {
            assert!(
                matches!(
                    node(4, bad).validate(),
                    Err(MetadataError::InvalidNode { .. })
                ),
                "{bad:?} should be refused"
            );
        }
        let longest = format!("{}:1", "h".repeat(NODE_ADDRESS_BYTES_MAX - 2));
        assert_eq!(node(1, &longest).validate(), Ok(()));
        let too_long = format!("{}:1", "h".repeat(NODE_ADDRESS_BYTES_MAX - 1));
        assert!(node(1, &too_long).validate().is_err());
        assert!(node(0, "h:1").validate().is_err());
        assert!(node(NODE_CORES_MAX, "h:1").validate().is_ok());
        assert!(node(NODE_CORES_MAX + 1, "h:1").validate().is_err());
    }
}
