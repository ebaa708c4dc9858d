//! [`Core`]: the whole userspace IPVS state and its sans-IO API.
//!
//! This module ties the table, schedulers, persistence, connection table
//! and estimator together the way `ip_vs_core.c` does for each new
//! connection (`ip_vs_schedule`, `ip_vs_sched_persist`), and runs the
//! timers (`ip_vs_conn_expire`, the estimator) when the driver polls.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rvs_model::admin::{AdminError, Op, OpKind, errno};
use rvs_model::{
    Connection, DestinationStatus, Info, Protocol, ServiceFlags, ServiceKey, ServiceStatus,
    Timeouts,
};

use crate::conn::{Conn, ConnId, ConnTable, Kind, State, TimeoutTable};
use crate::estimator::TICK;
use crate::persist::{self, FTP_PORT};
use crate::rng::Rng;
use crate::sched::{Pool, Request};
use crate::table::{DestId, SvcId, Table};
use crate::{FlowId, Traffic};

/// IPVS version the core reports (1.2.1, like Linux).
const VERSION: u32 = 0x01_02_01;
/// Connection hash table size (`CONFIG_IP_VS_TAB_BITS=12`).
const CONN_TABLE_SIZE: u32 = 4096;
/// How long a template that still controls connections is kept again.
const TEMPLATE_GRACE: Duration = Duration::from_secs(60);
/// Period of the lblc/lblcr cache collection (`CHECK_EXPIRE_INTERVAL`).
const COLLECT_PERIOD: Duration = Duration::from_secs(60);
/// At most this many estimator ticks are replayed after a late poll.
const MAX_CATCH_UP: u32 = 64;
/// Port shown for an invalidated template.
const INVALID_PORT: u16 = 0xffff;

/// The whole userspace IPVS state: services, destinations, connections,
/// counters. Deterministic: time is passed in, randomness is seeded.
#[derive(Debug)]
pub struct Core {
    pub(crate) table: Table,
    pub(crate) conns: ConnTable,
    timeouts: TimeoutTable,
    est_next: Option<Instant>,
    collect_next: Option<Instant>,
    rng: Rng,
}

impl Default for Core {
    fn default() -> Core {
        Core::new()
    }
}

impl Core {
    /// An empty core with the kernel's default timeouts.
    pub fn new() -> Core {
        Core::with_seed(0x005e_ed1b_51b5)
    }

    /// An empty core whose random choices (the `twos` scheduler) come from
    /// `seed`.
    pub fn with_seed(seed: u64) -> Core {
        Core {
            table: Table::default(),
            conns: ConnTable::default(),
            timeouts: TimeoutTable::default(),
            est_next: None,
            collect_next: None,
            rng: Rng::new(seed),
        }
    }

    fn start_clock(&mut self, now: Instant) {
        if self.est_next.is_none() {
            self.est_next = Some(now + TICK);
        }
        if self.collect_next.is_none() {
            self.collect_next = Some(now + COLLECT_PERIOD);
        }
    }

    /// Applies one admin change, with the kernel's errnos on refusal.
    pub fn apply(&mut self, op: &Op, now: Instant) -> Result<(), AdminError> {
        self.start_clock(now);
        self.expire(now);
        self.table.apply(op)?;
        if let Op::SetTimeouts(t) = op {
            self.timeouts.set(t);
        }
        Ok(())
    }

    /// Version and connection-table size.
    pub fn info(&self) -> Info {
        Info {
            version: VERSION,
            conn_table_size: CONN_TABLE_SIZE,
        }
    }

    /// Every virtual service with its counters and rates, sorted by key.
    pub fn services(&self, _now: Instant) -> Vec<ServiceStatus> {
        self.table.service_statuses()
    }

    /// One virtual service; `ESRCH` when there is none.
    pub fn service(&self, key: &ServiceKey, _now: Instant) -> Result<ServiceStatus, AdminError> {
        self.table
            .id_of(key)
            .and_then(|id| self.table.service_status(id))
            .ok_or(AdminError::refused_for(
                OpKind::GetServices,
                errno::ESRCH,
                *key,
            ))
    }

    /// The destinations of a service in the kernel's list order (newest
    /// first); `ESRCH` when there is no such service.
    pub fn destinations(
        &self,
        key: &ServiceKey,
        _now: Instant,
    ) -> Result<Vec<DestinationStatus>, AdminError> {
        let id = self.table.id_of(key).ok_or(AdminError::refused_for(
            OpKind::GetDestinations,
            errno::ESRCH,
            *key,
        ))?;
        Ok(self.table.dest_statuses(id))
    }

    /// The timeouts `--set` changes.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts.get()
    }

    /// The connection table (`ipvsadm -Lc`), oldest entry first.
    pub fn connections(&self, now: Instant) -> Vec<Connection> {
        let mut ids: Vec<&ConnId> = self.conns.conns.keys().collect();
        ids.sort();
        ids.into_iter()
            .filter_map(|id| self.conns.conns.get(id))
            .map(|c| {
                let expires = u32::try_from(c.expires.saturating_duration_since(now).as_secs())
                    .unwrap_or(u32::MAX);
                let mut state = c.state.name();
                let (protocol, client, virtual_addr, destination) = match c.kind {
                    Kind::Flow(flow) => (flow.protocol, flow.client, flow.vip, c.daddr),
                    Kind::Template {
                        key,
                        valid,
                        assured,
                    } => {
                        if assured {
                            state = "ASSURED";
                        }
                        let (mut vip, mut daddr) = (key.vip, c.daddr);
                        if !valid {
                            vip.set_port(INVALID_PORT);
                            daddr.set_port(INVALID_PORT);
                        }
                        (key.protocol, SocketAddr::new(key.client_net, 0), vip, daddr)
                    }
                };
                Connection {
                    protocol: protocol.to_string(),
                    client,
                    virtual_addr,
                    destination,
                    state: state.to_owned(),
                    expires,
                    pe: None,
                }
            })
            .collect()
    }

    /// `true` when each datagram of this UDP flow is scheduled on its own
    /// (`-o`, one-packet scheduling): the driver then calls
    /// [`Core::schedule`] per datagram and keeps no flow state.
    pub fn is_one_packet(&self, flow: &FlowId) -> bool {
        flow.protocol == Protocol::Udp
            && self
                .table
                .lookup(flow.protocol, flow.vip)
                .and_then(|id| self.table.svcs.get(&id))
                .is_some_and(|s| s.cfg.flags.has(ServiceFlags::ONEPACKET))
    }

    /// Schedules a new flow: creates its connection entry (honouring
    /// persistence templates) and returns the real server, skipping
    /// destinations in `tried`. `None` when no destination is available
    /// or the flow matches no service.
    ///
    /// An existing entry for the same flow is reused, as the kernel does
    /// for a packet of a known connection, unless it is closing
    /// (`TIME_WAIT`/`CLOSE` without a template: the kernel's
    /// `conn_reuse_mode`) or its destination is in `tried`.
    pub fn schedule(
        &mut self,
        flow: &FlowId,
        tried: &[SocketAddr],
        now: Instant,
    ) -> Option<SocketAddr> {
        self.start_clock(now);
        self.expire(now);
        let svc_id = self.table.lookup(flow.protocol, flow.vip)?;
        if let Some(&cid) = self.conns.flows.get(flow) {
            if let Some(c) = self.conns.conns.get(&cid) {
                let closing =
                    c.control.is_none() && matches!(c.state, State::TimeWait | State::Close);
                let (daddr, timeout) = (c.daddr, c.timeout);
                if !closing && !tried.contains(&daddr) && self.table.dests.contains_key(&c.dest) {
                    self.conns.rearm(cid, timeout, now);
                    return Some(daddr);
                }
            }
            self.drop_conn(cid);
        }
        let svc = self.table.svcs.get(&svc_id)?;
        if svc.cfg.is_persistent() {
            self.schedule_persistent(svc_id, flow, tried, now)
        } else {
            if let ServiceKey::Addr { addr, .. } = svc.cfg.key
                && addr.port() != flow.vip.port()
            {
                // Port zero is only supported in persistent services.
                return None;
            }
            let dest = self.run_scheduler(svc_id, flow, tried, now)?;
            let dport = self.table.dests.get(&dest)?.cfg.addr.port();
            let port = if dport != 0 { dport } else { flow.vip.port() };
            self.open_conn(svc_id, flow, dest, port, None, now)
        }
    }

    fn run_scheduler(
        &mut self,
        svc_id: SvcId,
        flow: &FlowId,
        tried: &[SocketAddr],
        now: Instant,
    ) -> Option<DestId> {
        let Table { svcs, dests, .. } = &mut self.table;
        let svc = svcs.get_mut(&svc_id)?;
        let pool = Pool::new(&svc.dests, dests, tried);
        let mut req = Request {
            client: flow.client,
            vip: flow.vip,
            flags: svc.cfg.flags,
            now,
            rng: &mut self.rng,
        };
        svc.sched.schedule(&pool, &mut req)
    }

    /// `ip_vs_sched_persist`.
    fn schedule_persistent(
        &mut self,
        svc_id: SvcId,
        flow: &FlowId,
        tried: &[SocketAddr],
        now: Instant,
    ) -> Option<SocketAddr> {
        let svc = self.table.svcs.get(&svc_id)?;
        let svc_port = match svc.cfg.key {
            ServiceKey::Addr { addr, .. } => addr.port(),
            ServiceKey::Fwmark { .. } => 0,
        };
        let svc_timeout = Duration::from_secs(u64::from(svc.cfg.timeout));
        let key = persist::key(&svc.cfg, flow.protocol, flow.client.ip(), flow.vip);
        let mut template = None;
        if let Some(&tid) = self.conns.templates.get(&key) {
            let usable = self.conns.conns.get(&tid).and_then(|t| {
                let d = self.table.dests.get(&t.dest)?;
                (d.available() && !tried.contains(&d.cfg.addr)).then_some(t.dest)
            });
            match usable {
                Some(dest) => template = Some((tid, dest)),
                None => self.conns.invalidate(tid),
            }
        }
        let (tid, dest) = match template {
            Some(found) => found,
            None => {
                let dest = self.run_scheduler(svc_id, flow, tried, now)?;
                let daddr = self.table.dests.get(&dest)?.cfg.addr;
                let dport = if flow.vip.port() == svc_port && svc_port != FTP_PORT {
                    daddr.port()
                } else {
                    0
                };
                if let Some(d) = self.table.dests.get_mut(&dest) {
                    d.bind(true);
                }
                let tid = self.conns.insert(Conn {
                    kind: Kind::Template {
                        key,
                        valid: true,
                        assured: false,
                    },
                    dest,
                    daddr: SocketAddr::new(daddr.ip(), dport),
                    state: State::Template,
                    timeout: svc_timeout,
                    expires: now + svc_timeout,
                    inactive: false,
                    control: None,
                    n_control: 0,
                });
                (tid, dest)
            }
        };
        let dport = self.table.dests.get(&dest)?.cfg.addr.port();
        let port = if flow.vip.port() == svc_port && dport != 0 {
            dport
        } else {
            flow.vip.port()
        };
        let chosen = self.open_conn(svc_id, flow, dest, port, Some(tid), now);
        // `ip_vs_conn_put(ct)`: each use re-arms the template.
        let timeout = self.conns.conns.get(&tid).map(|t| t.timeout);
        if let Some(timeout) = timeout {
            self.conns.rearm(tid, timeout, now);
        }
        chosen
    }

    /// `ip_vs_conn_new` + `ip_vs_conn_stats` for a flow.
    fn open_conn(
        &mut self,
        svc_id: SvcId,
        flow: &FlowId,
        dest: DestId,
        port: u16,
        control: Option<ConnId>,
        now: Instant,
    ) -> Option<SocketAddr> {
        let one_packet = flow.protocol == Protocol::Udp
            && self
                .table
                .svcs
                .get(&svc_id)
                .is_some_and(|s| s.cfg.flags.has(ServiceFlags::ONEPACKET));
        let d = self.table.dests.get_mut(&dest)?;
        let daddr = SocketAddr::new(d.cfg.addr.ip(), port);
        d.bind(false);
        d.stats.conn();
        if let Some(svc) = self.table.svcs.get_mut(&svc_id) {
            svc.stats.conn();
        }
        if one_packet {
            // Expired as soon as its packet is through.
            d.unbind(false, true);
            return Some(daddr);
        }
        let state = match flow.protocol {
            Protocol::Udp => State::Udp,
            Protocol::Tcp | Protocol::Sctp => State::SynRecv,
        };
        let timeout = self.timeouts.of(state);
        self.conns.insert(Conn {
            kind: Kind::Flow(*flow),
            dest,
            daddr,
            state,
            timeout,
            expires: now + timeout,
            inactive: true,
            control,
            n_control: 0,
        });
        if let Some(t) = control.and_then(|t| self.conns.conns.get_mut(&t)) {
            t.n_control += 1;
        }
        Some(daddr)
    }

    /// Removes an entry and unbinds it (`ip_vs_conn_expire`'s end).
    fn drop_conn(&mut self, id: ConnId) {
        let Some(c) = self.conns.remove(id) else {
            return;
        };
        let template = matches!(c.kind, Kind::Template { .. });
        if let Some(d) = self.table.dests.get_mut(&c.dest) {
            d.unbind(template, c.inactive);
        }
        self.table.release(c.dest);
        if let Some(t) = c.control.and_then(|t| self.conns.conns.get_mut(&t)) {
            t.n_control = t.n_control.saturating_sub(1);
        }
    }

    /// Runs the connection timers due by `now`.
    fn expire(&mut self, now: Instant) {
        while let Some((at, id)) = self.conns.due(now) {
            let controls = self.conns.conns.get(&id).map(|c| c.n_control > 0);
            match controls {
                Some(true) => self.conns.rearm(id, TEMPLATE_GRACE, at),
                _ => self.drop_conn(id),
            }
        }
    }

    /// The entry of `flow` if it forwards to `dest`.
    fn conn_of(&self, flow: &FlowId, dest: SocketAddr) -> Option<ConnId> {
        let id = *self.conns.flows.get(flow)?;
        (self.conns.conns.get(&id)?.daddr == dest).then_some(id)
    }

    /// Moves an entry to a new state, updating active/inactive counts and
    /// re-arming its timer with the state's timeout.
    fn set_state(&mut self, id: ConnId, state: State, now: Instant) {
        let Some(c) = self.conns.conns.get_mut(&id) else {
            return;
        };
        if c.state == State::Udp || c.state == State::Template {
            let timeout = c.timeout;
            self.conns.rearm(id, timeout, now);
            return;
        }
        let active = state == State::Established;
        if active == c.inactive {
            c.inactive = !active;
            if let Some(d) = self.table.dests.get_mut(&c.dest) {
                d.set_active(active);
            }
        }
        let assure = (active && c.state != state).then_some(c.control).flatten();
        c.state = state;
        let timeout = self.timeouts.of(state);
        self.conns.rearm(id, timeout, now);
        if let Some(t) = assure {
            self.assure(t);
        }
    }

    /// `ip_vs_control_assure_ct`: the template now controls an
    /// established (or answered) connection.
    fn assure(&mut self, template: ConnId) {
        if let Some(t) = self.conns.conns.get_mut(&template)
            && let Kind::Template { assured, .. } = &mut t.kind
        {
            *assured = true;
        }
    }

    /// Connecting to `dest` failed: the entry closes (`CLOSE`, 10 s). The
    /// driver may then call [`Core::schedule`] again with `dest` in
    /// `tried`.
    pub fn connect_failed(&mut self, flow: &FlowId, dest: SocketAddr, now: Instant) {
        self.expire(now);
        if let Some(id) = self.conn_of(flow, dest) {
            self.set_state(id, State::Close, now);
        }
    }

    /// The connection with `dest` is established: the entry becomes
    /// active (`ESTABLISHED`, the `tcp` timeout). UDP entries only have
    /// their timer restarted.
    pub fn opened(&mut self, flow: &FlowId, dest: SocketAddr, now: Instant) {
        self.expire(now);
        if let Some(id) = self.conn_of(flow, dest) {
            self.set_state(id, State::Established, now);
        }
    }

    /// One side sent its FIN: from the client the entry goes to
    /// `CLOSE_WAIT` (60 s), from the real server to `FIN_WAIT` (the
    /// `tcpfin` timeout); the second FIN leads to `TIME_WAIT`.
    pub fn half_closed(&mut self, flow: &FlowId, dest: SocketAddr, by_client: bool, now: Instant) {
        self.expire(now);
        let Some(id) = self.conn_of(flow, dest) else {
            return;
        };
        let Some(state) = self.conns.conns.get(&id).map(|c| c.state) else {
            return;
        };
        let next = match (state, by_client) {
            (State::FinWait, true) | (State::CloseWait, false) => State::TimeWait,
            (State::FinWait | State::CloseWait | State::TimeWait | State::Close, _) => state,
            (_, true) => State::CloseWait,
            (_, false) => State::FinWait,
        };
        self.set_state(id, next, now);
    }

    /// Traffic moved on the flow: counters of the destination and its
    /// service grow, and the entry's timer restarts. Traffic of a flow
    /// without entry (one-packet scheduling, or an entry already expired)
    /// is counted against `dest` if the service still has it.
    pub fn traffic(&mut self, flow: &FlowId, dest: SocketAddr, delta: &Traffic, now: Instant) {
        self.expire(now);
        let did = match self.conn_of(flow, dest) {
            Some(id) => {
                let (did, timeout, control) = match self.conns.conns.get(&id) {
                    Some(c) => (c.dest, c.timeout, c.control),
                    None => return,
                };
                self.conns.rearm(id, timeout, now);
                // A UDP answer assures the template (`udp_state_transition`).
                if flow.protocol == Protocol::Udp
                    && delta.out_packets > 0
                    && let Some(t) = control
                {
                    self.assure(t);
                }
                Some(did)
            }
            None => self
                .table
                .lookup(flow.protocol, flow.vip)
                .and_then(|svc| self.table.dest_of(svc, dest)),
        };
        let Some(d) = did.and_then(|did| self.table.dests.get_mut(&did)) else {
            return;
        };
        let Some(svc_id) = d.svc else {
            return;
        };
        d.stats.traffic(delta);
        if let Some(svc) = self.table.svcs.get_mut(&svc_id) {
            svc.stats.traffic(delta);
        }
    }

    /// The connection is over: a TCP entry goes to `TIME_WAIT` (120 s, as
    /// after both FINs in the kernel) and becomes inactive; a UDP entry is
    /// left to expire by the `udp` timeout.
    pub fn closed(&mut self, flow: &FlowId, dest: SocketAddr, now: Instant) {
        self.expire(now);
        if let Some(id) = self.conn_of(flow, dest)
            && self
                .conns
                .conns
                .get(&id)
                .is_some_and(|c| c.state != State::Udp)
        {
            self.set_state(id, State::TimeWait, now);
        }
    }

    /// Runs what is due by `now`: connection and template expiry, the
    /// rate estimator (every 2 s) and the lblc/lblcr cache collection.
    pub fn poll(&mut self, now: Instant) {
        self.start_clock(now);
        self.expire(now);
        let mut ticks = 0;
        while let Some(next) = self.est_next
            && next <= now
        {
            self.table.tick();
            ticks += 1;
            self.est_next = Some(if ticks >= MAX_CATCH_UP {
                now + TICK
            } else {
                next + TICK
            });
        }
        if let Some(next) = self.collect_next
            && next <= now
        {
            for svc in self.table.svcs.values_mut() {
                svc.sched.collect(now);
            }
            self.collect_next = Some(now + COLLECT_PERIOD);
        }
    }

    /// When [`Core::poll`] should next be called.
    pub fn next_timeout(&self) -> Option<Instant> {
        [self.conns.next_expiry(), self.est_next, self.collect_next]
            .into_iter()
            .flatten()
            .min()
    }

    /// The (protocol, address) pairs the forwarder must listen on: TCP and
    /// UDP services with a port. Firewall-mark, SCTP and port-zero
    /// services cannot be served by a userspace forwarder and are skipped.
    pub fn listeners(&self) -> Vec<(Protocol, SocketAddr)> {
        self.table.listeners()
    }
}
