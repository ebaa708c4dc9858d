//! IPVS scheduler names.
//!
//! The kernel identifies a scheduler by the name of its module without the
//! `ip_vs_` prefix. This module owns the list of schedulers rvs knows, the
//! parsing of names given on command lines and in manifests (which refuses
//! names rvs does not know), and the keeping of any other name the kernel
//! reports ([`Scheduler::Other`], [`SchedulerName`]), so that a virtual
//! server using a scheduler module rvs has never heard of is shown and
//! handled rather than failing a whole listing.

use std::fmt;
use std::str::FromStr;

/// A scheduling algorithm, as named by `ipvsadm -s` and the kernel.
///
/// Serialised (feature `serde`) as its kernel name (`"rr"`, `"wlc"`, ...);
/// deserialising keeps any name the kernel could report, as
/// [`Scheduler::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheduler {
    /// Round robin.
    RoundRobin,
    /// Weighted round robin.
    WeightedRoundRobin,
    /// Least connection.
    LeastConnection,
    /// Weighted least connection (the kernel's default).
    WeightedLeastConnection,
    /// Locality-based least connection.
    LocalityLeastConnection,
    /// Locality-based least connection with replication.
    LocalityLeastConnectionReplication,
    /// Destination hashing.
    DestinationHashing,
    /// Source hashing.
    SourceHashing,
    /// Shortest expected delay.
    ShortestExpectedDelay,
    /// Never queue.
    NeverQueue,
    /// Maglev hashing.
    Maglev,
    /// Weighted failover.
    Failover,
    /// Weighted overflow.
    Overflow,
    /// Weighted random twos choice (Linux 6.2 and later).
    RandomTwos,
    /// A scheduler rvs does not know, by the name the kernel reported
    /// (a third-party module, or `none`). Never one of the names above:
    /// [`Scheduler::from_kernel_name`] maps those to their variants.
    Other(SchedulerName),
}

impl Scheduler {
    /// Every scheduler rvs knows, in the order `ipvsadm -h` lists them.
    pub const ALL: [Scheduler; 14] = [
        Scheduler::RoundRobin,
        Scheduler::WeightedRoundRobin,
        Scheduler::LeastConnection,
        Scheduler::WeightedLeastConnection,
        Scheduler::LocalityLeastConnection,
        Scheduler::LocalityLeastConnectionReplication,
        Scheduler::DestinationHashing,
        Scheduler::SourceHashing,
        Scheduler::ShortestExpectedDelay,
        Scheduler::NeverQueue,
        Scheduler::Failover,
        Scheduler::Overflow,
        Scheduler::Maglev,
        Scheduler::RandomTwos,
    ];

    /// The kernel's name for the scheduler (`rr`, `wlc`, ...).
    pub fn name(&self) -> &str {
        match self {
            Scheduler::RoundRobin => "rr",
            Scheduler::WeightedRoundRobin => "wrr",
            Scheduler::LeastConnection => "lc",
            Scheduler::WeightedLeastConnection => "wlc",
            Scheduler::LocalityLeastConnection => "lblc",
            Scheduler::LocalityLeastConnectionReplication => "lblcr",
            Scheduler::DestinationHashing => "dh",
            Scheduler::SourceHashing => "sh",
            Scheduler::ShortestExpectedDelay => "sed",
            Scheduler::NeverQueue => "nq",
            Scheduler::Maglev => "mh",
            Scheduler::Failover => "fo",
            Scheduler::Overflow => "ovf",
            Scheduler::RandomTwos => "twos",
            Scheduler::Other(name) => name.as_str(),
        }
    }

    /// `true` for a scheduler rvs knows (one of [`Scheduler::ALL`]).
    pub fn is_known(&self) -> bool {
        !matches!(self, Scheduler::Other(_))
    }

    /// The name of the kernel module that implements the scheduler.
    pub fn kernel_module(&self) -> String {
        format!("ip_vs_{}", self.name())
    }

    /// The scheduler for a name the kernel reported: a known one, or
    /// [`Scheduler::Other`] keeping the name. Fails only for a name no
    /// kernel can report (empty, with a NUL, or longer than
    /// [`SchedulerName::MAX_LEN`] bytes).
    pub fn from_kernel_name(name: &str) -> Result<Scheduler, InvalidSchedulerName> {
        match name.parse::<Scheduler>() {
            Ok(known) => Ok(known),
            Err(_) => SchedulerName::new(name).map(Scheduler::Other),
        }
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scheduler name a user gave that no known scheduler has.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown IPVS scheduler {name:?} (known: rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh, twos)"
)]
pub struct UnknownScheduler {
    /// The name that was given.
    pub name: String,
}

/// User input: only the schedulers rvs knows are accepted. Names read
/// from a dataplane go through [`Scheduler::from_kernel_name`] instead.
impl FromStr for Scheduler {
    type Err = UnknownScheduler;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scheduler::ALL
            .into_iter()
            .find(|sched| sched.name() == s)
            .ok_or_else(|| UnknownScheduler { name: s.to_owned() })
    }
}

/// A scheduler name as the kernel stores it: 1 to 15 bytes without NUL
/// (`IP_VS_SCHEDNAME_MAXLEN` is 16 with the terminating NUL). Fixed-size
/// so that [`Scheduler`] stays `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SchedulerName {
    // Ordering compares the bytes first, so names sort as strings do
    // (the unused tail is zero and NUL sorts first).
    bytes: [u8; SchedulerName::MAX_LEN],
    len: u8,
}

/// A string that cannot be a kernel scheduler name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} cannot be an IPVS scheduler name (1 to {max} bytes, no NUL)", max = SchedulerName::MAX_LEN)]
pub struct InvalidSchedulerName {
    /// The string that was given.
    pub name: String,
}

impl SchedulerName {
    /// The longest name the kernel keeps (`IP_VS_SCHEDNAME_MAXLEN - 1`).
    pub const MAX_LEN: usize = 15;

    /// The name `name`, if the kernel could hold it.
    pub fn new(name: &str) -> Result<SchedulerName, InvalidSchedulerName> {
        let raw = name.as_bytes();
        let invalid = || InvalidSchedulerName {
            name: name.to_owned(),
        };
        if raw.is_empty() || raw.len() > Self::MAX_LEN || raw.contains(&0) {
            return Err(invalid());
        }
        let mut bytes = [0; Self::MAX_LEN];
        bytes[..raw.len()].copy_from_slice(raw);
        let len = u8::try_from(raw.len()).map_err(|_| invalid())?;
        Ok(SchedulerName { bytes, len })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        let bytes = self.bytes.get(..usize::from(self.len)).unwrap_or_default();
        // Built from a &str in `new`, so always valid UTF-8.
        std::str::from_utf8(bytes).unwrap_or_default()
    }
}

impl fmt::Debug for SchedulerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for SchedulerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Scheduler {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Scheduler {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Scheduler::from_kernel_name(&name).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_scheduler() {
        for sched in Scheduler::ALL {
            assert_eq!(sched.name().parse::<Scheduler>(), Ok(sched));
            assert_eq!(Scheduler::from_kernel_name(sched.name()), Ok(sched));
            assert_eq!(sched.to_string(), sched.name());
            assert!(sched.is_known());
        }
    }

    #[test]
    fn names_are_distinct() {
        let mut names: Vec<_> = Scheduler::ALL.iter().map(|s| s.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Scheduler::ALL.len());
    }

    #[test]
    fn unknown_name_is_reported_with_the_name() {
        let err = "fastest".parse::<Scheduler>().unwrap_err();
        assert_eq!(err.name, "fastest");
        assert!(err.to_string().contains("\"fastest\""), "{err}");
    }

    #[test]
    fn kernel_names_rvs_does_not_know_are_kept() {
        let sched = Scheduler::from_kernel_name("fastest").unwrap();
        assert!(!sched.is_known());
        assert_eq!(sched.name(), "fastest");
        assert_eq!(sched.to_string(), "fastest");
        assert_eq!(format!("{sched:?}"), "Other(\"fastest\")");
        assert_eq!(sched.kernel_module(), "ip_vs_fastest");
        // Fifteen bytes is the kernel's limit.
        let longest = "abcdefghijklmno";
        assert_eq!(
            Scheduler::from_kernel_name(longest).unwrap().name(),
            longest
        );
        for bad in ["", "abcdefghijklmnop", "a\0b"] {
            let err = Scheduler::from_kernel_name(bad).unwrap_err();
            assert_eq!(err.name, bad);
        }
    }

    #[test]
    fn other_names_order_as_strings() {
        let a = SchedulerName::new("ab").unwrap();
        let b = SchedulerName::new("abc").unwrap();
        let c = SchedulerName::new("b").unwrap();
        assert!(a < b && b < c);
    }

    #[cfg(feature = "serde")]
    #[test]
    fn serialises_as_the_kernel_name() {
        assert_eq!(serde_json::to_string(&Scheduler::Maglev).unwrap(), "\"mh\"");
        assert_eq!(
            serde_json::from_str::<Scheduler>("\"sed\"").unwrap(),
            Scheduler::ShortestExpectedDelay
        );
        // What a dataplane reports is kept; what no kernel can hold is not.
        let other = serde_json::from_str::<Scheduler>("\"nope\"").unwrap();
        assert_eq!(other.name(), "nope");
        assert_eq!(serde_json::to_string(&other).unwrap(), "\"nope\"");
        assert!(serde_json::from_str::<Scheduler>("\"sixteen-bytes-xx\"").is_err());
    }

    #[test]
    fn module_names_follow_the_kernel() {
        assert_eq!(Scheduler::Maglev.kernel_module(), "ip_vs_mh");
        assert_eq!(
            Scheduler::WeightedLeastConnection.kernel_module(),
            "ip_vs_wlc"
        );
    }
}
