//! The eBPF socket-level dataplane: a virtual service picked at
//! `connect()`, not per packet.
//!
//! [`SocketLb`] loads the programs of `bpf/socket_lb.c` (compiled by
//! `build.rs` with clang), attaches them to one cgroup v2 and implements
//! [`rvs_model::admin::Admin`], so the reconciler and `rvsadm` drive it as
//! they drive the kernel's IPVS and the userspace dataplane. A process in
//! that cgroup (in any network namespace) that connects to a virtual
//! service is connected to a real server instead: nothing is rewritten
//! per packet, so a connection costs what a direct one does, whatever the
//! number of services.
//!
//! # Hooks
//!
//! | program | hook | does |
//! |---|---|---|
//! | `rvs_connect4`/`6` | `cgroup/connect4`/`6` | TCP and connected UDP: the destination becomes a real server |
//! | `rvs_sendmsg4`/`6` | `cgroup/sendmsg4`/`6` | unconnected UDP: each datagram's destination, one real server per socket and virtual address (a flow) |
//! | `rvs_recvmsg4`/`6` | `cgroup/recvmsg4`/`6` | unconnected UDP: a reply's source becomes the virtual address |
//! | `rvs_getpeername4`/`6` | `cgroup/getpeername4`/`6` | the application sees the virtual address as its peer |
//!
//! IPv4-mapped IPv6 destinations on a dual-stack socket are looked up as
//! the IPv4 service. A service without a usable real server refuses the
//! `connect()`/`sendmsg()` with `ECONNREFUSED` (IPVS answers with an ICMP
//! port unreachable, which a client sees as the same error).
//!
//! # Maps
//!
//! All pinned by name in [`Options::pin_dir`] and sized from [`Options`]:
//!
//! | map | type | holds |
//! |---|---|---|
//! | `rvs_svc` | hash | (address, port, protocol) → service id, scheduler, flags, affinity timeout, table length |
//! | `rvs_slot` | hash | (service id, slot) → real-server id: each service's selection table |
//! | `rvs_be` | array | real-server id → address, port, weight, service, generation, list order |
//! | `rvs_rr` | array | service id → round-robin position |
//! | `rvs_svc_stats`, `rvs_be_stats` | per-CPU array | connections, packets in and out |
//! | `rvs_aff` | LRU hash | (service, client) → real server, last use: ClientIP affinity |
//! | `rvs_flow` | LRU hash | (socket, address) → translation: reverse hooks and UDP flows |
//!
//! The selection tables are computed in userspace ([`sched`]) from the
//! model, and a batch of operations becomes one ordered list of writes
//! ([`plan`]): a lookup always finds the old or the new choice, never a
//! half-made service. There is no batched map syscall in aya 0.14; each
//! write is one `bpf()` call, and only what changed is written.
//!
//! # Semantics, scheduler by scheduler
//!
//! * `rr`: the servers of weight > 0 in the kernel's list order (newest
//!   first), taken in turn through one shared position per service: over
//!   `k·n` connections each of `n` servers gets exactly `k`. The position
//!   restarts when the table changes.
//! * `wrr`: one cycle of `ip_vs_wrr.c`'s sequence for these weights,
//!   taken in turn: over each cycle every server gets exactly
//!   `weight / gcd` connections, interleaved as the kernel does for a
//!   service created with these weights (the kernel carries its current
//!   weight over edits; here an edit restarts the cycle). Cycles longer
//!   than [`Options::wrr_limit`] are scaled down.
//! * `sh`: `ip_vs_sh.c`'s 256 buckets and hash (`hash_32(port +
//!   fold(client), 8)`), `sh-fallback` and `sh-port` included.
//! * `mh`: `ip_vs_mh.c`'s Maglev table and lookup (SipHash-1-3 under the
//!   kernel's fixed keys), `mh-fallback` and `mh-port` included, with a
//!   table of [`Options::maglev_size`] slots (prime). The default, 4093,
//!   is the table of Debian's kernels (`CONFIG_IP_VS_MH_TAB_INDEX=12`) and
//!   of `rvs-lb`: the same server set gives the same table on every node
//!   and in every dataplane, so a node moved from IPVS keeps its choices.
//!   Cilium's 16381 (or the paper's 65537) keeps reassignment under 1 %
//!   for up to 160 (650) servers per service at 4 (16) times the memory;
//!   raise it for services that large.
//! * Other schedulers are refused with `ENOENT`, as by a kernel without
//!   the scheduler's module: `lc`, `wlc`, `sed`, `nq`, `lblc`, `lblcr`,
//!   `fo` and `ovf` need connection counts the socket layer does not
//!   keep, `dh` would hash the virtual address only, `twos` is random.
//!
//! **The client** at the socket layer: IPVS hashes (`sh`, `mh`) and keeps
//! affinity by the client's source address, which a socket usually does
//! not have yet at `connect()`. Here the client is the socket's bound
//! source address if it has one (`bind()` before `connect()`; then hashes
//! are the kernel's exactly), and otherwise its **network namespace**
//! (its cookie, folded to 32 bits for the hashes): in Kubernetes one pod
//! is one network namespace with one address, so that is one client, as
//! IPVS would see its pod IP. Processes sharing the host's namespace are
//! one client. The "port" of `sh-port`/`mh-port` is the bound source port,
//! or the socket cookie's low 16 bits (one spread per connection, the
//! intent of the flag) when the socket is unbound.
//!
//! **Weight 0** takes no new connections: such a server leaves the `rr`
//! and `wrr` tables, and is refused by `sh` and `mh` (which then fall
//! back with their `-fallback` flag, or refuse the connection). Existing
//! TCP connections are untouched: after `connect()` a socket talks to its
//! server directly, so removing a server never breaks them (there is
//! nothing to drain). An unconnected UDP flow keeps its server while the
//! server exists, as an IPVS connection entry does; it moves once the
//! server is deleted.
//!
//! **Session affinity** (`-p TIMEOUT`, what kube-proxy programs for
//! `sessionAffinity: ClientIP`): a new connection from a client goes to
//! the server its previous one went to while less than the timeout has
//! passed since that client's last connection to the service (IPVS counts
//! from the end of the last connection; the socket layer sees no ends).
//! An affinity to a server of weight 0 or deleted ends, as with
//! kube-proxy's `expire_quiescent_template`. Entries live in an LRU of
//! [`Options::max_affinity`] clients.
//!
//! **Terminating endpoints** need nothing here: rvs-proxy's desired state
//! programs serving-and-terminating endpoints as ordinary weight-1
//! servers when no endpoint is ready (`rvs_proxy::desired`), and drains
//! removed ones through weight 0, which this dataplane honours.
//!
//! **Counters** (`rvsadm -Ln --stats`): connections scheduled per service
//! and per real server (`connect()`s, and new UDP flows), packets in
//! (unconnected UDP datagrams sent) and out (datagrams received through
//! `recvmsg`). Bytes, connected-socket packets and rates are not seen at
//! these hooks and read 0; so do the active and inactive connection
//! counts (no connection table: the reconciler's drain of a removed
//! server ends at once, which is right, since its connections are not
//! affected).
//!
//! **Refused** as the kernel would, or with `EOPNOTSUPP` where the socket
//! layer cannot: firewall-mark services (`EOPNOTSUPP`: marks are set on
//! packets, after `connect()`), forwarding other than masquerading
//! (`EOPNOTSUPP`), connection thresholds (`EOPNOTSUPP`), persistence
//! netmasks wider than one address and one-packet scheduling
//! (`EOPNOTSUPP`), persistence engines (`ENOENT`), sync daemons
//! (`EOPNOTSUPP`); more services, real servers or table slots than the
//! maps hold (`ENOMEM`). Timeouts are kept and listed but have no effect.
//! `connections()` is empty.
//!
//! **Rebalancing** of long-lived TCP connections ([`rebalance`], Linux ≥
//! 6.5): with a service's policy on, idle sockets of over-loaded real
//! servers are closed with `bpf_sock_destroy()` so that clients
//! reconnect; its programs load only while some policy is on.
//!
//! **Not covered**: traffic that never calls `connect()`/`sendmsg()` in
//! the cgroup (NodePort from outside the node, forwarded packets), and
//! sockets connected before the programs were attached.
//!
//! # Lifecycle
//!
//! ```no_run
//! use rvs_ebpf::{Options, SocketLb};
//! use rvs_model::admin::{Admin, Op};
//! use rvs_model::{Destination, Scheduler, Service, ServiceKey};
//!
//! let opts = Options::new("/sys/fs/cgroup/unified/my-pods", "/sys/fs/bpf/rvs");
//! let mut lb = SocketLb::attach(opts)?; // adopts pinned maps if any
//! let key = ServiceKey::tcp("10.96.0.10:80".parse()?);
//! let results = lb.apply_batch(&[
//!     Op::AddService(Service::new(key, Scheduler::RoundRobin)),
//!     Op::AddDestination(key, Destination::masquerade("10.0.1.2:8080".parse()?)),
//! ]);
//! assert!(results.iter().all(Result::is_ok));
//! drop(lb); // programs stay attached, maps stay pinned: a restart adopts them
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Dropping a [`SocketLb`] leaves everything in place: the programs keep
//! balancing with the last state (as kernel IPVS does when rvs-proxy
//! exits), and the next [`SocketLb::attach`] with the same pin directory
//! adopts the maps and replaces the programs without a gap.
//! [`SocketLb::detach`] (or [`SocketLb::remove_pins`], for `--cleanup`)
//! removes both.

#![forbid(unsafe_code)]

pub mod layout;
mod loader;
pub mod plan;
pub mod rebalance;
pub mod sched;

use std::path::PathBuf;

use rvs_model::admin::{Admin, AdminError, Op, OpKind, errno};
use rvs_model::{
    Connection, Daemon, DestinationStatus, Info, ServiceKey, ServiceStatus, Stats, Timeouts,
};

pub use loader::programs_built;

use crate::plan::{Limits, Table};

/// Why the eBPF dataplane could not start or do something.
#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    /// This build has no eBPF programs (clang was missing at build time).
    #[error("{0}")]
    NotBuilt(String),
    /// The options cannot work.
    #[error("invalid eBPF dataplane options: {0}")]
    Options(String),
    /// This kernel cannot do what was asked.
    #[error("{0}")]
    Unsupported(String),
    /// The pin directory is unusable.
    #[error("eBPF pin directory {}: {detail}", path.display())]
    PinDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A pinned map does not have the layout or size asked for.
    #[error("pinned map {}: {detail}", map.display())]
    Incompatible {
        /// The pinned map.
        map: PathBuf,
        /// What differs.
        detail: String,
    },
    /// The object could not be loaded (the verifier's log included).
    #[error("load eBPF programs: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    /// A program could not be loaded or attached.
    #[error("program {name}")]
    Program {
        /// The program.
        name: String,
        /// What failed.
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A map operation failed.
    #[error("map {name}")]
    Map {
        /// The map.
        name: String,
        /// What failed.
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// A file-system or other I/O step failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// The cgroup v2 hierarchy's root on this host (the first `cgroup2`
/// mount; on a hybrid layout, `/sys/fs/cgroup/unified`): where
/// `rvs-proxy --dataplane ebpf` attaches by default, so every process on
/// the node is balanced.
pub fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount_point = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(mount_point))
    })
}

/// Where to attach, where to pin, and how big the maps are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The cgroup v2 directory whose processes (and its descendants')
    /// are balanced.
    pub cgroup: PathBuf,
    /// A directory on a bpffs for the pinned maps and links (created if
    /// missing); the same directory across restarts.
    pub pin_dir: PathBuf,
    /// Maglev table size for `mh` services; prime. Default 4093.
    pub maglev_size: u32,
    /// Virtual services. Default 65536.
    pub max_services: u32,
    /// Real servers over all services. Default 262144.
    pub max_backends: u32,
    /// Selection-table entries over all services (one per `rr` server,
    /// a `wrr` cycle, up to 256 for `sh`, the Maglev size for `mh`).
    /// Default 1048576.
    pub max_slots: u32,
    /// Longest `wrr` cycle kept exact. Default 4096.
    pub wrr_limit: u32,
    /// Clients remembered for affinity (LRU). Default 65536.
    pub max_affinity: u32,
    /// Socket translations remembered for the reverse hooks and UDP
    /// flows (LRU). Default 262144.
    pub max_flows: u32,
}

impl Options {
    /// Defaults for the given cgroup and pin directory.
    pub fn new(cgroup: impl Into<PathBuf>, pin_dir: impl Into<PathBuf>) -> Options {
        Options {
            cgroup: cgroup.into(),
            pin_dir: pin_dir.into(),
            maglev_size: sched::MH_DEFAULT_SIZE,
            max_services: 65_536,
            max_backends: 262_144,
            max_slots: 1 << 20,
            wrr_limit: 4096,
            max_affinity: 65_536,
            max_flows: 262_144,
        }
    }

    fn limits(&self) -> Result<Limits, EbpfError> {
        if !sched::is_prime(self.maglev_size) {
            return Err(EbpfError::Options(format!(
                "the Maglev table size must be prime (4093, 16381, 65537, …), not {}",
                self.maglev_size
            )));
        }
        for (what, v) in [
            ("max_services", self.max_services),
            ("max_backends", self.max_backends),
            ("max_slots", self.max_slots),
            ("wrr_limit", self.wrr_limit),
            ("max_affinity", self.max_affinity),
            ("max_flows", self.max_flows),
        ] {
            if v == 0 {
                return Err(EbpfError::Options(format!("{what} must be > 0")));
            }
        }
        Ok(Limits {
            max_services: self.max_services,
            max_backends: self.max_backends,
            max_slots: self.max_slots,
            maglev_size: self.maglev_size,
            wrr_limit: self.wrr_limit,
        })
    }
}

/// The eBPF dataplane: programs attached to a cgroup, maps pinned, and
/// the table that programs them.
#[derive(Debug)]
pub struct SocketLb {
    opts: Options,
    table: Table,
    maps: loader::Maps,
    /// Rebalancing policies and counts ([`rebalance::SocketRebalancer`]
    /// carries them out).
    book: rvs_rebalance::Book,
    // Keeps the loaded programs; their links are pinned.
    _ebpf: aya::Ebpf,
}

impl SocketLb {
    /// Loads the programs, adopts the maps pinned in `opts.pin_dir` (or
    /// pins new ones), attaches to `opts.cgroup`, and replaces the links a
    /// previous instance left there. Needs `CAP_BPF` and
    /// `CAP_NET_ADMIN` (root).
    pub fn attach(opts: Options) -> Result<SocketLb, EbpfError> {
        let limits = opts.limits()?;
        let (mut ebpf, mut maps, snap) = loader::load(&opts, &limits)?;
        let mut table = Table::adopt(limits, &snap.services, &snap.backends, &snap.slots);
        // Anything the previous instance left half-done.
        let writes = table.commit();
        maps.execute(&writes)?;
        loader::attach(&mut ebpf, &opts)?;
        Ok(SocketLb {
            opts,
            table,
            maps,
            book: rvs_rebalance::Book::default(),
            _ebpf: ebpf,
        })
    }

    /// The options it runs with.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// Detaches the programs and removes the pinned maps: connections
    /// to virtual services are no longer translated.
    pub fn detach(self) -> Result<(), EbpfError> {
        let dir = self.opts.pin_dir.clone();
        drop(self);
        loader::remove_pins(&dir).map(|_| ())
    }

    /// What [`SocketLb::detach`] does, without a running instance (for
    /// `--cleanup`): `true` if anything was pinned in `pin_dir`.
    pub fn remove_pins(pin_dir: &std::path::Path) -> Result<bool, EbpfError> {
        loader::remove_pins(pin_dir)
    }

    /// Rebalancing of long-lived TCP connections: the policies, set
    /// here, and what has been closed; a [`rebalance::SocketRebalancer`]
    /// ticking beside this socket LB carries them out.
    pub fn rebalancing(&mut self) -> &mut rvs_rebalance::Book {
        &mut self.book
    }

    /// A service's selection table as the programs index it: real-server
    /// addresses by slot (`None`: no server there). For `mh` this is the
    /// Maglev lookup table, identical on every node for the same servers.
    pub fn selection_table(&self, key: &ServiceKey) -> Option<Vec<Option<std::net::SocketAddr>>> {
        self.table.selection(key)
    }

    fn transport(op: OpKind, err: EbpfError) -> AdminError {
        AdminError::Transport {
            op,
            context: err.to_string(),
            source: std::io::Error::other(err.to_string()),
        }
    }

    fn stats(words: [u64; 5]) -> Stats {
        Stats {
            conns: words[0],
            inpkts: words[1],
            outpkts: words[2],
            inbytes: words[3],
            outbytes: words[4],
            ..Stats::default()
        }
    }

    /// Plays the table's pending writes; on a failure, rebuilds the
    /// table from the maps so the next batch starts from the truth.
    fn flush(&mut self) -> Result<(), EbpfError> {
        let writes = self.table.commit();
        if let Err(err) = self.maps.execute(&writes) {
            if let Ok(snap) = self.maps.reread() {
                self.table = Table::adopt(
                    self.table.limits(),
                    &snap.services,
                    &snap.backends,
                    &snap.slots,
                );
            }
            return Err(err);
        }
        Ok(())
    }
}

impl Admin for SocketLb {
    fn info(&mut self) -> Result<Info, AdminError> {
        // IPVS 1.2.1, as every kernel since 2.6 reports; the "table
        // size" is the flow map's.
        Ok(Info {
            version: 0x01_02_01,
            conn_table_size: self.opts.max_flows,
        })
    }

    fn services(&mut self) -> Result<Vec<ServiceStatus>, AdminError> {
        let mut out = Vec::new();
        for (service, id) in self.table.services() {
            let words = self
                .maps
                .service_stats(id)
                .map_err(|e| Self::transport(OpKind::GetServices, e))?;
            out.push(ServiceStatus {
                service: service.clone(),
                stats: Self::stats(words),
            });
        }
        Ok(out)
    }

    fn service(&mut self, key: &ServiceKey) -> Result<ServiceStatus, AdminError> {
        let (service, id) = self
            .table
            .service(key)
            .ok_or_else(|| AdminError::refused_for(OpKind::GetServices, errno::ESRCH, *key))?;
        let words = self
            .maps
            .service_stats(id)
            .map_err(|e| Self::transport(OpKind::GetServices, e))?;
        Ok(ServiceStatus {
            service: service.clone(),
            stats: Self::stats(words),
        })
    }

    fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<DestinationStatus>, AdminError> {
        let dests = self
            .table
            .destinations(key)
            .ok_or_else(|| AdminError::refused_for(OpKind::GetDestinations, errno::ESRCH, *key))?;
        let mut out = Vec::with_capacity(dests.len());
        for d in dests {
            let words = self
                .maps
                .backend_stats(d.id)
                .map_err(|e| Self::transport(OpKind::GetDestinations, e))?;
            out.push(DestinationStatus {
                destination: d.destination,
                active_conns: 0,
                inactive_conns: 0,
                persistent_conns: 0,
                stats: Self::stats(words),
            });
        }
        Ok(out)
    }

    fn timeouts(&mut self) -> Result<Timeouts, AdminError> {
        Ok(self.table.timeouts())
    }

    fn daemons(&mut self) -> Result<Vec<Daemon>, AdminError> {
        Ok(Vec::new())
    }

    fn connections(&mut self) -> Result<Vec<Connection>, AdminError> {
        Ok(Vec::new())
    }

    fn rebalancing(&mut self) -> Result<Vec<rvs_model::admin::RebalanceStatus>, AdminError> {
        Ok(self.book.statuses())
    }

    fn apply(&mut self, op: &Op) -> Result<(), AdminError> {
        self.apply_batch(std::slice::from_ref(op))
            .pop()
            .unwrap_or(Ok(()))
    }

    /// Applies the operations to the table one by one (each refused or
    /// not as the kernel would), then writes the maps once for the whole
    /// batch. If a map write fails, every operation that had been
    /// accepted reports the failure (the maps are re-read, so the next
    /// full sync repairs them).
    fn apply_batch(&mut self, ops: &[Op]) -> Vec<Result<(), AdminError>> {
        let mut results: Vec<Result<(), AdminError>> =
            ops.iter().map(|op| self.table.apply(op)).collect();
        if let Err(err) = self.flush() {
            let text = err.to_string();
            for (r, op) in results.iter_mut().zip(ops) {
                if r.is_ok() {
                    *r = Err(AdminError::Transport {
                        op: op.kind(),
                        context: "write the eBPF maps".into(),
                        source: std::io::Error::other(text.clone()),
                    });
                }
            }
        }
        results
    }
}
