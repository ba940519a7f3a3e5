//! Admin calls of [`Client`] for subscriptions (durable consumer groups): create, describe,
//! list and delete. Like the stream admin calls they go to the bootstrap core, lists are
//! followed page by page (within `admin::LIST_PAGES_MAX` pages), describe and list are
//! retried after any transient failure, and create and delete are not retried once sent (a
//! second attempt could answer `SubscriptionExists` or `UnknownSubscription` for the first
//! one's success): a failure after sending is [`ClientError::OutcomeUnknown`].
//!
//! Joining a subscription as a consumer is [`Client::consumer`] (`consumer/`).

use std::time::Duration;

use runnel_core::StreamName;
use runnel_net::protocol::{
    CreateSubscription, DeleteSubscription, DescribeSubscription, ListSubscriptions, Request,
    Response, SubscriptionInfo, SubscriptionStart,
};

use crate::admin::{check_progress, too_many_pages, unexpected, LIST_PAGES_MAX};
use crate::client::Client;
use crate::error::ClientError;
use crate::retry::Safety;

/// What [`Client::create_subscription`] creates. Unset limits are the server's defaults
/// (an ack timeout of 60 s, 10 000 unacked records).
///
/// ```
/// use std::time::Duration;
/// use runnel_client::{SubscriptionSpec, SubscriptionStart};
///
/// let spec = SubscriptionSpec::new("billing", "orders")
///     .ack_timeout(Duration::from_secs(30))
///     .max_unacked_records(1_000)
///     .start(SubscriptionStart::Earliest);
/// assert_eq!(spec.max_unacked_records, Some(1_000));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSpec {
    /// The subscription's name, unique in the cluster: the stream naming rule (1 to 255
    /// characters of `[A-Za-z0-9_.-]`, not starting with `-` or `.`).
    pub name: String,
    /// The stream it consumes.
    pub stream: String,
    /// Records not acked within this long are delivered again (whole milliseconds, at
    /// least 1). Default `None`: the server's default.
    pub ack_timeout: Option<Duration>,
    /// Most records delivered and not acked at once over the subscription (at least 1),
    /// split evenly over the stream's shards (each shard's share rounded up); a shard's
    /// delivery pauses at its share until acks free room. Default `None`: the server's
    /// default (10 000).
    pub max_unacked_records: Option<u32>,
    /// Where delivery starts on each shard. Default [`SubscriptionStart::Latest`]: records
    /// appended after the subscription was created.
    pub start: SubscriptionStart,
}

impl SubscriptionSpec {
    /// A subscription of `name` on `stream`, with the server's limits, from the latest
    /// records.
    pub fn new(name: impl Into<String>, stream: impl Into<String>) -> SubscriptionSpec {
        SubscriptionSpec {
            name: name.into(),
            stream: stream.into(),
            ack_timeout: None,
            max_unacked_records: None,
            start: SubscriptionStart::Latest,
        }
    }

    /// The same spec with `ack_timeout`.
    pub fn ack_timeout(mut self, ack_timeout: Duration) -> SubscriptionSpec {
        self.ack_timeout = Some(ack_timeout);
        self
    }

    /// The same spec with at most `max_unacked_records` unacked records (split over the
    /// shards).
    pub fn max_unacked_records(mut self, max_unacked_records: u32) -> SubscriptionSpec {
        self.max_unacked_records = Some(max_unacked_records);
        self
    }

    /// The same spec starting at `start`.
    pub fn start(mut self, start: SubscriptionStart) -> SubscriptionSpec {
        self.start = start;
        self
    }

    /// The request, after checking every field (0 on the wire means "the server's default",
    /// so an explicit 0 is refused rather than sent).
    fn to_request(&self) -> Result<CreateSubscription, ClientError> {
        let invalid = |what, reason: &str| ClientError::InvalidArgument {
            what,
            reason: reason.to_owned(),
        };
        let name = subscription_name(&self.name)?;
        let stream = StreamName::new(self.stream.clone()).map_err(ClientError::stream_name)?;
        let ack_timeout_ms = match self.ack_timeout {
            None => 0,
            Some(timeout) => {
                let ms = u64::try_from(timeout.as_millis())
                    .map_err(|_| invalid("ack timeout", "too long"))?;
                if ms == 0 {
                    return Err(invalid("ack timeout", "must be at least 1 ms"));
                }
                ms
            }
        };
        let max_unacked_records = match self.max_unacked_records {
            None => 0,
            Some(0) => return Err(invalid("max unacked records", "must be at least 1")),
            Some(records) => records,
        };
        Ok(CreateSubscription {
            name,
            stream,
            ack_timeout_ms,
            max_unacked_records,
            start: self.start,
        })
    }
}

/// `name`, checked against the subscription naming rule (the stream naming rule).
pub(crate) fn subscription_name(name: &str) -> Result<String, ClientError> {
    StreamName::new(name)
        .map(|name| name.as_str().to_owned())
        .map_err(ClientError::subscription_name)
}

impl Client {
    /// Creates a subscription; returns it (without shards and consumers). Not retried once
    /// sent (see the module documentation): `OutcomeUnknown` means "describe it to find out".
    pub async fn create_subscription(
        &self,
        spec: SubscriptionSpec,
    ) -> Result<SubscriptionInfo, ClientError> {
        let request = Request::CreateSubscription(spec.to_request()?);
        let nodes = &self.inner.nodes;
        match nodes.call_admin(&request, Safety::AtMostOnce).await? {
            Response::SubscriptionInfo(info) => Ok(info),
            other => Err(unexpected("CreateSubscription", &other)),
        }
    }

    /// A subscription with every shard of its stream (committed offset, lag, unacked records,
    /// consumer) and its consumers.
    pub async fn describe_subscription(&self, name: &str) -> Result<SubscriptionInfo, ClientError> {
        let request = Request::DescribeSubscription(DescribeSubscription {
            name: subscription_name(name)?,
        });
        let nodes = &self.inner.nodes;
        match nodes.call_admin(&request, Safety::Idempotent).await? {
            Response::SubscriptionInfo(info) => Ok(info),
            other => Err(unexpected("DescribeSubscription", &other)),
        }
    }

    /// Every subscription (of `stream`, when given), in name order, without shards and
    /// consumers (all pages).
    pub async fn list_subscriptions(
        &self,
        stream: Option<&str>,
    ) -> Result<Vec<SubscriptionInfo>, ClientError> {
        let stream = stream
            .map(|stream| StreamName::new(stream).map_err(ClientError::stream_name))
            .transpose()?;
        let nodes = &self.inner.nodes;
        let mut subscriptions: Vec<SubscriptionInfo> = Vec::new();
        for _ in 0..LIST_PAGES_MAX {
            let request = Request::ListSubscriptions(ListSubscriptions {
                start_after: subscriptions.last().map(|info| info.name.clone()),
                limit: 0,
                stream: stream.clone(),
            });
            let page = match nodes.call_admin(&request, Safety::Idempotent).await? {
                Response::SubscriptionList(page) => page,
                other => return Err(unexpected("ListSubscriptions", &other)),
            };
            check_progress(
                "ListSubscriptions",
                &subscriptions,
                &page.subscriptions,
                page.more,
                |info| info.name.clone(),
            )?;
            subscriptions.extend(page.subscriptions);
            if !page.more {
                return Ok(subscriptions);
            }
        }
        Err(too_many_pages("ListSubscriptions"))
    }

    /// Deletes a subscription and its committed progress; `force` also while consumers are
    /// joined (their streams end). Not retried once sent (see the module documentation).
    pub async fn delete_subscription(&self, name: &str, force: bool) -> Result<(), ClientError> {
        let request = Request::DeleteSubscription(DeleteSubscription {
            name: subscription_name(name)?,
            force,
        });
        let nodes = &self.inner.nodes;
        match nodes.call_admin(&request, Safety::AtMostOnce).await? {
            Response::DeleteSubscriptionOk(_) => Ok(()),
            other => Err(unexpected("DeleteSubscription", &other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(spec: SubscriptionSpec) -> &'static str {
        match spec.to_request() {
            Err(ClientError::InvalidArgument { what, .. }) => what,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// The defaults send 0 (the server's defaults) and start at the latest records; set
    /// fields are sent as given; each invalid field is named.
    #[test]
    fn subscription_specs_are_checked_before_sending() {
        let request = SubscriptionSpec::new("billing", "orders")
            .to_request()
            .expect("valid");
        assert_eq!(request.name, "billing");
        assert_eq!(request.stream.as_str(), "orders");
        assert_eq!(request.ack_timeout_ms, 0);
        assert_eq!(request.max_unacked_records, 0);
        assert_eq!(request.start, SubscriptionStart::Latest);
        let request = SubscriptionSpec::new("billing", "orders")
            .ack_timeout(Duration::from_millis(1_500))
            .max_unacked_records(7)
            .start(SubscriptionStart::Timestamp(42))
            .to_request()
            .expect("valid");
        assert_eq!(request.ack_timeout_ms, 1_500);
        assert_eq!(request.max_unacked_records, 7);
        assert_eq!(request.start, SubscriptionStart::Timestamp(42));
        let base = || SubscriptionSpec::new("billing", "orders");
        assert_eq!(
            refused(SubscriptionSpec::new("-bad", "orders")),
            "subscription name"
        );
        assert_eq!(
            refused(SubscriptionSpec::new("", "orders")),
            "subscription name"
        );
        assert_eq!(
            refused(SubscriptionSpec::new("billing", "no spaces")),
            "stream name"
        );
        assert_eq!(
            refused(base().ack_timeout(Duration::from_micros(999))),
            "ack timeout"
        );
        assert_eq!(refused(base().ack_timeout(Duration::MAX)), "ack timeout");
        assert_eq!(
            refused(base().max_unacked_records(0)),
            "max unacked records"
        );
        match subscription_name("a b") {
            Err(ClientError::InvalidArgument { what, reason }) => {
                assert_eq!(what, "subscription name");
                assert!(reason.starts_with("\"a b\" may hold only"), "{reason}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }
}
