//! Duration and size strings (`"250ms"`, `"64KiB"`), the two unit-bearing value kinds of the
//! config contract.
//!
//! Both parse with integer arithmetic (whole part and fraction kept apart) so `"1.5s"` is exactly
//! 1.5 s and `"0.1KB"` exactly 100 bytes, never a float rounding away from what the user wrote.

use std::time::Duration;

const DURATION_UNITS: &[(&str, u128)] = &[
    ("us", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60 * 1_000_000_000),
    ("h", 3_600 * 1_000_000_000),
];

const SIZE_UNITS: &[(&str, u128)] = &[
    ("B", 1),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
];

/// Parses a duration such as `"250ms"`, `"5s"`, `"1.5s"`, `"1m"`, `"1h"`, `"100us"` or `"0"`.
///
/// A bare number other than 0 is rejected: `"5"` could mean seconds or milliseconds, and the
/// config contract always names the unit.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let (number, unit) = split_number(text).ok_or_else(|| {
        format!("invalid duration {s:?}: expected a number and a unit, like \"250ms\" or \"5s\"")
    })?;
    let unit = unit.trim_start();
    let Some(&(_, nanos_per_unit)) = DURATION_UNITS.iter().find(|(name, _)| *name == unit) else {
        return Err(if unit.is_empty() {
            format!("invalid duration {s:?}: missing unit (us, ms, s, m or h)")
        } else {
            format!("invalid duration {s:?}: unknown unit {unit:?} (expected us, ms, s, m or h)")
        });
    };
    let nanos = scale(number, nanos_per_unit)
        .ok_or_else(|| format!("invalid duration {s:?}: too large"))?;
    let secs = u64::try_from(nanos / 1_000_000_000)
        .map_err(|_| format!("invalid duration {s:?}: too large"))?;
    // The remainder is < 1e9, so it always fits.
    let sub = (nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, sub))
}

/// Parses a size such as `"64KiB"`, `"8MiB"`, `"1GiB"`, `"512B"`, `"10MB"` or `"0"`.
///
/// `KiB`/`MiB`/`GiB`/`TiB` are powers of 1024, `KB`/`MB`/`GB`/`TB` powers of 1000; a bare integer
/// is a byte count (unambiguous, unlike a bare duration). Fractions round down to whole bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let text = s.trim();
    let (number, unit) = split_number(text).ok_or_else(|| {
        format!("invalid size {s:?}: expected a number and a unit, like \"64KiB\" or \"8MiB\"")
    })?;
    let unit = unit.trim_start();
    let bytes_per_unit = if unit.is_empty() {
        1
    } else {
        match SIZE_UNITS.iter().find(|(name, _)| *name == unit) {
            Some(&(_, factor)) => factor,
            None => {
                return Err(format!(
                    "invalid size {s:?}: unknown unit {unit:?} (expected B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
                ))
            }
        }
    };
    let bytes =
        scale(number, bytes_per_unit).ok_or_else(|| format!("invalid size {s:?}: too large"))?;
    u64::try_from(bytes).map_err(|_| format!("invalid size {s:?}: too large"))
}

/// Splits `"1.5ms"` into `("1.5", "ms")`; `None` when there is no leading digit.
fn split_number(text: &str) -> Option<(&str, &str)> {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(end);
    if !number.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some((number, unit))
}

/// `number × factor` in integer arithmetic; `None` on malformed numbers or overflow.
fn scale(number: &str, factor: u128) -> Option<u128> {
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    // Nine fraction digits reach nanoseconds; more would only add rounding noise and overflow risk.
    if whole.is_empty() || fraction.len() > 9 || fraction.contains('.') {
        return None;
    }
    if number.ends_with('.') {
        return None;
    }
    let whole: u128 = whole.parse().ok()?;
    let mut total = whole.checked_mul(factor)?;
    if !fraction.is_empty() {
        let digits: u128 = fraction.parse().ok()?;
        let denominator = 10u128.pow(fraction.len() as u32);
        total = total.checked_add(digits.checked_mul(factor)? / denominator)?;
    }
    Some(total)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations_in_every_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0.25ms"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(" 10 s "), Ok(Duration::from_secs(10)));
    }

    #[test]
    fn bad_durations_are_rejected_with_a_reason() {
        for bad in [
            "",
            "5",
            "s",
            "-1s",
            "1.s",
            ".5s",
            "1..5s",
            "5 sec",
            "5S",
            "1d",
            "1.0000000001s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_duration("5").unwrap_err().contains("missing unit"));
        assert!(parse_duration("5x")
            .unwrap_err()
            .contains("unknown unit \"x\""));
        assert!(parse_duration("99999999999999999999999h")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn sizes_binary_decimal_and_bare() {
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("8MiB"), Ok(8 * 1024 * 1024));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("10KB"), Ok(10_000));
        assert_eq!(parse_size("3MB"), Ok(3_000_000));
        assert_eq!(parse_size("1GB"), Ok(1_000_000_000));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
    }

    #[test]
    fn bad_sizes_are_rejected_with_a_reason() {
        for bad in [
            "",
            "KiB",
            "-1KiB",
            "1kib",
            "1 KiBs",
            "1.KiB",
            "99999999999TiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_size("1XB").unwrap_err().contains("unknown unit"));
    }

    proptest! {
        #[test]
        fn duration_roundtrip(n in 0u64..10_000_000, unit in 0usize..5) {
            let (name, nanos) = DURATION_UNITS[unit];
            let parsed = parse_duration(&format!("{n}{name}")).unwrap();
            prop_assert_eq!(parsed.as_nanos(), u128::from(n) * nanos);
        }

        #[test]
        fn size_roundtrip(n in 0u64..1_000_000, unit in 0usize..9) {
            let (name, factor) = SIZE_UNITS[unit];
            let parsed = parse_size(&format!("{n}{name}")).unwrap();
            prop_assert_eq!(u128::from(parsed), u128::from(n) * factor);
        }

        #[test]
        fn fraction_matches_millis(ms in 0u64..100_000) {
            let text = format!("{}.{:03}s", ms / 1000, ms % 1000);
            prop_assert_eq!(parse_duration(&text).unwrap(), Duration::from_millis(ms));
        }
    }
}
