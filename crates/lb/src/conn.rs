//! The connection table: entries, protocol states and their timeouts.
//!
//! Kernel behaviour reproduced (`ip_vs_conn.c`, `ip_vs_proto_tcp.c`,
//! `ip_vs_proto_udp.c`):
//!
//! * an entry is keyed by `<protocol, client, virtual>`; a new TCP entry
//!   is inactive in `SYN_RECV` (60 s) until the connection is established
//!   (`ESTABLISHED`, active, the `tcp` timeout); a client FIN leads to
//!   `CLOSE_WAIT` (60 s), a server FIN to `FIN_WAIT` (the `tcpfin`
//!   timeout), both to `TIME_WAIT` (120 s); a reset or refused connect
//!   to `CLOSE` (10 s). UDP entries are always inactive in state `UDP`
//!   (the `udp` timeout). Templates show state `NONE` until a connection
//!   they control is established (TCP) or answered (UDP), then `ASSURED`
//!   (`ip_vs_control_assure_ct`);
//! * every packet restarts the entry's timer with the state's timeout;
//! * `--set tcp tcpfin udp` changes the `ESTABLISHED`, `FIN_WAIT` and UDP
//!   timeouts (defaults 900, 120, 300 s), as `ip_vs_set_timeout` does;
//!   other TCP states keep the kernel's fixed defaults;
//! * one-packet UDP scheduling (`-o`) creates no entry: each datagram is
//!   scheduled on its own.

use std::collections::BTreeSet;

use crate::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rvs_model::Timeouts;

use crate::FlowId;
use crate::persist::TemplateKey;
use crate::table::DestId;

/// TCP states of IPVS (`IP_VS_TCP_S_*`), and the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// A persistence template (`NONE`).
    Template,
    SynRecv,
    Established,
    FinWait,
    CloseWait,
    TimeWait,
    Close,
    /// UDP (`UDP`).
    Udp,
}

impl State {
    pub(crate) fn name(self) -> &'static str {
        match self {
            State::Template => "NONE",
            State::SynRecv => "SYN_RECV",
            State::Established => "ESTABLISHED",
            State::FinWait => "FIN_WAIT",
            State::CloseWait => "CLOSE_WAIT",
            State::TimeWait => "TIME_WAIT",
            State::Close => "CLOSE",
            State::Udp => "UDP",
        }
    }
}

/// The timeouts in force.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TimeoutTable {
    pub(crate) tcp: Duration,
    pub(crate) tcp_fin: Duration,
    pub(crate) udp: Duration,
}

impl Default for TimeoutTable {
    fn default() -> TimeoutTable {
        TimeoutTable {
            tcp: Duration::from_secs(15 * 60),
            tcp_fin: Duration::from_secs(2 * 60),
            udp: Duration::from_secs(5 * 60),
        }
    }
}

impl TimeoutTable {
    /// The timeout a state arms.
    pub(crate) fn of(&self, state: State) -> Duration {
        match state {
            State::Template => Duration::from_secs(0),
            State::SynRecv => Duration::from_secs(60),
            State::Established => self.tcp,
            State::FinWait => self.tcp_fin,
            State::CloseWait => Duration::from_secs(60),
            State::TimeWait => Duration::from_secs(2 * 60),
            State::Close => Duration::from_secs(10),
            State::Udp => self.udp,
        }
    }

    /// `--set`: non-zero values replace the current ones.
    pub(crate) fn set(&mut self, t: &Timeouts) {
        if t.tcp != 0 {
            self.tcp = Duration::from_secs(u64::from(t.tcp));
        }
        if t.tcp_fin != 0 {
            self.tcp_fin = Duration::from_secs(u64::from(t.tcp_fin));
        }
        if t.udp != 0 {
            self.udp = Duration::from_secs(u64::from(t.udp));
        }
    }

    pub(crate) fn get(&self) -> Timeouts {
        let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        Timeouts {
            tcp: secs(self.tcp),
            tcp_fin: secs(self.tcp_fin),
            udp: secs(self.udp),
        }
    }
}

/// Identifies an entry (never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ConnId(u64);

/// What an entry is.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Kind {
    Flow(FlowId),
    Template {
        key: TemplateKey,
        /// Cleared when invalidated (ports shown as 65535).
        valid: bool,
        /// `IP_VS_CTPL_S_ASSURED`: a connection it controls was
        /// established (TCP) or answered (UDP); shown as `ASSURED`
        /// instead of `NONE`.
        assured: bool,
    },
}

/// One entry.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) kind: Kind,
    pub(crate) dest: DestId,
    /// The real server address and port the entry forwards to.
    pub(crate) daddr: SocketAddr,
    pub(crate) state: State,
    pub(crate) timeout: Duration,
    pub(crate) expires: Instant,
    /// Counted as inactive (`IP_VS_CONN_F_INACTIVE`).
    pub(crate) inactive: bool,
    /// The template controlling this entry.
    pub(crate) control: Option<ConnId>,
    /// Entries this template controls.
    pub(crate) n_control: u32,
}

/// Entries with their indexes and timers.
#[derive(Debug, Default)]
pub(crate) struct ConnTable {
    pub(crate) conns: HashMap<ConnId, Conn>,
    pub(crate) flows: HashMap<FlowId, ConnId>,
    pub(crate) templates: HashMap<TemplateKey, ConnId>,
    timers: BTreeSet<(Instant, ConnId)>,
    next: u64,
}

impl ConnTable {
    pub(crate) fn insert(&mut self, conn: Conn) -> ConnId {
        self.next += 1;
        let id = ConnId(self.next);
        match conn.kind {
            Kind::Flow(flow) => {
                self.flows.insert(flow, id);
            }
            Kind::Template { key, .. } => {
                self.templates.insert(key, id);
            }
        }
        self.timers.insert((conn.expires, id));
        self.conns.insert(id, conn);
        id
    }

    /// Restarts an entry's timer with `timeout` from `now`.
    pub(crate) fn rearm(&mut self, id: ConnId, timeout: Duration, now: Instant) {
        if let Some(c) = self.conns.get_mut(&id) {
            self.timers.remove(&(c.expires, id));
            c.timeout = timeout;
            c.expires = now + timeout;
            self.timers.insert((c.expires, id));
        }
    }

    /// Takes an entry out of the table and its indexes.
    pub(crate) fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let c = self.conns.remove(&id)?;
        self.timers.remove(&(c.expires, id));
        match c.kind {
            Kind::Flow(flow) => {
                if self.flows.get(&flow) == Some(&id) {
                    self.flows.remove(&flow);
                }
            }
            Kind::Template { key, .. } => {
                if self.templates.get(&key) == Some(&id) {
                    self.templates.remove(&key);
                }
            }
        }
        Some(c)
    }

    /// Makes a template unusable for new connections
    /// (`ip_vs_check_template`'s invalidation).
    pub(crate) fn invalidate(&mut self, id: ConnId) {
        if let Some(c) = self.conns.get_mut(&id)
            && let Kind::Template { key, valid, .. } = &mut c.kind
        {
            *valid = false;
            if self.templates.get(key) == Some(&id) {
                self.templates.remove(key);
            }
        }
    }

    /// The earliest timer and its entry, if due by `now`.
    pub(crate) fn due(&self, now: Instant) -> Option<(Instant, ConnId)> {
        self.timers.first().copied().filter(|(t, _)| *t <= now)
    }

    pub(crate) fn next_expiry(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }
}
