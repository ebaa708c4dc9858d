//! Go's time formats kube-proxy's answers carry, for UTC times:
//! `time.Time.String()` (`2006-01-02 15:04:05.999999999 +0000 UTC`) and
//! the RFC 3339 form `encoding/json` writes (`time.RFC3339Nano`,
//! `2006-01-02T15:04:05.999999999Z07:00`), which v1.37's `/healthz` and
//! `/livez` bodies use.

use std::time::{SystemTime, UNIX_EPOCH};

/// Go's zero `time.Time` as `String()` prints it.
#[cfg(test)]
pub(crate) const ZERO: &str = "0001-01-01 00:00:00 +0000 UTC";

/// Go's zero `time.Time` as `encoding/json` writes it (a proxy never
/// updated).
pub(crate) const ZERO_RFC3339: &str = "0001-01-01T00:00:00Z";

/// Formats `t` (UTC) as Go's `encoding/json` writes a `time.Time`
/// (`RFC3339Nano`: fractional seconds without trailing zeros, `Z`).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let (date, time, frac) = parts(t);
    format!("{date}T{time}{frac}Z")
}

/// Formats `t` (UTC) as Go's `Time.String()` does, without the monotonic
/// clock suffix: fractional seconds with trailing zeros removed.
#[cfg(test)]
pub(crate) fn format(t: SystemTime) -> String {
    let (date, time, frac) = parts(t);
    format!("{date} {time}{frac} +0000 UTC")
}

/// The date, the time of day and the fraction (`.5`, or empty) of `t`.
fn parts(t: SystemTime) -> (String, String, String) {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let date = format!("{year:04}-{month:02}-{day:02}");
    let time = format!("{:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60);
    let nanos = since.subsec_nanos();
    let frac = if nanos > 0 {
        format!(".{}", format!("{nanos:09}").trim_end_matches('0'))
    } else {
        String::new()
    };
    (date, time, frac)
}

/// The proleptic Gregorian date `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift to an era starting on 0000-03-01 so leap days end each year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Both fit: day is 1..=31 and month 1..=12.
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_like_go() {
        assert_eq!(format(UNIX_EPOCH), "1970-01-01 00:00:00 +0000 UTC");
        // 2024-02-29 12:34:56.5 UTC (a leap day).
        let t = UNIX_EPOCH + Duration::new(1_709_210_096, 500_000_000);
        assert_eq!(format(t), "2024-02-29 12:34:56.5 +0000 UTC");
        let t = UNIX_EPOCH + Duration::new(1_764_067_179, 123_456_789);
        assert_eq!(format(t), "2025-11-25 10:39:39.123456789 +0000 UTC");
        let t = UNIX_EPOCH + Duration::new(951_782_400, 0);
        assert_eq!(format(t), "2000-02-29 00:00:00 +0000 UTC");
        assert!(ZERO.starts_with("0001"));
    }

    #[test]
    fn rfc3339_like_encoding_json() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::new(1_709_210_096, 500_000_000);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.5Z");
        let t = UNIX_EPOCH + Duration::new(1_764_067_179, 123_456_789);
        assert_eq!(rfc3339(t), "2025-11-25T10:39:39.123456789Z");
        let t = UNIX_EPOCH + Duration::new(1_764_067_179, 120_000_000);
        assert_eq!(rfc3339(t), "2025-11-25T10:39:39.12Z");
    }
}
