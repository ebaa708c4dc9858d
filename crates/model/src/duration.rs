//! Go durations (`time.ParseDuration` and `time.Duration.String`), the
//! form every Kubernetes-facing duration takes: kube-proxy's flags and
//! config file, and rvs's own annotations.

use std::time::Duration;

/// A text that is not a Go duration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a duration such as 30s, 500ms or 1m30s")]
pub struct BadDuration {
    /// What was given.
    pub text: String,
}

/// Parses a Go duration (`time.ParseDuration`): `300ms`, `1.5h`, `1m30s`,
/// `0`; units `ns`, `us` (`µs`), `ms`, `s`, `m`, `h`.
pub fn parse_go_duration(text: &str) -> Result<Duration, BadDuration> {
    let bad = || BadDuration {
        text: text.to_owned(),
    };
    let rest = text.strip_prefix('+').unwrap_or(text);
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = rest;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let value: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        // Overflow is an error, not a panic: Service annotations reach
        // this parser too.
        total = total
            .checked_add(Duration::try_from_secs_f64(value * scale).map_err(|_| bad())?)
            .ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Formats a duration as Go's `time.Duration.String` does: `1h0m0s`,
/// `1m30s`, `30s`, `1.5s`, `500ms`, `0s`.
pub fn format_go_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_owned();
    }
    if d < Duration::from_secs(1) {
        let nanos = d.as_nanos();
        return match nanos {
            n if n % 1_000_000 == 0 => format!("{}ms", n / 1_000_000),
            n if n % 1_000 == 0 => format!("{}µs", n / 1_000),
            n => format!("{n}ns"),
        };
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    let frac = d.subsec_nanos();
    let s = if frac == 0 {
        format!("{s}s")
    } else {
        let digits = format!("{frac:09}");
        format!("{s}.{}s", digits.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => s,
        (0, m) => format!("{m}m{s}"),
        (h, m) => format!("{h}h{m}m{s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("300ms"), Ok(Duration::from_millis(300)));
        for bad in [
            "",
            "5",
            "m",
            "1x",
            "-1s",
            "1s2",
            "5000000000000000h5000000000000000h",
            "1e300h",
        ] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn go_duration_strings() {
        for (d, want) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_secs(86400), "24h0m0s"),
        ] {
            assert_eq!(format_go_duration(d), want);
            assert_eq!(parse_go_duration(want), Ok(d));
        }
    }
}
