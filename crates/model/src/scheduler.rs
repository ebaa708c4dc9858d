//! IPVS scheduler names.
//!
//! The kernel identifies a scheduler by the name of its module without the
//! `ip_vs_` prefix. This module owns the list of schedulers rvs knows and
//! the parsing of names given on command lines and in manifests.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A scheduling algorithm, as named by `ipvsadm -s` and the kernel.
///
/// Serialised as its kernel name (`"rr"`, `"wlc"`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
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
}

impl Scheduler {
    /// Every scheduler, in the order `ipvsadm -h` lists them.
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
    pub fn name(self) -> &'static str {
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
        }
    }

    /// The name of the kernel module that implements the scheduler.
    pub fn kernel_module(self) -> String {
        format!("ip_vs_{}", self.name())
    }
}

impl TryFrom<String> for Scheduler {
    type Error = UnknownScheduler;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        name.parse()
    }
}

impl From<Scheduler> for &'static str {
    fn from(sched: Scheduler) -> Self {
        sched.name()
    }
}

impl fmt::Display for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A scheduler name that no known scheduler has.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown IPVS scheduler {name:?} (known: rr, wrr, lc, wlc, lblc, lblcr, dh, sh, sed, nq, fo, ovf, mh, twos)"
)]
pub struct UnknownScheduler {
    /// The name that was given.
    pub name: String,
}

impl FromStr for Scheduler {
    type Err = UnknownScheduler;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scheduler::ALL
            .into_iter()
            .find(|sched| sched.name() == s)
            .ok_or_else(|| UnknownScheduler { name: s.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back_to_its_scheduler() {
        for sched in Scheduler::ALL {
            assert_eq!(sched.name().parse::<Scheduler>(), Ok(sched));
            assert_eq!(sched.to_string(), sched.name());
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
    fn serialises_as_the_kernel_name() {
        assert_eq!(serde_json::to_string(&Scheduler::Maglev).unwrap(), "\"mh\"");
        assert_eq!(
            serde_json::from_str::<Scheduler>("\"sed\"").unwrap(),
            Scheduler::ShortestExpectedDelay
        );
        assert!(serde_json::from_str::<Scheduler>("\"nope\"").is_err());
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
