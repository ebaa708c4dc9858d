//! Choosing the dataplane: the kernel, or a userspace one over its admin
//! socket.
//!
//! Without a target `rvsadm` talks to the kernel ([`rvs_ipvs::IpvsClient`]);
//! `--target unix:PATH` (or `RVSADM_TARGET=unix:PATH`) selects the admin
//! socket of `rvsd` or `rvs-proxy` ([`rvs_admin::AdminClient`]). Both are
//! driven through [`Admin`], so every command behaves the same on either.

use rvs_model::admin::{Admin, AdminError};

/// Where the state lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Kernel,
    Unix(String),
}

/// The target from `--target` or else `RVSADM_TARGET`.
pub(crate) fn choose(flag: Option<&str>, env: Option<&str>) -> Result<Target, String> {
    match flag.or(env).filter(|t| !t.is_empty()) {
        None => Ok(Target::Kernel),
        Some("kernel") => Ok(Target::Kernel),
        Some(t) => match t.strip_prefix("unix:") {
            Some(path) if !path.is_empty() => Ok(Target::Unix(path.to_owned())),
            _ => Err(format!(
                "invalid target `{t}' (expected unix:PATH or kernel)"
            )),
        },
    }
}

/// Connects to `target`. For the kernel, a missing IPVS makes rvsadm run
/// `/sbin/modprobe -- ip_vs` and try again, as ipvsadm does.
pub(crate) fn connect(target: &Target) -> Result<Box<dyn Admin>, AdminError> {
    match target {
        Target::Unix(path) => connect_unix(path),
        Target::Kernel => match rvs_ipvs::IpvsClient::connect() {
            Ok(client) => Ok(Box::new(client)),
            Err(first) => {
                if modprobe_ipvs() {
                    rvs_ipvs::IpvsClient::connect().map(|c| Box::new(c) as Box<dyn Admin>)
                } else {
                    Err(first)
                }
            }
        },
    }
}

/// The single call site of the userspace dataplane's admin client.
fn connect_unix(path: &str) -> Result<Box<dyn Admin>, AdminError> {
    rvs_admin::AdminClient::connect(path).map(|c| Box::new(c) as Box<dyn Admin>)
}

fn modprobe_ipvs() -> bool {
    std::process::Command::new("/sbin/modprobe")
        .args(["--", "ip_vs"])
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_wins_over_environment() {
        assert_eq!(choose(None, None), Ok(Target::Kernel));
        assert_eq!(
            choose(Some("unix:/run/a.sock"), Some("unix:/run/b.sock")),
            Ok(Target::Unix("/run/a.sock".into()))
        );
        assert_eq!(
            choose(None, Some("unix:/run/b.sock")),
            Ok(Target::Unix("/run/b.sock".into()))
        );
        assert!(choose(Some("tcp:1.2.3.4"), None).is_err());
        assert!(choose(Some("unix:"), None).is_err());
    }
}
