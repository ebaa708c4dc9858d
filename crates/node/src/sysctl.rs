//! The kernel settings kube-proxy sets when it starts, set the same way:
//! read, and written only when they differ (or, for the conntrack table
//! size and its hash, only when smaller). This module owns which
//! settings, on which kernels, and writing them.
//!
//! First the conntrack settings of `--conntrack-*` (`conntrack.*` in the
//! configuration file), as kube-proxy v1.37's `conntrack.SetSysctls`
//! (`pkg/proxy/conntrack/sysctls.go`, run from `platformSetup` before the
//! proxier exists):
//!
//! * `net/netfilter/nf_conntrack_max` raised to [`conntrack_max`]
//!   (max-per-core × the host's CPUs, at least `min`, at most 1048576),
//!   never lowered; `maxPerCore: 0` leaves it alone;
//! * the module parameter `/sys/module/nf_conntrack/parameters/hashsize`
//!   raised to a quarter of that when smaller;
//! * `nf_conntrack_tcp_timeout_established` and `…_close_wait`, and
//!   `nf_conntrack_udp_timeout` and `…_udp_timeout_stream`, each when its
//!   duration is above 0 (whole seconds); `nf_conntrack_tcp_be_liberal = 1`
//!   with `--conntrack-tcp-be-liberal`.
//!
//! Then the IPVS proxier's own (`NewProxier`):
//!
//! * `net/ipv4/vs/conntrack = 1`: IPVS keeps conntrack entries, so the
//!   iptables NAT rules (masquerade, hairpin) see its traffic;
//! * `net/ipv4/vs/conn_reuse_mode = 0` on kernels 4.1 to 5.8 only; left
//!   as it is from 5.9, which fixed the 1 s delay on port reuse
//!   (kubernetes#93297), and not settable before 4.1;
//! * `net/ipv4/vs/expire_nodest_conn = 1`: drop connections to deleted
//!   real servers at once;
//! * `net/ipv4/vs/expire_quiescent_template = 1`: persistence templates
//!   of weight-0 real servers expire;
//! * `net/ipv4/ip_forward = 1`;
//! * with `--ipvs-strict-arp`: `net/ipv4/conf/all/arp_ignore = 1` and
//!   `net/ipv4/conf/all/arp_announce = 2`, so the node does not answer
//!   ARP for the addresses on `kube-ipvs0`.
//!
//! One difference: kube-proxy exits when a conntrack setting cannot be
//! written ("could not set conntrack parameters from kube-proxy
//! configuration"); rvs-proxy logs it, as it does for the other
//! settings, and tries again at each full sync (by then the conntrack
//! module the iptables rules load may be there).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which tree a setting lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tree {
    /// `/proc/sys` (sysctls).
    ProcSys,
    /// `/sys` (module parameters).
    Sys,
}

/// When a setting is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Whenever it differs from the value.
    Exactly,
    /// Only when it is smaller than the value (or unreadable).
    AtLeast,
}

/// One kernel setting: where, the value wanted, and when to write it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sysctl {
    /// The tree.
    pub tree: Tree,
    /// The path under the tree (`net/ipv4/ip_forward`).
    pub path: &'static str,
    /// The value.
    pub value: u32,
    /// When it is written.
    pub rule: Rule,
}

impl Sysctl {
    /// A sysctl under `/proc/sys` set to exactly `value`.
    pub const fn exactly(path: &'static str, value: u32) -> Sysctl {
        Sysctl {
            tree: Tree::ProcSys,
            path,
            value,
            rule: Rule::Exactly,
        }
    }
}

/// The roots of the two trees (`/proc/sys` and `/sys` on a node; temporary
/// directories in tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Roots {
    /// Where `/proc/sys` is.
    pub proc_sys: PathBuf,
    /// Where `/sys` is.
    pub sys: PathBuf,
}

impl Default for Roots {
    fn default() -> Roots {
        Roots {
            proc_sys: PathBuf::from("/proc/sys"),
            sys: PathBuf::from("/sys"),
        }
    }
}

impl Roots {
    /// The file of `sysctl`.
    pub fn file(&self, sysctl: &Sysctl) -> PathBuf {
        match sysctl.tree {
            Tree::ProcSys => self.proc_sys.join(sysctl.path),
            Tree::Sys => self.sys.join(sysctl.path),
        }
    }
}

/// kube-proxy's conntrack settings (`KubeProxyConntrackConfiguration`),
/// with its defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConntrackOptions {
    /// `--conntrack-max-per-core` (`conntrack.maxPerCore`): 0 leaves
    /// `nf_conntrack_max` (and `min`) alone.
    pub max_per_core: u32,
    /// `--conntrack-min` (`conntrack.min`).
    pub min: u32,
    /// `--conntrack-tcp-timeout-established`; 0 leaves it.
    pub tcp_established_timeout: Duration,
    /// `--conntrack-tcp-timeout-close-wait`; 0 leaves it.
    pub tcp_close_wait_timeout: Duration,
    /// `--conntrack-tcp-be-liberal`.
    pub tcp_be_liberal: bool,
    /// `--conntrack-udp-timeout`; 0 leaves it.
    pub udp_timeout: Duration,
    /// `--conntrack-udp-timeout-stream`; 0 leaves it.
    pub udp_stream_timeout: Duration,
}

impl Default for ConntrackOptions {
    /// kube-proxy's defaults (`SetDefaults_KubeProxyConfiguration`):
    /// 32768 per core, at least 131072, 24 h established, 1 h close-wait,
    /// the rest left as the kernel has them.
    fn default() -> ConntrackOptions {
        ConntrackOptions {
            max_per_core: 32 * 1024,
            min: 128 * 1024,
            tcp_established_timeout: Duration::from_secs(24 * 3600),
            tcp_close_wait_timeout: Duration::from_secs(3600),
            tcp_be_liberal: false,
            udp_timeout: Duration::ZERO,
            udp_stream_timeout: Duration::ZERO,
        }
    }
}

/// kube-proxy's ceiling on the computed table size (kubernetes#137002,
/// in since v1.36): 1 Mi entries, whatever the core count.
pub const CONNTRACK_MAX_LIMIT: u32 = 1 << 20;

/// The conntrack table size kube-proxy asks for (`getConntrackMax`):
/// `max_per_core × cpus`, capped at [`CONNTRACK_MAX_LIMIT`] (the cap is
/// checked first, so a `min` above it is not reached), else at least
/// `min`; `None` when `max_per_core` is 0 (leave the limit as it is).
pub fn conntrack_max(max_per_core: u32, min: u32, cpus: usize) -> Option<u32> {
    if max_per_core == 0 {
        return None;
    }
    let scaled = u64::from(max_per_core).saturating_mul(u64::try_from(cpus).unwrap_or(u64::MAX));
    if scaled > u64::from(CONNTRACK_MAX_LIMIT) {
        return Some(CONNTRACK_MAX_LIMIT);
    }
    let scaled = u32::try_from(scaled).unwrap_or(CONNTRACK_MAX_LIMIT);
    Some(if scaled > min { scaled } else { min })
}

/// Whole seconds of a timeout, as kube-proxy's `int(d / time.Second)`,
/// or `None` when it rounds to 0 (left as the kernel has it).
fn seconds(d: Duration) -> Option<u32> {
    let secs = d.as_secs();
    (secs > 0).then(|| u32::try_from(secs).unwrap_or(u32::MAX))
}

/// The conntrack settings of `options` on a host with `cpus` CPUs, in
/// kube-proxy's order.
pub fn conntrack_sysctls(options: &ConntrackOptions, cpus: usize) -> Vec<Sysctl> {
    let mut out = Vec::new();
    if let Some(max) = conntrack_max(options.max_per_core, options.min, cpus) {
        out.push(Sysctl {
            tree: Tree::ProcSys,
            path: "net/netfilter/nf_conntrack_max",
            value: max,
            rule: Rule::AtLeast,
        });
        out.push(Sysctl {
            tree: Tree::Sys,
            path: "module/nf_conntrack/parameters/hashsize",
            value: max / 4,
            rule: Rule::AtLeast,
        });
    }
    let timeouts = [
        (
            "net/netfilter/nf_conntrack_tcp_timeout_established",
            options.tcp_established_timeout,
        ),
        (
            "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
            options.tcp_close_wait_timeout,
        ),
    ];
    for (path, d) in timeouts {
        if let Some(secs) = seconds(d) {
            out.push(Sysctl::exactly(path, secs));
        }
    }
    if options.tcp_be_liberal {
        out.push(Sysctl::exactly(
            "net/netfilter/nf_conntrack_tcp_be_liberal",
            1,
        ));
    }
    let timeouts = [
        (
            "net/netfilter/nf_conntrack_udp_timeout",
            options.udp_timeout,
        ),
        (
            "net/netfilter/nf_conntrack_udp_timeout_stream",
            options.udp_stream_timeout,
        ),
    ];
    for (path, d) in timeouts {
        if let Some(secs) = seconds(d) {
            out.push(Sysctl::exactly(path, secs));
        }
    }
    out
}

/// The number of CPUs kube-proxy sizes the table by: the host's online
/// CPUs, from `devices/system/cpu/online` under `sys` (a list such as
/// `0-3,8-11`), so a cpuset or static CPU policy on the proxy does not
/// shrink a host-wide table (kubernetes#99225; kube-proxy reads sysfs,
/// through cadvisor's topology and later `k8s.io/utils/cpuset.NumCPU`);
/// when that cannot be read, the CPUs this process may run on, as Go's
/// `runtime.NumCPU`.
pub fn cpu_count(sys: &Path) -> usize {
    let online = std::fs::read_to_string(sys.join("devices/system/cpu/online"))
        .ok()
        .and_then(|text| count_cpu_list(&text))
        .filter(|n| *n > 0);
    if let Some(n) = online {
        return n;
    }
    let affinity = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map(|set| {
            (0..nix::sched::CpuSet::count())
                .filter(|i| set.is_set(*i).unwrap_or(false))
                .count()
        })
        .unwrap_or(0);
    affinity.max(1)
}

/// The number of CPUs in a kernel CPU list (`0-3,8,10-11`); `None` when
/// it does not parse.
pub fn count_cpu_list(text: &str) -> Option<usize> {
    let text = text.trim();
    if text.is_empty() {
        return Some(0);
    }
    let mut n = 0usize;
    for part in text.split(',') {
        let part = part.trim();
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                n += b.checked_sub(a)? + 1;
            }
            None => {
                part.parse::<usize>().ok()?;
                n += 1;
            }
        }
    }
    Some(n)
}

/// The kernel version as (major, minor), from a release string such as
/// `6.1.0-28-cloud-amd64`.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The IPVS proxier's sysctls on a kernel of `release`, in kube-proxy's
/// order.
pub fn kube_proxy_sysctls(release: &str, strict_arp: bool) -> Vec<Sysctl> {
    let mut out = vec![Sysctl::exactly("net/ipv4/vs/conntrack", 1)];
    match kernel_version(release) {
        Some(v) if v < (4, 1) => tracing::error!(
            release,
            "kernel older than 4.1: cannot set net/ipv4/vs/conn_reuse_mode"
        ),
        Some(v) if v >= (5, 9) => {
            tracing::debug!("net/ipv4/vs/conn_reuse_mode left as it is (kernel 5.9 or later)");
        }
        Some(_) => out.push(Sysctl::exactly("net/ipv4/vs/conn_reuse_mode", 0)),
        None => tracing::warn!(
            release,
            "cannot parse the kernel version: net/ipv4/vs/conn_reuse_mode left as it is"
        ),
    }
    out.extend([
        Sysctl::exactly("net/ipv4/vs/expire_nodest_conn", 1),
        Sysctl::exactly("net/ipv4/vs/expire_quiescent_template", 1),
        Sysctl::exactly("net/ipv4/ip_forward", 1),
    ]);
    if strict_arp {
        out.extend([
            Sysctl::exactly("net/ipv4/conf/all/arp_ignore", 1),
            Sysctl::exactly("net/ipv4/conf/all/arp_announce", 2),
        ]);
    }
    out
}

/// Writes each setting under `roots` that its rule says to write. Returns
/// (changed, failed); each change and failure is logged with the path.
pub fn ensure(roots: &Roots, sysctls: &[Sysctl]) -> (usize, usize) {
    let (mut changed, mut failed) = (0, 0);
    for sysctl in sysctls {
        let file = roots.file(sysctl);
        let want = sysctl.value;
        let current = std::fs::read_to_string(&file)
            .map_err(|e| e.to_string())
            .and_then(|s| s.trim().parse::<u32>().map_err(|e| e.to_string()));
        let enough = match (sysctl.rule, &current) {
            (Rule::Exactly, Ok(v)) => *v == want,
            (Rule::AtLeast, Ok(v)) => *v >= want,
            (_, Err(_)) => false,
        };
        if enough {
            continue;
        }
        let path = file.display();
        match std::fs::write(&file, format!("{want}\n")) {
            Ok(()) => {
                changed += 1;
                tracing::info!(sysctl = %path, value = want, was = ?current.ok(), "sysctl set");
            }
            Err(e) => {
                failed += 1;
                tracing::error!(sysctl = %path, value = want, error = %e, "cannot set sysctl");
            }
        }
    }
    (changed, failed)
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(kernel_version("6.1.0-28-cloud-amd64"), Some((6, 1)));
        assert_eq!(kernel_version("5.10.0"), Some((5, 10)));
        assert_eq!(kernel_version("4.19.0+"), Some((4, 19)));
        assert_eq!(kernel_version("garbage"), None);
    }

    #[test]
    fn conn_reuse_mode_by_kernel_version() {
        let has = |release: &str| {
            kube_proxy_sysctls(release, false)
                .iter()
                .any(|s| s.path == "net/ipv4/vs/conn_reuse_mode")
        };
        assert!(!has("3.10.0-1160.el7.x86_64"));
        assert!(has("4.1.0"));
        assert!(has("5.8.18"));
        assert!(!has("5.9.0"));
        assert!(!has("6.1.0-28-cloud-amd64"));
        let all: Vec<(&str, u32)> = kube_proxy_sysctls("5.4.0", true)
            .iter()
            .map(|s| (s.path, s.value))
            .collect();
        assert_eq!(
            all,
            vec![
                ("net/ipv4/vs/conntrack", 1),
                ("net/ipv4/vs/conn_reuse_mode", 0),
                ("net/ipv4/vs/expire_nodest_conn", 1),
                ("net/ipv4/vs/expire_quiescent_template", 1),
                ("net/ipv4/ip_forward", 1),
                ("net/ipv4/conf/all/arp_ignore", 1),
                ("net/ipv4/conf/all/arp_announce", 2),
            ]
        );
    }

    /// kube-proxy's `TestGetConntrackMax` and `TestGetConntrackMax_Capped`.
    #[test]
    fn conntrack_max_scales_by_cpu_with_a_floor_and_a_cap() {
        assert_eq!(conntrack_max(32768, 131072, 2), Some(131072));
        assert_eq!(conntrack_max(32768, 131072, 8), Some(262144));
        assert_eq!(conntrack_max(67890, 1, 4), Some(67890 * 4));
        assert_eq!(conntrack_max(1, 123456, 4), Some(123456));
        assert_eq!(conntrack_max(0, 123456, 4), None, "leave the limit alone");
        assert_eq!(conntrack_max(32768, 0, 512), Some(CONNTRACK_MAX_LIMIT));
        // The cap is checked before the floor, as in kube-proxy.
        assert_eq!(
            conntrack_max(32768, 2_000_000, 64),
            Some(CONNTRACK_MAX_LIMIT)
        );
        assert_eq!(conntrack_max(1, 2_000_000, 64), Some(2_000_000));
        assert_eq!(
            conntrack_max(u32::MAX, 0, usize::MAX),
            Some(CONNTRACK_MAX_LIMIT)
        );
    }

    /// kube-proxy's `TestSetupConntrack`: what is set for which option.
    #[test]
    fn conntrack_sysctls_follow_the_options() {
        let none = ConntrackOptions {
            max_per_core: 0,
            tcp_established_timeout: Duration::ZERO,
            tcp_close_wait_timeout: Duration::ZERO,
            ..ConntrackOptions::default()
        };
        assert!(conntrack_sysctls(&none, 8).is_empty());
        let defaults: Vec<(Tree, &str, u32, Rule)> =
            conntrack_sysctls(&ConntrackOptions::default(), 8)
                .iter()
                .map(|s| (s.tree, s.path, s.value, s.rule))
                .collect();
        assert_eq!(
            defaults,
            [
                (
                    Tree::ProcSys,
                    "net/netfilter/nf_conntrack_max",
                    262144,
                    Rule::AtLeast
                ),
                (
                    Tree::Sys,
                    "module/nf_conntrack/parameters/hashsize",
                    65536,
                    Rule::AtLeast
                ),
                (
                    Tree::ProcSys,
                    "net/netfilter/nf_conntrack_tcp_timeout_established",
                    86400,
                    Rule::Exactly
                ),
                (
                    Tree::ProcSys,
                    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
                    3600,
                    Rule::Exactly
                ),
            ]
        );
        let all = ConntrackOptions {
            max_per_core: 12,
            min: 0,
            tcp_established_timeout: Duration::from_secs(5),
            tcp_close_wait_timeout: Duration::from_millis(5500),
            tcp_be_liberal: true,
            udp_timeout: Duration::from_secs(30),
            udp_stream_timeout: Duration::from_secs(120),
        };
        let got: Vec<(&str, u32)> = conntrack_sysctls(&all, 8)
            .iter()
            .map(|s| (s.path, s.value))
            .collect();
        assert_eq!(
            got,
            [
                ("net/netfilter/nf_conntrack_max", 96),
                ("module/nf_conntrack/parameters/hashsize", 24),
                ("net/netfilter/nf_conntrack_tcp_timeout_established", 5),
                ("net/netfilter/nf_conntrack_tcp_timeout_close_wait", 5),
                ("net/netfilter/nf_conntrack_tcp_be_liberal", 1),
                ("net/netfilter/nf_conntrack_udp_timeout", 30),
                ("net/netfilter/nf_conntrack_udp_timeout_stream", 120),
            ]
        );
        // Under a second rounds to 0: left as it is.
        let short = ConntrackOptions {
            max_per_core: 0,
            udp_timeout: Duration::from_millis(500),
            ..none
        };
        assert!(conntrack_sysctls(&short, 1).is_empty());
    }

    #[test]
    fn cpu_lists_count() {
        assert_eq!(count_cpu_list("0\n"), Some(1));
        assert_eq!(count_cpu_list("0-1\n"), Some(2));
        assert_eq!(count_cpu_list("0-3,8-11"), Some(8));
        assert_eq!(count_cpu_list("0,2,4-5"), Some(4));
        assert_eq!(count_cpu_list(""), Some(0));
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list("a-b"), None);
    }

    #[test]
    fn cpus_come_from_sysfs_then_the_affinity_mask() {
        let root = rvs_testrig::TempDir::new("sysctl-cpus").unwrap();
        std::fs::create_dir_all(root.path().join("devices/system/cpu")).unwrap();
        std::fs::write(root.path().join("devices/system/cpu/online"), "0-5,8\n").unwrap();
        assert_eq!(cpu_count(root.path()), 7);
        let empty = rvs_testrig::TempDir::new("sysctl-nocpus").unwrap();
        assert!(cpu_count(empty.path()) >= 1);
    }

    #[test]
    fn ensure_writes_only_what_its_rule_asks_for() {
        let dir = rvs_testrig::TempDir::new("sysctl-ensure").unwrap();
        let roots = Roots {
            proc_sys: dir.path().join("proc-sys"),
            sys: dir.path().join("sys"),
        };
        let write = |path: PathBuf, text: &str| {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        let read = |path: PathBuf| std::fs::read_to_string(path).unwrap();
        let p = &roots.proc_sys;
        write(p.join("net/ipv4/vs/conntrack"), "1\n");
        write(p.join("net/ipv4/ip_forward"), "0\n");
        write(p.join("net/netfilter/nf_conntrack_max"), "262144\n");
        write(p.join("net/netfilter/nf_conntrack_udp_timeout"), "30\n");
        write(
            roots.sys.join("module/nf_conntrack/parameters/hashsize"),
            "1024\n",
        );
        let at_least = |tree, path, value| Sysctl {
            tree,
            path,
            value,
            rule: Rule::AtLeast,
        };
        let (changed, failed) = ensure(
            &roots,
            &[
                Sysctl::exactly("net/ipv4/vs/conntrack", 1),
                Sysctl::exactly("net/ipv4/ip_forward", 1),
                Sysctl::exactly("net/ipv4/no/such/dir", 1),
                // Larger already: never lowered.
                at_least(Tree::ProcSys, "net/netfilter/nf_conntrack_max", 131072),
                at_least(Tree::Sys, "module/nf_conntrack/parameters/hashsize", 32768),
                // Exactly: lowered too.
                Sysctl::exactly("net/netfilter/nf_conntrack_udp_timeout", 10),
            ],
        );
        assert_eq!((changed, failed), (3, 1));
        assert_eq!(read(p.join("net/ipv4/ip_forward")), "1\n");
        assert_eq!(read(p.join("net/netfilter/nf_conntrack_max")), "262144\n");
        assert_eq!(
            read(roots.sys.join("module/nf_conntrack/parameters/hashsize")),
            "32768\n"
        );
        assert_eq!(
            read(p.join("net/netfilter/nf_conntrack_udp_timeout")),
            "10\n"
        );
        // A smaller table is raised.
        write(p.join("net/netfilter/nf_conntrack_max"), "65536\n");
        let (changed, _) = ensure(
            &roots,
            &[at_least(
                Tree::ProcSys,
                "net/netfilter/nf_conntrack_max",
                131072,
            )],
        );
        assert_eq!(changed, 1);
        assert_eq!(read(p.join("net/netfilter/nf_conntrack_max")), "131072\n");
    }
}
