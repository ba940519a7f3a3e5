//! Times as people type and read them: RFC 3339 (`2024-05-01T12:00:00Z`,
//! `2024-05-01T14:00:00.250+02:00`, or a bare date meaning midnight UTC) to and from
//! milliseconds since the Unix epoch. Parsing serves `stream read --from/--until` and
//! `sub create --offset`; formatting serves the tables and JSON documents (subscription start
//! times, creation and join times), always in UTC with a `Z`, so a printed time can be pasted
//! back.
//!
//! Done here, by the civil-calendar arithmetic of Howard Hinnant's `days_from_civil` and
//! `civil_from_days`, rather than with a date library: the grammar is small and fixed.

use std::fmt::Write as _;

const MS_PER_DAY: i64 = 86_400_000;

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

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`,
/// the inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `ms` since the Unix epoch as RFC 3339 in UTC: `2024-05-01T12:00:00Z`, with `.250` before
/// the `Z` when the time has milliseconds. [`parse_rfc3339_ms`] reads it back exactly (for
/// years 0 to 9999; others are printed with more digits or a sign).
pub fn format_rfc3339_ms(ms: i64) -> String {
    let days = ms.div_euclid(MS_PER_DAY);
    let ms_of_day = ms.rem_euclid(MS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let seconds_of_day = ms_of_day / 1_000;
    let mut text = String::with_capacity(24);
    // Writing to a String cannot fail.
    let _ = write!(
        text,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        seconds_of_day / 3_600,
        seconds_of_day / 60 % 60,
        seconds_of_day % 60
    );
    let millis = ms_of_day % 1_000;
    if millis != 0 {
        let _ = write!(text, ".{millis:03}");
    }
    text.push('Z');
    text
}

/// [`format_rfc3339_ms`] of an unsigned time (the server's creation and join times).
pub fn format_rfc3339_ms_unsigned(ms: u64) -> String {
    format_rfc3339_ms(i64::try_from(ms).unwrap_or(i64::MAX))
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

    /// Formatting gives UTC with a `Z`, milliseconds only when there are some.
    #[test]
    fn times_format_as_rfc3339_utc() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (1_714_564_800_000, "2024-05-01T12:00:00Z"),
            (1_714_564_800_250, "2024-05-01T12:00:00.250Z"),
            (1_714_564_800_007, "2024-05-01T12:00:00.007Z"),
            (1_709_164_800_000, "2024-02-29T00:00:00Z"),
            (951_782_400_000, "2000-02-29T00:00:00Z"),
            (-1_000, "1969-12-31T23:59:59Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (1_796_119_200_000, "2026-12-01T10:00:00Z"),
            (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
        ];
        for (ms, text) in cases {
            assert_eq!(format_rfc3339_ms(ms), text, "{ms}");
        }
        assert_eq!(format_rfc3339_ms_unsigned(0), "1970-01-01T00:00:00Z");
        // Out-of-range times still print (no panic), just not as RFC 3339.
        assert!(!format_rfc3339_ms(i64::MAX).is_empty());
        assert!(!format_rfc3339_ms(i64::MIN).is_empty());
        assert!(!format_rfc3339_ms_unsigned(u64::MAX).is_empty());
    }

    /// What is printed parses back to the same instant, over the years 0 to 9999 (a
    /// deterministic walk of 20 000 instants with a fixed stride, so no seed is needed).
    #[test]
    fn formatted_times_parse_back() {
        let first = parse_rfc3339_ms("0000-01-01T00:00:00Z").expect("year 0");
        let last = parse_rfc3339_ms("9999-12-31T23:59:59.999Z").expect("year 9999");
        let stride = (last - first) / 20_000 + 7;
        let mut ms = first;
        while ms <= last {
            let text = format_rfc3339_ms(ms);
            assert_eq!(parse_rfc3339_ms(&text), Ok(ms), "{text}");
            ms += stride;
        }
        // Every day of a leap year and of a common year, at midnight.
        for year_start in ["2024-01-01", "2023-01-01"] {
            let start = parse_rfc3339_ms(year_start).expect("date");
            for day in 0..366 {
                let ms = start + day * MS_PER_DAY;
                assert_eq!(parse_rfc3339_ms(&format_rfc3339_ms(ms)), Ok(ms));
            }
        }
    }
}
