//! Rebalancing long-lived TCP connections at the socket layer.
//!
//! This module owns [`SocketRebalancer`]: the balanced sockets it watches
//! and the programs of `bpf/rebalance.c` that find and close them, loaded
//! only while some service's policy is on (the policies themselves, an
//! [`rvs_rebalance::Book`], are the socket LB's:
//! [`SocketLb::rebalancing`]):
//!
//! | program | hook | does |
//! |---|---|---|
//! | `rvs_rb_egress`/`ingress` | `cgroup_skb` on the same cgroup | counts a watched socket's payload bytes each way, and which way the last ones went |
//! | `rvs_rb_report` | `iter/tcp` | one record per established socket that `rvs_flow` says was balanced: its real server, counters and queued bytes |
//! | `rvs_rb_destroy` | `iter/tcp` | `bpf_sock_destroy()` on each chosen socket that, under its lock, is still idle as last seen |
//!
//! Every tick ([`SocketRebalancer::tick`]) runs the report, watches the
//! sockets of services whose policy is on, and judges each: bytes moved
//! since the last tick or still queued (unsent, unacknowledged or unread)
//! make it busy, and so does a last word that was the client's (a request
//! may be outstanding); otherwise it has been idle since the tick that
//! last saw it move. Each service's [`rvs_rebalance::Rebalancer`] picks
//! what to close; the destroy iterator closes those still as seen, and
//! they are counted.
//!
//! The socket closed is the client's own (the socket layer has no other):
//! its peer, the real server, gets a reset and the application sees
//! `ECONNABORTED` on its next call, or the socket readable at end of file
//! — which is how keep-alive clients find a pooled connection dropped and
//! open a new one. `bpf_sock_destroy()` needs Linux ≥ 6.5; aya 0.14 does
//! not resolve kernel functions, so the loader writes its BTF id into the
//! call instruction (found by a marker) before loading.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use aya::maps::{HashMap as BpfHashMap, MapData};
use aya::programs::cgroup_skb::CgroupSkbAttachType;
use aya::programs::{CgroupAttachMode, CgroupSkb, Iter};
use aya::{Btf, Ebpf, EbpfLoader};
use rvs_model::ServiceKey;
use rvs_rebalance::{Book, Conn, Vip};

use crate::layout::names;
use crate::plan::Table;
use crate::{EbpfError, Options, SocketLb};

/// How long a tick waits when no policy is on.
const IDLE_TICK: Duration = Duration::from_secs(1);
/// How often the network namespaces of the cgroup's processes are
/// listed again.
const NETNS_REFRESH: Duration = Duration::from_secs(2);
/// The call instruction `bpf/rebalance.c` leaves for `bpf_sock_destroy`:
/// `BPF_JMP | BPF_CALL`, `src_reg` = `BPF_PSEUDO_KFUNC_CALL`, the marker
/// as its immediate.
const KFUNC_CALL: [u8; 8] = [0x85, 0x20, 0x00, 0x00, 0x57, 0xde, 0xed, 0x5e];
/// `struct rb_report` and `struct rb_result`.
const REPORT_LEN: usize = 48;
const RESULT_LEN: usize = 16;
/// `RB_LAST_IN`: the real server sent last.
const LAST_IN: u32 = 2;
/// Sockets that may be chosen in one tick (`rvs_rb_doomed`'s size).
const MAX_DOOMED: u32 = 4096;

const WATCH: &str = "rvs_rb_watch";
const DOOMED: &str = "rvs_rb_doomed";
const REPORT: &str = "rvs_rb_report";
const DESTROY: &str = "rvs_rb_destroy";

#[cfg(not(rvs_ebpf_missing))]
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/rebalance.o"));

fn object() -> Result<&'static [u8], EbpfError> {
    #[cfg(rvs_ebpf_missing)]
    {
        Err(EbpfError::NotBuilt(env!("RVS_EBPF_MISSING").to_owned()))
    }
    #[cfg(not(rvs_ebpf_missing))]
    {
        Ok(OBJECT)
    }
}

/// One socket as `rvs_rb_report` saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Report {
    cookie: u64,
    out_bytes: u64,
    in_bytes: u64,
    svc: u32,
    backend: u32,
    generation: u32,
    queued: u32,
    last: u32,
    watched: bool,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(w)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_ne_bytes(w)
}

impl Report {
    fn decode(b: &[u8]) -> Report {
        Report {
            cookie: u64_at(b, 0),
            out_bytes: u64_at(b, 8),
            in_bytes: u64_at(b, 16),
            svc: u32_at(b, 24),
            backend: u32_at(b, 28),
            generation: u32_at(b, 32),
            queued: u32_at(b, 36),
            last: u32_at(b, 40),
            watched: u32_at(b, 44) != 0,
        }
    }
}

/// `bpf_sock_destroy`'s BTF id in the running kernel, or why there is
/// none.
fn sock_destroy_id(btf: &Btf) -> Result<u32, EbpfError> {
    btf.id_by_type_name_kind("bpf_sock_destroy", aya_obj::btf::BtfKind::Func)
        .map_err(|_| {
            EbpfError::Unsupported(
                "rebalancing closes sockets with bpf_sock_destroy(), which this kernel lacks \
                 (Linux 6.5 or later)"
                    .into(),
            )
        })
}

fn kernel_btf() -> Result<Btf, EbpfError> {
    Btf::from_sys_fs().map_err(|e| {
        EbpfError::Unsupported(format!(
            "rebalancing needs the kernel's BTF (/sys/kernel/btf/vmlinux): {e}"
        ))
    })
}

/// Whether this kernel and build can rebalance (`Err`: why not), checked
/// without loading anything.
pub fn supported() -> Result<(), EbpfError> {
    object()?;
    sock_destroy_id(&kernel_btf()?).map(|_| ())
}

/// Writes `btf_id` into the marked call; `false` if there is none.
fn patch_kfunc(object: &mut [u8], btf_id: u32) -> bool {
    let mut found = false;
    let mut at = 0;
    while at + 8 <= object.len() {
        if object[at..at + 8] == KFUNC_CALL {
            object[at + 4..at + 8].copy_from_slice(&btf_id.to_le_bytes());
            found = true;
            at += 8;
        } else {
            at += 1;
        }
    }
    found
}

fn prog_err(name: &str) -> impl FnOnce(aya::programs::ProgramError) -> EbpfError + '_ {
    move |source| EbpfError::Program {
        name: name.to_owned(),
        source: Box::new(source),
    }
}

fn map_err(name: &str) -> impl FnOnce(aya::maps::MapError) -> EbpfError + '_ {
    move |source| EbpfError::Map {
        name: name.to_owned(),
        source: Box::new(source),
    }
}

/// A socket chosen to close: its cookie, and its counters (out, in) as
/// last seen.
type Doomed = (u64, (u64, u64));

/// The loaded programs and their maps (the I/O half).
struct Tracker {
    ebpf: Ebpf,
    watch: BpfHashMap<MapData, u64, [u8; 24]>,
    doomed: BpfHashMap<MapData, u64, [u8; 16]>,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracker").finish_non_exhaustive()
    }
}

impl Tracker {
    /// Loads `bpf/rebalance.c` beside the socket LB whose maps are pinned
    /// in `opts.pin_dir`, and attaches its counters to `opts.cgroup`.
    fn attach(opts: &Options) -> Result<Tracker, EbpfError> {
        let object = object()?;
        let btf = kernel_btf()?;
        let id = sock_destroy_id(&btf)?;
        let mut bytes = object.to_vec();
        if !patch_kfunc(&mut bytes, id) {
            return Err(EbpfError::Unsupported(
                "the rebalancing object has no bpf_sock_destroy call to link".into(),
            ));
        }
        let mut loader = EbpfLoader::new();
        loader
            .btf(Some(&btf))
            .default_map_pin_directory(&opts.pin_dir)
            .map_max_entries(names::FLOWS, opts.max_flows)
            .map_max_entries(WATCH, opts.max_flows)
            .map_max_entries(DOOMED, MAX_DOOMED);
        let mut ebpf = loader
            .load(&bytes)
            .map_err(|source| EbpfError::Load(Box::new(source)))?;
        for name in [REPORT, DESTROY] {
            let prog: &mut Iter = program(&mut ebpf, name)?
                .try_into()
                .map_err(prog_err(name))?;
            prog.load("tcp", &btf).map_err(prog_err(name))?;
        }
        let cgroup = File::open(&opts.cgroup).map_err(|source| EbpfError::Io {
            context: format!("open cgroup {}", opts.cgroup.display()),
            source,
        })?;
        for (name, kind) in [
            ("rvs_rb_egress", CgroupSkbAttachType::Egress),
            ("rvs_rb_ingress", CgroupSkbAttachType::Ingress),
        ] {
            let prog: &mut CgroupSkb = program(&mut ebpf, name)?
                .try_into()
                .map_err(prog_err(name))?;
            prog.load().map_err(prog_err(name))?;
            // The link lives as long as this process holds it.
            prog.attach(&cgroup, kind, CgroupAttachMode::Single)
                .map_err(prog_err(name))?;
        }
        let watch = take_map(&mut ebpf, WATCH)?;
        let doomed = take_map(&mut ebpf, DOOMED)?;
        Ok(Tracker {
            ebpf,
            watch: BpfHashMap::try_from(watch).map_err(map_err(WATCH))?,
            doomed: BpfHashMap::try_from(doomed).map_err(map_err(DOOMED))?,
        })
    }

    /// Runs one iterator program and returns what it wrote.
    fn run(&mut self, name: &str) -> Result<Vec<u8>, EbpfError> {
        let prog: &mut Iter = program(&mut self.ebpf, name)?
            .try_into()
            .map_err(prog_err(name))?;
        let id = prog.attach().map_err(prog_err(name))?;
        let link = prog.take_link(id).map_err(prog_err(name))?;
        let mut file = link.into_file().map_err(|source| EbpfError::Io {
            context: format!("create the {name} iterator: {source}"),
            source: std::io::Error::other("bpf_iter_create"),
        })?;
        let mut out = Vec::new();
        file.read_to_end(&mut out).map_err(|source| EbpfError::Io {
            context: format!("read the {name} iterator"),
            source,
        })?;
        Ok(out)
    }

    fn report(&mut self) -> Result<Vec<Report>, EbpfError> {
        let out = self.run(REPORT)?;
        Ok(out.chunks_exact(REPORT_LEN).map(Report::decode).collect())
    }

    fn watch(&mut self, cookie: u64) -> Result<(), EbpfError> {
        self.watch
            .insert(cookie, [0u8; 24], 0)
            .map_err(map_err(WATCH))
    }

    fn unwatch(&mut self, cookie: u64) {
        // Already gone is as good.
        let _ = self.watch.remove(&cookie);
    }

    /// Closes the sockets of `doomed` (cookie, counters as seen) that are
    /// still so; returns the cookies closed.
    fn destroy(&mut self, doomed: &[Doomed]) -> Result<HashSet<u64>, EbpfError> {
        let mut inserted = Ok(());
        for &(cookie, (out_bytes, in_bytes)) in doomed {
            let mut v = [0u8; 16];
            v[..8].copy_from_slice(&out_bytes.to_ne_bytes());
            v[8..].copy_from_slice(&in_bytes.to_ne_bytes());
            inserted = self.doomed.insert(cookie, v, 0).map_err(map_err(DOOMED));
            if inserted.is_err() {
                break;
            }
        }
        let out = inserted.and_then(|()| self.run(DESTROY));
        // Whatever happened, nothing stays chosen for a later run.
        for &(cookie, _) in doomed {
            let _ = self.doomed.remove(&cookie);
        }
        Ok(out?
            .chunks_exact(RESULT_LEN)
            .filter(|r| u32_at(r, 8) == 0)
            .map(|r| u64_at(r, 0))
            .collect())
    }
}

fn program<'a>(
    ebpf: &'a mut Ebpf,
    name: &str,
) -> Result<&'a mut aya::programs::Program, EbpfError> {
    ebpf.program_mut(name).ok_or_else(|| EbpfError::Io {
        context: format!("program {name} missing from the rebalancing object"),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map, EbpfError> {
    ebpf.take_map(name).ok_or_else(|| EbpfError::Map {
        name: name.to_owned(),
        source: Box::new(aya::maps::MapError::InvalidName {
            name: name.to_owned(),
        }),
    })
}

/// The network namespaces of the processes in the cgroup tree at `root`
/// (its descendants' too): one open handle each, by inode.
fn namespaces(root: &Path) -> HashMap<u64, File> {
    let mut out = HashMap::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.split_whitespace() {
            let path = format!("/proc/{pid}/ns/net");
            let Ok(meta) = std::fs::metadata(&path) else {
                continue; // gone since
            };
            if let std::collections::hash_map::Entry::Vacant(e) = out.entry(meta.ino())
                && let Ok(f) = File::open(&path)
            {
                e.insert(f);
            }
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            dirs.extend(
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    out
}

/// Runs `f` in each of `netns` (a TCP iterator sees the sockets of the
/// namespace it is created in), on a thread of its own so the caller's
/// namespace is never changed; one result per namespace entered (one
/// that cannot be entered, gone since, is skipped).
fn in_each<T: Send>(
    netns: &HashMap<u64, File>,
    mut f: impl FnMut(u64) -> Result<T, EbpfError> + Send,
) -> Vec<(u64, Result<T, EbpfError>)> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let mut out = Vec::with_capacity(netns.len());
                for (&ino, file) in netns {
                    if nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
                        continue;
                    }
                    out.push((ino, f(ino)));
                }
                out
            })
            .join()
            .unwrap_or_else(|_| {
                vec![(
                    0,
                    Err(EbpfError::Io {
                        context: "the rebalancing thread panicked".into(),
                        source: std::io::Error::other("panic"),
                    }),
                )]
            })
    })
}

/// A watched socket.
#[derive(Debug)]
struct Tracked {
    /// The network namespace it lives in (inode).
    netns: u64,
    vip: Vip,
    backend: u32,
    generation: u32,
    opened: Instant,
    /// Its counters at the last tick, and when they last changed.
    sample: (u64, u64),
    changed: Instant,
    /// The real server had the last word.
    answered: bool,
}

/// The I/O side of the eBPF dataplane's rebalancing (see the module docs):
/// the programs, the sockets watched and the network namespaces they
/// live in. It runs on a thread of its own and takes the socket LB's lock
/// only to read the policies and the real servers and to plan, never
/// while it lists namespaces or runs the iterators.
#[derive(Debug)]
pub struct SocketRebalancer {
    opts: Options,
    tracker: Option<Tracker>,
    conns: HashMap<u64, Tracked>,
    netns: HashMap<u64, File>,
    netns_listed: Option<Instant>,
}

fn lock(lb: &Mutex<SocketLb>) -> MutexGuard<'_, SocketLb> {
    lb.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SocketRebalancer {
    /// A rebalancer for the socket LB attached with `opts`; nothing is
    /// loaded until a tick finds a policy on.
    pub fn new(opts: &Options) -> SocketRebalancer {
        SocketRebalancer {
            opts: opts.clone(),
            tracker: None,
            conns: HashMap::new(),
            netns: HashMap::new(),
            netns_listed: None,
        }
    }

    /// Whether the programs are loaded (some policy is on and they could
    /// be).
    pub fn active(&self) -> bool {
        self.tracker.is_some()
    }

    /// One tick at `now` for the socket LB `lb` (whose
    /// [`SocketLb::rebalancing`] holds the policies); returns when to tick
    /// next. Loads the programs when a policy is first on and unloads them
    /// when none is.
    pub fn tick(&mut self, now: Instant, lb: &Mutex<SocketLb>) -> Result<Instant, EbpfError> {
        if !lock(lb).book.any_on() {
            self.tracker = None;
            self.conns.clear();
            self.netns.clear();
            self.netns_listed = None;
            return Ok(now + IDLE_TICK);
        }
        if self.tracker.is_none() {
            self.tracker = Some(Tracker::attach(&self.opts)?);
            self.conns.clear();
        }
        if self
            .netns_listed
            .is_none_or(|t| now.duration_since(t) >= NETNS_REFRESH)
        {
            self.netns = namespaces(&self.opts.cgroup);
            self.netns_listed = Some(now);
        }
        let Some(tracker) = self.tracker.as_mut() else {
            return Ok(now + IDLE_TICK);
        };
        // Off the lock: every balanced socket in every namespace.
        let reports: Vec<(u64, Report)> = in_each(&self.netns, |_| tracker.report())
            .into_iter()
            .map(|(ino, r)| r.map(|rs| (ino, rs)))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .flat_map(|(ino, rs)| rs.into_iter().map(move |r| (ino, r)))
            .collect();
        // Under the lock: sample, and let each due service's rebalancer
        // choose.
        let (next, doomed, dest_of) = {
            let mut guard = lock(lb);
            let SocketLb { table, book, .. } = &mut *guard;
            self.sample(now, &reports, table, book)?;
            self.plan(now, table, book)
        };
        if doomed.is_empty() {
            return Ok(next);
        }
        // Off the lock: close those still as seen, namespace by namespace.
        let netns: HashMap<u64, File> = self
            .netns
            .iter()
            .filter(|(ino, _)| doomed.contains_key(ino))
            .filter_map(|(&ino, f)| Some((ino, f.try_clone().ok()?)))
            .collect();
        let Some(tracker) = self.tracker.as_mut() else {
            return Ok(next);
        };
        let mut closed = Vec::new();
        let mut failure = None;
        for (_, result) in in_each(&netns, |ino| {
            tracker.destroy(doomed.get(&ino).map_or(&[][..], Vec::as_slice))
        }) {
            match result {
                Ok(c) => closed.extend(c),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        // Under the lock: count what was closed.
        {
            let mut guard = lock(lb);
            for cookie in &closed {
                if let Some((vip, dest)) = dest_of.get(cookie) {
                    guard.book.count_closed(vip, *dest);
                }
            }
        }
        for cookie in closed {
            self.conns.remove(&cookie);
            tracker.unwatch(cookie);
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(next),
        }
    }

    /// Watches the sockets of services whose policy is on and samples
    /// them; forgets those gone.
    fn sample(
        &mut self,
        now: Instant,
        reports: &[(u64, Report)],
        table: &Table,
        book: &Book,
    ) -> Result<(), EbpfError> {
        let Some(tracker) = self.tracker.as_mut() else {
            return Ok(());
        };
        let vips: HashMap<u32, Vip> = if reports.is_empty() {
            HashMap::new()
        } else {
            table
                .services()
                .filter_map(|(s, id)| match s.key {
                    ServiceKey::Addr { protocol, addr } => Some((id, (protocol, addr))),
                    ServiceKey::Fwmark { .. } => None,
                })
                .collect()
        };
        let mut seen = HashSet::new();
        for (netns, r) in reports {
            let Some(&vip) = vips.get(&r.svc) else {
                continue;
            };
            if book.policy(&vip).is_off() {
                continue;
            }
            if !r.watched && tracker.watch(r.cookie).is_err() {
                continue; // the watch map is full: not this one
            }
            let sample = (r.out_bytes, r.in_bytes);
            let t = self.conns.entry(r.cookie).or_insert(Tracked {
                netns: *netns,
                vip,
                backend: r.backend,
                generation: r.generation,
                opened: now,
                sample,
                changed: now,
                answered: false,
            });
            if t.sample != sample || r.queued > 0 || !r.watched {
                t.sample = sample;
                t.changed = now;
            }
            t.answered = r.last == LAST_IN;
            seen.insert(r.cookie);
        }
        let gone: Vec<u64> = self
            .conns
            .keys()
            .filter(|c| !seen.contains(c))
            .copied()
            .collect();
        for cookie in gone {
            self.conns.remove(&cookie);
            tracker.unwatch(cookie);
        }
        Ok(())
    }

    /// Each due service's closes: when to tick next, the sockets to close
    /// by namespace (at most [`MAX_DOOMED`] each), and each one's service
    /// and real server.
    fn plan(&self, now: Instant, table: &Table, book: &mut Book) -> Planned {
        let mut by_vip: HashMap<Vip, Vec<(u64, &Tracked)>> = HashMap::new();
        for (&cookie, t) in &self.conns {
            by_vip.entry(t.vip).or_default().push((cookie, t));
        }
        let mut next = now + IDLE_TICK;
        let mut doomed: HashMap<u64, Vec<Doomed>> = HashMap::new();
        let mut dest_of: HashMap<u64, (Vip, SocketAddr)> = HashMap::new();
        for (vip, conns) in &by_vip {
            let state = book.service(*vip);
            let Some(due) = state.rebalancer.poll_timeout(now) else {
                continue;
            };
            if due > now {
                next = next.min(due);
                continue;
            }
            let key = ServiceKey::Addr {
                protocol: vip.0,
                addr: vip.1,
            };
            let Some(dests) = table.destinations(&key) else {
                continue;
            };
            let weights: Vec<u32> = dests
                .iter()
                .map(|d| u32::try_from(d.destination.weight).unwrap_or(0))
                .collect();
            let snapshot: Vec<Conn> = conns
                .iter()
                .filter_map(|&(cookie, t)| {
                    let rs = dests
                        .iter()
                        .position(|d| d.id == t.backend && d.generation == t.generation)?;
                    let busy = t.changed == now || !t.answered;
                    Some(Conn {
                        id: cookie,
                        real_server: rs,
                        opened: t.opened,
                        idle_since: (!busy).then_some(t.changed),
                    })
                })
                .collect();
            let plan = state.rebalancer.handle_timeout(now, &weights, &snapshot);
            state.skew = plan.skew;
            for close in &plan.close {
                let Some(&(cookie, t)) = conns.iter().find(|(c, _)| *c == close.id) else {
                    continue;
                };
                let Some(dest) = dests.get(close.real_server) else {
                    continue;
                };
                let list = doomed.entry(t.netns).or_default();
                if list.len() < MAX_DOOMED as usize {
                    list.push((cookie, t.sample));
                    dest_of.insert(cookie, (*vip, dest.destination.addr));
                    tracing::debug!(service = %key, reason = ?close.reason, "closing an idle socket to rebalance");
                }
            }
            if let Some(t) = state.rebalancer.poll_timeout(now) {
                next = next.min(t);
            }
        }
        let live: HashSet<Vip> = self.conns.values().map(|t| t.vip).collect();
        book.retain_live(|vip| live.contains(vip));
        (next, doomed, dest_of)
    }
}

/// What [`SocketRebalancer::plan`] returns.
type Planned = (
    Instant,
    HashMap<u64, Vec<Doomed>>,
    HashMap<u64, (Vip, SocketAddr)>,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marked_call_gets_the_btf_id() {
        let mut obj = vec![0u8; 3];
        obj.extend_from_slice(&KFUNC_CALL);
        obj.extend_from_slice(&[0x95, 0, 0, 0, 0, 0, 0, 0]);
        assert!(patch_kfunc(&mut obj, 0x0001_2345));
        assert_eq!(&obj[3..11], &[0x85, 0x20, 0, 0, 0x45, 0x23, 0x01, 0x00]);
        assert!(!patch_kfunc(&mut obj, 1));
    }

    #[test]
    fn a_report_record_decodes_field_by_field() {
        let mut b = Vec::new();
        b.extend_from_slice(&7u64.to_ne_bytes()); // cookie
        b.extend_from_slice(&100u64.to_ne_bytes()); // out_bytes
        b.extend_from_slice(&2000u64.to_ne_bytes()); // in_bytes
        b.extend_from_slice(&3u32.to_ne_bytes()); // svc
        b.extend_from_slice(&4u32.to_ne_bytes()); // backend
        b.extend_from_slice(&5u32.to_ne_bytes()); // gen
        b.extend_from_slice(&0u32.to_ne_bytes()); // queued
        b.extend_from_slice(&LAST_IN.to_ne_bytes()); // last
        b.extend_from_slice(&1u32.to_ne_bytes()); // watched
        assert_eq!(b.len(), REPORT_LEN);
        assert_eq!(
            Report::decode(&b),
            Report {
                cookie: 7,
                out_bytes: 100,
                in_bytes: 2000,
                svc: 3,
                backend: 4,
                generation: 5,
                queued: 0,
                last: LAST_IN,
                watched: true,
            }
        );
    }
}
