//! The sync loop: a [`Schedule`] carried out against a source, a
//! [`Syncer`], the rest of the node and the observers.
//!
//! [`Runner::run`] asks the schedule what to do, does it, reports back and
//! waits on the source until the schedule's next timeout, until told to
//! stop. Everything it touches is behind a trait — the clock ([`Clock`]),
//! the source ([`ChangeSource`]), the node's other state ([`NodeSide`]:
//! ipsets, iptables, sysctls on the kernel dataplane), the observers
//! ([`SyncObserver`]: metrics, health) — so a test runs the real loop on a
//! simulated clock with an in-memory dataplane.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rvs_model::admin::Admin;

use crate::cluster::{ClusterState, ObjectName};
use crate::config::ProxyConfig;
use crate::schedule::{Action, Outcome, Schedule, ScheduleConfig, SyncKind};
use crate::source::{ChangeSource, SourceError};
use crate::sync::{AddressBinder, SyncError, SyncReport, Syncer};

/// Where the loop reads the time.
pub trait Clock {
    /// Now.
    fn now(&self) -> Instant;
}

/// The system's monotonic clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// What the rest of the node did after an IPVS sync.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeReport {
    /// Set members added and deleted.
    pub set_members: usize,
    /// `iptables-restore` runs.
    pub restores: usize,
    /// Steps that failed (each logged where it failed).
    pub failures: usize,
    /// Families whose sets or rules could not be written at all (a set
    /// not created, `iptables-restore` refused): kube-proxy's proxier of
    /// such a family returns before `healthzServer.Updated`, while
    /// failures of single members or virtual servers are only logged.
    pub unsynced_families: Vec<crate::ipsets::IpFamily>,
    /// Families whose `iptables-restore` failed (kube-proxy's
    /// `sync_proxy_rules_iptables_restore_failures_total`).
    pub restore_failed: Vec<crate::ipsets::IpFamily>,
    /// Time spent on sets.
    pub ipset_time: Duration,
    /// Time spent on rules.
    pub iptables_time: Duration,
    /// Stale UDP conntrack cleanups that ran (kube-proxy's conntrack
    /// reconciler), for its metrics.
    pub conntrack_cleanups: Vec<ConntrackCleanup>,
}

/// One family's stale UDP conntrack cleanup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConntrackCleanup {
    /// The family cleaned.
    pub family: crate::ipsets::IpFamily,
    /// How long listing and deleting took.
    pub duration: Duration,
    /// Entries deleted.
    pub deleted: usize,
}

/// What programs the node besides the dataplane's virtual servers (on the
/// kernel dataplane: kube-proxy's ipsets, iptables rules and sysctls).
pub trait NodeSide {
    /// After a sync of the dataplane: brings the rest of the node in line,
    /// for every Service (`changed` is `None`) or only the changed ones.
    fn after_sync(
        &mut self,
        cluster: &ClusterState,
        config: &ProxyConfig,
        changed: Option<&BTreeSet<ObjectName>>,
    ) -> NodeReport;
}

/// Two node sides, one after the other; their reports add up.
impl<A: NodeSide, B: NodeSide> NodeSide for (A, B) {
    fn after_sync(
        &mut self,
        cluster: &ClusterState,
        config: &ProxyConfig,
        changed: Option<&BTreeSet<ObjectName>>,
    ) -> NodeReport {
        let mut a = self.0.after_sync(cluster, config, changed);
        let b = self.1.after_sync(cluster, config, changed);
        a.set_members += b.set_members;
        a.restores += b.restores;
        a.failures += b.failures;
        a.ipset_time += b.ipset_time;
        a.iptables_time += b.iptables_time;
        a.conntrack_cleanups.extend(b.conntrack_cleanups);
        for f in b.unsynced_families {
            if !a.unsynced_families.contains(&f) {
                a.unsynced_families.push(f);
            }
        }
        for f in b.restore_failed {
            if !a.restore_failed.contains(&f) {
                a.restore_failed.push(f);
            }
        }
        a
    }
}

/// A second dataplane programmed with the same virtual servers, in the
/// same scope, right after the first (`--dataplane kernel,ebpf`: the
/// socket-level load balancer beside IPVS). It keeps its own cache and
/// ownership; its refusals count as the node side's failures, so the
/// schedule retries them.
#[derive(Debug)]
pub struct ExtraDataplane<A, B> {
    /// Its syncer.
    pub syncer: Syncer<A, B>,
}

impl<A: Admin, B: AddressBinder> NodeSide for ExtraDataplane<A, B> {
    fn after_sync(
        &mut self,
        cluster: &ClusterState,
        _config: &ProxyConfig,
        changed: Option<&BTreeSet<ObjectName>>,
    ) -> NodeReport {
        let result = match changed {
            None => self.syncer.sync(cluster),
            Some(services) => {
                let changes = crate::cluster::Changes {
                    services: services.clone(),
                    node: false,
                };
                self.syncer.sync_changes(cluster, &changes)
            }
        };
        match result {
            Ok(report) => NodeReport {
                failures: report.failed + report.address_failures,
                ..NodeReport::default()
            },
            Err(e) => {
                tracing::error!(error = %display_chain(&e), "syncing the second dataplane failed");
                NodeReport {
                    failures: 1,
                    ..NodeReport::default()
                }
            }
        }
    }
}

/// Watches the loop (kube-proxy's metrics and health points).
pub trait SyncObserver {
    /// The source reported a change a sync will pick up.
    fn queued(&mut self);
    /// A sync ended; `report` is `None` when it failed as a whole, and
    /// `view` (the cluster it synced, with the configuration it synced
    /// by) then too.
    fn synced(
        &mut self,
        kind: SyncKind,
        elapsed: Duration,
        report: Option<&SyncReport>,
        node: &NodeReport,
        view: Option<(&ClusterState, &ProxyConfig)>,
    );
    /// Reads the dataplane's counters.
    fn read_counters(&mut self, admin: &mut dyn Admin);
}

/// Why the loop stopped with an error (only with [`RunOptions::once`]:
/// otherwise failures are logged and retried).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The source could not be read.
    #[error("loading the source")]
    Source(#[source] SourceError),
    /// The dataplane could not be read.
    #[error(transparent)]
    Sync(#[from] SyncError),
}

/// How the loop runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// The schedule's timing.
    pub schedule: ScheduleConfig,
    /// Return after the first sync that reached the dataplane.
    pub once: bool,
    /// The longest wait on the source, so the stop flag is seen soon.
    pub wait_slice: Duration,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            schedule: ScheduleConfig::default(),
            once: false,
            wait_slice: Duration::from_millis(200),
        }
    }
}

/// The sync loop's parts.
#[allow(missing_debug_implementations)] // holds trait objects
pub struct Runner<'a, A, B> {
    /// The dataplane and its address binder.
    pub syncer: &'a mut Syncer<A, B>,
    /// Where objects come from.
    pub source: &'a mut (dyn ChangeSource + 'static),
    /// The rest of the node, if the dataplane has any.
    pub node: Option<&'a mut (dyn NodeSide + 'static)>,
    /// Metrics and health, if served.
    pub observer: Option<&'a mut (dyn SyncObserver + 'static)>,
    /// The time.
    pub clock: &'a dyn Clock,
    /// How.
    pub options: RunOptions,
}

impl<A: Admin, B: AddressBinder> Runner<'_, A, B> {
    /// Runs until `stop` is set (or, with [`RunOptions::once`], until the
    /// first sync is done).
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), RunError> {
        let mut schedule = Schedule::new(self.options.schedule, self.clock.now());
        while !stop.load(Ordering::Relaxed) {
            schedule.handle_timeout(self.clock.now());
            while let Some(action) = schedule.poll_action() {
                match action {
                    Action::Sync(kind) => {
                        let result = self.sync(kind);
                        let outcome = match &result {
                            Ok(outcome) => *outcome,
                            Err(_) => Outcome::Failed,
                        };
                        schedule.handle_outcome(self.clock.now(), outcome);
                        if self.options.once {
                            match result {
                                Ok(Outcome::NotReady) => {}
                                Ok(_) => return Ok(()),
                                Err(e) => return Err(e),
                            }
                        }
                    }
                    Action::ReadCounters => {
                        if let Some(o) = self.observer.as_deref_mut() {
                            o.read_counters(&mut self.syncer.admin);
                        }
                        schedule.handle_counters_read(self.clock.now());
                    }
                }
                if stop.load(Ordering::Relaxed) {
                    return Ok(());
                }
                // A change that came while this action ran is seen before
                // the next one is chosen: after a long full sync a due
                // full sync would otherwise run next, and the change
                // would wait for it too.
                self.take_change(&mut schedule, Duration::ZERO);
            }
            let now = self.clock.now();
            let wait = schedule
                .poll_timeout()
                .map_or(self.options.wait_slice, |t| {
                    t.saturating_duration_since(now)
                        .min(self.options.wait_slice)
                });
            self.take_change(&mut schedule, wait);
        }
        Ok(())
    }

    /// Waits up to `wait` for a source change and queues it.
    fn take_change(&mut self, schedule: &mut Schedule, wait: Duration) {
        if self.source.wait_change(wait) {
            schedule.handle_change(self.clock.now());
            if let Some(o) = self.observer.as_deref_mut() {
                o.queued();
            }
        }
    }

    /// One sync of `kind`: load, sync the dataplane, then the node.
    fn sync(&mut self, kind: SyncKind) -> Result<Outcome, RunError> {
        let started = self.clock.now();
        let full = kind == SyncKind::Full;
        let loaded = self.source.load();
        let load_ms = ms(self.clock.now().saturating_duration_since(started));
        let (cluster, changes) = match loaded {
            Ok(Some(view)) => view,
            Ok(None) => {
                tracing::debug!("waiting for the first complete list before syncing");
                return Ok(Outcome::NotReady);
            }
            Err(e) => {
                tracing::error!(error = %display_chain(&e), "loading the source failed");
                self.failed(kind, started);
                return Err(RunError::Source(e));
            }
        };
        // Timers and retries read the whole dataplane; source changes
        // touch only what changed.
        let synced = if full {
            self.syncer.sync(cluster)
        } else {
            self.syncer.sync_changes(cluster, &changes)
        };
        let report = match synced {
            Ok(report) => report,
            Err(e) => {
                tracing::error!(error = %display_chain(&e), "sync failed");
                self.failed(kind, started);
                return Err(RunError::Sync(e));
            }
        };
        let node = self
            .node
            .as_deref_mut()
            .map(|n| n.after_sync(cluster, &self.syncer.config, report.changed.as_ref()))
            .unwrap_or_default();
        let elapsed = self.clock.now().saturating_duration_since(started);
        if let Some(o) = self.observer.as_deref_mut() {
            o.synced(
                kind,
                elapsed,
                Some(&report),
                &node,
                Some((cluster, &self.syncer.config)),
            );
        }
        tracing::info!(
            full,
            load_ms,
            plan_ms = ms(report.plan_time),
            bind_ms = ms(report.bind_time),
            apply_ms = ms(report.apply_time),
            services = report.services,
            applied = report.applied,
            failed = report.failed,
            addresses = report.addresses_changed,
            draining = report.draining,
            elapsed_ms = ms(report.elapsed),
            set_members = node.set_members,
            restores = node.restores,
            netfilter_failures = node.failures,
            ipset_ms = ms(node.ipset_time),
            iptables_ms = ms(node.iptables_time),
            "synced"
        );
        Ok(Outcome::Synced {
            failures: report.failed + report.address_failures + node.failures > 0,
            draining: report.draining > 0,
        })
    }

    fn failed(&mut self, kind: SyncKind, started: Instant) {
        let elapsed = self.clock.now().saturating_duration_since(started);
        if let Some(o) = self.observer.as_deref_mut() {
            o.synced(kind, elapsed, None, &NodeReport::default(), None);
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An error with its sources, `a: b: c`.
pub fn display_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        out.push_str(": ");
        out.push_str(&s.to_string());
        next = s.source();
    }
    out
}
