//! Where reads and subscriptions start. `stream read --from` and `--until`: `earliest`,
//! `latest`, an offset (digits), or a time — RFC 3339 (`2024-05-01T12:00:00Z`,
//! `2024-05-01T14:00:00.250+02:00`, or a bare date meaning midnight UTC, parsed by `time.rs`)
//! or `@` and milliseconds since the Unix epoch (`@1714564800000`, kcat's `s@` without the
//! `s`). The `@` keeps the two numeric forms apart: a bare number is always an offset there.
//!
//! `sub create --offset`: `earliest`, `latest` or a time. A subscription has no offset form
//! (its shards' offsets differ), so there a bare number is milliseconds since the epoch, and
//! `@<ms>` is accepted too, as for `--from`.

use crate::time::parse_rfc3339_ms;

/// Where a read starts in each shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStart {
    /// The shard's first readable record.
    Earliest,
    /// Only records appended from now on.
    Latest,
    /// This offset.
    Offset(u64),
    /// The first batch holding a record at or after this time (ms since the epoch).
    Timestamp(i64),
}

/// Where a read stops in each shard (exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadEndAt {
    /// Before this offset.
    Offset(u64),
    /// Before the shard's first record with a timestamp at or after this (ms since the epoch).
    Timestamp(i64),
}

/// Longest position text accepted, in bytes.
const POSITION_TEXT_BYTES_MAX: usize = 64;

/// Parses `--from`.
pub fn parse_start(text: &str) -> Result<ReadStart, String> {
    match text.trim() {
        "earliest" => Ok(ReadStart::Earliest),
        "latest" => Ok(ReadStart::Latest),
        other => match parse_offset_or_time(other) {
            Ok(OffsetOrTime::Offset(offset)) => Ok(ReadStart::Offset(offset)),
            Ok(OffsetOrTime::Time(ms)) => Ok(ReadStart::Timestamp(ms)),
            Err(reason) => Err(format!(
                "{reason} (expected earliest, latest, an offset, an RFC 3339 time or @<epoch ms>)"
            )),
        },
    }
}

/// Parses `--until`.
pub fn parse_end(text: &str) -> Result<ReadEndAt, String> {
    match parse_offset_or_time(text.trim()) {
        Ok(OffsetOrTime::Offset(offset)) => Ok(ReadEndAt::Offset(offset)),
        Ok(OffsetOrTime::Time(ms)) => Ok(ReadEndAt::Timestamp(ms)),
        Err(reason) => Err(format!(
            "{reason} (expected an offset, an RFC 3339 time or @<epoch ms>)"
        )),
    }
}

/// Where a subscription starts on each shard without committed progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionOffset {
    /// Each shard's first retained record.
    Earliest,
    /// Records appended after the subscription was created.
    Latest,
    /// The first batch holding a record at or after this time (ms since the epoch).
    Timestamp(i64),
}

/// Parses `sub create --offset`.
pub fn parse_subscription_offset(text: &str) -> Result<SubscriptionOffset, String> {
    let expected =
        "expected earliest, latest, milliseconds since the Unix epoch or an RFC 3339 time";
    let text = text.trim();
    match text {
        "earliest" => return Ok(SubscriptionOffset::Earliest),
        "latest" => return Ok(SubscriptionOffset::Latest),
        _ => {}
    }
    let digits = text.strip_prefix('@').unwrap_or(text);
    let time = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if digits.len() > POSITION_TEXT_BYTES_MAX {
            return Err(format!("not a time: {text:?} ({expected})"));
        }
        OffsetOrTime::Time(
            digits
                .parse()
                .map_err(|_| format!("time {text} is out of range"))?,
        )
    } else {
        parse_offset_or_time(text).map_err(|reason| format!("{reason} ({expected})"))?
    };
    match time {
        OffsetOrTime::Time(ms) => Ok(SubscriptionOffset::Timestamp(ms)),
        // Only bare digits are offsets, and those were taken as times above.
        OffsetOrTime::Offset(_) => Err(format!("not a time: {text:?} ({expected})")),
    }
}

enum OffsetOrTime {
    Offset(u64),
    Time(i64),
}

fn parse_offset_or_time(text: &str) -> Result<OffsetOrTime, String> {
    if text.is_empty() || text.len() > POSITION_TEXT_BYTES_MAX {
        return Err(format!("not a position: {text:?}"));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map(OffsetOrTime::Offset)
            .map_err(|_| format!("offset {text} is too large"));
    }
    if let Some(ms) = text.strip_prefix('@') {
        let digits = ms.strip_prefix('-').unwrap_or(ms);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("not milliseconds since the epoch: {text:?}"));
        }
        return ms
            .parse()
            .map(OffsetOrTime::Time)
            .map_err(|_| format!("time {text} is out of range"));
    }
    parse_rfc3339_ms(text).map(OffsetOrTime::Time)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--offset`: the names, and a time as bare or `@` milliseconds or RFC 3339.
    #[test]
    fn subscription_offsets_parse_into_their_kinds() {
        assert_eq!(
            parse_subscription_offset("earliest"),
            Ok(SubscriptionOffset::Earliest)
        );
        assert_eq!(
            parse_subscription_offset("latest"),
            Ok(SubscriptionOffset::Latest)
        );
        for text in [
            "1796119200000",
            "@1796119200000",
            "2026-12-01T10:00:00Z",
            "2026-12-01T11:00:00+01:00",
        ] {
            assert_eq!(
                parse_subscription_offset(text),
                Ok(SubscriptionOffset::Timestamp(1_796_119_200_000)),
                "{text}"
            );
        }
        assert_eq!(
            parse_subscription_offset("@-5"),
            Ok(SubscriptionOffset::Timestamp(-5))
        );
        assert_eq!(
            parse_subscription_offset("2026-12-01"),
            Ok(SubscriptionOffset::Timestamp(1_796_083_200_000))
        );
        for bad in [
            "",
            "@",
            "now",
            "Earliest",
            "-5",
            "1.5",
            "99999999999999999999",
            "2026-12-01T10:00:00",
        ] {
            let error = parse_subscription_offset(bad).expect_err(bad);
            assert!(!error.is_empty(), "{bad:?}");
        }
        let error = parse_subscription_offset("now").expect_err("not a time");
        assert!(error.contains("expected earliest, latest"), "{error}");
        assert!(parse_subscription_offset(&"9".repeat(65)).is_err());
    }

    /// Each form of `--from` and `--until`; a bare number is an offset, `@` a time.
    #[test]
    fn positions_parse_into_their_kinds() {
        assert_eq!(parse_start("earliest"), Ok(ReadStart::Earliest));
        assert_eq!(parse_start("latest"), Ok(ReadStart::Latest));
        assert_eq!(parse_start("42"), Ok(ReadStart::Offset(42)));
        assert_eq!(
            parse_start("@1714564800000"),
            Ok(ReadStart::Timestamp(1_714_564_800_000))
        );
        assert_eq!(parse_start("@-5"), Ok(ReadStart::Timestamp(-5)));
        assert_eq!(
            parse_start("2024-05-01T12:00:00Z"),
            Ok(ReadStart::Timestamp(1_714_564_800_000))
        );
        assert_eq!(parse_end("7"), Ok(ReadEndAt::Offset(7)));
        assert_eq!(parse_end("@9"), Ok(ReadEndAt::Timestamp(9)));
        for bad in [
            "",
            "-1",
            "+1",
            "1.5",
            "@",
            "@x",
            "@1.5",
            "@--1",
            "now",
            "Earliest",
            "1e3",
            "99999999999999999999",
        ] {
            assert!(parse_start(bad).is_err(), "{bad:?}");
        }
        let error = parse_start("now").expect_err("not a position");
        assert!(error.contains("expected earliest, latest"), "{error}");
        assert!(parse_end("earliest").is_err());
        assert!(parse_end("latest").is_err());
        assert!(parse_start(&"9".repeat(65)).is_err());
    }
}
