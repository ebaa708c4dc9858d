//! Go durations (`time.ParseDuration`), the form every Kubernetes-facing
//! duration takes: kube-proxy's flags and config file, and rvs's own
//! annotations.

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
}
