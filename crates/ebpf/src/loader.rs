//! Loading, attaching, pinning and writing the maps: the I/O half.
//!
//! This module owns every `bpf()` call the dataplane makes, through aya:
//! the object built by `build.rs` is loaded with each map's size from
//! [`crate::Options`]; maps are pinned by name in the caller's bpffs
//! directory, and maps already pinned there are adopted (after checking
//! they have the sizes asked for); the eight programs are attached to the
//! cgroup with `bpf_link`s pinned beside the maps (`link_<program>`), so
//! they stay attached when the process exits. A new loader attaches its
//! own links before it unpins the previous ones: for a moment both run,
//! and the second sees an address the first already translated (no
//! service matches a real server), so no connection is missed and none
//! is translated twice. [`Maps::execute`] plays a [`crate::plan::Write`]
//! list one element at a time, in order.

use std::fs::File;
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, MapData, MapInfo, PerCpuArray, PerCpuValues};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use aya::{Ebpf, EbpfLoader};

use crate::layout::{self, BeValBytes, SlotKey, StatsWords, SvcKey, SvcValBytes, names};
use crate::plan::{Limits, Write};
use crate::{EbpfError, Options};

/// The programs, by function name in `bpf/socket_lb.c`.
pub(crate) const PROGRAMS: [&str; 8] = [
    "rvs_connect4",
    "rvs_connect6",
    "rvs_sendmsg4",
    "rvs_sendmsg6",
    "rvs_recvmsg4",
    "rvs_recvmsg6",
    "rvs_getpeername4",
    "rvs_getpeername6",
];

/// `BPF_FS_MAGIC`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[cfg(not(rvs_ebpf_missing))]
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/socket_lb.o"));

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

/// `true` when this build carries the eBPF programs (clang was found).
pub fn programs_built() -> bool {
    object().is_ok()
}

/// The typed maps the loader writes and reads.
pub(crate) struct Maps {
    pub(crate) svc: HashMap<MapData, SvcKey, SvcValBytes>,
    pub(crate) slot: HashMap<MapData, SlotKey, u32>,
    pub(crate) be: Array<MapData, BeValBytes>,
    pub(crate) rr: Array<MapData, u64>,
    pub(crate) svc_stats: PerCpuArray<MapData, StatsWords>,
    pub(crate) be_stats: PerCpuArray<MapData, StatsWords>,
    cpus: usize,
}

impl std::fmt::Debug for Maps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maps")
            .field("cpus", &self.cpus)
            .finish_non_exhaustive()
    }
}

/// What the maps held when they were adopted.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub(crate) services: Vec<(SvcKey, SvcValBytes)>,
    pub(crate) backends: Vec<(u32, BeValBytes)>,
    pub(crate) slots: Vec<(SlotKey, u32)>,
}

fn map_err(name: &str) -> impl FnOnce(aya::maps::MapError) -> EbpfError + '_ {
    move |source| EbpfError::Map {
        name: name.to_owned(),
        source: Box::new(source),
    }
}

/// Sizes (key, value, entries) of each map for these limits.
fn expected(opts: &Options, limits: &Limits) -> Vec<(&'static str, u32, u32, u32)> {
    vec![
        (names::SERVICES, 20, 24, opts.max_services),
        (names::SLOTS, 8, 4, limits.slot_map_entries()),
        (names::BACKENDS, 4, 40, opts.max_backends),
        (names::RR, 4, 8, opts.max_services),
        (names::SVC_STATS, 4, 40, opts.max_services),
        (names::BE_STATS, 4, 40, opts.max_backends),
        (
            names::AFFINITY,
            layout::AFF_SIZES.0,
            layout::AFF_SIZES.1,
            opts.max_affinity,
        ),
        (
            names::FLOWS,
            layout::FLOW_SIZES.0,
            layout::FLOW_SIZES.1,
            opts.max_flows,
        ),
    ]
}

/// Checks that `dir` exists (creating it) on a bpffs.
fn prepare_pin_dir(dir: &Path) -> Result<(), EbpfError> {
    std::fs::create_dir_all(dir).map_err(|source| EbpfError::PinDir {
        path: dir.to_owned(),
        detail: format!("cannot create it: {source}"),
    })?;
    let fs = nix::sys::statfs::statfs(dir).map_err(|errno| EbpfError::PinDir {
        path: dir.to_owned(),
        detail: format!("statfs: {errno}"),
    })?;
    if fs.filesystem_type().0 as i64 != BPF_FS_MAGIC {
        return Err(EbpfError::PinDir {
            path: dir.to_owned(),
            detail: "not on a bpf file system (mount -t bpf bpf DIR)".into(),
        });
    }
    Ok(())
}

/// Loads the object with the maps pinned in `opts.pin_dir` (adopting
/// pinned ones), and returns it with the typed maps and, for adopted
/// maps, what they held.
pub(crate) fn load(opts: &Options, limits: &Limits) -> Result<(Ebpf, Maps, Snapshot), EbpfError> {
    let obj = object()?;
    prepare_pin_dir(&opts.pin_dir)?;
    let expected = expected(opts, limits);
    let mut adopted = false;
    for (name, key, value, entries) in &expected {
        let path = opts.pin_dir.join(name);
        if !path.exists() {
            continue;
        }
        adopted = true;
        let info = MapInfo::from_pin(&path).map_err(map_err(name))?;
        let have = (info.key_size(), info.value_size(), info.max_entries());
        if have != (*key, *value, *entries) {
            return Err(EbpfError::Incompatible {
                map: path,
                detail: format!(
                    "pinned with key/value/entries {have:?}, wanted {:?}; \
                     remove the pins (SocketLb::remove_pins) to start afresh",
                    (*key, *value, *entries)
                ),
            });
        }
    }
    let mut loader = EbpfLoader::new();
    loader.default_map_pin_directory(&opts.pin_dir);
    for (name, _, _, entries) in &expected {
        loader.map_max_entries(name, *entries);
    }
    let mut ebpf = loader
        .load(obj)
        .map_err(|source| EbpfError::Load(Box::new(source)))?;
    let mut take = |name: &'static str| {
        ebpf.take_map(name).ok_or_else(|| EbpfError::Map {
            name: name.to_owned(),
            source: Box::new(aya::maps::MapError::InvalidName {
                name: name.to_owned(),
            }),
        })
    };
    let svc = take(names::SERVICES)?;
    let slot = take(names::SLOTS)?;
    let be = take(names::BACKENDS)?;
    let rr = take(names::RR)?;
    let svc_stats = take(names::SVC_STATS)?;
    let be_stats = take(names::BE_STATS)?;
    let cpus = aya::util::nr_cpus().map_err(|(what, source)| EbpfError::Io {
        context: format!("count CPUs ({what})"),
        source,
    })?;
    let maps = Maps {
        svc: HashMap::try_from(svc).map_err(map_err(names::SERVICES))?,
        slot: HashMap::try_from(slot).map_err(map_err(names::SLOTS))?,
        be: Array::try_from(be).map_err(map_err(names::BACKENDS))?,
        rr: Array::try_from(rr).map_err(map_err(names::RR))?,
        svc_stats: PerCpuArray::try_from(svc_stats).map_err(map_err(names::SVC_STATS))?,
        be_stats: PerCpuArray::try_from(be_stats).map_err(map_err(names::BE_STATS))?,
        cpus,
    };
    let snapshot = if adopted {
        maps.snapshot()?
    } else {
        Snapshot::default()
    };
    Ok((ebpf, maps, snapshot))
}

fn link_path(dir: &Path, prog: &str) -> PathBuf {
    dir.join(format!("link_{prog}"))
}

/// Attaches every program to the cgroup through pinned links, then
/// retires the links a previous loader pinned there.
pub(crate) fn attach(ebpf: &mut Ebpf, opts: &Options) -> Result<(), EbpfError> {
    let cgroup = File::open(&opts.cgroup).map_err(|source| EbpfError::Io {
        context: format!("open cgroup {}", opts.cgroup.display()),
        source,
    })?;
    let prog_err = |name: &str| {
        let name = name.to_owned();
        move |source| EbpfError::Program {
            name,
            source: Box::new(source),
        }
    };
    let mut fresh = Vec::new();
    for name in PROGRAMS {
        let prog: &mut CgroupSockAddr = ebpf
            .program_mut(name)
            .ok_or_else(|| EbpfError::Io {
                context: format!("program {name} missing from the object"),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })?
            .try_into()
            .map_err(prog_err(name))?;
        prog.load().map_err(prog_err(name))?;
        // A bpf_link on a cgroup always runs beside the cgroup's other
        // programs (BPF_F_ALLOW_MULTI); "Single" passes no flags.
        let id = prog
            .attach(&cgroup, CgroupAttachMode::Single)
            .map_err(prog_err(name))?;
        let link = prog.take_link(id).map_err(prog_err(name))?;
        let link: FdLink = link.try_into().map_err(|source| EbpfError::Io {
            context: format!("link of {name}: {source}"),
            source: std::io::Error::other("not a bpf_link"),
        })?;
        let tmp = opts.pin_dir.join(format!("link_{name}_new"));
        let _ = std::fs::remove_file(&tmp);
        link.pin(&tmp).map_err(|source| EbpfError::Io {
            context: format!("pin link {}: {source}", tmp.display()),
            source: std::io::Error::other("BPF_OBJ_PIN"),
        })?;
        fresh.push((name, tmp));
    }
    // Every new program runs now; retire the old ones.
    for (name, tmp) in fresh {
        let path = link_path(&opts.pin_dir, name);
        if path.exists() {
            unpin_link(&path)?;
        }
        std::fs::rename(&tmp, &path).map_err(|source| EbpfError::Io {
            context: format!("rename {} to {}", tmp.display(), path.display()),
            source,
        })?;
    }
    Ok(())
}

/// Unpins one link; its program detaches when no one else holds it.
fn unpin_link(path: &Path) -> Result<(), EbpfError> {
    let link = PinnedLink::from_pin(path).map_err(|source| EbpfError::Io {
        context: format!("open pinned link {}: {source}", path.display()),
        source: std::io::Error::other("BPF_OBJ_GET"),
    })?;
    let fd = link.unpin().map_err(|source| EbpfError::Io {
        context: format!("unpin link {}", path.display()),
        source,
    })?;
    drop(fd);
    Ok(())
}

/// Detaches the programs (unpins their links) and removes the pinned
/// maps from `dir`; `true` if anything was there.
pub(crate) fn remove_pins(dir: &Path) -> Result<bool, EbpfError> {
    let mut found = false;
    for name in PROGRAMS {
        for path in [link_path(dir, name), dir.join(format!("link_{name}_new"))] {
            if path.exists() {
                found = true;
                unpin_link(&path)?;
            }
        }
    }
    for name in names::ALL {
        let path = dir.join(name);
        if path.exists() {
            found = true;
            std::fs::remove_file(&path).map_err(|source| EbpfError::Io {
                context: format!("unpin map {}", path.display()),
                source,
            })?;
        }
    }
    Ok(found)
}

impl Maps {
    /// Reads what adopted maps hold.
    fn snapshot(&self) -> Result<Snapshot, EbpfError> {
        let mut snap = Snapshot::default();
        for entry in self.svc.iter() {
            snap.services.push(entry.map_err(map_err(names::SERVICES))?);
        }
        if !snap.services.is_empty() {
            for (id, value) in self.be.iter().enumerate() {
                let value = value.map_err(map_err(names::BACKENDS))?;
                if value[18] != 0 {
                    snap.backends
                        .push((u32::try_from(id).unwrap_or(u32::MAX), value));
                }
            }
        }
        for entry in self.slot.iter() {
            snap.slots.push(entry.map_err(map_err(names::SLOTS))?);
        }
        Ok(snap)
    }

    /// Reads what the maps hold again (after a failed write).
    pub(crate) fn reread(&self) -> Result<Snapshot, EbpfError> {
        let mut snap = self.snapshot()?;
        if snap.services.is_empty() {
            // Servers left by a failed batch still need freeing.
            for (id, value) in self.be.iter().enumerate() {
                let value = value.map_err(map_err(names::BACKENDS))?;
                if value[18] != 0 {
                    snap.backends
                        .push((u32::try_from(id).unwrap_or(u32::MAX), value));
                }
            }
        }
        Ok(snap)
    }

    fn zero_stats(&self) -> Result<PerCpuValues<StatsWords>, EbpfError> {
        PerCpuValues::try_from(vec![[0u64; 5]; self.cpus]).map_err(|source| EbpfError::Io {
            context: "per-CPU zero value".into(),
            source,
        })
    }

    /// Plays `writes` in order; stops at the first failure.
    pub(crate) fn execute(&mut self, writes: &[Write]) -> Result<(), EbpfError> {
        for w in writes {
            match w {
                Write::Backend { id, value } => self
                    .be
                    .set(*id, value, 0)
                    .map_err(map_err(names::BACKENDS))?,
                Write::ZeroBackendStats(id) => {
                    let zero = self.zero_stats()?;
                    self.be_stats
                        .set(*id, zero, 0)
                        .map_err(map_err(names::BE_STATS))?;
                }
                Write::ZeroServiceStats(id) => {
                    let zero = self.zero_stats()?;
                    self.svc_stats
                        .set(*id, zero, 0)
                        .map_err(map_err(names::SVC_STATS))?;
                }
                Write::ResetRr(id) => self.rr.set(*id, 0, 0).map_err(map_err(names::RR))?,
                Write::Slot { key, backend } => self
                    .slot
                    .insert(key, backend, 0)
                    .map_err(map_err(names::SLOTS))?,
                Write::DeleteSlot(key) => match self.slot.remove(key) {
                    Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                    Err(e) => return Err(map_err(names::SLOTS)(e)),
                },
                Write::Service { key, value } => self
                    .svc
                    .insert(key, value, 0)
                    .map_err(map_err(names::SERVICES))?,
                Write::DeleteService(key) => match self.svc.remove(key) {
                    Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                    Err(e) => return Err(map_err(names::SERVICES)(e)),
                },
            }
        }
        Ok(())
    }

    fn sum(values: &PerCpuValues<StatsWords>) -> StatsWords {
        let mut out = [0u64; 5];
        for cpu in values.iter() {
            for (o, v) in out.iter_mut().zip(cpu) {
                *o = o.wrapping_add(*v);
            }
        }
        out
    }

    /// A service's counters, summed over CPUs.
    pub(crate) fn service_stats(&self, id: u32) -> Result<StatsWords, EbpfError> {
        let v = self
            .svc_stats
            .get(&id, 0)
            .map_err(map_err(names::SVC_STATS))?;
        Ok(Self::sum(&v))
    }

    /// A real server's counters, summed over CPUs.
    pub(crate) fn backend_stats(&self, id: u32) -> Result<StatsWords, EbpfError> {
        let v = self
            .be_stats
            .get(&id, 0)
            .map_err(map_err(names::BE_STATS))?;
        Ok(Self::sum(&v))
    }
}
