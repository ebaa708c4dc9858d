//! The admin server's audit log: every change a client applies is logged
//! at info level with the client's uid and pid (from `SO_PEERCRED`) and
//! the operation; reads and connections only at debug level.
//!
//! The log is captured by a global subscriber, so this file holds one
//! test.

#![allow(clippy::unwrap_used)] // test code

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use rvs_admin::{Admin, AdminClient, Server};
use rvs_model::admin::Op;
use rvs_model::{Scheduler, Service, ServiceKey};

/// Everything logged, as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

#[test]
fn changes_are_logged_with_the_peer_and_the_op() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();

    let dir = rvs_testrig::TempDir::new("audit").unwrap();
    let path = dir.join("admin.sock");
    let admin = common::stub();
    let server = Server::new(rvs_admin::bind(&path).unwrap(), admin)
        .unwrap()
        .spawn()
        .unwrap();

    let mut client = AdminClient::connect(&path).unwrap();
    let vip: std::net::SocketAddr = "127.0.0.2:80".parse().unwrap();
    let key = ServiceKey::tcp(vip);
    client
        .apply(&Op::AddService(Service::new(key, Scheduler::RoundRobin)))
        .unwrap();
    let results = client.apply_batch(&[Op::Zero(None), Op::DeleteService(key)]);
    assert!(results[0].is_ok() && results[1].is_err(), "{results:?}");
    client.info().unwrap();
    drop(client);
    server.stop().unwrap();
    drop(dir);

    let uid = nix::unistd::geteuid().as_raw();
    let peer = format!("peer_uid={uid} peer_pid={}", std::process::id());
    let lines = captured.lines();
    let find = |what: &str, op: &str| -> &String {
        lines
            .iter()
            .find(|l| l.contains(what) && l.contains(&format!("op={op}")))
            .unwrap_or_else(|| panic!("no {what:?} line for {op}:\n{}", lines.join("\n")))
    };

    let added = find("admin change applied", "add service");
    assert!(added.contains(" INFO ") && added.contains(&peer), "{added}");
    assert!(added.contains("127.0.0.2:80"), "the op's detail: {added}");
    let zeroed = find("admin change applied", "zero counters");
    assert!(
        zeroed.contains(" INFO ") && zeroed.contains(&peer),
        "{zeroed}"
    );
    let refused = find("admin change refused", "delete service");
    assert!(
        refused.contains(" INFO ") && refused.contains(&peer),
        "{refused}"
    );
    assert!(refused.contains("Refused"), "{refused}");

    let read = find("admin read", "get IPVS info");
    assert!(read.contains("DEBUG") && read.contains(&peer), "{read}");
    let connected = lines
        .iter()
        .find(|l| l.contains("admin client connected"))
        .unwrap();
    assert!(
        connected.contains("DEBUG") && connected.contains(&peer),
        "{connected}"
    );
}
