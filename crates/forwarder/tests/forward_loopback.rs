//! End-to-end tests of the forwarder with real sockets on 127.0.0.1
//! (and `::1` when the host has it): TCP echo, half-close both ways,
//! large transfers with and without splice, rescheduling away from a
//! dead destination, UDP flows and their expiry, and SO_REUSEPORT.
//! Every test is bounded by a tokio timeout and a fixed count of rounds.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rvs_forwarder::copy::{CopyOptions, duplex};
use rvs_forwarder::listen::{
    ListenOptions, tcp_listener, tokio_tcp_listener, tokio_udp_socket, udp_socket,
};
use rvs_forwarder::tcp::{TcpOptions, serve_tcp};
use rvs_forwarder::udp::{UdpOptions, serve_udp};
use rvs_forwarder::{Balancer, Counters, Flow, ForwardError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;

const LIMIT: Duration = Duration::from_secs(20);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    Failed(SocketAddr),
    Opened(SocketAddr),
    Closed(SocketAddr, Counters),
}

/// Round robin over fixed destinations, skipping those already tried,
/// recording what the forwarder told it.
#[derive(Debug)]
struct Fixed {
    dests: Vec<SocketAddr>,
    next: AtomicUsize,
    events: Mutex<Vec<Event>>,
}

impl Fixed {
    fn new(dests: Vec<SocketAddr>) -> Arc<Fixed> {
        Arc::new(Fixed {
            dests,
            next: AtomicUsize::new(0),
            events: Mutex::new(Vec::new()),
        })
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    fn closed(&self) -> Vec<(SocketAddr, Counters)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Closed(a, c) => Some((a, c)),
                _ => None,
            })
            .collect()
    }

    fn opened(&self) -> usize {
        self.events()
            .iter()
            .filter(|e| matches!(e, Event::Opened(_)))
            .count()
    }
}

impl Balancer for Fixed {
    fn pick(&self, _flow: &Flow, tried: &[SocketAddr]) -> Option<SocketAddr> {
        for _ in 0..self.dests.len() {
            let i = self.next.fetch_add(1, Ordering::SeqCst) % self.dests.len();
            if !tried.contains(&self.dests[i]) {
                return Some(self.dests[i]);
            }
        }
        None
    }

    fn connect_failed(&self, _flow: &Flow, dest: SocketAddr, _error: &io::Error) {
        self.events.lock().unwrap().push(Event::Failed(dest));
    }

    fn opened(&self, _flow: &Flow, dest: SocketAddr) {
        self.events.lock().unwrap().push(Event::Opened(dest));
    }

    fn closed(&self, _flow: &Flow, dest: SocketAddr, counters: &Counters) {
        self.events
            .lock()
            .unwrap()
            .push(Event::Closed(dest, *counters));
    }
}

async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test exceeded its time bound")
}

fn lo(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Deterministic, position-dependent bytes (xorshift), so that lost,
/// duplicated or reordered chunks are caught.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An echo server: copies each connection back until EOF, then closes.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind(lo(0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..256 {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// A forwarder on a fresh VIP port; stops when the sender is dropped.
async fn tcp_forwarder(
    balancer: Arc<Fixed>,
    opts: TcpOptions,
) -> (SocketAddr, oneshot::Sender<()>) {
    let listener = tokio_tcp_listener(lo(0), ListenOptions::default()).unwrap();
    let vip = listener.local_addr().unwrap();
    (vip, forward_on(listener, balancer, opts))
}

/// The forwarder on `listener`; stops when the sender is dropped.
fn forward_on(
    listener: TcpListener,
    balancer: Arc<Fixed>,
    opts: TcpOptions,
) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_tcp(listener, balancer, opts, async move {
        let _ = stopped.await;
    }));
    stop
}

async fn wait_for<T>(mut probe: impl FnMut() -> Option<T>) -> T {
    for _ in 0..400 {
        if let Some(v) = probe() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached within 4 s");
}

#[tokio::test]
async fn tcp_echo_through_the_forwarder() {
    bounded(async {
        let backend = echo_server().await;
        let balancer = Fixed::new(vec![backend]);
        let (vip, _stop) = tcp_forwarder(balancer.clone(), TcpOptions::default()).await;
        let began = std::time::Instant::now();
        for round in 0..5u8 {
            let mut c = TcpStream::connect(vip).await.unwrap();
            let msg = format!("hello {round}");
            c.write_all(msg.as_bytes()).await.unwrap();
            let mut back = vec![0; msg.len()];
            c.read_exact(&mut back).await.unwrap();
            assert_eq!(back, msg.as_bytes());
            c.shutdown().await.unwrap();
            let mut rest = Vec::new();
            c.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
        }
        // Small writes are not held back (no corking, no Nagle): five
        // round trips take milliseconds, not 5 x 2 x 200 ms.
        assert!(
            began.elapsed() < Duration::from_millis(1500),
            "{:?}",
            began.elapsed()
        );
        let closed = wait_for(|| Some(balancer.closed()).filter(|c| c.len() == 5)).await;
        for (dest, counters) in closed {
            assert_eq!(dest, backend);
            assert_eq!(counters.in_bytes, 7);
            assert_eq!(counters.out_bytes, 7);
            assert_eq!((counters.in_packets, counters.out_packets), (1, 1));
        }
    })
    .await;
}

/// Many small exchanges on one connection: each read the copy makes is
/// short, so it clears its readiness without a read that ends in
/// `EAGAIN`; a lost wakeup would hang an exchange (and the test's bound).
#[tokio::test]
async fn ping_pong_with_short_reads_never_stalls() {
    bounded(async {
        let backend = echo_server().await;
        let balancer = Fixed::new(vec![backend]);
        let (vip, _stop) = tcp_forwarder(balancer.clone(), TcpOptions::default()).await;
        let mut c = TcpStream::connect(vip).await.unwrap();
        let mut sent = 0u64;
        for round in 0..500usize {
            let msg = pattern(round as u64, 1 + round % 700);
            c.write_all(&msg).await.unwrap();
            let mut back = vec![0; msg.len()];
            c.read_exact(&mut back).await.unwrap();
            assert_eq!(back, msg, "round {round}");
            sent += msg.len() as u64;
        }
        c.shutdown().await.unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        let closed = wait_for(|| Some(balancer.closed()).filter(|c| c.len() == 1)).await;
        assert_eq!(closed[0].1.in_bytes, sent);
        assert_eq!(closed[0].1.out_bytes, sent);
    })
    .await;
}

/// A connection that alternates bulk transfers (spliced) with small
/// exchanges (buffered again) keeps every byte in order, both ways.
#[tokio::test]
async fn bulk_and_chatty_phases_alternate_on_one_connection() {
    bounded(async {
        let backend = echo_server().await;
        let balancer = Fixed::new(vec![backend]);
        let (vip, _stop) = tcp_forwarder(balancer.clone(), TcpOptions::default()).await;
        let c = TcpStream::connect(vip).await.unwrap();
        let (mut r, mut w) = c.into_split();
        let mut sent = 0u64;
        for phase in 0..3u64 {
            let bulk = pattern(phase, 2 << 20);
            let writer = async {
                w.write_all(&bulk).await.unwrap();
            };
            let mut back = vec![0; bulk.len()];
            let reader = r.read_exact(&mut back);
            let ((), n) = tokio::join!(writer, reader);
            n.unwrap();
            assert!(back == bulk, "bulk phase {phase} corrupted");
            sent += bulk.len() as u64;
            for round in 0..50usize {
                let msg = pattern(phase * 100 + round as u64, 1 + round * 13);
                w.write_all(&msg).await.unwrap();
                let mut back = vec![0; msg.len()];
                r.read_exact(&mut back).await.unwrap();
                assert_eq!(back, msg, "phase {phase} round {round}");
                sent += msg.len() as u64;
            }
        }
        w.shutdown().await.unwrap();
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        let closed = wait_for(|| Some(balancer.closed()).filter(|c| c.len() == 1)).await;
        assert_eq!((closed[0].1.in_bytes, closed[0].1.out_bytes), (sent, sent));
    })
    .await;
}

/// The forwarder sets `TCP_NODELAY` once on its listener and relies on
/// Linux copying it into every accepted socket: both halves are checked,
/// the forwarder's listener (through a duplicate of its descriptor) and
/// the kernel's inheritance.
#[tokio::test]
async fn accepted_sockets_inherit_tcp_nodelay_from_the_listener() {
    bounded(async {
        let backend = echo_server().await;
        let balancer = Fixed::new(vec![backend]);
        let listener = tokio_tcp_listener(lo(0), ListenOptions::default()).unwrap();
        let vip = listener.local_addr().unwrap();
        let probe = socket2::SockRef::from(&listener).try_clone().unwrap();
        assert!(!probe.tcp_nodelay().unwrap(), "a new listener has Nagle on");
        let _stop = forward_on(listener, balancer, TcpOptions::default());
        let mut c = TcpStream::connect(vip).await.unwrap();
        c.write_all(b"x").await.unwrap();
        let mut back = [0u8; 1];
        c.read_exact(&mut back).await.unwrap();
        assert!(probe.tcp_nodelay().unwrap(), "serve_tcp left Nagle on");

        let listener = tokio_tcp_listener(lo(0), ListenOptions::default()).unwrap();
        socket2::SockRef::from(&listener)
            .set_tcp_nodelay(true)
            .unwrap();
        let _c = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        assert!(accepted.nodelay().unwrap());
    })
    .await;
}

#[tokio::test]
async fn client_half_close_still_gets_the_whole_reply() {
    bounded(async {
        // The backend reads the request to EOF, then answers 3 MiB.
        let listener = TcpListener::bind(lo(0)).await.unwrap();
        let backend = listener.local_addr().unwrap();
        let reply = pattern(7, 3 << 20);
        let expected = reply.clone();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            s.read_to_end(&mut request).await.unwrap();
            assert_eq!(request, b"GET all\n");
            s.write_all(&reply).await.unwrap();
            s.shutdown().await.unwrap();
        });
        let balancer = Fixed::new(vec![backend]);
        let (vip, _stop) = tcp_forwarder(balancer.clone(), TcpOptions::default()).await;
        let mut c = TcpStream::connect(vip).await.unwrap();
        c.write_all(b"GET all\n").await.unwrap();
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "reply corrupted");
        let closed = wait_for(|| balancer.closed().first().copied()).await;
        assert_eq!(closed.1.in_bytes, 8);
        assert_eq!(closed.1.out_bytes, 3 << 20);
    })
    .await;
}

#[tokio::test]
async fn server_half_close_keeps_the_client_direction_open() {
    bounded(async {
        // The backend greets, shuts its write side, and still reads.
        let listener = TcpListener::bind(lo(0)).await.unwrap();
        let backend = listener.local_addr().unwrap();
        let (got_tx, got_rx) = oneshot::channel();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"bye early").await.unwrap();
            s.shutdown().await.unwrap();
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.unwrap();
            let _ = got_tx.send(rest);
        });
        let (vip, _stop) = tcp_forwarder(Fixed::new(vec![backend]), TcpOptions::default()).await;
        let mut c = TcpStream::connect(vip).await.unwrap();
        let mut greeting = Vec::new();
        c.read_to_end(&mut greeting).await.unwrap();
        assert_eq!(greeting, b"bye early");
        let late = pattern(3, 200_000);
        c.write_all(&late).await.unwrap();
        c.shutdown().await.unwrap();
        assert!(got_rx.await.unwrap() == late);
    })
    .await;
}

/// Two connected pairs; returns (client side A, server side A, client
/// side B, server side B).
async fn two_pairs() -> (TcpStream, TcpStream, TcpStream, TcpStream) {
    let l1 = TcpListener::bind(lo(0)).await.unwrap();
    let l2 = TcpListener::bind(lo(0)).await.unwrap();
    let (c1, s1) = tokio::join!(TcpStream::connect(l1.local_addr().unwrap()), l1.accept());
    let (c2, s2) = tokio::join!(TcpStream::connect(l2.local_addr().unwrap()), l2.accept());
    (c1.unwrap(), s1.unwrap().0, c2.unwrap(), s2.unwrap().0)
}

async fn large_transfer(opts: CopyOptions) -> rvs_forwarder::copy::DuplexReport {
    // client <-> [s1 | duplex | c2] <-> server, 8 MiB each way at once.
    let (mut client, s1, c2, mut server) = two_pairs().await;
    let size = 8 << 20;
    let up = pattern(11, size);
    let down = pattern(12, size);
    let (up2, down2) = (up.clone(), down.clone());
    let copier = tokio::spawn(async move { duplex(&s1, &c2, &opts).await });
    let client_side = tokio::spawn(async move {
        let (mut r, mut w) = client.split();
        let send = async {
            w.write_all(&up2).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let mut got = Vec::new();
        let recv = r.read_to_end(&mut got);
        let ((), n) = tokio::join!(send, recv);
        n.unwrap();
        got
    });
    let server_side = tokio::spawn(async move {
        let (mut r, mut w) = server.split();
        let send = async {
            w.write_all(&down2).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let mut got = Vec::new();
        let recv = r.read_to_end(&mut got);
        let ((), n) = tokio::join!(send, recv);
        n.unwrap();
        got
    });
    let (at_client, at_server) = (client_side.await.unwrap(), server_side.await.unwrap());
    assert!(at_server == up, "client-to-server stream corrupted");
    assert!(at_client == down, "server-to-client stream corrupted");
    let report = copier.await.unwrap();
    assert!(report.error.is_none(), "{:?}", report.error);
    assert_eq!(report.inbound.bytes, size as u64);
    assert_eq!(report.outbound.bytes, size as u64);
    report
}

#[tokio::test]
async fn large_transfers_are_intact_with_splice() {
    bounded(async {
        let report = large_transfer(CopyOptions::default()).await;
        assert!(report.inbound.zero_copy && report.outbound.zero_copy);
    })
    .await;
}

#[tokio::test]
async fn short_flows_stay_buffered_and_splice_from_the_first_byte_works() {
    bounded(async {
        // A request/response under the threshold never takes a pipe.
        let (mut client, s1, c2, mut server) = two_pairs().await;
        let copier = tokio::spawn(async move { duplex(&s1, &c2, &CopyOptions::default()).await });
        client.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
        client.shutdown().await.unwrap();
        let mut request = Vec::new();
        server.read_to_end(&mut request).await.unwrap();
        assert_eq!(request, b"GET / HTTP/1.0\r\n\r\n");
        server
            .write_all(b"HTTP/1.0 200 OK\r\n\r\nok\n")
            .await
            .unwrap();
        server.shutdown().await.unwrap();
        let mut response = Vec::new();
        client.read_to_end(&mut response).await.unwrap();
        assert_eq!(response, b"HTTP/1.0 200 OK\r\n\r\nok\n");
        let report = copier.await.unwrap();
        assert!(!report.inbound.zero_copy && !report.outbound.zero_copy);

        let opts = CopyOptions {
            splice_after: 0,
            ..CopyOptions::default()
        };
        let report = large_transfer(opts).await;
        assert!(report.inbound.zero_copy && report.outbound.zero_copy);
    })
    .await;
}

#[tokio::test]
async fn large_transfers_are_intact_with_the_buffered_fallback() {
    bounded(async {
        let opts = CopyOptions {
            splice: false,
            buffer_size: 4096,
            ..CopyOptions::default()
        };
        let report = large_transfer(opts).await;
        assert!(!report.inbound.zero_copy && !report.outbound.zero_copy);
    })
    .await;
}

#[tokio::test]
async fn large_transfers_through_the_whole_forwarder() {
    bounded(async {
        let backend = echo_server().await;
        let balancer = Fixed::new(vec![backend]);
        let (vip, _stop) = tcp_forwarder(balancer.clone(), TcpOptions::default()).await;
        let data = pattern(5, 6 << 20);
        let mut c = TcpStream::connect(vip).await.unwrap();
        let (mut r, mut w) = c.split();
        let send = async {
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let mut got = Vec::new();
        let ((), n) = tokio::join!(send, r.read_to_end(&mut got));
        n.unwrap();
        assert!(got == data, "echo corrupted");
        let (_, counters) = wait_for(|| balancer.closed().first().copied()).await;
        assert_eq!(counters.in_bytes, 6 << 20);
        assert_eq!(counters.out_bytes, 6 << 20);
        assert!(counters.in_packets >= 1 && counters.out_packets >= 1);
    })
    .await;
}

/// An address on 127.0.0.1 nobody listens on (bound, then released).
async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind(lo(0)).await.unwrap();
    l.local_addr().unwrap()
}

#[tokio::test]
async fn a_dead_destination_is_rescheduled_to_a_live_one() {
    bounded(async {
        let dead = dead_addr().await;
        let live = echo_server().await;
        let balancer = Fixed::new(vec![dead, live]);
        let (vip, _stop) = tcp_forwarder(balancer.clone(), TcpOptions::default()).await;
        for _ in 0..4 {
            let mut c = TcpStream::connect(vip).await.unwrap();
            c.write_all(b"ping").await.unwrap();
            let mut back = [0; 4];
            c.read_exact(&mut back).await.unwrap();
            assert_eq!(&back, b"ping");
        }
        let events = balancer.events();
        assert!(events.contains(&Event::Failed(dead)), "{events:?}");
        assert!(!events.contains(&Event::Opened(dead)), "{events:?}");
        assert_eq!(balancer.opened(), 4);
    })
    .await;
}

#[tokio::test]
async fn all_destinations_dead_resets_the_client() {
    bounded(async {
        let (d1, d2) = (dead_addr().await, dead_addr().await);
        let balancer = Fixed::new(vec![d1, d2]);
        let flow = Flow {
            protocol: rvs_forwarder::Protocol::Tcp,
            client: lo(1),
            vip: lo(2),
        };
        let err = rvs_forwarder::tcp::connect_upstream(&*balancer, &flow, &TcpOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, ForwardError::ConnectFailed { attempts: 2, .. }),
            "{err}"
        );
        let none = Fixed::new(vec![]);
        let err = rvs_forwarder::tcp::connect_upstream(&*none, &flow, &TcpOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, ForwardError::NoDestination { .. }), "{err}");

        let (vip, _stop) = tcp_forwarder(balancer.clone(), TcpOptions::default()).await;
        let mut c = TcpStream::connect(vip).await.unwrap();
        let mut buf = Vec::new();
        // Reset or plain EOF, but promptly and with no data.
        match c.read_to_end(&mut buf).await {
            Ok(0) => {}
            Ok(n) => panic!("{n} unexpected bytes"),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
        }
    })
    .await;
}

/// A UDP echo backend.
async fn udp_echo() -> SocketAddr {
    let s = UdpSocket::bind(lo(0)).await.unwrap();
    let addr = s.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0; 2048];
        for _ in 0..10_000 {
            let Ok((n, from)) = s.recv_from(&mut buf).await else {
                return;
            };
            let _ = s.send_to(&buf[..n], from).await;
        }
    });
    addr
}

async fn udp_forwarder(
    balancer: Arc<Fixed>,
    opts: UdpOptions,
) -> (SocketAddr, oneshot::Sender<()>) {
    let socket = Arc::new(tokio_udp_socket(lo(0), ListenOptions::default()).unwrap());
    let vip = socket.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(serve_udp(socket, balancer, opts, async move {
        let _ = stopped.await;
    }));
    (vip, stop)
}

async fn udp_ask(client: &UdpSocket, vip: SocketAddr, msg: &[u8]) -> Option<Vec<u8>> {
    client.send_to(msg, vip).await.unwrap();
    let mut buf = [0; 2048];
    match tokio::time::timeout(Duration::from_millis(500), client.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => {
            assert_eq!(from, vip, "reply must come from the VIP");
            Some(buf[..n].to_vec())
        }
        _ => None,
    }
}

#[tokio::test]
async fn udp_flows_relay_replies_and_expire_when_idle() {
    bounded(async {
        let backend = udp_echo().await;
        let balancer = Fixed::new(vec![backend]);
        let opts = UdpOptions {
            idle_timeout: Duration::from_millis(300),
            max_flows: 16,
        };
        let (vip, _stop) = udp_forwarder(balancer.clone(), opts).await;
        let a = UdpSocket::bind(lo(0)).await.unwrap();
        let b = UdpSocket::bind(lo(0)).await.unwrap();
        for i in 0..3u8 {
            assert_eq!(udp_ask(&a, vip, &[b'a', i]).await.unwrap(), [b'a', i]);
            assert_eq!(udp_ask(&b, vip, &[b'b', i, i]).await.unwrap(), [b'b', i, i]);
        }
        assert_eq!(balancer.opened(), 2, "one flow per client");
        // Idle: both flows expire with their counters.
        let closed = wait_for(|| Some(balancer.closed()).filter(|c| c.len() == 2)).await;
        let mut per_flow: Vec<Counters> = closed.iter().map(|(_, c)| *c).collect();
        per_flow.sort_by_key(|c| c.in_bytes);
        assert_eq!(
            per_flow[0],
            Counters {
                in_bytes: 6,
                out_bytes: 6,
                in_packets: 3,
                out_packets: 3
            }
        );
        assert_eq!(
            per_flow[1],
            Counters {
                in_bytes: 9,
                out_bytes: 9,
                in_packets: 3,
                out_packets: 3
            }
        );
        // A new datagram opens a new flow.
        assert_eq!(udp_ask(&a, vip, b"again").await.unwrap(), b"again");
        assert_eq!(balancer.opened(), 3);
    })
    .await;
}

#[tokio::test]
async fn udp_flow_table_is_bounded() {
    bounded(async {
        let backend = udp_echo().await;
        let balancer = Fixed::new(vec![backend]);
        let opts = UdpOptions {
            idle_timeout: Duration::from_secs(30),
            max_flows: 1,
        };
        let (vip, _stop) = udp_forwarder(balancer.clone(), opts).await;
        let a = UdpSocket::bind(lo(0)).await.unwrap();
        let b = UdpSocket::bind(lo(0)).await.unwrap();
        assert_eq!(udp_ask(&a, vip, b"first").await.unwrap(), b"first");
        assert_eq!(
            udp_ask(&b, vip, b"second").await,
            None,
            "table full: dropped"
        );
        assert_eq!(
            udp_ask(&a, vip, b"first again").await.unwrap(),
            b"first again"
        );
        assert_eq!(balancer.opened(), 1);
    })
    .await;
}

#[tokio::test]
async fn two_reuseport_listeners_share_one_port() {
    bounded(async {
        let first = tokio_tcp_listener(lo(0), ListenOptions::default()).unwrap();
        let vip = first.local_addr().unwrap();
        let second = tokio_tcp_listener(vip, ListenOptions::default()).unwrap();
        // Without SO_REUSEPORT the port is taken.
        let plain = ListenOptions {
            reuse_port: false,
            ..ListenOptions::default()
        };
        assert!(tcp_listener(vip, plain).is_err());
        // UDP too.
        let u1 = udp_socket(lo(0), ListenOptions::default()).unwrap();
        let _u2 = udp_socket(u1.local_addr().unwrap(), ListenOptions::default()).unwrap();

        let backend = echo_server().await;
        let (b1, b2) = (Fixed::new(vec![backend]), Fixed::new(vec![backend]));
        let (stop1, stopped1) = oneshot::channel::<()>();
        let (stop2, stopped2) = oneshot::channel::<()>();
        let w1 = tokio::spawn(serve_tcp(
            first,
            b1.clone(),
            TcpOptions::default(),
            async move {
                let _ = stopped1.await;
            },
        ));
        let w2 = tokio::spawn(serve_tcp(
            second,
            b2.clone(),
            TcpOptions::default(),
            async move {
                let _ = stopped2.await;
            },
        ));
        let rounds = 32;
        for _ in 0..rounds {
            let mut c = TcpStream::connect(vip).await.unwrap();
            c.write_all(b"x").await.unwrap();
            let mut back = [0; 1];
            c.read_exact(&mut back).await.unwrap();
        }
        let (n1, n2) = (b1.opened(), b2.opened());
        assert_eq!(n1 + n2, rounds);
        // The kernel hashes connections over both sockets; all 32 on one
        // socket has probability 2^-31.
        assert!(n1 > 0 && n2 > 0, "{n1} / {n2}");
        stop1.send(()).unwrap();
        stop2.send(()).unwrap();
        w1.await.unwrap().unwrap();
        w2.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn ipv6_loopback_works_when_available() {
    bounded(async {
        let v6: SocketAddr = "[::1]:0".parse().unwrap();
        let Ok(backend_listener) = TcpListener::bind(v6).await else {
            eprintln!("skipping: no ::1 on this host");
            return;
        };
        let backend = backend_listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = backend_listener.accept().await.unwrap();
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
        let listener = tokio_tcp_listener(v6, ListenOptions::default()).unwrap();
        let vip = listener.local_addr().unwrap();
        let balancer = Fixed::new(vec![backend]);
        let _stop = forward_on(listener, balancer, TcpOptions::default());
        let mut c = TcpStream::connect(vip).await.unwrap();
        c.write_all(b"six").await.unwrap();
        let mut back = [0; 3];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"six");
    })
    .await;
}

/// A close request is carried out only while the connection is idle as
/// the watcher saw it: not with a request outstanding at the destination,
/// not after bytes moved since the watcher's sample; then the client and
/// the destination each get a FIN and the copy ends at theirs.
#[tokio::test]
async fn a_close_request_waits_for_the_destination_to_have_the_last_word() {
    use rvs_forwarder::Activity;
    use rvs_forwarder::copy::duplex_watched;
    bounded(async {
        // client <-> [s1 | duplex | c2] <-> server
        let (mut client, s1, c2, mut server) = two_pairs().await;
        let activity = Arc::new(Activity::new());
        let watched = Arc::clone(&activity);
        let copy = tokio::spawn(async move {
            duplex_watched(&s1, &c2, &CopyOptions::default(), Some(&watched)).await
        });
        let mut buf = [0u8; 64];
        // Nothing moved yet: not idle, a request is refused.
        assert!(!activity.answered());
        activity.request_close(activity.moved());
        // A request reaches the destination; it has not answered.
        client.write_all(b"GET").await.unwrap();
        let n = server.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"GET");
        wait_for(|| (activity.moved() == 3).then_some(())).await;
        assert!(!activity.answered());
        activity.request_close(activity.moved());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!activity.closing(), "closed with a request outstanding");
        // The answer goes back: now idle, but a request made with a stale
        // sample is refused (bytes moved since).
        let stale = activity.moved();
        server.write_all(b"200").await.unwrap();
        let n = client.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"200");
        wait_for(|| (activity.moved() == 6).then_some(())).await;
        assert!(activity.answered());
        activity.request_close(stale);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!activity.closing(), "closed on a stale sample");
        // Idle as sampled: closed, both peers see end of stream.
        activity.request_close(activity.moved());
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
        assert_eq!(server.read(&mut buf).await.unwrap(), 0);
        assert!(activity.closing());
        drop(client);
        drop(server);
        let report = copy.await.unwrap();
        assert!(report.error.is_none(), "{:?}", report.error);
        assert_eq!((report.inbound.bytes, report.outbound.bytes), (3, 3));
    })
    .await;
}
