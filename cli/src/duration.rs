//! Durations as people type them (`7d`, `3600s`, `1h30m`, `500ms`; a bare number is seconds,
//! as HStreamDB's `--retention` is) and as the tables print them (the same grammar, largest
//! units first, so a printed retention can be pasted back into `stream create`).

use std::time::Duration;

/// Units, longest suffix first so `ms` is not read as `m` followed by garbage.
const UNITS_MS: [(&str, u64); 6] = [
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
    ("w", 604_800_000),
];

/// Longest duration text accepted, in bytes: a typo, not a data file.
const DURATION_TEXT_BYTES_MAX: usize = 64;

/// Parses `<number><unit>…` (units ms, s, m, h, d, w) or a bare number of seconds. The result
/// is whole milliseconds and at least 1 ms.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let grammar = "expected a number and a unit (ms, s, m, h, d, w), e.g. 7d, 3600s, 1h30m";
    let text = text.trim();
    if text.is_empty() || text.len() > DURATION_TEXT_BYTES_MAX {
        return Err(grammar.into());
    }
    let overflow = || "too long".to_owned();
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let seconds: u64 = text.parse().map_err(|_| overflow())?;
        return positive(seconds.checked_mul(1_000).ok_or_else(overflow)?);
    }
    let mut total_ms: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(grammar.into());
        }
        let (number, after) = rest.split_at(digits);
        let number: u64 = number.parse().map_err(|_| overflow())?;
        let unit_len = after.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, after) = after.split_at(unit_len);
        let unit_ms = UNITS_MS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|&(_, ms)| ms)
            .ok_or_else(|| grammar.to_owned())?;
        let part = number.checked_mul(unit_ms).ok_or_else(overflow)?;
        total_ms = total_ms.checked_add(part).ok_or_else(overflow)?;
        rest = after;
    }
    positive(total_ms)
}

fn positive(ms: u64) -> Result<Duration, String> {
    if ms == 0 {
        Err("must be at least 1ms".into())
    } else {
        Ok(Duration::from_millis(ms))
    }
}

/// Milliseconds as the parser reads them: `7d`, `1h30m`, `1s500ms`, `0ms`. Weeks are printed
/// as days (people read `14d` faster than `2w`).
pub fn format_duration_ms(ms: u64) -> String {
    if ms == 0 {
        return "0ms".into();
    }
    let mut text = String::new();
    let mut rest = ms;
    for &(name, unit_ms) in UNITS_MS.iter().rev().skip(1) {
        let count = rest / unit_ms;
        if count > 0 {
            text.push_str(&count.to_string());
            text.push_str(name);
            rest %= unit_ms;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every unit, compounds and the bare-seconds form.
    #[test]
    fn parses_the_documented_forms() {
        let cases = [
            ("7d", 7 * 86_400_000),
            ("3600s", 3_600_000),
            ("3600", 3_600_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            ("1s500ms", 1_500),
            ("2w", 1_209_600_000),
            ("90m", 5_400_000),
            (" 12h ", 43_200_000),
            ("1d1ms", 86_400_001),
        ];
        for (text, ms) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
    }

    /// Malformed, zero and overflowing durations are refused with a reason.
    #[test]
    fn refuses_malformed_durations() {
        for text in [
            "",
            "d",
            "7 d",
            "7days",
            "1.5h",
            "-1s",
            "h1",
            "1x",
            "0s",
            "0",
            "0d0h",
            "99999999999999999999s",
            "18446744073709551615d",
            &"1s".repeat(40),
        ] {
            assert!(parse_duration(text).is_err(), "{text:?}");
        }
    }

    /// What is printed parses back to the same value.
    #[test]
    fn formatting_round_trips() {
        assert_eq!(format_duration_ms(604_800_000), "7d");
        assert_eq!(format_duration_ms(5_400_000), "1h30m");
        assert_eq!(format_duration_ms(1_500), "1s500ms");
        assert_eq!(format_duration_ms(1_209_600_000), "14d");
        assert_eq!(format_duration_ms(0), "0ms");
        for ms in [1, 999, 1_000, 61_000, 3_600_001, 86_400_000 * 400 + 7] {
            let text = format_duration_ms(ms);
            assert_eq!(
                parse_duration(&text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
    }
}
