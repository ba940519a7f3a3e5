//! [`ConsumerOptions`]: a consumer's name in its group, its session timeout, how acks are
//! batched and how many deliveries wait for the application.

use runnel_net::protocol::check_consumer_name;

use crate::error::ClientError;

/// Longest session timeout a consumer may ask for, in milliseconds (the server's bound: 1 h).
const SESSION_TIMEOUT_MS_LIMIT: u32 = 3_600_000;
/// Largest ack batch, in records.
const ACK_BATCH_RECORDS_LIMIT: usize = 1_000_000;
/// Longest an ack may wait to be sent, in milliseconds.
const ACK_BATCH_AGE_MS_LIMIT: u64 = 60_000;
/// Most deliveries buffered for the application.
const DELIVERIES_BUFFERED_LIMIT: usize = 65_536;

/// How a [`Consumer`](crate::Consumer) joins its group and batches its acks.
///
/// ```
/// use runnel_client::ConsumerOptions;
///
/// let options = ConsumerOptions {
///     session_timeout_ms: Some(10_000),
///     ..ConsumerOptions::new("worker-1")
/// };
/// assert!(options.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerOptions {
    /// The consumer's name, unique in the group: 1 to 255 bytes of UTF-8 without control
    /// characters. A second consumer joining under a name in use is refused
    /// (`ConsumerNameInUse`); this consumer rejoining after a lost connection replaces itself.
    pub name: String,
    /// The server expels the consumer when it has not heard from it for this long, in
    /// milliseconds (its shards then go to the other members); heartbeats are sent as often
    /// as the server asks. 1 to 3 600 000. Default `None`: the server's default.
    pub session_timeout_ms: Option<u32>,
    /// A shard's queued acks are sent once they cover this many records. At least 1, at
    /// most 1 000 000. Default 256.
    pub ack_batch_records: usize,
    /// Queued acks are sent at the latest this long after the oldest of them was queued, in
    /// milliseconds; 0 sends them at once. At most 60 000. Default 10.
    pub ack_batch_age_ms: u64,
    /// Most deliveries received and not yet taken by [`Consumer::next`](crate::Consumer::next);
    /// past it the consumer stops reading, and QUIC flow control, then the subscription's
    /// `max_unacked_records`, hold the server back. 1 to 65 536. Default 64.
    pub deliveries_buffered_max: usize,
}

impl ConsumerOptions {
    /// The defaults, with `name`.
    pub fn new(name: impl Into<String>) -> ConsumerOptions {
        ConsumerOptions {
            name: name.into(),
            session_timeout_ms: None,
            ack_batch_records: 256,
            ack_batch_age_ms: 10,
            deliveries_buffered_max: 64,
        }
    }

    /// Checks every value; [`Client::consumer`](crate::Client::consumer) calls it first.
    pub fn validate(&self) -> Result<(), ClientError> {
        let invalid = |field, reason: String| Err(ClientError::InvalidOptions { field, reason });
        if let Err(reason) = check_consumer_name(&self.name) {
            return invalid("name", reason.to_owned());
        }
        if let Some(timeout) = self.session_timeout_ms {
            if timeout == 0 || timeout > SESSION_TIMEOUT_MS_LIMIT {
                return invalid(
                    "session_timeout_ms",
                    format!("must be 1 to {SESSION_TIMEOUT_MS_LIMIT} (or None)"),
                );
            }
        }
        if self.ack_batch_records == 0 || self.ack_batch_records > ACK_BATCH_RECORDS_LIMIT {
            return invalid(
                "ack_batch_records",
                format!("must be 1 to {ACK_BATCH_RECORDS_LIMIT}"),
            );
        }
        if self.ack_batch_age_ms > ACK_BATCH_AGE_MS_LIMIT {
            return invalid(
                "ack_batch_age_ms",
                format!("must be at most {ACK_BATCH_AGE_MS_LIMIT}"),
            );
        }
        if self.deliveries_buffered_max == 0
            || self.deliveries_buffered_max > DELIVERIES_BUFFERED_LIMIT
        {
            return invalid(
                "deliveries_buffered_max",
                format!("must be 1 to {DELIVERIES_BUFFERED_LIMIT}"),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_field(options: &ConsumerOptions) -> &'static str {
        match options.validate() {
            Err(ClientError::InvalidOptions { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// The defaults are valid; each bound is enforced and names its option.
    #[test]
    fn every_bound_is_checked() {
        let base = || ConsumerOptions::new("worker-1");
        assert!(base().validate().is_ok());
        assert_eq!(base().ack_batch_records, 256);
        assert_eq!(base().ack_batch_age_ms, 10);
        assert_eq!(base().deliveries_buffered_max, 64);
        assert!(ConsumerOptions::new("ünïcode name").validate().is_ok());
        let cases: Vec<(ConsumerOptions, &str)> = vec![
            (ConsumerOptions::new(""), "name"),
            (ConsumerOptions::new("x".repeat(256)), "name"),
            (ConsumerOptions::new("tab\there"), "name"),
            (
                ConsumerOptions {
                    session_timeout_ms: Some(0),
                    ..base()
                },
                "session_timeout_ms",
            ),
            (
                ConsumerOptions {
                    session_timeout_ms: Some(3_600_001),
                    ..base()
                },
                "session_timeout_ms",
            ),
            (
                ConsumerOptions {
                    ack_batch_records: 0,
                    ..base()
                },
                "ack_batch_records",
            ),
            (
                ConsumerOptions {
                    ack_batch_records: 1_000_001,
                    ..base()
                },
                "ack_batch_records",
            ),
            (
                ConsumerOptions {
                    ack_batch_age_ms: 60_001,
                    ..base()
                },
                "ack_batch_age_ms",
            ),
            (
                ConsumerOptions {
                    deliveries_buffered_max: 0,
                    ..base()
                },
                "deliveries_buffered_max",
            ),
            (
                ConsumerOptions {
                    deliveries_buffered_max: 65_537,
                    ..base()
                },
                "deliveries_buffered_max",
            ),
        ];
        for (options, field) in cases {
            assert_eq!(refused_field(&options), field, "{options:?}");
        }
        let edges = ConsumerOptions {
            session_timeout_ms: Some(3_600_000),
            ack_batch_records: 1,
            ack_batch_age_ms: 0,
            deliveries_buffered_max: 1,
            ..ConsumerOptions::new("x".repeat(255))
        };
        assert!(edges.validate().is_ok());
    }
}
