//! The sysctls kube-proxy's IPVS proxier sets when it starts, set the
//! same way: read, and written only when different. This module owns
//! which sysctls, on which kernels, and writing them.
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

use std::path::Path;

/// One sysctl: path under `/proc/sys` and the value wanted.
pub type Sysctl = (&'static str, u32);

/// The kernel version as (major, minor), from a release string such as
/// `6.1.0-28-cloud-amd64`.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.trim().split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The sysctls to set on a kernel of `release`, in kube-proxy's order.
pub fn kube_proxy_sysctls(release: &str, strict_arp: bool) -> Vec<Sysctl> {
    let mut out = vec![("net/ipv4/vs/conntrack", 1)];
    match kernel_version(release) {
        Some(v) if v < (4, 1) => tracing::error!(
            release,
            "kernel older than 4.1: cannot set net/ipv4/vs/conn_reuse_mode"
        ),
        Some(v) if v >= (5, 9) => {
            tracing::debug!("net/ipv4/vs/conn_reuse_mode left as it is (kernel 5.9 or later)");
        }
        Some(_) => out.push(("net/ipv4/vs/conn_reuse_mode", 0)),
        None => tracing::warn!(
            release,
            "cannot parse the kernel version: net/ipv4/vs/conn_reuse_mode left as it is"
        ),
    }
    out.extend([
        ("net/ipv4/vs/expire_nodest_conn", 1),
        ("net/ipv4/vs/expire_quiescent_template", 1),
        ("net/ipv4/ip_forward", 1),
    ]);
    if strict_arp {
        out.extend([
            ("net/ipv4/conf/all/arp_ignore", 1),
            ("net/ipv4/conf/all/arp_announce", 2),
        ]);
    }
    out
}

/// Sets each sysctl under `root` (`/proc/sys`) that differs. Returns
/// (changed, failed); each change and failure is logged with the path.
pub fn ensure(root: &Path, sysctls: &[Sysctl]) -> (usize, usize) {
    let (mut changed, mut failed) = (0, 0);
    for (path, want) in sysctls {
        let file = root.join(path);
        let current = std::fs::read_to_string(&file)
            .map_err(|e| e.to_string())
            .and_then(|s| s.trim().parse::<u32>().map_err(|e| e.to_string()));
        if current == Ok(*want) {
            continue;
        }
        match std::fs::write(&file, format!("{want}\n")) {
            Ok(()) => {
                changed += 1;
                tracing::info!(sysctl = path, value = want, was = ?current.ok(), "sysctl set");
            }
            Err(e) => {
                failed += 1;
                tracing::error!(sysctl = path, value = want, error = %e, "cannot set sysctl");
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
                .any(|(p, _)| *p == "net/ipv4/vs/conn_reuse_mode")
        };
        assert!(!has("3.10.0-1160.el7.x86_64"));
        assert!(has("4.1.0"));
        assert!(has("5.8.18"));
        assert!(!has("5.9.0"));
        assert!(!has("6.1.0-28-cloud-amd64"));
        assert_eq!(
            kube_proxy_sysctls("5.4.0", true),
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

    #[test]
    fn ensure_writes_only_what_differs() {
        let root = std::env::temp_dir().join(format!("rvs-sysctl-{}", std::process::id()));
        std::fs::create_dir_all(root.join("net/ipv4/vs")).unwrap();
        std::fs::write(root.join("net/ipv4/vs/conntrack"), "1\n").unwrap();
        std::fs::write(root.join("net/ipv4/ip_forward"), "0\n").unwrap();
        let (changed, failed) = ensure(
            &root,
            &[
                ("net/ipv4/vs/conntrack", 1),
                ("net/ipv4/ip_forward", 1),
                ("net/ipv4/no/such/dir", 1),
            ],
        );
        assert_eq!((changed, failed), (1, 1));
        assert_eq!(
            std::fs::read_to_string(root.join("net/ipv4/ip_forward")).unwrap(),
            "1\n"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
