//! Prints the kernel's IPVS virtual servers and their real servers, like a
//! short `ipvsadm -Ln`. Needs CAP_NET_ADMIN and the `ip_vs` module.
//!
//! ```text
//! cargo run -p rvs-ipvs --example list_services [/run/netns/NAME]
//! ```

use std::io::{Write, stdout};
use std::time::Duration;

use anyhow::Context;
use rvs_ipvs::IpvsClient;
use rvs_model::admin::Admin;

fn main() -> anyhow::Result<()> {
    let mut ipvs = match std::env::args_os().nth(1) {
        Some(netns) => IpvsClient::connect_in_netns(&netns),
        None => IpvsClient::connect(),
    }
    .context("connect to the kernel's IPVS")?;
    ipvs.set_receive_timeout(Some(Duration::from_secs(5)))?;

    let mut out = stdout().lock();
    for status in ipvs.services()? {
        let svc = &status.service;
        writeln!(out, "{} {}", svc.key, svc.scheduler)?;
        for dest in ipvs.destinations(&svc.key)? {
            let d = &dest.destination;
            writeln!(
                out,
                "  -> {} {:?} weight {} active {} inactive {}",
                d.addr, d.forward, d.weight, dest.active_conns, dest.inactive_conns
            )?;
        }
    }
    Ok(())
}
