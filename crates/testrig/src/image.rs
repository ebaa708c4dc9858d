//! The VM's base initramfs: busybox, the host tools tests compare against,
//! the kernel modules IPVS tests need, and the init and topology scripts.
//!
//! Built once per cache key (kernel release + this crate's scripts and
//! lists) and reused; per-run files are appended as a second cpio archive,
//! which the kernel unpacks over the first (see [`crate::vm`]).

use std::collections::BTreeSet;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::cpio::Archive;
use crate::kernel::{self, Kernel};
use crate::{RigError, host};

/// The init script the VM boots into.
pub const INIT_SCRIPT: &str = include_str!("../assets/init.sh");
/// Shell functions test scripts source to build topologies.
pub const TOPOLOGY_SCRIPT: &str = include_str!("../assets/topo.sh");
/// Where [`TOPOLOGY_SCRIPT`] lives inside the VM.
pub const TOPOLOGY_PATH: &str = "/usr/lib/rvs/topo.sh";

/// Modules loaded at boot, in this order. Missing ones are tolerated only
/// when listed in [`OPTIONAL_MODULES`].
pub const MODULES: &[&str] = &[
    // IPVS and every scheduler Debian's kernel ships.
    "ip_vs",
    "ip_vs_rr",
    "ip_vs_wrr",
    "ip_vs_lc",
    "ip_vs_wlc",
    "ip_vs_lblc",
    "ip_vs_lblcr",
    "ip_vs_dh",
    "ip_vs_sh",
    "ip_vs_sed",
    "ip_vs_nq",
    "ip_vs_mh",
    "ip_vs_fo",
    "ip_vs_ovf",
    "ip_vs_twos",
    // The NIC of jobs with a forward to the host (virtio-net-pci).
    "virtio_pci",
    "virtio_net",
    // Devices for topologies and netlink capture.
    "dummy",
    "veth",
    "nlmon",
    // Connection tracking, ipset and the iptables/nftables pieces the
    // proxy's rules use.
    "nf_conntrack",
    "nf_conntrack_netlink",
    "nf_nat",
    "xt_ipvs",
    "ip_set",
    "ip_set_hash_ip",
    "ip_set_hash_ipport",
    "ip_set_hash_ipportip",
    "ip_set_hash_ipportnet",
    "ip_set_hash_net",
    "ip_set_bitmap_port",
    "xt_set",
    "iptable_nat",
    "iptable_filter",
    "iptable_mangle",
    "ip6table_nat",
    "ip6table_filter",
    "ip6table_mangle",
    "xt_MASQUERADE",
    "xt_mark",
    "xt_comment",
    "xt_conntrack",
    "xt_addrtype",
    // External-IP rules match `-m physdev ! --physdev-is-in`.
    "xt_physdev",
    "xt_multiport",
    "xt_nat",
    "xt_tcpudp",
    "ipt_REJECT",
    "ip6t_REJECT",
    "nf_tables",
    "nft_compat",
    "nft_chain_nat",
    "nft_ct",
    "nft_nat",
    "nft_masq",
    "nft_reject_inet",
    "crc32c_generic",
];

/// Modules loaded after [`MODULES`] when the kernel has them: kube-proxy's
/// iptables mode picks endpoints with `-m statistic`, its nftables mode
/// with `numgen`, finds local addresses with `fib` and rejects in its
/// `ip`/`ip6` tables.
pub const PROXY_MODE_MODULES: &[&str] = &[
    "xt_statistic",
    "nft_reject_ipv4",
    "nft_reject_ipv6",
    "nft_numgen",
    "nft_fib",
    "nft_fib_inet",
    "nft_fib_ipv4",
    "nft_fib_ipv6",
];

/// Modules that may be absent: `ip_vs_twos` exists only from Linux 6.2;
/// some netfilter pieces are built in on some kernels.
pub const OPTIONAL_MODULES: &[&str] = &[
    "ip_vs_twos",
    "xt_tcpudp",
    "nf_nat",
    "crc32c_generic",
    "nft_masq",
    "nft_nat",
    "nft_ct",
    "ip6table_mangle",
];

/// Host programs copied into the VM, with the Debian package providing each.
pub const TOOLS: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ipvsadm", "ipvsadm"),
    ("ipset", "ipset"),
    ("nft", "nftables"),
    ("conntrack", "conntrack"),
    ("iptables", "iptables"),
    ("iptables-save", "iptables"),
    ("iptables-restore", "iptables"),
    ("ip6tables", "iptables"),
    ("ip6tables-save", "iptables"),
    ("ip6tables-restore", "iptables"),
    ("iptables-legacy", "iptables"),
    ("iptables-legacy-save", "iptables"),
    ("iptables-legacy-restore", "iptables"),
    ("ip6tables-legacy", "iptables"),
    ("ip6tables-legacy-save", "iptables"),
    ("ip6tables-legacy-restore", "iptables"),
    ("iptables-nft", "iptables"),
    ("iptables-nft-save", "iptables"),
    ("iptables-nft-restore", "iptables"),
    ("ip6tables-nft", "iptables"),
    ("ip6tables-nft-save", "iptables"),
    ("ip6tables-nft-restore", "iptables"),
];

/// Host files the guest's tools read (service and protocol names for
/// `ipvsadm` listings without `-n`).
const HOST_FILES: &[&str] = &["/etc/services", "/etc/protocols"];

/// Directory of iptables extension plugins, loaded with `dlopen`.
const XTABLES_PLUGINS: &str = "/usr/lib/x86_64-linux-gnu/xtables";

/// Bumped when the image layout changes in a way the key does not see.
const FORMAT: u32 = 2;

/// A bootable kernel and its base initramfs.
#[derive(Clone, Debug)]
pub struct Image {
    /// The guest kernel.
    pub kernel: Kernel,
    /// The base initramfs (an uncompressed newc cpio archive).
    pub initramfs: PathBuf,
}

/// Prepares (or finds cached) the kernel and base initramfs.
///
/// Safe to call from concurrent test processes: work is serialised by a
/// lock file in the cache directory.
pub fn prepare() -> Result<Image, RigError> {
    let cache = crate::cache_dir();
    std::fs::create_dir_all(&cache).map_err(RigError::io(format!("create {}", cache.display())))?;
    let lock_path = cache.join("lock");
    let lock = File::create(&lock_path)
        .map_err(RigError::io(format!("create {}", lock_path.display())))?;
    lock.lock()
        .map_err(RigError::io(format!("lock {}", lock_path.display())))?;

    let kernel = kernel::fetch(&cache.join("kernel"))?;
    let key = cache_key(&kernel);
    let initramfs = cache.join(format!("initramfs-{key:016x}.cpio"));
    if !initramfs.is_file() {
        let tmp = initramfs.with_extension("tmp");
        let mut out =
            File::create(&tmp).map_err(RigError::io(format!("create {}", tmp.display())))?;
        build(&kernel)?
            .finish(&mut out)
            .map_err(RigError::io(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, &initramfs)
            .map_err(RigError::io(format!("rename {} into place", tmp.display())))?;
    }
    Ok(Image { kernel, initramfs })
}

fn cache_key(kernel: &Kernel) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (
        FORMAT,
        &kernel.release,
        INIT_SCRIPT,
        TOPOLOGY_SCRIPT,
        MODULES,
        PROXY_MODE_MODULES,
        TOOLS,
    )
        .hash(&mut hasher);
    hasher.finish()
}

fn build(kernel: &Kernel) -> Result<Archive, RigError> {
    let mut image = Archive::default();
    // Merged /usr, as on the Debian host the tools and libraries come from.
    for (link, target) in [
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ] {
        image.dir(target);
        image.symlink(link, target);
    }
    for dir in [
        "proc",
        "sys",
        "dev",
        "tmp",
        "run",
        "root",
        "srv",
        "rvs/bin",
        "usr/lib/rvs/modules",
    ] {
        image.dir(dir);
    }
    image.chardev("dev/console", 0o600, 5, 1);
    image.symlink("var/run", "../run");
    image.file("init", 0o755, INIT_SCRIPT.as_bytes());
    image.file(TOPOLOGY_PATH, 0o644, TOPOLOGY_SCRIPT.as_bytes());
    image.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n");
    image.file("etc/group", 0o644, b"root:x:0:\n");
    image.file("etc/hosts", 0o644, b"127.0.0.1 localhost\n::1 localhost\n");

    let busybox = host::which("busybox").ok_or_else(|| {
        RigError::Unavailable("busybox not found: install Debian's busybox-static".into())
    })?;
    let mut copier = HostCopier::default();
    copier.add_file_as(&mut image, &busybox, "usr/bin/busybox")?;

    let mut missing = BTreeSet::new();
    for (tool, package) in TOOLS {
        match host::which(tool) {
            Some(path) => copier.add(&mut image, &path)?,
            None => {
                missing.insert(*package);
            }
        }
    }
    if !missing.is_empty() {
        let list: Vec<_> = missing.into_iter().collect();
        return Err(RigError::Unavailable(format!(
            "host tools missing for the VM image; install Debian packages: {}",
            list.join(" ")
        )));
    }
    if let Ok(entries) = std::fs::read_dir(XTABLES_PLUGINS) {
        for entry in entries.filter_map(Result::ok) {
            copier.add(&mut image, &entry.path())?;
        }
    }
    for file in HOST_FILES {
        if Path::new(file).is_file() {
            copier.add(&mut image, Path::new(file))?;
        }
    }

    let mut order = String::new();
    let mut loaded = BTreeSet::new();
    for module in MODULES.iter().chain(PROXY_MODE_MODULES) {
        let Some(files) = kernel.module_files(module)? else {
            if OPTIONAL_MODULES.contains(module) || PROXY_MODE_MODULES.contains(module) {
                continue;
            }
            return Err(RigError::Unavailable(format!(
                "kernel {} has no module {module}",
                kernel.release
            )));
        };
        for file in files {
            let name = file
                .path
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_owned)
                .ok_or_else(|| {
                    RigError::Unavailable(format!("odd module path {}", file.path.display()))
                })?;
            if !loaded.insert(name.clone()) {
                continue;
            }
            let data = std::fs::read(&file.path)
                .map_err(RigError::io(format!("read {}", file.path.display())))?;
            image.file(&format!("usr/lib/rvs/modules/{name}"), 0o644, &data);
            order.push_str(&name);
            if !file.params.is_empty() {
                order.push(' ');
                order.push_str(&file.params);
            }
            order.push('\n');
        }
    }
    image.file("usr/lib/rvs/modules.order", 0o644, order.as_bytes());
    Ok(image)
}

/// Copies host files into an archive at the same paths, replicating the
/// symbolic links on the way (merged `/usr`, `/etc/alternatives`) and the
/// shared-library closure of every ELF file, as `ldd` reports it.
#[derive(Debug, Default)]
pub(crate) struct HostCopier {
    seen: BTreeSet<PathBuf>,
}

impl HostCopier {
    /// Adds the host file at `path` (absolute), with links and libraries.
    pub(crate) fn add(&mut self, image: &mut Archive, path: &Path) -> Result<(), RigError> {
        let path = normalize(path);
        if !self.seen.insert(path.clone()) {
            return Ok(());
        }
        let mut walked = PathBuf::from("/");
        let mut components = path.components().skip(1).peekable();
        while let Some(component) = components.next() {
            walked.push(component);
            let meta = std::fs::symlink_metadata(&walked)
                .map_err(RigError::io(format!("inspect {}", walked.display())))?;
            let rel = relative(&walked);
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&walked)
                    .map_err(RigError::io(format!("read link {}", walked.display())))?;
                image.symlink(&rel, &target.to_string_lossy());
                let mut resolved = walked.parent().unwrap_or(Path::new("/")).join(&target);
                resolved.extend(components);
                return self.add(image, &resolved);
            } else if meta.is_dir() {
                image.dir(&rel);
            } else {
                self.add_file_as(image, &walked, &rel)?;
            }
        }
        Ok(())
    }

    /// Adds the host file `path` at `rel` in the archive, with its libraries.
    pub(crate) fn add_file_as(
        &mut self,
        image: &mut Archive,
        path: &Path,
        rel: &str,
    ) -> Result<(), RigError> {
        use std::os::unix::fs::PermissionsExt;
        let data = std::fs::read(path).map_err(RigError::io(format!("read {}", path.display())))?;
        let mode = std::fs::metadata(path)
            .map_err(RigError::io(format!("inspect {}", path.display())))?
            .permissions()
            .mode();
        image.file(rel, mode, &data);
        if data.starts_with(b"\x7fELF") {
            for lib in shared_libraries(path)? {
                self.add(image, &lib)?;
            }
        }
        Ok(())
    }
}

/// The shared libraries `path` loads (empty for static executables).
fn shared_libraries(path: &Path) -> Result<Vec<PathBuf>, RigError> {
    let output = Command::new("ldd")
        .arg(path)
        .output()
        .map_err(RigError::io("run ldd"))?;
    // ldd exits non-zero for static executables ("not a dynamic executable").
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(parse_ldd(&text))
}

fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

fn relative(path: &Path) -> String {
    path.to_string_lossy().trim_start_matches('/').to_owned()
}

/// Resolves `.` and `..` lexically (symlinks are handled by the caller).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(part) => out.push(part),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines_give_library_paths() {
        let text = "\tlinux-vdso.so.1 (0x00007ffc)\n\
                    \tlibpopt.so.0 => /lib/x86_64-linux-gnu/libpopt.so.0 (0x00007f)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n\
                    \tlibmissing.so => not found\n";
        assert_eq!(
            parse_ldd(text),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libpopt.so.0"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2")
            ]
        );
    }

    #[test]
    fn normalize_resolves_dot_dot() {
        assert_eq!(
            normalize(Path::new("/usr/lib64/../lib/x/./ld.so")),
            PathBuf::from("/usr/lib/x/ld.so")
        );
    }

    #[test]
    fn host_copier_replicates_links_and_the_library_closure() {
        // /bin/sh is a symlink on Debian (to dash) and dash links libc.
        let mut image = Archive::default();
        let mut copier = HostCopier::default();
        copier.add(&mut image, Path::new("/bin/sh")).unwrap();
        assert!(image.contains("bin/sh") || image.contains("usr/bin/sh"));
        let libc = shared_libraries(Path::new("/bin/sh")).unwrap();
        assert!(!libc.is_empty(), "/bin/sh is dynamically linked on Debian");
        for lib in libc {
            let canonical = std::fs::canonicalize(&lib).unwrap();
            assert!(
                image.contains(&relative(&canonical)),
                "{} not copied",
                lib.display()
            );
        }
    }
}
