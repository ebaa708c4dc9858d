//! A small bench for scheduler tests: one service with destinations named
//! `a`, `b`, `c`, ... (added in that order) and flows from distinct
//! clients.

#![allow(clippy::disallowed_methods)] // one real instant is the origin of simulated time

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rvs_model::admin::Op;
use rvs_model::{Destination, Protocol, Scheduler, Service, ServiceKey};

use crate::{Core, FlowId};

pub(crate) struct Bench {
    pub(crate) core: Core,
    pub(crate) key: ServiceKey,
    pub(crate) now: Instant,
    pub(crate) flows: Vec<(FlowId, SocketAddr)>,
    next_client: u32,
}

pub(crate) fn dest_addr(name: char) -> SocketAddr {
    let n = (name as u8 - b'a') + 1;
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)), 8080)
}

pub(crate) fn name_of(addr: SocketAddr) -> char {
    match addr.ip() {
        IpAddr::V4(v4) => (b'a' + v4.octets()[3] - 1) as char,
        IpAddr::V6(_) => '?',
    }
}

#[allow(dead_code)] // helpers used by some tests only
impl Bench {
    pub(crate) fn new(sched: Scheduler, weights: &[i32]) -> Bench {
        Bench::with_service(
            Service::new(ServiceKey::tcp("10.96.0.1:80".parse().unwrap()), sched),
            weights,
        )
    }

    pub(crate) fn with_service(svc: Service, weights: &[i32]) -> Bench {
        let now = Instant::now();
        let mut core = Core::new();
        let key = svc.key;
        core.apply(&Op::AddService(svc), now).unwrap();
        for (i, w) in weights.iter().enumerate() {
            let mut d = Destination::masquerade(dest_addr((b'a' + i as u8) as char));
            d.weight = *w;
            core.apply(&Op::AddDestination(key, d), now).unwrap();
        }
        Bench {
            core,
            key,
            now,
            flows: Vec::new(),
            next_client: 0,
        }
    }

    pub(crate) fn vip(&self) -> SocketAddr {
        match self.key {
            ServiceKey::Addr { addr, .. } => addr,
            ServiceKey::Fwmark { .. } => unreachable!(),
        }
    }

    /// Schedules a flow from `client`; its letter or `-`.
    pub(crate) fn pick_from(&mut self, client: SocketAddr) -> char {
        let flow = FlowId {
            protocol: Protocol::Tcp,
            client,
            vip: self.vip(),
        };
        match self.core.schedule(&flow, &[], self.now) {
            Some(d) => {
                self.flows.push((flow, d));
                name_of(d)
            }
            None => '-',
        }
    }

    /// `n` flows from new clients.
    pub(crate) fn picks(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| {
                self.next_client += 1;
                let c = self.next_client;
                let client = SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::from(0xc0a8_0000 + c)),
                    (10_000 + c % 50_000) as u16,
                );
                self.pick_from(client)
            })
            .collect()
    }

    pub(crate) fn overload(&mut self, name: char) {
        for d in self.core.table.dests.values_mut() {
            if d.cfg.addr == dest_addr(name) {
                d.overloaded = true;
            }
        }
    }

    pub(crate) fn set_weight(&mut self, name: char, weight: i32) {
        let mut d = Destination::masquerade(dest_addr(name));
        d.weight = weight;
        self.core
            .apply(&Op::EditDestination(self.key, d), self.now)
            .unwrap();
    }

    pub(crate) fn add(&mut self, name: char, weight: i32) {
        let mut d = Destination::masquerade(dest_addr(name));
        d.weight = weight;
        self.core
            .apply(&Op::AddDestination(self.key, d), self.now)
            .unwrap();
    }

    pub(crate) fn delete(&mut self, name: char) {
        self.core
            .apply(&Op::DeleteDestination(self.key, dest_addr(name)), self.now)
            .unwrap();
    }

    /// Every flow scheduled so far becomes established.
    pub(crate) fn open_all(&mut self) {
        for (flow, d) in std::mem::take(&mut self.flows) {
            self.core.opened(&flow, d, self.now);
        }
    }

    pub(crate) fn advance(&mut self, by: Duration) {
        self.now += by;
        self.core.poll(self.now);
    }
}
