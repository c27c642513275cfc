//! Parsing of the human-written quantities that limits are given in: memory
//! (`128Mi`), fuel (`50M`) and durations (`30s`). The same spellings appear on
//! `wasmctl run` flags and, later, in pod specs, so they follow Kubernetes'
//! quantity suffixes where the idea is the same.

use std::time::Duration;

/// A quantity that could not be parsed; the message names the input and what
/// was expected, ready to be prefixed with the flag or field it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} `{input}`: {expected}")]
pub struct QuantityError {
    kind: &'static str,
    input: String,
    expected: &'static str,
}

impl QuantityError {
    fn new(kind: &'static str, input: &str, expected: &'static str) -> Self {
        Self {
            kind,
            input: input.to_owned(),
            expected,
        }
    }
}

/// Parses a whole number followed by one of `units` (suffix, multiplier).
fn parse_scaled(
    input: &str,
    kind: &'static str,
    expected: &'static str,
    units: &[(&str, u64)],
) -> Result<u64, QuantityError> {
    let err = || QuantityError::new(kind, input, expected);
    let trimmed = input.trim();
    let at = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, suffix) = trimmed.split_at(at);
    let value: u64 = number.parse().map_err(|_| err())?;
    let (_, multiplier) = units
        .iter()
        .find(|(unit, _)| *unit == suffix)
        .ok_or_else(err)?;
    value.checked_mul(*multiplier).ok_or_else(err)
}

/// Parses a byte size: a whole number with an optional binary (`Ki`, `Mi`,
/// `Gi`, also written `KiB`, `MiB`, `GiB`) or decimal (`k`, `K`, `M`, `G`)
/// suffix.
pub fn parse_bytes(input: &str) -> Result<u64, QuantityError> {
    const UNITS: &[(&str, u64)] = &[
        ("", 1),
        ("B", 1),
        ("Ki", 1 << 10),
        ("KiB", 1 << 10),
        ("Mi", 1 << 20),
        ("MiB", 1 << 20),
        ("Gi", 1 << 30),
        ("GiB", 1 << 30),
        ("k", 1_000),
        ("K", 1_000),
        ("KB", 1_000),
        ("M", 1_000_000),
        ("MB", 1_000_000),
        ("G", 1_000_000_000),
        ("GB", 1_000_000_000),
    ];
    parse_scaled(
        input,
        "memory size",
        "expected a whole number of bytes with an optional suffix Ki, Mi, Gi, K, M or G",
        UNITS,
    )
}

/// Parses an amount of fuel: a whole number with an optional decimal suffix
/// (`K`, `M`, `G`), so `50M` is fifty million units.
pub fn parse_fuel(input: &str) -> Result<u64, QuantityError> {
    const UNITS: &[(&str, u64)] = &[
        ("", 1),
        ("k", 1_000),
        ("K", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
    ];
    parse_scaled(
        input,
        "fuel amount",
        "expected a whole number with an optional suffix K, M or G",
        UNITS,
    )
}

/// Parses a duration: a whole number followed by `ms`, `s`, `m` or `h`; a bare
/// number means seconds.
pub fn parse_duration(input: &str) -> Result<Duration, QuantityError> {
    const MILLIS: &[(&str, u64)] = &[
        ("ms", 1),
        ("", 1_000),
        ("s", 1_000),
        ("m", 60_000),
        ("h", 3_600_000),
    ];
    parse_scaled(
        input,
        "duration",
        "expected a whole number followed by ms, s, m or h (e.g. 500ms, 30s)",
        MILLIS,
    )
    .map(Duration::from_millis)
}

/// Formats a byte size the way users write it (`128Mi`), exact where the
/// value allows.
pub fn format_bytes(bytes: u64) -> String {
    for (shift, suffix) in [(30, "Gi"), (20, "Mi"), (10, "Ki")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    if bytes >= 1 << 20 {
        return format!("{:.1}Mi", bytes as f64 / (1u64 << 20) as f64);
    }
    format!("{bytes}B")
}

/// Formats a duration the way users write it (`30s`, `250ms`).
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    match millis {
        m if m >= 3_600_000 && m % 3_600_000 == 0 => format!("{}h", m / 3_600_000),
        m if m >= 60_000 && m % 60_000 == 0 => format!("{}m", m / 60_000),
        m if m >= 1_000 && m % 1_000 == 0 => format!("{}s", m / 1_000),
        m => format!("{m}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_accept_binary_and_decimal_suffixes() {
        let cases = [
            ("4096", 4096),
            ("64Ki", 64 << 10),
            ("128Mi", 128 << 20),
            ("128MiB", 128 << 20),
            ("2Gi", 2 << 30),
            ("5M", 5_000_000),
            ("1k", 1_000),
            (" 7Mi ", 7 << 20),
        ];
        for (input, want) in cases {
            assert_eq!(parse_bytes(input), Ok(want), "{input}");
        }
    }

    #[test]
    fn bytes_reject_bad_input_naming_it() {
        for input in ["", "Mi", "12X", "-1Mi", "1.5Gi", "99999999999999999999Gi"] {
            let err = parse_bytes(input).unwrap_err().to_string();
            assert!(err.contains(&format!("`{input}`")), "{err}");
            assert!(err.contains("memory size"), "{err}");
        }
    }

    #[test]
    fn fuel_uses_decimal_suffixes() {
        assert_eq!(parse_fuel("50M"), Ok(50_000_000));
        assert_eq!(parse_fuel("1000"), Ok(1000));
        assert_eq!(parse_fuel("2G"), Ok(2_000_000_000));
        assert!(parse_fuel("5Mi").is_err());
        assert!(parse_fuel("lots").is_err());
    }

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        for bad in ["1m30s", "1.5s", "s", "10d", ""] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formatting_round_trips() {
        for bytes in [128 << 20, 64 << 10, 3 << 30, 512] {
            assert_eq!(parse_bytes(&format_bytes(bytes)), Ok(bytes));
        }
        for d in [
            Duration::from_secs(30),
            Duration::from_millis(1500),
            Duration::from_secs(7200),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}
