//! The real sync loop ([`Runner`]) on a simulated clock: source events at
//! chosen instants, the real [`Syncer`], the userspace IPVS core (the
//! kernel's semantics, connection timeouts included) as the dataplane,
//! and a clock that jumps to the loop's next timeout instead of sleeping.
//! Minutes of timers run in milliseconds, so the tests pin the loop's
//! timing exactly: min-sync-period coalescing, the full-sync period, the
//! order of a change and a due full sync, drain re-checks, backoff after
//! failures, a source that is not ready, counter reads and stopping.

#![allow(clippy::unwrap_used)] // test code

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rvs_lb::FlowId;
use rvs_model::admin::{Admin, AdminError, Op, OpKind, errno};
use rvs_model::{
    Connection, Daemon, DestinationStatus, Info, Protocol, ServiceKey, ServiceStatus, Timeouts,
};
use rvs_proxy::cluster::{
    Changes, EndpointInfo, NodeInfo, ObjectName, ServiceInfo, ServicePort, SliceInfo, SlicePort,
};
use rvs_proxy::run::{Clock, NodeReport, RunOptions, Runner, SyncObserver};
use rvs_proxy::schedule::SyncKind;
use rvs_proxy::source::{ChangeSource, SourceError};
use rvs_proxy::sync::{NoBinder, SyncReport, Syncer};
use rvs_proxy::{ClusterState, ProxyConfig};
use rvs_testrig::sim::{CoreAdmin, SimClock};

/// What the loop did, with the simulated time since the start.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    /// A sync ran (`ok`: nothing refused; `None` report: failed as a whole).
    Sync { kind: SyncKind, ok: bool },
    /// Counters were read.
    Counters,
    /// A change was queued.
    Queued,
}

type Log = Rc<RefCell<Vec<(Duration, Seen)>>>;

struct Time(SimClock);

impl Clock for Time {
    fn now(&self) -> Instant {
        self.0.now()
    }
}

/// A source whose changes happen at chosen instants.
struct SimSource {
    clock: SimClock,
    start: Instant,
    /// Changes still to come: when, and the cluster from then on.
    events: VecDeque<(Duration, ClusterState)>,
    current: ClusterState,
    last_loaded: ClusterState,
    /// The view is incomplete until then.
    ready_at: Duration,
    /// The loop is stopped when the clock gets here.
    end: Duration,
    stop: Arc<AtomicBool>,
    /// Waits in a row that let no time pass (a spinning loop fails the
    /// test instead of hanging it).
    idle_spins: u32,
}

impl ChangeSource for SimSource {
    fn wait_change(&mut self, timeout: Duration) -> bool {
        self.idle_spins = if timeout.is_zero() {
            self.idle_spins + 1
        } else {
            0
        };
        assert!(
            self.idle_spins < 1000,
            "the loop spins at {:?} without waiting",
            self.clock.now() - self.start
        );
        let until = self.clock.now() + timeout;
        if let Some((at, _)) = self.events.front()
            && self.start + *at <= until
        {
            let (at, cluster) = self.events.pop_front().unwrap();
            // A change that came during a long sync is seen at its end:
            // the clock never goes back.
            self.clock.set((self.start + at).max(self.clock.now()));
            self.current = cluster;
            return true;
        }
        self.clock.set(until);
        if until >= self.start + self.end {
            self.stop.store(true, Ordering::Relaxed);
        }
        false
    }

    fn load(&mut self) -> Result<Option<(&ClusterState, Changes)>, SourceError> {
        if self.clock.now() < self.start + self.ready_at {
            return Ok(None);
        }
        let changes = self.current.changes_since(&self.last_loaded);
        self.last_loaded = self.current.clone();
        Ok(Some((&self.current, changes)))
    }
}

struct Recorder {
    clock: SimClock,
    start: Instant,
    log: Log,
}

impl Recorder {
    fn push(&self, seen: Seen) {
        let t = self.clock.now() - self.start;
        let mut log = self.log.borrow_mut();
        // A loop that acts again and again without time passing fails
        // the test instead of hanging it.
        // Nor one that syncs forever without looking at its source (the
        // stop comes from the source): no test needs this many entries.
        assert!(
            log.len() < 10_000,
            "the loop never returns to its source: {:?}",
            &log[log.len() - 5..]
        );
        let same = log.iter().rev().take_while(|(at, _)| *at == t).count();
        assert!(
            same < 100,
            "the loop spins at {t:?}: {:?}",
            &log[log.len() - 5..]
        );
        log.push((t, seen));
    }
}

impl SyncObserver for Recorder {
    fn queued(&mut self) {
        self.push(Seen::Queued);
    }
    fn synced(
        &mut self,
        kind: SyncKind,
        _elapsed: Duration,
        report: Option<&SyncReport>,
        node: &NodeReport,
        _view: Option<(&ClusterState, &ProxyConfig)>,
    ) {
        let ok = report.is_some_and(|r| r.failed == 0) && node.failures == 0;
        self.push(Seen::Sync { kind, ok });
    }
    fn read_counters(&mut self, admin: &mut dyn Admin) {
        admin.services().unwrap();
        self.push(Seen::Counters);
    }
}

/// Something done to the core at a simulated instant.
type Step = Box<dyn FnMut(&mut CoreAdmin)>;

/// The core, refusing every change while `refuse` holds, and every read
/// of the service list while `unreadable` holds (instants since start);
/// `script` steps run at the first call at or after their instant.
struct Flaky {
    inner: CoreAdmin,
    clock: SimClock,
    start: Instant,
    refuse: Option<(Duration, Duration)>,
    unreadable: Option<(Duration, Duration)>,
    script: Vec<(Duration, Step)>,
    /// Simulated time each read of a service's real servers takes (a
    /// full sync reads every service's; IPVS under load is that slow).
    read_cost: Duration,
}

impl Flaky {
    fn within(&mut self, window: Option<(Duration, Duration)>) -> bool {
        let t = self.clock.now() - self.start;
        let mut i = 0;
        while i < self.script.len() {
            if self.script[i].0 <= t {
                let (_, mut step) = self.script.remove(i);
                step(&mut self.inner);
            } else {
                i += 1;
            }
        }
        window.is_some_and(|(from, to)| t >= from && t < to)
    }
}

impl Admin for Flaky {
    fn info(&mut self) -> Result<Info, AdminError> {
        self.inner.info()
    }
    fn services(&mut self) -> Result<Vec<ServiceStatus>, AdminError> {
        if self.within(self.unreadable) {
            return Err(AdminError::Transport {
                op: OpKind::GetServices,
                context: "simulated".into(),
                source: std::io::Error::other("unreadable"),
            });
        }
        self.inner.services()
    }
    fn service(&mut self, key: &ServiceKey) -> Result<ServiceStatus, AdminError> {
        self.within(None);
        self.inner.service(key)
    }
    fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<DestinationStatus>, AdminError> {
        self.clock.set(self.clock.now() + self.read_cost);
        self.within(None);
        self.inner.destinations(key)
    }
    fn timeouts(&mut self) -> Result<Timeouts, AdminError> {
        self.inner.timeouts()
    }
    fn daemons(&mut self) -> Result<Vec<Daemon>, AdminError> {
        self.inner.daemons()
    }
    fn connections(&mut self) -> Result<Vec<Connection>, AdminError> {
        self.within(None);
        self.inner.connections()
    }
    fn apply(&mut self, op: &Op) -> Result<(), AdminError> {
        if self.within(self.refuse) {
            return Err(AdminError::refusal_of(op, errno::ENOMEM));
        }
        self.inner.apply(op)
    }
}

fn name(s: &str) -> ObjectName {
    ObjectName::new("default", s)
}

/// One TCP Service `web` on 10.96.0.1:80 with these endpoints (port 8080),
/// plus `extra` more Services with one endpoint each.
fn cluster(endpoints: &[u8], extra: u8) -> ClusterState {
    let mut c = ClusterState {
        node: Some(NodeInfo {
            name: "node-a".into(),
            addresses: vec!["192.168.1.10".parse().unwrap()],
            ..NodeInfo::default()
        }),
        ..ClusterState::default()
    };
    let mut add = |svc: String, vip: IpAddr, eps: &[u8]| {
        let port = ServicePort {
            name: "http".into(),
            protocol: Protocol::Tcp,
            port: 80,
            node_port: None,
        };
        c.services.insert(
            name(&svc),
            ServiceInfo::new(name(&svc), vec![vip], vec![port]),
        );
        c.slices.insert(
            name(&format!("{svc}-1")),
            SliceInfo {
                service: name(&svc),
                ports: vec![SlicePort {
                    name: "http".into(),
                    protocol: Protocol::Tcp,
                    port: 8080,
                }],
                endpoints: eps
                    .iter()
                    .map(|e| EndpointInfo::ready(IpAddr::from([10, 244, 0, *e])))
                    .collect(),
            },
        );
    };
    add("web".into(), IpAddr::from([10, 96, 0, 1]), endpoints);
    for i in 0..extra {
        add(
            format!("s{i}"),
            IpAddr::from([10, 96, 1, i + 1]),
            &[100 + i],
        );
    }
    c
}

fn web() -> ServiceKey {
    ServiceKey::tcp("10.96.0.1:80".parse().unwrap())
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// One simulated run: the loop from 0 to `end`, with `events`.
struct Sim {
    clock: SimClock,
    start: Instant,
    options: RunOptions,
    initial: ClusterState,
    events: Vec<(Duration, ClusterState)>,
    ready_at: Duration,
    end: Duration,
    admin: Option<Flaky>,
}

impl Sim {
    fn new(initial: ClusterState, end: f64) -> Sim {
        let start = Instant::now();
        let clock = SimClock::new(start);
        let admin = Flaky {
            inner: CoreAdmin::new(clock.clone()),
            clock: clock.clone(),
            start,
            refuse: None,
            unreadable: None,
            script: Vec::new(),
            read_cost: Duration::ZERO,
        };
        Sim {
            clock,
            start,
            options: RunOptions::default(),
            initial,
            events: Vec::new(),
            ready_at: Duration::ZERO,
            end: secs(end),
            admin: Some(admin),
        }
    }

    fn at(mut self, t: f64, cluster: ClusterState) -> Sim {
        self.events.push((secs(t), cluster));
        self
    }

    fn admin(&mut self) -> &mut Flaky {
        self.admin.as_mut().unwrap()
    }

    /// Runs the loop; returns what it did and the dataplane.
    fn run(&mut self) -> (Vec<(Duration, Seen)>, Flaky) {
        let stop = Arc::new(AtomicBool::new(false));
        let mut source = SimSource {
            clock: self.clock.clone(),
            start: self.start,
            events: self.events.drain(..).collect(),
            current: self.initial.clone(),
            last_loaded: ClusterState::default(),
            ready_at: self.ready_at,
            end: self.end,
            stop: Arc::clone(&stop),
            idle_spins: 0,
        };
        let log: Log = Rc::default();
        let mut recorder = Recorder {
            clock: self.clock.clone(),
            start: self.start,
            log: Rc::clone(&log),
        };
        let config = ProxyConfig {
            node_name: "node-a".into(),
            min_sync_period: self.options.schedule.min_period,
            sync_period: self.options.schedule.full_period,
            ..ProxyConfig::default()
        };
        let mut syncer = Syncer::new(self.admin.take().unwrap(), NoBinder::default(), config);
        Runner {
            syncer: &mut syncer,
            source: &mut source,
            node: None,
            observer: Some(&mut recorder),
            clock: &Time(self.clock.clone()),
            options: self.options,
        }
        .run(&stop)
        .unwrap();
        let log = log.borrow().clone();
        (log, syncer.admin)
    }
}

/// The syncs of a log, as (seconds since start, kind, ok).
fn syncs(log: &[(Duration, Seen)]) -> Vec<(f64, SyncKind, bool)> {
    log.iter()
        .filter_map(|(t, s)| match s {
            Seen::Sync { kind, ok } => Some((t.as_secs_f64(), *kind, *ok)),
            _ => None,
        })
        .collect()
}

fn real_servers(admin: &mut Flaky, key: &ServiceKey) -> Vec<(SocketAddr, i32)> {
    let mut out: Vec<_> = admin
        .destinations(key)
        .unwrap()
        .into_iter()
        .map(|d| (d.destination.addr, d.destination.weight))
        .collect();
    out.sort();
    out
}

use SyncKind::{Full, Partial};

#[test]
fn the_first_sync_is_full_and_later_changes_are_partial_and_immediate() {
    let mut sim = Sim::new(cluster(&[1], 0), 5.0)
        .at(1.0, cluster(&[1, 2], 0))
        .at(2.5, cluster(&[2], 0));
    let (log, mut admin) = sim.run();
    assert_eq!(
        syncs(&log),
        [
            (0.0, Full, true),
            (1.0, Partial, true),
            (2.5, Partial, true)
        ]
    );
    assert_eq!(
        real_servers(&mut admin, &web()),
        [("10.244.0.2:8080".parse::<SocketAddr>().unwrap(), 1)]
    );
}

#[test]
fn changes_within_the_min_sync_period_are_coalesced_into_one_sync() {
    let mut sim = Sim::new(cluster(&[1], 0), 6.0)
        .at(0.1, cluster(&[1, 2], 0))
        .at(0.2, cluster(&[1, 2, 3], 0))
        .at(0.3, cluster(&[1, 2, 3, 4], 0))
        .at(2.5, cluster(&[4], 0));
    sim.options.schedule.min_period = secs(1.0);
    let (log, mut admin) = sim.run();
    // Three changes, one sync a minimum period after the first; the next
    // change (after the period) goes at once.
    assert_eq!(
        syncs(&log),
        [
            (0.0, Full, true),
            (1.0, Partial, true),
            (2.5, Partial, true)
        ]
    );
    let queued = log.iter().filter(|(_, s)| *s == Seen::Queued).count();
    assert_eq!(queued, 4);
    assert_eq!(real_servers(&mut admin, &web()).len(), 1);
}

#[test]
fn full_syncs_come_every_period_and_a_change_due_with_one_goes_first() {
    let mut sim = Sim::new(cluster(&[1], 0), 95.0).at(60.0, cluster(&[1, 2], 0));
    sim.options.schedule.counters_every = None;
    let (log, _) = sim.run();
    assert_eq!(
        syncs(&log),
        [
            (0.0, Full, true),
            (30.0, Full, true),
            // The change arrives as the full sync falls due: it is synced
            // on its own first, then the full sync runs.
            (60.0, Partial, true),
            (60.0, Full, true),
            (90.0, Full, true),
        ]
    );
}

#[test]
fn a_change_during_a_full_sync_longer_than_the_period_goes_before_the_next_full_sync() {
    // Reading each service's real servers takes 10 s, so a full sync of
    // these 4 Services outlasts the 30 s period and the next one is due
    // when it ends (seen at 10k Services under TCG). The change made at
    // 10 s must not wait for that one as well.
    let mut sim = Sim::new(cluster(&[1], 3), 100.0).at(10.0, cluster(&[1, 2], 3));
    sim.options.schedule.counters_every = None;
    sim.admin().read_cost = secs(10.0);
    let (log, mut admin) = sim.run();
    let syncs = syncs(&log);
    assert_eq!(syncs[0].1, Full, "{syncs:?}");
    assert_eq!(syncs[1].1, Partial, "the change goes next: {syncs:?}");
    assert_eq!(syncs[2].1, Full, "then the due full sync: {syncs:?}");
    let partial_end = syncs[1].0;
    assert!(
        partial_end < syncs[0].0 + 30.0,
        "the change is synced right after the full sync it came during: {syncs:?}"
    );
    assert_eq!(real_servers(&mut admin, &web()).len(), 2);
}

#[test]
fn draining_real_servers_are_rechecked_every_second_until_their_connections_expire() {
    // A first run leaves the service with two real servers, and a client
    // connection to each.
    let mut first = Sim::new(cluster(&[1, 2], 0), 1.0);
    first.options.once = true;
    let (_, mut admin) = first.run();
    let vip: SocketAddr = "10.96.0.1:80".parse().unwrap();
    let gone: SocketAddr = "10.244.0.2:8080".parse().unwrap();
    let mut to_gone = None;
    for port in 40000..40002 {
        let flow = FlowId {
            protocol: Protocol::Tcp,
            client: SocketAddr::from(([192, 168, 9, 9], port)),
            vip,
        };
        if admin.inner.connect(&flow) == Some(gone) {
            to_gone = Some(flow);
        }
    }
    let flow = to_gone.expect("round robin reached both servers");
    // Its client closes at 5 s; the entry stays inactive for TIME_WAIT
    // (120 s), and only then may the server be deleted.
    admin.script.push((
        secs(5.0),
        Box::new(move |core: &mut CoreAdmin| core.close(&flow, gone)),
    ));
    // The next run adopts that state; endpoint .2 goes away at 1 s.
    let mut sim = Sim::new(cluster(&[1, 2], 0), 200.0).at(1.0, cluster(&[1], 0));
    sim.clock = first.clock.clone();
    sim.start = first.start;
    sim.admin = Some(admin);
    sim.options.schedule.counters_every = None;
    sim.options.schedule.full_period = Duration::from_secs(3600);
    let (log, mut admin) = sim.run();
    let got = syncs(&log);
    assert_eq!(got[0], (0.0, Full, true));
    let partial: Vec<f64> = got[1..]
        .iter()
        .map(|(t, k, _)| {
            assert_eq!(*k, Partial);
            *t
        })
        .collect();
    // Weight 0 at 1 s, then a re-check every second while it drains, and
    // the deletion at the check when TIME_WAIT ends (5 s + 120 s).
    assert_eq!(partial[0], 1.0);
    assert!(
        partial.windows(2).all(|w| (w[1] - w[0] - 1.0).abs() < 1e-9),
        "{partial:?}"
    );
    assert_eq!(*partial.last().unwrap(), 125.0, "{partial:?}");
    assert_eq!(
        real_servers(&mut admin, &web()),
        [("10.244.0.1:8080".parse::<SocketAddr>().unwrap(), 1)]
    );
}

#[test]
fn refused_changes_are_retried_with_a_doubling_backoff_that_resets() {
    let mut sim = Sim::new(cluster(&[1], 0), 40.0).at(20.0, cluster(&[1, 2], 0));
    sim.options.schedule.counters_every = None;
    sim.options.schedule.full_period = Duration::from_secs(3600);
    // Every change is refused for the first 10 s, and again from 20 s to
    // 20.2 s.
    sim.admin().refuse = Some((secs(0.0), secs(10.0)));
    let (log, mut admin) = sim.run();
    let got = syncs(&log);
    assert_eq!(
        &got[..6],
        [
            (0.0, Full, false),
            (0.5, Full, false),
            (1.5, Full, false),
            (3.5, Full, false),
            (7.5, Full, false),
            // 8 s later the dataplane takes it.
            (15.5, Full, true),
        ]
    );
    assert_eq!(got[6], (20.0, Partial, true));
    assert_eq!(got.len(), 7, "{got:?}");
    assert_eq!(real_servers(&mut admin, &web()).len(), 2);
}

#[test]
fn a_dataplane_that_cannot_be_read_is_retried_with_backoff_not_in_a_loop() {
    let mut sim = Sim::new(cluster(&[1], 0), 20.0);
    sim.options.schedule.counters_every = None;
    sim.admin().unreadable = Some((secs(0.0), secs(5.0)));
    let (log, mut admin) = sim.run();
    let got = syncs(&log);
    // Each failure waits twice as long as the one before (the loop used
    // to retry a failed full sync at every pass, ignoring the backoff,
    // because the missed full sync stayed due).
    assert_eq!(
        got,
        [
            (0.0, Full, false),
            (0.5, Full, false),
            (1.5, Full, false),
            (3.5, Full, false),
            (7.5, Full, true),
        ]
    );
    assert_eq!(real_servers(&mut admin, &web()).len(), 1);
}

#[test]
fn a_source_without_a_complete_view_is_not_synced_until_it_has_one() {
    let mut sim = Sim::new(cluster(&[1], 3), 10.0);
    sim.ready_at = secs(3.0);
    sim.options.schedule.counters_every = None;
    let (log, mut admin) = sim.run();
    let got = syncs(&log);
    // Asked again every 200 ms; the first sync is a full one.
    assert_eq!(got, [(3.0, Full, true)]);
    assert_eq!(admin.services().unwrap().len(), 4);
}

#[test]
fn counters_are_read_every_10s_but_not_while_a_change_waits() {
    let mut sim = Sim::new(cluster(&[1], 0), 35.0).at(19.5, cluster(&[1, 2], 0));
    sim.options.schedule.min_period = secs(1.0);
    sim.options.schedule.full_period = Duration::from_secs(3600);
    // A sync at 19 s keeps the change of 19.5 s waiting until 20 s.
    sim.events.insert(0, (secs(19.0), cluster(&[1, 3], 0)));
    let (log, _) = sim.run();
    let counters: Vec<f64> = log
        .iter()
        .filter(|(_, s)| *s == Seen::Counters)
        .map(|(t, _)| t.as_secs_f64())
        .collect();
    assert_eq!(counters, [10.0, 20.0, 30.0]);
    let order: Vec<&Seen> = log
        .iter()
        .filter(|(t, _)| t.as_secs_f64() == 20.0)
        .map(|(_, s)| s)
        .collect();
    assert_eq!(
        order,
        [
            &Seen::Sync {
                kind: Partial,
                ok: true
            },
            &Seen::Counters
        ]
    );
}

#[test]
fn once_returns_after_the_first_sync_and_stop_ends_the_loop() {
    let mut sim = Sim::new(cluster(&[1], 0), 3600.0);
    sim.options.once = true;
    let (log, _) = sim.run();
    assert_eq!(syncs(&log), [(0.0, Full, true)]);
    assert_eq!(sim.clock.now(), sim.start, "no time passed");
}
