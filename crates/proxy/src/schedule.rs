//! When to sync: the sync loop's decisions, without I/O.
//!
//! [`Schedule`] owns every timing rule of the loop that drives a
//! [`crate::sync::Syncer`], in quinn-proto's sans-IO shape: it is told
//! what happened ([`Schedule::handle_change`],
//! [`Schedule::handle_outcome`], [`Schedule::handle_counters_read`]) and
//! what time it is ([`Schedule::handle_timeout`]), and says what to do
//! next ([`Schedule::poll_action`]) and when to ask again at the latest
//! ([`Schedule::poll_timeout`]). The caller owns the clock, the source and
//! the dataplane, so a test drives it on a simulated clock.
//!
//! The rules are kube-proxy's, plus rvs's partial syncs:
//!
//! * the first sync is a full one, as soon as the source has a complete
//!   view;
//! * a source change syncs only what changed (a partial sync), no sooner
//!   than `min_period` after the previous sync started
//!   (`--ipvs-min-sync-period`); changes within it are coalesced into
//!   one sync;
//! * a full sync runs every `full_period` (`--ipvs-sync-period`); a
//!   pending change goes first, so a change never waits behind a read of
//!   every virtual server;
//! * while real servers drain at weight 0, a partial sync re-checks them
//!   every `drain_check`;
//! * after a failed sync (or one whose operations were partly refused) a
//!   full sync retries after a [`Backoff`] that doubles up to a cap, and
//!   resets after a clean sync;
//! * counters are read every `counters_every`, never while a change
//!   waits for its sync.

use std::time::{Duration, Instant};

/// How long to wait before retrying after failures: doubles from `initial`
/// up to `max`, back to `initial` after a success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            current: initial,
        }
    }

    /// The wait after one more failure; the next one waits twice as long.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.current;
        self.current = self.current.saturating_mul(2).min(self.max);
        delay
    }

    /// After a success: the next failure waits `initial` again.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

impl Default for Backoff {
    /// 500 ms, doubling up to 30 s.
    fn default() -> Backoff {
        Backoff::new(Duration::from_millis(500), Duration::from_secs(30))
    }
}

/// The timing settings of a [`Schedule`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScheduleConfig {
    /// Minimum time from one sync's start to the next
    /// (`--ipvs-min-sync-period`).
    pub min_period: Duration,
    /// Time between full syncs (`--ipvs-sync-period`).
    pub full_period: Duration,
    /// How often draining real servers are re-checked.
    pub drain_check: Duration,
    /// How often counters are read; `None`: never.
    pub counters_every: Option<Duration>,
    /// How soon a source without a complete view is asked again (it also
    /// wakes the loop when its view completes).
    pub not_ready_recheck: Duration,
    /// The retry delays after failures.
    pub backoff: Backoff,
}

impl Default for ScheduleConfig {
    /// kube-proxy's defaults (30 s full syncs, no minimum period), drain
    /// re-checks every second, counters every 10 s.
    fn default() -> ScheduleConfig {
        ScheduleConfig {
            min_period: Duration::ZERO,
            full_period: Duration::from_secs(30),
            drain_check: Duration::from_secs(1),
            counters_every: Some(Duration::from_secs(10)),
            not_ready_recheck: Duration::from_millis(200),
            backoff: Backoff::default(),
        }
    }
}

/// Which kind of sync to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyncKind {
    /// Read everything from the dataplane and repair it.
    Full,
    /// Only what changed since the last sync (and what drains).
    Partial,
}

/// What the caller should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Load the source and sync; report with [`Schedule::handle_outcome`].
    Sync(SyncKind),
    /// Read the dataplane's counters; report with
    /// [`Schedule::handle_counters_read`].
    ReadCounters,
}

/// How a sync handed out by [`Schedule::poll_action`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The source has no complete view yet: nothing was synced.
    NotReady,
    /// The sync ran.
    Synced {
        /// Some operations were refused (they are retried after a backoff).
        failures: bool,
        /// Real servers are draining (they are re-checked).
        draining: bool,
    },
    /// The sync could not run at all (the dataplane could not be read).
    Failed,
}

/// The sync loop's timing, without I/O. See the module docs for the rules.
#[derive(Clone, Debug)]
pub struct Schedule {
    config: ScheduleConfig,
    now: Instant,
    /// A source change waits for a sync.
    changed: bool,
    /// When the last sync that reached the dataplane started.
    last_sync: Option<Instant>,
    /// When the next periodic full sync is due.
    next_full: Instant,
    /// When a failed sync is retried.
    retry_at: Option<Instant>,
    /// When a source without a complete view is asked again.
    recheck_at: Option<Instant>,
    /// Real servers drain: re-check them.
    draining: bool,
    backoff: Backoff,
    /// When counters are read next.
    counters_at: Option<Instant>,
    /// The sync handed out and not reported yet, with its start.
    running: Option<(SyncKind, Instant)>,
}

impl Schedule {
    /// A schedule starting at `now`: a full sync is due at once.
    pub fn new(config: ScheduleConfig, now: Instant) -> Schedule {
        Schedule {
            config,
            now,
            changed: true,
            last_sync: None,
            next_full: now,
            retry_at: None,
            recheck_at: None,
            draining: false,
            backoff: config.backoff,
            counters_at: config.counters_every.map(|every| now + every),
            running: None,
        }
    }

    /// The settings.
    pub fn config(&self) -> &ScheduleConfig {
        &self.config
    }

    /// Time moved on to `now` (monotonic; an earlier instant is ignored).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// The source changed at `now`: a partial sync is due.
    pub fn handle_change(&mut self, now: Instant) {
        self.handle_timeout(now);
        self.changed = true;
        self.recheck_at = None;
    }

    /// Whether a change waits for its sync.
    pub fn change_pending(&self) -> bool {
        self.changed
    }

    /// When syncs may start again: `min_period` after the last one.
    fn sync_allowed_at(&self) -> Instant {
        match self.last_sync {
            Some(t) => t + self.config.min_period,
            None => self.now,
        }
    }

    /// The next sync without new events: its kind and when it is due,
    /// before the minimum period is applied.
    fn next_sync(&self) -> (SyncKind, Instant) {
        let first = self.last_sync.is_none();
        if let Some(t) = self.recheck_at {
            // The source had no complete view: ask again then (a change
            // clears this and goes at once).
            let kind = if self.changed && !first {
                SyncKind::Partial
            } else {
                SyncKind::Full
            };
            return (kind, t);
        }
        if first {
            let at = if self.changed {
                self.now
            } else {
                self.next_full
            };
            return (SyncKind::Full, at);
        }
        if self.changed {
            // A change goes first, as a partial sync; a due full sync
            // runs next.
            return (SyncKind::Partial, self.now);
        }
        let mut next = (SyncKind::Full, self.next_full);
        if let Some(retry) = self.retry_at
            && retry < next.1
        {
            next = (SyncKind::Full, retry);
        }
        if self.draining
            && let Some(last) = self.last_sync
            && last + self.config.drain_check < next.1
        {
            next = (SyncKind::Partial, last + self.config.drain_check);
        }
        next
    }

    /// What to do now, if anything. A sync handed out must be reported
    /// with [`Schedule::handle_outcome`] before another one is.
    pub fn poll_action(&mut self) -> Option<Action> {
        if self.running.is_some() {
            return None;
        }
        let (kind, due) = self.next_sync();
        if self.now >= due.max(self.sync_allowed_at()) {
            self.running = Some((kind, self.now));
            // The change is taken by this sync (a change arriving while
            // it runs is a new one).
            self.changed = false;
            self.recheck_at = None;
            return Some(Action::Sync(kind));
        }
        // Counters are read only while no change waits for its sync.
        if !self.changed && self.counters_at.is_some_and(|t| self.now >= t) {
            self.counters_at = None;
            return Some(Action::ReadCounters);
        }
        None
    }

    /// The sync last handed out ended at `now`.
    pub fn handle_outcome(&mut self, now: Instant, outcome: Outcome) {
        self.handle_timeout(now);
        let Some((kind, started)) = self.running.take() else {
            return;
        };
        match outcome {
            Outcome::NotReady => {
                // Nothing was synced: the same sync is due again once the
                // source completes (a change) or at the recheck.
                if kind == SyncKind::Partial {
                    self.changed = true;
                }
                self.recheck_at = Some(self.now + self.config.not_ready_recheck);
            }
            Outcome::Synced { failures, draining } => {
                self.last_sync = Some(started);
                if kind == SyncKind::Full {
                    self.next_full = started + self.config.full_period;
                }
                self.draining = draining;
                if failures {
                    self.retry_after_failure();
                } else {
                    self.retry_at = None;
                    self.backoff.reset();
                }
            }
            Outcome::Failed => {
                self.last_sync = Some(started);
                if kind == SyncKind::Full {
                    // The periodic timer restarts; the retry comes first.
                    self.next_full = started + self.config.full_period;
                }
                self.retry_after_failure();
            }
        }
    }

    /// After a failure the next sync waits for the backoff, even a full
    /// sync that is already due (it would fail the same way at once).
    fn retry_after_failure(&mut self) {
        let retry = self.now + self.backoff.next_delay();
        self.retry_at = Some(retry);
        self.next_full = self.next_full.max(retry);
    }

    /// Counters were read at `now`; the next read is due a period later.
    pub fn handle_counters_read(&mut self, now: Instant) {
        self.handle_timeout(now);
        self.counters_at = self.config.counters_every.map(|every| self.now + every);
    }

    /// The latest instant at which [`Schedule::poll_action`] may have
    /// something to do without a new event; `None` while a sync runs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.running.is_some() {
            return None;
        }
        let (_, due) = self.next_sync();
        let sync = due.max(self.sync_allowed_at());
        match self.counters_at {
            Some(t) if !self.changed => Some(sync.min(t)),
            _ => Some(sync),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(ms(500), Duration::from_secs(3));
        let delays: Vec<_> = (0..5).map(|_| b.next_delay()).collect();
        assert_eq!(
            delays,
            [ms(500), ms(1000), ms(2000), ms(3000), ms(3000)],
            "doubling, capped"
        );
        b.reset();
        assert_eq!(b.next_delay(), ms(500));
        // A cap below the start is raised to it.
        let mut tiny = Backoff::new(ms(500), ms(1));
        assert_eq!((tiny.next_delay(), tiny.next_delay()), (ms(500), ms(500)));
    }

    #[test]
    fn the_first_sync_is_full_and_immediate() {
        let t0 = Instant::now();
        let mut s = Schedule::new(ScheduleConfig::default(), t0);
        assert_eq!(s.poll_timeout(), Some(t0));
        assert_eq!(s.poll_action(), Some(Action::Sync(SyncKind::Full)));
        assert_eq!(s.poll_action(), None, "one sync at a time");
        assert_eq!(s.poll_timeout(), None, "nothing due while it runs");
        s.handle_outcome(
            t0 + ms(5),
            Outcome::Synced {
                failures: false,
                draining: false,
            },
        );
        // Next: the counters (10 s) before the full sync (30 s).
        assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    }

    #[test]
    fn a_source_not_ready_is_asked_again() {
        let t0 = Instant::now();
        let mut s = Schedule::new(ScheduleConfig::default(), t0);
        assert_eq!(s.poll_action(), Some(Action::Sync(SyncKind::Full)));
        s.handle_outcome(t0, Outcome::NotReady);
        assert_eq!(s.poll_action(), None);
        assert_eq!(s.poll_timeout(), Some(t0 + ms(200)));
        s.handle_timeout(t0 + ms(200));
        assert_eq!(s.poll_action(), Some(Action::Sync(SyncKind::Full)));
    }
}
