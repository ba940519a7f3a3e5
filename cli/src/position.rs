//! Where `stream read` starts and stops in a shard: `earliest`, `latest`, an offset (digits),
//! or a time. A time is RFC 3339 (`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00.250+02:00`, or
//! a bare date meaning midnight UTC) or `@` and milliseconds since the Unix epoch
//! (`@1714564800000`, kcat's `s@` without the `s`). The `@` keeps the two numeric forms apart:
//! a bare number is always an offset.
//!
//! RFC 3339 is parsed here, by the civil-calendar arithmetic of Howard Hinnant's
//! `days_from_civil`, rather than with a date library: the grammar is small and fixed.

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

/// Milliseconds since the Unix epoch of an RFC 3339 date-time (`T`, `t` or a space between
/// date and time; fractions of a second beyond milliseconds are truncated; a leap second
/// `:60` counts as the next second), or of a bare `YYYY-MM-DD` at midnight UTC.
pub fn parse_rfc3339_ms(text: &str) -> Result<i64, String> {
    let invalid = || format!("not an RFC 3339 time: {text:?}");
    let bytes = text.as_bytes();
    let (year, month, day) =
        parse_date(bytes.get(..10).ok_or_else(invalid)?).ok_or_else(invalid)?;
    let days = days_from_civil(year, month, day);
    let rest = bytes.get(10..).unwrap_or_default();
    if rest.is_empty() {
        return Ok(days * 86_400_000);
    }
    let (&separator, rest) = rest.split_first().ok_or_else(invalid)?;
    if !matches!(separator, b'T' | b't' | b' ') {
        return Err(invalid());
    }
    let clock = rest.get(..8).ok_or_else(invalid)?;
    if clock.get(2) != Some(&b':') || clock.get(5) != Some(&b':') {
        return Err(invalid());
    }
    let hour = two_digits(clock.get(0..2)).filter(|h| *h < 24);
    let minute = two_digits(clock.get(3..5)).filter(|m| *m < 60);
    let second = two_digits(clock.get(6..8)).filter(|s| *s <= 60);
    let (Some(hour), Some(minute), Some(second)) = (hour, minute, second) else {
        return Err(invalid());
    };
    let mut rest = rest.get(8..).unwrap_or_default();
    let mut millis = 0_i64;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let digits = fraction.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return Err(invalid());
        }
        for (index, &digit) in fraction.iter().take(3).take(digits).enumerate() {
            millis += i64::from(digit - b'0') * [100, 10, 1][index];
        }
        rest = fraction.get(digits..).unwrap_or_default();
    }
    let offset_minutes = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = two_digits(Some(&[*h1, *h2])).filter(|h| *h < 24);
            let minutes = two_digits(Some(&[*m1, *m2])).filter(|m| *m < 60);
            let (Some(hours), Some(minutes)) = (hours, minutes) else {
                return Err(invalid());
            };
            let total = hours * 60 + minutes;
            if *sign == b'-' {
                -total
            } else {
                total
            }
        }
        _ => return Err(invalid()),
    };
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset_minutes * 60;
    Ok(seconds * 1_000 + millis)
}

/// `YYYY-MM-DD` with a valid month and day.
fn parse_date(bytes: &[u8]) -> Option<(i64, i64, i64)> {
    if bytes.len() != 10 || bytes.get(4) != Some(&b'-') || bytes.get(7) != Some(&b'-') {
        return None;
    }
    let year = two_digits(bytes.get(0..2))? * 100 + two_digits(bytes.get(2..4))?;
    let month = two_digits(bytes.get(5..7)).filter(|m| (1..=12).contains(m))?;
    let day = two_digits(bytes.get(8..10))?;
    (1..=days_in_month(year, month))
        .contains(&day)
        .then_some((year, month, day))
}

fn two_digits(bytes: Option<&[u8]>) -> Option<i64> {
    match bytes? {
        [tens @ b'0'..=b'9', ones @ b'0'..=b'9'] => {
            Some(i64::from(tens - b'0') * 10 + i64::from(ones - b'0'))
        }
        _ => None,
    }
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Known instants, checked against `date -u -d … +%s%3N`.
    #[test]
    fn rfc3339_times_give_epoch_milliseconds() {
        let cases = [
            ("1970-01-01T00:00:00Z", 0),
            ("1970-01-01", 0),
            ("2024-05-01T00:00:00Z", 1_714_521_600_000),
            ("2024-05-01", 1_714_521_600_000),
            ("2024-05-01T12:00:00Z", 1_714_564_800_000),
            ("2024-05-01t12:00:00z", 1_714_564_800_000),
            ("2024-05-01 12:00:00Z", 1_714_564_800_000),
            ("2024-05-01T14:00:00+02:00", 1_714_564_800_000),
            ("2024-05-01T07:30:00-04:30", 1_714_564_800_000),
            ("2024-05-01T12:00:00.250Z", 1_714_564_800_250),
            ("2024-05-01T12:00:00.2Z", 1_714_564_800_200),
            ("2024-05-01T12:00:00.123456789Z", 1_714_564_800_123),
            ("2024-02-29T00:00:00Z", 1_709_164_800_000),
            ("2000-02-29T00:00:00Z", 951_782_400_000),
            ("1969-12-31T23:59:59Z", -1_000),
            ("2016-12-31T23:59:60Z", 1_483_228_800_000),
        ];
        for (text, ms) in cases {
            assert_eq!(parse_rfc3339_ms(text), Ok(ms), "{text}");
        }
    }

    /// Malformed and impossible dates are refused.
    #[test]
    fn malformed_times_are_refused() {
        for text in [
            "",
            "2024",
            "2024-5-1",
            "2024-05-01T",
            "2024-05-01T12:00Z",
            "2024-05-01T12:00:00",
            "2024-05-01T12:00:00+0200",
            "2024-05-01T12:00:00+02",
            "2024-05-01T24:00:00Z",
            "2024-05-01T12:60:00Z",
            "2024-05-01T12:00:61Z",
            "2024-05-01T12:00:00.Z",
            "2024-05-01T12:00:00.1234567890Z",
            "2024-13-01T00:00:00Z",
            "2024-00-01T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "1900-02-29T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-05-01X12:00:00Z",
            "2024-05-01T12:00:00Zjunk",
            "2024-05-01T12:00:00+24:00",
            "२०२४-05-01",
        ] {
            assert!(parse_rfc3339_ms(text).is_err(), "{text:?}");
        }
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
