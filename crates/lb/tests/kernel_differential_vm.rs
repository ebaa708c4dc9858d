//! Differential test of the schedulers against the real kernel's IPVS.
//!
//! Each scenario programs one virtual service (a scheduler, its flags,
//! perhaps persistence; IPv4 or IPv6; TCP or UDP) and its destinations,
//! then opens and closes TCP connections or sends UDP datagrams from
//! chosen client addresses and ports. In the
//! test VM the kernel runs the scenario with `ipvsadm` and real
//! connections: a client network namespace (clients bind to addresses of
//! `10.1.0.0/16` or `fd01::/64`, routed to it and accepted there as local)
//! connects to the virtual address on the director, and backend
//! namespaces `b1`..`b4` (`10.0.2.2`/`fd00:2::2` .. `10.0.5.2`/`fd00:5::2`)
//! accept and hold the connections. The kernel's choice for each
//! connection is read from `ipvsadm -Lnc` by the client's address and
//! port. On the host the sans-IO [`Core`] is fed the same admin operations
//! and the same connection events in the same order, and must choose the
//! same destination, or none, every time:
//!
//! * a connection is scheduled and then opened: the kernel has seen the
//!   handshake complete (the backend's greeting arrived) before the next
//!   one starts;
//! * a client close is the client's FIN and then the backend's
//!   (`CLOSE_WAIT`, then `TIME_WAIT` in both);
//! * a UDP datagram is scheduled (one-packet scheduling, `-o`) or finds
//!   its entry; the backend that answers is the kernel's choice, and
//!   `ipvsadm -Lnc` must show an entry for it exactly when the service is
//!   not one-packet;
//! * when a scenario ends, the destinations' persistent, active and
//!   inactive counts (`ipvsadm -Ln --persistent-conn`) and the connection
//!   table (`ipvsadm -Lnc`: protocol, addresses and state, templates
//!   included) must be the same too;
//! * a server close is the backend's FIN alone (`FIN_WAIT`, the `tcpfin`
//!   timeout, which scenarios shorten with `--set` to watch entries expire
//!   and thresholds recover); waits are real in the VM and simulated in
//!   the core. The core's clock only moves 20 ms per step, the VM's real
//!   one more, so scenarios keep seconds of margin: whatever happens
//!   between a close and the next wait takes well under the `tcpfin`
//!   timeout, and waits outlast it by seconds.
//!
//! This file is its own harness (`harness = false`): the same binary is the
//! host test, the in-VM driver (`in-vm`), the backend (`backend ADDR...`)
//! and the client (`connector`), so the VM needs nothing but this binary.
//!
//! What the core cannot reproduce and is left out: timing finer than the
//! waits (the kernel's timers run on jiffies, so waits leave a margin of
//! seconds), `twos` (random, and not in Linux 6.1), and the 24-hour
//! lblc/lblcr expiry. Everything compared matches the VM's Linux 6.1
//! (Debian's `linux-image-cloud-amd64`). The differences this test found
//! are fixed: dh's hash (`sched/dh.rs`) and the overload flag on
//! threshold edits (`table.rs`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::print_stderr
)]
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // the VM half of this test does real I/O

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use rvs_lb::{Core, FlowId};
use rvs_model::admin::Op;
use rvs_model::{
    Destination, Netmask, Protocol, Scheduler, Service, ServiceFlags, ServiceKey, Timeouts,
};

/// One step of a scenario.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// `ipvsadm -a`: backend `b` (1..=4) with weight, upper and lower
    /// threshold.
    Add(u8, i32, u32, u32),
    /// `ipvsadm -e` of backend `b`.
    Edit(u8, i32, u32, u32),
    /// `ipvsadm -d` of backend `b`.
    Del(u8),
    /// A connection from `10.1.X.Y:PORT` that stays open.
    Conn([u8; 2], u16),
    /// The client closes that connection, then the backend does.
    Close([u8; 2], u16),
    /// Backend `b` closes its side of its `n` oldest open connections
    /// (their entries go to `FIN_WAIT`, the `tcpfin` timeout).
    ServerClose(u8, usize),
    /// Time passes: seconds.
    Wait(u64),
    /// `ipvsadm --set TCP TCPFIN UDP`.
    Set(u32, u32, u32),
    /// `ipvsadm -E`: another scheduler and `-b` flags (not persistent).
    Resched(Scheduler, &'static [&'static str]),
    /// A UDP datagram from `10.1.X.Y:PORT`; the backend that answers is
    /// the kernel's choice (UDP scenarios only).
    Datagram([u8; 2], u16),
}

use Step::{Add, Close, Conn, Datagram, Del, Edit, Resched, ServerClose, Set, Wait};

/// A virtual service and what happens to it.
#[derive(Debug)]
struct Scenario {
    name: &'static str,
    sched: Scheduler,
    /// `-b` flags (`sh-port`, `mh-fallback`, ...).
    flags: &'static [&'static str],
    /// `-p TIMEOUT -M NETMASK`, the netmask as a prefix length.
    persistent: Option<(u32, u8)>,
    /// IPv6 service, destinations and clients.
    v6: bool,
    /// A UDP service; with one-packet scheduling (`-o`) when its flags
    /// say `ops`.
    udp: bool,
    steps: Vec<Step>,
}

const BACKENDS: u8 = 4;
const PORT: u16 = 80;

/// Backend `b`: `10.0.B+1.2` or `fd00:B+1::2`, as `topo_host` makes them.
fn backend_addr(b: u8, v6: bool) -> SocketAddr {
    let ip = if v6 {
        IpAddr::V6(Ipv6Addr::new(0xfd00, u16::from(b) + 1, 0, 0, 0, 0, 0, 2))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, 0, b + 1, 2))
    };
    SocketAddr::new(ip, PORT)
}

/// A client: `10.1.X.Y` or `fd01::X:Y`.
fn client_addr(c: [u8; 2], port: u16, v6: bool) -> SocketAddr {
    let ip = if v6 {
        IpAddr::V6(Ipv6Addr::new(
            0xfd01,
            0,
            0,
            0,
            0,
            0,
            u16::from(c[0]),
            u16::from(c[1]),
        ))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, 1, c[0], c[1]))
    };
    SocketAddr::new(ip, port)
}

/// Every scenario has its own virtual address, so no entry of one can
/// match a flow of another.
fn vip(index: usize, v6: bool) -> SocketAddr {
    let n = u8::try_from(index + 1).unwrap();
    let ip = if v6 {
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, u16::from(n)))
    } else {
        IpAddr::V4(Ipv4Addr::new(10, 96, 0, n))
    };
    SocketAddr::new(ip, PORT)
}

/// `n` connections from distinct clients of `10.1.net.0/24`, ports from
/// `port`.
fn conns(net: u8, first: u8, n: u8, port: u16) -> Vec<Step> {
    (0..n)
        .map(|i| Conn([net, first + i], port + u16::from(i)))
        .collect()
}

fn scenarios() -> Vec<Scenario> {
    let mut out = Vec::new();
    let mut add = |name: &'static str, sched, flags, persistent, steps: Vec<Vec<Step>>| {
        out.push(Scenario {
            name,
            sched,
            flags,
            persistent,
            v6: name.contains("IPv6"),
            udp: name.contains("UDP"),
            steps: steps.concat(),
        });
    };
    use Scheduler as S;
    add(
        "rr: order, quiescence, delete, add",
        S::RoundRobin,
        &[],
        None,
        vec![
            vec![Add(1, 1, 0, 0), Add(2, 1, 0, 0), Add(3, 1, 0, 0)],
            conns(1, 1, 7, 20000),
            vec![Edit(2, 0, 0, 0)],
            conns(1, 20, 4, 20100),
            vec![Del(1)],
            conns(1, 40, 3, 20200),
            vec![Add(4, 2, 0, 0), Edit(2, 1, 0, 0)],
            conns(1, 60, 6, 20300),
        ],
    );
    add(
        "rr: upper threshold",
        S::RoundRobin,
        &[],
        None,
        vec![
            vec![Add(1, 1, 2, 0), Add(2, 1, 0, 0), Add(3, 1, 3, 1)],
            conns(2, 1, 9, 21000),
            vec![Close([2, 1], 21000), Close([2, 2], 21001)],
            conns(2, 20, 4, 21100),
        ],
    );
    add(
        "wrr: weights 4 3 2 1, edits and deletes",
        S::WeightedRoundRobin,
        &[],
        None,
        vec![
            vec![
                Add(1, 4, 0, 0),
                Add(2, 3, 0, 0),
                Add(3, 2, 0, 0),
                Add(4, 1, 0, 0),
            ],
            conns(3, 1, 23, 22000),
            vec![Edit(1, 0, 0, 0)],
            conns(3, 40, 8, 22100),
            vec![Edit(1, 5, 0, 0), Del(3)],
            conns(3, 60, 12, 22200),
        ],
    );
    add(
        "wrr: common divisor and thresholds",
        S::WeightedRoundRobin,
        &[],
        None,
        vec![
            vec![Add(1, 4, 0, 0), Add(2, 2, 0, 0), Add(3, 6, 3, 0)],
            conns(4, 1, 14, 23000),
            vec![Edit(2, 3, 0, 0)],
            conns(4, 40, 8, 23100),
        ],
    );
    add(
        "lc: fewest connections, closes make them inactive",
        S::LeastConnection,
        &[],
        None,
        vec![
            vec![Add(1, 1, 0, 0), Add(2, 5, 0, 0), Add(3, 1, 0, 0)],
            conns(5, 1, 6, 24000),
            vec![
                Close([5, 1], 24000),
                Close([5, 2], 24001),
                Close([5, 4], 24003),
            ],
            conns(5, 20, 5, 24100),
            vec![Edit(3, 0, 0, 0)],
            conns(5, 40, 3, 24200),
        ],
    );
    add(
        "wlc: load over weight",
        S::WeightedLeastConnection,
        &[],
        None,
        vec![
            vec![Add(1, 1, 0, 0), Add(2, 2, 0, 0), Add(3, 3, 0, 0)],
            conns(6, 1, 9, 25000),
            vec![
                Close([6, 2], 25001),
                Close([6, 3], 25002),
                Close([6, 5], 25004),
            ],
            conns(6, 20, 6, 25100),
            vec![Edit(2, 0, 0, 0), Add(4, 4, 0, 0)],
            conns(6, 40, 6, 25200),
        ],
    );
    add(
        "sed: expected delay",
        S::ShortestExpectedDelay,
        &[],
        None,
        vec![
            vec![Add(1, 1, 0, 0), Add(2, 3, 0, 0), Add(3, 2, 0, 0)],
            conns(7, 1, 9, 26000),
            vec![Close([7, 1], 26000), Close([7, 2], 26001)],
            conns(7, 20, 5, 26100),
        ],
    );
    add(
        "nq: idle first, then expected delay",
        S::NeverQueue,
        &[],
        None,
        vec![
            vec![Add(1, 1, 0, 0), Add(2, 3, 0, 0), Add(3, 2, 0, 0)],
            conns(8, 1, 9, 27000),
            vec![Close([8, 1], 27000), Close([8, 3], 27002)],
            conns(8, 20, 5, 27100),
        ],
    );
    add(
        "fo: highest weight, then failover",
        S::Failover,
        &[],
        None,
        vec![
            vec![Add(1, 5, 2, 0), Add(2, 10, 3, 0), Add(3, 1, 0, 0)],
            conns(9, 1, 7, 28000),
            vec![Edit(3, 20, 0, 0)],
            conns(9, 20, 2, 28100),
            vec![Edit(3, 0, 0, 0)],
            conns(9, 40, 2, 28200),
        ],
    );
    add(
        "ovf: overflow once active exceeds weight",
        S::Overflow,
        &[],
        None,
        vec![
            vec![Add(1, 1, 0, 0), Add(2, 2, 0, 0), Add(3, 2, 0, 0)],
            conns(10, 1, 8, 29000),
            vec![Close([10, 1], 29000)],
            conns(10, 20, 3, 29100),
        ],
    );
    add(
        "dh: destination hashing",
        S::DestinationHashing,
        &[],
        None,
        vec![
            vec![Add(1, 1, 0, 0), Add(2, 1, 0, 0), Add(3, 1, 0, 0)],
            conns(11, 1, 3, 30000),
            vec![Del(1)],
            conns(11, 20, 2, 30100),
            vec![Add(4, 1, 0, 0)],
            conns(11, 40, 2, 30200),
        ],
    );
    add(
        "dh: another virtual address, quiescence",
        S::DestinationHashing,
        &[],
        None,
        vec![
            vec![
                Add(1, 1, 0, 0),
                Add(2, 1, 0, 0),
                Add(3, 1, 0, 0),
                Add(4, 1, 0, 0),
            ],
            conns(12, 1, 2, 31000),
            vec![Edit(1, 0, 0, 0), Edit(2, 0, 0, 0), Edit(3, 0, 0, 0)],
            conns(12, 20, 2, 31100),
        ],
    );
    let mut sh = vec![
        vec![Add(1, 1, 0, 0), Add(2, 2, 0, 0), Add(3, 1, 0, 0)],
        conns(13, 1, 16, 32000),
        vec![Del(2)],
        conns(13, 1, 16, 32100),
        vec![Add(2, 3, 0, 0), Edit(1, 0, 0, 0)],
        conns(13, 1, 16, 32200),
    ];
    sh.push(conns(14, 100, 16, 32300));
    add("sh: source hashing", S::SourceHashing, &[], None, sh);
    add(
        "sh: sh-port and sh-fallback",
        S::SourceHashing,
        &["sh-port", "sh-fallback"],
        None,
        vec![
            vec![Add(1, 1, 0, 0), Add(2, 1, 0, 0), Add(3, 1, 0, 0)],
            (0..16).map(|i| Conn([15, 1], 33000 + i * 7)).collect(),
            vec![Edit(2, 0, 0, 0)],
            (0..16).map(|i| Conn([15, 1], 33200 + i * 7)).collect(),
        ],
    );
    add(
        "mh: maglev hashing",
        S::Maglev,
        &[],
        None,
        vec![
            vec![Add(1, 1, 0, 0), Add(2, 1, 0, 0), Add(3, 1, 0, 0)],
            conns(16, 1, 16, 34000),
            vec![Del(3)],
            conns(16, 1, 16, 34100),
            vec![Add(3, 1, 0, 0), Add(4, 3, 0, 0), Edit(1, 0, 0, 0)],
            conns(16, 1, 16, 34200),
            vec![Edit(1, 2, 0, 0)],
            conns(16, 1, 16, 34300),
        ],
    );
    add(
        "mh: mh-port and mh-fallback",
        S::Maglev,
        &["mh-port", "mh-fallback"],
        None,
        vec![
            vec![Add(1, 1, 0, 0), Add(2, 2, 0, 0), Add(3, 1, 0, 0)],
            (0..16).map(|i| Conn([17, 1], 35000 + i * 11)).collect(),
            vec![Edit(2, 0, 0, 0)],
            (0..16).map(|i| Conn([17, 1], 35300 + i * 11)).collect(),
        ],
    );
    add(
        "lblc: locality, then least connection",
        S::LocalityLeastConnection,
        &[],
        None,
        vec![
            vec![Add(1, 1, 0, 0), Add(2, 2, 0, 0), Add(3, 1, 0, 0)],
            conns(18, 1, 8, 36000),
            vec![Edit(2, 0, 0, 0)],
            conns(18, 20, 3, 36100),
        ],
    );
    add(
        "lblcr: locality with replication",
        S::LocalityLeastConnectionReplication,
        &[],
        None,
        vec![
            vec![Add(1, 1, 0, 0), Add(2, 2, 0, 0), Add(3, 1, 0, 0)],
            conns(19, 1, 10, 37000),
            vec![Edit(1, 0, 0, 0)],
            conns(19, 20, 4, 37100),
        ],
    );
    add(
        "rr persistent: -p 300 -M 255.255.255.0",
        S::RoundRobin,
        &[],
        Some((300, 24)),
        vec![
            vec![Add(1, 1, 0, 0), Add(2, 1, 0, 0), Add(3, 1, 0, 0)],
            vec![
                Conn([20, 1], 38000),
                Conn([21, 1], 38001),
                Conn([20, 2], 38002),
                Conn([22, 9], 38003),
                Conn([21, 7], 38004),
                Conn([20, 1], 38005),
            ],
            vec![Edit(1, 0, 0, 0), Del(2)],
            vec![
                Conn([20, 3], 38100),
                Conn([21, 3], 38101),
                Conn([23, 3], 38102),
                Conn([22, 3], 38103),
            ],
        ],
    );
    add(
        "wlc persistent: -p 300",
        S::WeightedLeastConnection,
        &[],
        Some((300, 32)),
        vec![
            vec![Add(1, 1, 0, 0), Add(2, 2, 0, 0)],
            conns(24, 1, 5, 39000),
            conns(24, 1, 5, 39100),
            vec![Del(2)],
            conns(24, 1, 5, 39200),
        ],
    );
    add(
        "rr: threshold hysteresis as entries expire",
        S::RoundRobin,
        &[],
        None,
        vec![
            vec![Set(900, 2, 300)],
            vec![Add(1, 1, 4, 2), Add(2, 1, 4, 0), Add(3, 1, 0, 0)],
            conns(25, 1, 12, 40000),
            conns(25, 20, 2, 40100),
            // b1 falls to 2 (not below its lower threshold 2), b2 to 3
            // (not below 3/4 of 4): both stay overloaded.
            vec![ServerClose(1, 2), ServerClose(2, 1), Wait(4)],
            conns(25, 30, 2, 40200),
            // Now both are below: back in the rotation.
            vec![ServerClose(1, 1), ServerClose(2, 1), Wait(4)],
            conns(25, 40, 6, 40300),
            vec![Set(900, 120, 300)],
        ],
    );
    add(
        "wlc: entries that expire stop counting",
        S::WeightedLeastConnection,
        &[],
        None,
        vec![
            vec![Set(900, 5, 300)],
            vec![Add(1, 1, 0, 0), Add(2, 1, 0, 0), Add(3, 2, 0, 0)],
            conns(26, 1, 8, 41000),
            vec![ServerClose(3, 3), ServerClose(1, 1)],
            conns(26, 20, 3, 41100),
            vec![Wait(8)],
            conns(26, 30, 5, 41200),
            vec![Set(900, 120, 300)],
        ],
    );
    add(
        "lc: entries that expire stop counting",
        S::LeastConnection,
        &[],
        None,
        vec![
            vec![Set(900, 5, 300)],
            vec![Add(1, 1, 0, 0), Add(2, 1, 0, 0), Add(3, 2, 0, 0)],
            conns(27, 1, 6, 42000),
            vec![ServerClose(2, 2)],
            conns(27, 20, 2, 42100),
            vec![Wait(8)],
            conns(27, 30, 4, 42200),
            vec![Set(900, 120, 300)],
        ],
    );
    add(
        "sh IPv6: folded source addresses",
        S::SourceHashing,
        &[],
        None,
        vec![
            vec![Add(1, 1, 0, 0), Add(2, 2, 0, 0), Add(3, 1, 0, 0)],
            conns(28, 1, 16, 43000),
            vec![Del(2)],
            conns(28, 1, 8, 43100),
        ],
    );
    add(
        "mh IPv6: mh-port",
        S::Maglev,
        &["mh-port"],
        None,
        vec![
            vec![Add(1, 1, 0, 0), Add(2, 2, 0, 0), Add(3, 1, 0, 0)],
            (0..12).map(|i| Conn([29, 1], 44000 + i * 13)).collect(),
            conns(29, 10, 12, 44200),
        ],
    );
    add(
        "dh IPv6: folded virtual address",
        S::DestinationHashing,
        &[],
        None,
        vec![
            vec![
                Add(1, 1, 0, 0),
                Add(2, 1, 0, 0),
                Add(3, 1, 0, 0),
                Add(4, 1, 0, 0),
            ],
            conns(30, 1, 3, 45000),
            vec![Del(4)],
            conns(30, 10, 3, 45100),
        ],
    );
    add(
        "wrr persistent IPv6: -p 300 -M 112",
        S::WeightedRoundRobin,
        &[],
        Some((300, 112)),
        vec![
            vec![Add(1, 1, 0, 0), Add(2, 2, 0, 0), Add(3, 1, 0, 0)],
            (1..=12)
                .map(|i| Conn([i % 4, i], 46000 + u16::from(i)))
                .collect(),
        ],
    );
    add(
        "lc: a deleted destination comes back with its connections",
        S::LeastConnection,
        &[],
        None,
        vec![
            vec![Add(1, 1, 0, 0), Add(2, 1, 0, 0), Add(3, 1, 0, 0)],
            conns(31, 1, 6, 47000),
            vec![Del(1)],
            conns(31, 20, 2, 47100),
            vec![Add(1, 1, 0, 0)],
            conns(31, 30, 5, 47200),
        ],
    );
    add(
        "wrr: all overloaded, then recovery",
        S::WeightedRoundRobin,
        &[],
        None,
        vec![
            vec![Set(900, 2, 300)],
            vec![Add(1, 2, 2, 0), Add(2, 1, 1, 0), Add(3, 3, 3, 0)],
            conns(32, 1, 8, 48000),
            vec![ServerClose(1, 2), ServerClose(3, 1), Wait(4)],
            conns(32, 20, 5, 48100),
            vec![Set(900, 120, 300)],
        ],
    );
    add(
        "sh: sh-fallback around an overloaded destination",
        S::SourceHashing,
        &["sh-fallback"],
        None,
        vec![
            vec![Add(1, 1, 2, 0), Add(2, 1, 0, 0), Add(3, 2, 3, 0)],
            conns(33, 1, 16, 49000),
        ],
    );
    add(
        "mh: mh-fallback around an overloaded destination",
        S::Maglev,
        &["mh-fallback"],
        None,
        vec![
            vec![Add(1, 1, 2, 0), Add(2, 1, 0, 0), Add(3, 2, 3, 0)],
            conns(34, 1, 16, 50000),
        ],
    );
    add(
        "rr persistent: templates expire, deleted destinations invalidate them",
        S::RoundRobin,
        &[],
        Some((6, 24)),
        vec![
            vec![Set(900, 2, 300)],
            vec![Add(1, 1, 0, 0), Add(2, 1, 0, 0), Add(3, 1, 0, 0)],
            vec![
                Conn([35, 1], 51000),
                Conn([36, 1], 51001),
                Conn([35, 2], 51002),
                Conn([37, 1], 51003),
            ],
            vec![ServerClose(1, 9), ServerClose(2, 9), ServerClose(3, 9)],
            vec![Wait(12)],
            vec![
                Conn([36, 3], 51100),
                Conn([35, 3], 51101),
                Conn([37, 3], 51102),
            ],
            vec![Edit(2, 0, 0, 0), Del(3)],
            vec![
                Conn([36, 4], 51200),
                Conn([35, 4], 51201),
                Conn([37, 4], 51202),
            ],
            vec![Set(900, 120, 300)],
        ],
    );
    add(
        "rr: raising the upper threshold clears the overload",
        S::RoundRobin,
        &[],
        None,
        vec![
            vec![Add(1, 1, 2, 0), Add(2, 1, 0, 0)],
            conns(38, 1, 6, 52000),
            vec![Edit(1, 1, 5, 0)],
            conns(38, 20, 4, 52100),
            vec![Edit(1, 1, 3, 0)],
            conns(38, 30, 3, 52200),
        ],
    );
    add(
        "rr: thresholds set below the connections overload at once",
        S::RoundRobin,
        &[],
        None,
        vec![
            vec![Add(1, 1, 0, 0), Add(2, 1, 0, 0)],
            conns(39, 1, 6, 53000),
            vec![Edit(1, 1, 2, 0)],
            conns(39, 20, 4, 53100),
            vec![Edit(1, 1, 8, 6)],
            conns(39, 30, 4, 53200),
        ],
    );
    add(
        "ipvsadm -E: the scheduler changes under open connections",
        S::RoundRobin,
        &[],
        None,
        vec![
            vec![Add(1, 1, 0, 0), Add(2, 2, 0, 0), Add(3, 3, 0, 0)],
            conns(40, 1, 4, 54000),
            vec![Resched(S::WeightedRoundRobin, &[])],
            conns(40, 10, 7, 54100),
            vec![Resched(S::SourceHashing, &["sh-port"])],
            conns(40, 20, 5, 54200),
            vec![Resched(S::Maglev, &["mh-fallback"]), Edit(3, 0, 0, 0)],
            conns(40, 30, 5, 54300),
            vec![Resched(S::WeightedLeastConnection, &[])],
            conns(40, 40, 5, 54400),
            vec![Resched(S::WeightedRoundRobin, &[])],
            conns(40, 50, 6, 54500),
        ],
    );
    let datagrams = |net: u8, first: u8, n: u8, port: u16| -> Vec<Step> {
        (0..n)
            .map(|i| Datagram([net, first + i], port + u16::from(i)))
            .collect()
    };
    add(
        "UDP wrr: entries pin each flow",
        S::WeightedRoundRobin,
        &[],
        None,
        vec![
            vec![Add(1, 1, 0, 0), Add(2, 2, 0, 0), Add(3, 1, 0, 0)],
            datagrams(41, 1, 6, 56000),
            datagrams(41, 1, 6, 56000),
            vec![Edit(2, 0, 0, 0)],
            datagrams(41, 1, 6, 56000),
            datagrams(41, 20, 4, 56100),
        ],
    );
    add(
        "UDP rr -o: one-packet scheduling, no entries",
        S::RoundRobin,
        &["ops"],
        None,
        vec![
            vec![Add(1, 1, 0, 0), Add(2, 1, 0, 0), Add(3, 1, 0, 0)],
            (0..5).map(|_| Datagram([42, 1], 57000)).collect(),
            (0..4).map(|_| Datagram([42, 2], 57001)).collect(),
            vec![Del(2)],
            (0..3).map(|_| Datagram([42, 1], 57000)).collect(),
        ],
    );
    add(
        "UDP sh -o: one-packet scheduling by source",
        S::SourceHashing,
        &["ops", "sh-port"],
        None,
        vec![
            vec![Add(1, 1, 0, 0), Add(2, 1, 0, 0), Add(3, 1, 0, 0)],
            datagrams(43, 1, 8, 58000),
            datagrams(43, 1, 8, 58000),
        ],
    );
    add(
        "lblc: thresholds, the cached destination deleted and re-added",
        S::LocalityLeastConnection,
        &[],
        None,
        vec![
            vec![Add(1, 2, 3, 0), Add(2, 2, 3, 0), Add(3, 1, 0, 0)],
            conns(44, 1, 8, 59000),
            vec![Del(1)],
            conns(44, 20, 3, 59000 + 100),
            vec![Add(1, 2, 0, 0)],
            conns(44, 30, 3, 59000 + 200),
            vec![Del(2), Edit(3, 3, 0, 0)],
            conns(44, 40, 4, 59000 + 300),
        ],
    );
    add(
        "lblcr: thresholds, set members deleted and re-added",
        S::LocalityLeastConnectionReplication,
        &[],
        None,
        vec![
            vec![Add(1, 2, 3, 0), Add(2, 2, 3, 0), Add(3, 1, 0, 0)],
            conns(45, 1, 8, 60000),
            vec![Del(1)],
            conns(45, 20, 3, 60000 + 100),
            vec![Add(1, 2, 0, 0)],
            conns(45, 30, 3, 60000 + 200),
            vec![Del(2), Edit(3, 3, 0, 0)],
            conns(45, 40, 4, 60000 + 300),
        ],
    );
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("backend") => backend(&args[2..]),
        Some("connector") => connector(),
        Some("in-vm") => in_vm(),
        _ if args.iter().any(|a| a == "--list") => println!("kernel_differential: test"),
        _ if !selected(&args[1..]) => {}
        _ => host(),
    }
}

/// Honours libtest's filters: skipped when only ignored tests are asked
/// for, or when name filters are given and none matches this test.
fn selected(args: &[String]) -> bool {
    if args.iter().any(|a| a == "--ignored") {
        return false;
    }
    let exact = args.iter().any(|a| a == "--exact");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    filters.is_empty()
        || filters.iter().any(|f| {
            if exact {
                f.as_str() == "kernel_differential"
            } else {
                "kernel_differential".contains(f.as_str())
            }
        })
}

// ---------------------------------------------------------------- host

fn host() {
    const TEST: &str = "kernel_differential";
    let Some(vm) = rvs_testrig::Vm::or_skip(TEST) else {
        return;
    };
    let exe = std::env::current_exe().unwrap();
    let job = rvs_testrig::VmJob::new(VM_SCRIPT)
        .binary("self", exe)
        .timeout(Duration::from_secs(600));
    let out = vm.run(&job).unwrap();
    assert!(
        out.success(),
        "in-VM driver failed ({}):\n{}",
        out.exit_code,
        out.output
    );
    let kernel = parse_kernel(&out.output);
    let tables = parse_tables(&out.output);
    let mut failures = Vec::new();
    let mut compared = 0;
    let mut entries = 0;
    for (index, scenario) in scenarios().iter().enumerate() {
        let (core, core_table) = run_core(index, scenario);
        let kernel_table = tables.get(&index).cloned().unwrap_or_default();
        entries += kernel_table.len();
        if kernel_table != core_table {
            failures.push(format!(
                "{}: destinations or connection tables differ at the end\n  kernel:\n    {}\n  core:\n    {}",
                scenario.name,
                kernel_table.join("\n    "),
                core_table.join("\n    ")
            ));
        }
        let Some(theirs) = kernel.get(&index) else {
            failures.push(format!("{}: no kernel results", scenario.name));
            continue;
        };
        if theirs.len() != core.len() {
            failures.push(format!(
                "{}: {} kernel results, {} core results",
                scenario.name,
                theirs.len(),
                core.len()
            ));
            continue;
        }
        let mut lines = Vec::new();
        for ((step, client, k), (_, _, c)) in theirs.iter().zip(&core) {
            compared += 1;
            let mark = if k == c { " " } else { "≠" };
            lines.push(format!(
                "  {mark} step {step:>2} {client:<18} kernel {k:<14} core {c}"
            ));
        }
        if theirs.iter().zip(&core).any(|(a, b)| a.2 != b.2) {
            failures.push(format!("{}:\n{}", scenario.name, lines.join("\n")));
        }
    }
    eprintln!(
        "kernel_differential: {compared} connections in {} scenarios compared with Linux {}, \
         and {entries} lines of the final destination counts and connection tables",
        scenarios().len(),
        vm.kernel_release()
    );
    assert!(
        failures.is_empty(),
        "the core chose differently from the kernel:\n{}\n--- VM output ---\n{}",
        failures.join("\n"),
        out.output
    );
}

/// `K scenario step client dest` lines: what the kernel chose.
type Choices = HashMap<usize, Vec<(usize, String, String)>>;

fn parse_kernel(output: &str) -> Choices {
    let mut map: Choices = HashMap::new();
    for line in output.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() == 5 && f[0] == "K" {
            let (Ok(scenario), Ok(step)) = (f[1].parse(), f[2].parse()) else {
                continue;
            };
            map.entry(scenario)
                .or_default()
                .push((step, f[3].to_owned(), f[4].to_owned()));
        }
    }
    map
}

/// `T scenario PROTO CLIENT VIRTUAL DEST STATE` and `T scenario D ADDR
/// WEIGHT PERSISTENT ACTIVE INACTIVE` lines: the kernel's connection
/// entries and destination counts of a scenario's service when it ended,
/// sorted.
fn parse_tables(output: &str) -> HashMap<usize, Vec<String>> {
    let mut map: HashMap<usize, Vec<String>> = HashMap::new();
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix("T ")
            && let Some((index, entry)) = rest.split_once(' ')
            && let Ok(index) = index.parse()
        {
            map.entry(index).or_default().push(entry.to_owned());
        }
    }
    for table in map.values_mut() {
        table.sort();
    }
    map
}

/// A service with `-b` flags (`sh-port`, `mh-fallback`, ...), and `-o`
/// for the pseudo-flag `ops`.
fn with_flags(mut svc: Service, flags: &[&str]) -> Service {
    for flag in flags {
        let bit = if *flag == "ops" {
            ServiceFlags::ONEPACKET
        } else if flag.ends_with("-fallback") {
            ServiceFlags::SCHED1
        } else {
            ServiceFlags::SCHED2
        };
        svc.flags = svc.flags.with(bit, true);
    }
    svc
}

fn service_of(index: usize, scenario: &Scenario) -> Service {
    let addr = vip(index, scenario.v6);
    let key = if scenario.udp {
        ServiceKey::udp(addr)
    } else {
        ServiceKey::tcp(addr)
    };
    let mut svc = with_flags(Service::new(key, scenario.sched), scenario.flags);
    if let Some((timeout, prefix)) = scenario.persistent {
        svc = svc.persistent(timeout);
        svc.netmask = Netmask(if scenario.v6 {
            u32::from(prefix)
        } else {
            u32::MAX << (32 - u32::from(prefix))
        });
    }
    svc
}

fn destination(b: u8, v6: bool, weight: i32, upper: u32, lower: u32) -> Destination {
    let mut d = Destination::masquerade(backend_addr(b, v6));
    d.weight = weight;
    d.upper_threshold = upper;
    d.lower_threshold = lower;
    d
}

/// Open connections in the order they were opened: client and the
/// destination chosen for it.
#[derive(Debug, Default)]
struct Open(Vec<(SocketAddr, SocketAddr)>);

impl Open {
    fn take(&mut self, client: SocketAddr) -> Option<(SocketAddr, SocketAddr)> {
        let i = self.0.iter().position(|(c, _)| *c == client)?;
        Some(self.0.remove(i))
    }

    /// The `n` oldest open connections to `dest`, removed.
    fn take_on(&mut self, dest: SocketAddr, n: usize) -> Vec<(SocketAddr, SocketAddr)> {
        let mut taken = Vec::new();
        self.0.retain(|&(c, d)| {
            if d == dest && taken.len() < n {
                taken.push((c, d));
                false
            } else {
                true
            }
        });
        taken
    }
}

/// The core's choices for a scenario, in the kernel's output format, and
/// its connection table at the end (`PROTO CLIENT VIRTUAL DEST STATE`,
/// sorted).
fn run_core(index: usize, scenario: &Scenario) -> (Vec<(usize, String, String)>, Vec<String>) {
    let v6 = scenario.v6;
    let vip = vip(index, v6);
    let mut now = Instant::now();
    let mut core = Core::new();
    let svc = service_of(index, scenario);
    let key = svc.key;
    core.apply(&Op::AddService(svc), now).unwrap();
    let mut open = Open::default();
    let mut out = Vec::new();
    let protocol = if scenario.udp {
        Protocol::Udp
    } else {
        Protocol::Tcp
    };
    let flow = |client| FlowId {
        protocol,
        client,
        vip,
    };
    for (i, step) in scenario.steps.iter().enumerate() {
        now += Duration::from_millis(20);
        match *step {
            Add(b, w, x, y) => core
                .apply(&Op::AddDestination(key, destination(b, v6, w, x, y)), now)
                .unwrap(),
            Edit(b, w, x, y) => core
                .apply(&Op::EditDestination(key, destination(b, v6, w, x, y)), now)
                .unwrap(),
            Del(b) => core
                .apply(&Op::DeleteDestination(key, backend_addr(b, v6)), now)
                .unwrap(),
            Conn(c, port) => {
                let flow = flow(client_addr(c, port, v6));
                let chosen = core.schedule(&flow, &[], now);
                if let Some(d) = chosen {
                    core.opened(&flow, d, now);
                    open.0.push((flow.client, d));
                }
                out.push((
                    i,
                    flow.client.to_string(),
                    chosen.map_or("none".to_owned(), |d| d.to_string()),
                ));
            }
            Close(c, port) => {
                let (client, d) = open.take(client_addr(c, port, v6)).unwrap();
                core.half_closed(&flow(client), d, true, now);
                core.half_closed(&flow(client), d, false, now);
            }
            ServerClose(b, n) => {
                for (client, d) in open.take_on(backend_addr(b, v6), n) {
                    core.half_closed(&flow(client), d, false, now);
                }
            }
            Wait(secs) => {
                now += Duration::from_secs(secs);
                core.poll(now);
            }
            Set(tcp, tcp_fin, udp) => core
                .apply(&Op::SetTimeouts(Timeouts { tcp, tcp_fin, udp }), now)
                .unwrap(),
            Resched(sched, flags) => {
                let svc = with_flags(Service::new(key, sched), flags);
                core.apply(&Op::EditService(svc), now).unwrap();
            }
            Datagram(c, port) => {
                // Every datagram is scheduled (one-packet) or finds its
                // entry; the driver reports it as traffic either way.
                let flow = flow(client_addr(c, port, v6));
                let chosen = core.schedule(&flow, &[], now);
                if let Some(d) = chosen {
                    let one = rvs_lb::Traffic {
                        in_bytes: 5,
                        in_packets: 1,
                        ..Default::default()
                    };
                    core.traffic(&flow, d, &one, now);
                }
                out.push((
                    i,
                    flow.client.to_string(),
                    chosen.map_or("none".to_owned(), |d| d.to_string()),
                ));
            }
        }
    }
    let mut dests: Vec<String> = core
        .destinations(&key, now)
        .unwrap()
        .into_iter()
        .map(|d| {
            format!(
                "D {} {} {} {} {}",
                d.destination.addr,
                d.destination.weight,
                d.persistent_conns,
                d.active_conns,
                d.inactive_conns
            )
        })
        .collect();
    dests.sort();
    let mut table: Vec<String> = core
        .connections(now)
        .into_iter()
        .filter(|c| c.virtual_addr.ip() == vip.ip())
        .map(|c| {
            format!(
                "{} {} {} {} {}",
                c.protocol, c.client, c.virtual_addr, c.destination, c.state
            )
        })
        .collect();
    table.sort();
    dests.extend(table);
    (out, dests)
}

// ------------------------------------------------------------- in the VM

const VM_SCRIPT: &str = r#"
set -e
. /usr/lib/rvs/topo.sh
topo_forwarding
topo_host cli 1
for b in 1 2 3 4; do topo_host b$b $((b + 1)); done
$IP -n cli route add local 10.1.0.0/16 dev lo
$IP -n cli -6 route add local fd01::/64 dev lo
$IP route add 10.1.0.0/16 via 10.0.1.2
$IP -6 route add fd01::/64 via fd00:1::2
for n in $(seq 1 50); do topo_vip 10.96.0.$n/32; topo_vip fd00:96::$(printf %x $n)/128; done
self in-vm
"#;

struct Connector {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Connector {
    fn ask(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        let mut reply = String::new();
        self.stdout.read_line(&mut reply).unwrap();
        reply.trim().to_owned()
    }
}

fn netns_spawn(ns: &str, args: &[&str]) -> Child {
    Command::new("/usr/sbin/ip")
        .args(["netns", "exec", ns, "/rvs/bin/self"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

fn ipvsadm(args: &[String]) {
    let out = Command::new("ipvsadm").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ipvsadm {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ipvsadm` arguments for scheduler flags: `-b ...`, and `-o` for `ops`.
fn sched_flags(flags: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let b: Vec<&str> = flags.iter().copied().filter(|f| *f != "ops").collect();
    if !b.is_empty() {
        out.extend(["-b".to_owned(), b.join(",")]);
    }
    if flags.contains(&"ops") {
        out.push("-o".to_owned());
    }
    out
}

/// The kernel's entries (templates included) for the virtual address of
/// `vip`, as `PROTO CLIENT VIRTUAL DEST STATE`.
fn kernel_table(vip: SocketAddr) -> Vec<String> {
    let out = Command::new("ipvsadm").arg("-Lnc").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let parse = |s: &str| s.parse::<SocketAddr>().ok();
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 {
                return None;
            }
            let (client, virt, dest) = (parse(f[3])?, parse(f[4])?, parse(f[5])?);
            (virt.ip() == vip.ip()).then(|| format!("{} {client} {virt} {dest} {}", f[0], f[2]))
        })
        .collect()
}

/// The service's destinations with their counts, from `ipvsadm -Ln
/// --persistent-conn`: `ADDR WEIGHT PERSISTENT ACTIVE INACTIVE`.
fn kernel_dests(t: &str, vip: &str) -> Vec<String> {
    let out = Command::new("ipvsadm")
        .args(["-Ln", "--persistent-conn", t, vip])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let addr: SocketAddr = f.get(1)?.parse().ok()?;
            // `-> ADDR WEIGHT PERSISTCONN ACTIVECONN INACTCONN`
            (f.len() == 6 && f[0] == "->")
                .then(|| format!("{addr} {} {} {} {}", f[2], f[3], f[4], f[5]))
        })
        .collect()
}

/// The destination of the entry for `client` → `vip` in `ipvsadm -Lnc`.
fn kernel_dest(client: SocketAddr, vip: SocketAddr) -> Option<SocketAddr> {
    let out = Command::new("ipvsadm").arg("-Lnc").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let parse = |s: &str| s.parse::<SocketAddr>().ok();
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() >= 6 && parse(f[3]) == Some(client) && parse(f[4]) == Some(vip))
            .then(|| parse(f[5]))
            .flatten()
    })
}

fn in_vm() {
    let mut backends = Vec::new();
    for b in 1..=BACKENDS {
        let (v4, v6) = (backend_addr(b, false), backend_addr(b, true));
        let mut child = netns_spawn(
            &format!("b{b}"),
            &["backend", &v4.to_string(), &v6.to_string()],
        );
        let mut ready = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready", "backend b{b}");
        backends.push(child);
    }
    let mut child = netns_spawn("cli", &["connector"]);
    let stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut connector = Connector {
        _child: child,
        stdin,
        stdout,
    };
    for (index, scenario) in scenarios().iter().enumerate() {
        let v6 = scenario.v6;
        let vip = vip(index, v6);
        let v = vip.to_string();
        println!("== {index}: {}", scenario.name);
        let t = if scenario.udp { "-u" } else { "-t" };
        let mut add = vec!["-A".into(), t.into(), v.clone()];
        add.extend(["-s".into(), scenario.sched.name().into()]);
        add.extend(sched_flags(scenario.flags));
        if let Some((timeout, prefix)) = scenario.persistent {
            add.extend(["-p".into(), timeout.to_string(), "-M".into()]);
            add.push(if v6 {
                prefix.to_string()
            } else {
                Ipv4Addr::from(u32::MAX << (32 - u32::from(prefix))).to_string()
            });
        }
        ipvsadm(&add);
        let mut open = Open::default();
        for (i, step) in scenario.steps.iter().enumerate() {
            let dest_args = |op: &str, b: u8, w: i32, x: u32, y: u32| -> Vec<String> {
                let mut a = vec![op.into(), t.into(), v.clone(), "-r".into()];
                a.push(backend_addr(b, v6).to_string());
                a.extend(["-m".into(), "-w".into(), w.to_string()]);
                a.extend(["-x".into(), x.to_string(), "-y".into(), y.to_string()]);
                a
            };
            match *step {
                Add(b, w, x, y) => ipvsadm(&dest_args("-a", b, w, x, y)),
                Edit(b, w, x, y) => ipvsadm(&dest_args("-e", b, w, x, y)),
                Del(b) => {
                    let real = backend_addr(b, v6).to_string();
                    ipvsadm(&["-d".into(), t.into(), v.clone(), "-r".into(), real]);
                }
                Conn(c, port) => {
                    let client = client_addr(c, port, v6);
                    let reply = connector.ask(&format!("open {client} {vip}"));
                    let dest = kernel_dest(client, vip);
                    match (reply.strip_prefix("ok "), dest) {
                        (Some(greeting), Some(d)) => {
                            // The backend names itself: the listing agrees.
                            assert_eq!(greeting.parse().ok(), Some(d), "{client}: backend vs -Lnc");
                            open.0.push((client, d));
                        }
                        (None, None) if reply.starts_with("err") => println!("# {client}: {reply}"),
                        (_, d) => panic!("{client}: connector said {reply}, ipvsadm -Lnc {d:?}"),
                    }
                    let dest = dest.map_or("none".to_owned(), |d| d.to_string());
                    println!("K {index} {i} {client} {dest}");
                }
                Close(c, port) => {
                    let client = client_addr(c, port, v6);
                    open.take(client);
                    assert_eq!(connector.ask(&format!("close {client}")), "closed");
                }
                ServerClose(b, n) => {
                    for (client, _) in open.take_on(backend_addr(b, v6), n) {
                        let reply = connector.ask(&format!("srvclose {client}"));
                        assert_eq!(reply, "halfclosed", "{client}");
                    }
                }
                Wait(secs) => std::thread::sleep(Duration::from_secs(secs)),
                Set(tcp, fin, udp) => ipvsadm(&[
                    "--set".into(),
                    tcp.to_string(),
                    fin.to_string(),
                    udp.to_string(),
                ]),
                Resched(sched, flags) => {
                    let mut edit = vec!["-E".into(), t.into(), v.clone()];
                    edit.extend(["-s".into(), sched.name().into()]);
                    edit.extend(sched_flags(flags));
                    ipvsadm(&edit);
                }
                Datagram(c, port) => {
                    let client = client_addr(c, port, v6);
                    let reply = connector.ask(&format!("udp {client} {vip}"));
                    let entry = kernel_dest(client, vip);
                    let dest = match reply.strip_prefix("ok ") {
                        Some(name) => {
                            let d: SocketAddr = name.parse().unwrap();
                            let one_packet = scenario.flags.contains(&"ops");
                            // One-packet scheduling leaves no entry; a
                            // UDP entry names the backend that answered.
                            let expected = (!one_packet).then_some(d);
                            assert_eq!(entry, expected, "{client}: -Lnc entry");
                            d.to_string()
                        }
                        None => {
                            println!("# {client}: {reply}");
                            "none".to_owned()
                        }
                    };
                    println!("K {index} {i} {client} {dest}");
                }
            }
        }
        for entry in kernel_table(vip) {
            println!("T {index} {entry}");
        }
        for dest in kernel_dests(t, &v) {
            println!("T {index} D {dest}");
        }
        let listing = Command::new("ipvsadm")
            .args(["-Ln", t, &v])
            .output()
            .unwrap();
        print!("{}", String::from_utf8_lossy(&listing.stdout));
        assert_eq!(connector.ask("reset"), "reset");
    }
    for mut b in backends {
        let _ = b.kill();
    }
}

/// Accepts connections on each address, greets each with its own address,
/// closes its side when the client sends `q`, and closes once the client
/// has closed.
fn backend(addrs: &[String]) {
    let listeners: Vec<TcpListener> = addrs
        .iter()
        .map(|a| TcpListener::bind(a).unwrap())
        .collect();
    // UDP on the same addresses: answer every datagram with our name.
    for a in addrs {
        let socket = std::net::UdpSocket::bind(a).unwrap();
        std::thread::spawn(move || {
            let name = socket.local_addr().unwrap().to_string();
            let mut buf = [0u8; 64];
            while let Ok((_, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(name.as_bytes(), from);
            }
        });
    }
    println!("ready");
    std::io::stdout().flush().unwrap();
    let threads: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            std::thread::spawn(move || {
                let name = listener.local_addr().unwrap().to_string();
                for stream in listener.incoming() {
                    let Ok(mut stream) = stream else { continue };
                    let name = name.clone();
                    std::thread::spawn(move || {
                        let _ = writeln!(stream, "{name}");
                        let mut buf = [0u8; 64];
                        while let Ok(n) = stream.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            if buf[..n].contains(&b'q') {
                                let _ = stream.shutdown(std::net::Shutdown::Write);
                            }
                        }
                    });
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// Reads `open CLIENT VIP`, `close CLIENT`, `srvclose CLIENT` and `reset`
/// lines; keeps the connections it opens.
fn connector() {
    let mut open: HashMap<String, TcpStream> = HashMap::new();
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    for line in stdin.lock().lines() {
        let line = line.unwrap();
        let f: Vec<&str> = line.split_whitespace().collect();
        let reply = match f.as_slice() {
            ["open", client, vip] => match connect(client, vip) {
                Ok((stream, greeting)) => {
                    open.insert((*client).to_owned(), stream);
                    format!("ok {greeting}")
                }
                Err(e) => format!("err {e}"),
            },
            ["close", client] => match open.remove(*client) {
                Some(mut stream) => {
                    let _ = stream.shutdown(std::net::Shutdown::Write);
                    let mut rest = Vec::new();
                    let _ = stream.read_to_end(&mut rest);
                    "closed".to_owned()
                }
                None => "unknown".to_owned(),
            },
            // The backend closes first; wait for its FIN, keep ours open.
            ["srvclose", client] => match open.get_mut(*client) {
                Some(stream) => {
                    let _ = stream.write_all(b"q");
                    let mut rest = Vec::new();
                    match stream.read_to_end(&mut rest) {
                        Ok(_) => "halfclosed".to_owned(),
                        Err(e) => format!("err {e}"),
                    }
                }
                None => "unknown".to_owned(),
            },
            ["udp", client, vip] => match datagram(client, vip) {
                Ok(name) => format!("ok {name}"),
                Err(e) => format!("err {e}"),
            },
            ["reset"] => {
                open.clear();
                "reset".to_owned()
            }
            _ => format!("err bad command {line}"),
        };
        writeln!(stdout, "{reply}").unwrap();
        stdout.flush().unwrap();
    }
}

/// Sends one datagram from `client` to `vip` and returns who answered.
/// The socket is not connected: with one-packet scheduling the kernel
/// keeps no entry to translate the answer, which then comes straight from
/// the backend's address.
fn datagram(client: &str, vip: &str) -> std::io::Result<String> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let client: SocketAddr = client.parse().map_err(std::io::Error::other)?;
    let vip: SocketAddr = vip.parse().map_err(std::io::Error::other)?;
    let socket = Socket::new(Domain::for_address(vip), Type::DGRAM, None)?;
    socket.set_reuse_address(true)?;
    if client.is_ipv6() {
        socket.set_freebind_v6(true)?;
    }
    socket.bind(&SockAddr::from(client))?;
    let socket: std::net::UdpSocket = socket.into();
    socket.set_read_timeout(Some(Duration::from_secs(3)))?;
    socket.send_to(b"hello", vip)?;
    let mut buf = [0u8; 64];
    let (n, _) = socket.recv_from(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn connect(client: &str, vip: &str) -> std::io::Result<(TcpStream, String)> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let client: SocketAddr = client.parse().map_err(std::io::Error::other)?;
    let vip: SocketAddr = vip.parse().map_err(std::io::Error::other)?;
    let socket = Socket::new(Domain::for_address(vip), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    // The client addresses are routed to `lo` as local; IPv6 needs
    // IPV6_FREEBIND to bind to one of them.
    if client.is_ipv6() {
        socket.set_freebind_v6(true)?;
    }
    socket.bind(&SockAddr::from(client))?;
    socket.connect_timeout(&SockAddr::from(vip), Duration::from_secs(3))?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut greeting = String::new();
    reader.read_line(&mut greeting)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok((stream, greeting.trim().to_owned()))
}
