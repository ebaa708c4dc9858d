//! What a Service asks for: the rebalancing policy and its text form.
//!
//! The text is the [`ANNOTATION`](crate::ANNOTATION)'s value and the
//! proxy's default flag: a mode, `off` or `idle`, then `key=value`
//! options, comma-separated:
//! * `max-age=D` (a Go duration): also close connections older than `D`
//!   (±10 % per connection), idle ones only;
//! * `grace=D` (default 50ms): how long a connection must have had no
//!   bytes in flight either way to count as idle;
//! * `tolerance=P` (default 20%): how far over its weight's share a real
//!   server may be before its connections are closed;
//! * `rate=P` (default 5%): at most this share of the service's
//!   connections closed per second.
//!
//! `P` is a percentage (`20%`) or a fraction (`0.2`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rvs_model::{format_go_duration, parse_go_duration};

/// The longest `max-age` (a year).
const MAX_AGE_LIMIT: Duration = Duration::from_secs(365 * 24 * 3600);
/// The longest `grace`.
const GRACE_LIMIT: Duration = Duration::from_secs(3600);

/// Whether a service's connections are rebalanced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Mode {
    /// Never close a connection (the default).
    Off,
    /// Close idle connections of over-loaded real servers (and, with
    /// [`Policy::max_age`], idle connections past that age).
    Idle,
}

/// A service's rebalancing policy. Shares are kept in parts per million,
/// so policies compare and hash exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Policy {
    /// Off or idle-only closing.
    pub mode: Mode,
    /// Close idle connections older than this (±10 %), whatever the skew.
    pub max_age: Option<Duration>,
    /// How long without bytes in flight makes a connection idle.
    pub grace: Duration,
    /// A real server is over-loaded at `share × (1 + tolerance)`, in
    /// parts per million.
    pub tolerance_ppm: u32,
    /// The most of a service's connections closed per second, in parts
    /// per million of them.
    pub rate_ppm: u32,
}

impl Policy {
    /// Rebalancing off: what a Service without the annotation gets unless
    /// the proxy's default says otherwise.
    pub const OFF: Policy = Policy {
        mode: Mode::Off,
        max_age: None,
        grace: Duration::from_millis(50),
        tolerance_ppm: 200_000,
        rate_ppm: 50_000,
    };

    /// `idle` with the default options.
    pub const IDLE: Policy = Policy {
        mode: Mode::Idle,
        ..Policy::OFF
    };

    /// Whether anything is ever closed.
    pub fn is_off(&self) -> bool {
        self.mode == Mode::Off
    }

    /// The tolerance as a fraction.
    pub fn tolerance(&self) -> f64 {
        f64::from(self.tolerance_ppm) / 1e6
    }

    /// The rate as a fraction of the connections per second.
    pub fn rate(&self) -> f64 {
        f64::from(self.rate_ppm) / 1e6
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::OFF
    }
}

/// A policy text that cannot be used; names the part at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadPolicy {
    /// The mode is neither `off` nor `idle`.
    #[error("rebalance mode {0:?} is neither \"off\" nor \"idle\"")]
    Mode(String),
    /// An option rvs does not know.
    #[error("rebalance option {0:?} is not one of max-age=, grace=, tolerance=, rate=")]
    Option(String),
    /// `off` with options: they would do nothing.
    #[error("rebalance mode \"off\" takes no options (got {0:?})")]
    OffWithOptions(String),
    /// An option given twice.
    #[error("rebalance option {0:?} is given twice")]
    Repeated(String),
    /// An option's value is out of range or not a number or duration.
    #[error("rebalance option {key}: {value:?} {why}")]
    Value {
        /// The option.
        key: String,
        /// What was given.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

impl FromStr for Policy {
    type Err = BadPolicy;

    fn from_str(text: &str) -> Result<Policy, BadPolicy> {
        let mut parts = text.split(',').map(str::trim);
        let mut policy = match parts.next().unwrap_or_default() {
            "off" => Policy::OFF,
            "idle" => Policy::IDLE,
            other => return Err(BadPolicy::Mode(other.to_owned())),
        };
        let mut seen: Vec<&str> = Vec::new();
        for part in parts {
            if policy.is_off() {
                return Err(BadPolicy::OffWithOptions(part.to_owned()));
            }
            let Some((key, value)) = part.split_once('=') else {
                return Err(BadPolicy::Option(part.to_owned()));
            };
            let (key, value) = (key.trim(), value.trim());
            if seen.contains(&key) {
                return Err(BadPolicy::Repeated(key.to_owned()));
            }
            let bad = |why| BadPolicy::Value {
                key: key.to_owned(),
                value: value.to_owned(),
                why,
            };
            match key {
                "max-age" => {
                    let d = parse_go_duration(value).map_err(|_| bad("is not a duration"))?;
                    if d.is_zero() || d > MAX_AGE_LIMIT {
                        return Err(bad("must be more than 0 and at most 8760h"));
                    }
                    policy.max_age = Some(d);
                }
                "grace" => {
                    let d = parse_go_duration(value).map_err(|_| bad("is not a duration"))?;
                    if d > GRACE_LIMIT {
                        return Err(bad("must be at most 1h"));
                    }
                    policy.grace = d;
                }
                "tolerance" => {
                    policy.tolerance_ppm = fraction(value)
                        .filter(|&ppm| ppm <= 100_000_000)
                        .ok_or_else(|| bad("is not a share from 0% to 10000%"))?;
                }
                "rate" => {
                    let r = fraction(value).ok_or_else(|| bad("is not a share"))?;
                    if r == 0 || r > 1_000_000 {
                        return Err(bad("must be more than 0% and at most 100%"));
                    }
                    policy.rate_ppm = r;
                }
                _ => return Err(BadPolicy::Option(part.to_owned())),
            }
            seen.push(key);
        }
        Ok(policy)
    }
}

/// `20%` or `0.2`: a finite, non-negative share, in parts per million.
fn fraction(text: &str) -> Option<u32> {
    let (number, scale) = match text.strip_suffix('%') {
        Some(n) => (n, 1e4),
        None => (text, 1e6),
    };
    let ppm = (number.trim().parse::<f64>().ok()? * scale).round();
    (ppm.is_finite() && (0.0..=f64::from(u32::MAX)).contains(&ppm)).then_some(ppm as u32)
}

impl fmt::Display for Policy {
    /// The text form, options only where they differ from the defaults.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_off() {
            return f.write_str("off");
        }
        f.write_str("idle")?;
        if let Some(d) = self.max_age {
            write!(f, ",max-age={}", format_go_duration(d))?;
        }
        if self.grace != Policy::IDLE.grace {
            write!(f, ",grace={}", format_go_duration(self.grace))?;
        }
        if self.tolerance_ppm != Policy::IDLE.tolerance_ppm {
            write!(f, ",tolerance={}%", f64::from(self.tolerance_ppm) / 1e4)?;
        }
        if self.rate_ppm != Policy::IDLE.rate_ppm {
            write!(f, ",rate={}%", f64::from(self.rate_ppm) / 1e4)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms() {
        assert_eq!("off".parse(), Ok(Policy::OFF));
        assert_eq!("idle".parse(), Ok(Policy::IDLE));
        let p: Policy = "idle,max-age=10m".parse().unwrap();
        assert_eq!(p.max_age, Some(Duration::from_secs(600)));
        assert_eq!(p.mode, Mode::Idle);
    }

    #[test]
    fn options_and_round_trip() {
        let p: Policy = " idle , max-age=1h30m, grace=200ms, tolerance=10%, rate=0.1 "
            .parse()
            .unwrap();
        assert_eq!(p.max_age, Some(Duration::from_secs(5400)));
        assert_eq!(p.grace, Duration::from_millis(200));
        assert_eq!((p.tolerance_ppm, p.rate_ppm), (100_000, 100_000));
        assert!((p.tolerance() - 0.1).abs() < 1e-12);
        let odd: Policy = "idle,tolerance=12.5%,rate=0.0003".parse().unwrap();
        assert_eq!((odd.tolerance_ppm, odd.rate_ppm), (125_000, 300));
        assert_eq!(odd.to_string(), "idle,tolerance=12.5%,rate=0.03%");
        assert_eq!(odd.to_string().parse(), Ok(odd));
        assert_eq!(p.to_string().parse(), Ok(p));
        assert_eq!(Policy::IDLE.to_string(), "idle");
        assert_eq!(Policy::OFF.to_string(), "off");
    }

    #[test]
    fn bad_texts_name_the_part() {
        let err = |t: &str| t.parse::<Policy>().unwrap_err().to_string();
        assert!(err("").contains("\"\""), "{}", err(""));
        assert!(err("on").contains("\"on\""));
        assert!(err("off,max-age=1m").contains("takes no options"));
        assert!(err("idle,max-age").contains("\"max-age\""));
        assert!(err("idle,maxage=1m").contains("\"maxage=1m\""));
        assert!(err("idle,max-age=soon").contains("max-age: \"soon\" is not a duration"));
        assert!(err("idle,max-age=0s").contains("more than 0"));
        assert!(err("idle,max-age=8761h").contains("at most 8760h"));
        assert!(err("idle,max-age=5000000000000000h5000000000000000h").contains("not a duration"));
        assert!(err("idle,grace=2h").contains("at most 1h"));
        assert!(err("idle,rate=0%").contains("rate"));
        assert!(err("idle,rate=150%").contains("at most 100%"));
        assert!(err("idle,tolerance=-1").contains("tolerance"));
        assert!(err("idle,tolerance=NaN").contains("tolerance"));
        assert!(err("idle,grace=1s,grace=2s").contains("twice"));
    }
}
