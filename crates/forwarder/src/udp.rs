//! The UDP side of the forwarder.
//!
//! This module owns UDP flows of one virtual service socket: a flow table
//! keyed by client address, where each flow has its own socket connected
//! to the destination the [`Balancer`] picked. Datagrams from the client
//! go out on that socket; a relay task sends the destination's replies
//! back to the client from the VIP socket, so the client sees them come
//! from the address it sent to. Flows expire after an idle timeout
//! (refreshed by traffic either way, like IPVS's UDP timeout); the table
//! is bounded, and datagrams of new clients are dropped while it is full.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rvs_model::Protocol;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{Balancer, Counters, Flow, ForwardError};

/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;

/// How UDP flows are forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpOptions {
    /// A flow with no traffic either way for this long is removed.
    pub idle_timeout: Duration,
    /// The most flows kept at once.
    pub max_flows: usize,
}

impl Default for UdpOptions {
    fn default() -> UdpOptions {
        UdpOptions {
            idle_timeout: Duration::from_secs(300),
            max_flows: 65_536,
        }
    }
}

/// What the relay task and the table share about a flow.
#[derive(Debug)]
struct Activity {
    /// Milliseconds since the table's epoch at the last datagram.
    last_ms: AtomicU64,
    out_bytes: AtomicU64,
    out_packets: AtomicU64,
}

#[derive(Debug)]
struct Entry {
    flow: Flow,
    dest: SocketAddr,
    upstream: Arc<UdpSocket>,
    relay: JoinHandle<()>,
    activity: Arc<Activity>,
    in_bytes: u64,
    in_packets: u64,
}

/// The flow table of one VIP socket.
#[derive(Debug)]
struct Table {
    vip: SocketAddr,
    epoch: Instant,
    flows: HashMap<SocketAddr, Entry>,
    opts: UdpOptions,
}

impl Table {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn close<B: Balancer + ?Sized>(balancer: &B, entry: Entry) {
        entry.relay.abort();
        let counters = Counters {
            in_bytes: entry.in_bytes,
            in_packets: entry.in_packets,
            out_bytes: entry.activity.out_bytes.load(Ordering::Relaxed),
            out_packets: entry.activity.out_packets.load(Ordering::Relaxed),
        };
        tracing::trace!(flow = %entry.flow, dest = %entry.dest, ?counters, "UDP flow closed");
        balancer.closed(&entry.flow, entry.dest, &counters);
    }

    /// Removes flows idle for longer than the timeout.
    fn expire<B: Balancer + ?Sized>(&mut self, balancer: &B) {
        let now = self.now_ms();
        let limit = u64::try_from(self.opts.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let idle: Vec<SocketAddr> = self
            .flows
            .iter()
            .filter(|(_, e)| {
                now.saturating_sub(e.activity.last_ms.load(Ordering::Relaxed)) >= limit
            })
            .map(|(client, _)| *client)
            .collect();
        for client in idle {
            if let Some(entry) = self.flows.remove(&client) {
                Table::close(balancer, entry);
            }
        }
    }

    /// The flow of `client`, creating it if needed; `None` when the
    /// datagram must be dropped.
    async fn flow_for<B: Balancer + ?Sized>(
        &mut self,
        vip_socket: &Arc<UdpSocket>,
        balancer: &B,
        client: SocketAddr,
    ) -> Option<&mut Entry> {
        if !self.flows.contains_key(&client) {
            if self.flows.len() >= self.opts.max_flows {
                self.expire(balancer);
            }
            if self.flows.len() >= self.opts.max_flows {
                tracing::debug!(vip = %self.vip, %client, "UDP flow table full; dropping datagram");
                return None;
            }
            let flow = Flow {
                protocol: Protocol::Udp,
                client,
                vip: self.vip,
            };
            let entry = self.open(vip_socket, balancer, flow).await?;
            self.flows.insert(client, entry);
        }
        self.flows.get_mut(&client)
    }

    async fn open<B: Balancer + ?Sized>(
        &self,
        vip_socket: &Arc<UdpSocket>,
        balancer: &B,
        flow: Flow,
    ) -> Option<Entry> {
        let mut tried = Vec::new();
        // A UDP "connect" only fails locally (no route, no port): a few
        // attempts are plenty.
        for _ in 0..3 {
            let dest = balancer.pick(&flow, &tried)?;
            match upstream_socket(dest).await {
                Ok(upstream) => {
                    balancer.opened(&flow, dest);
                    let upstream = Arc::new(upstream);
                    let activity = Arc::new(Activity {
                        last_ms: AtomicU64::new(self.now_ms()),
                        out_bytes: AtomicU64::new(0),
                        out_packets: AtomicU64::new(0),
                    });
                    let relay = tokio::spawn(relay(
                        Arc::clone(&upstream),
                        Arc::clone(vip_socket),
                        flow,
                        Arc::clone(&activity),
                        self.epoch,
                    ));
                    return Some(Entry {
                        flow,
                        dest,
                        upstream,
                        relay,
                        activity,
                        in_bytes: 0,
                        in_packets: 0,
                    });
                }
                Err(e) => {
                    tracing::debug!(%flow, %dest, error = %e, "UDP upstream socket failed");
                    balancer.connect_failed(&flow, dest, &e);
                    tried.push(dest);
                }
            }
        }
        None
    }
}

async fn upstream_socket(dest: SocketAddr) -> io::Result<UdpSocket> {
    let any: SocketAddr = if dest.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(any).await?;
    socket.connect(dest).await?;
    Ok(socket)
}

/// Sends the destination's datagrams back to the client from the VIP
/// socket, until the flow is removed (the task is aborted).
async fn relay(
    upstream: Arc<UdpSocket>,
    vip_socket: Arc<UdpSocket>,
    flow: Flow,
    activity: Arc<Activity>,
    epoch: Instant,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let n = match upstream.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                // An ICMP port unreachable from the destination.
                tracing::trace!(%flow, "destination port unreachable");
                continue;
            }
            Err(e) => {
                tracing::debug!(%flow, error = %e, "UDP relay stops");
                return;
            }
        };
        let datagram = buf.get(..n).unwrap_or_default();
        if let Err(e) = vip_socket.send_to(datagram, flow.client).await {
            tracing::debug!(%flow, error = %e, "UDP reply to client failed");
            continue;
        }
        let now = u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.last_ms.store(now, Ordering::Relaxed);
        activity.out_bytes.fetch_add(n as u64, Ordering::Relaxed);
        activity.out_packets.fetch_add(1, Ordering::Relaxed);
    }
}

/// Forwards the datagrams arriving on `socket` (a VIP socket) until
/// `shutdown` completes; then closes every flow (each reported with
/// [`Balancer::closed`]).
pub async fn serve_udp<B: Balancer + ?Sized>(
    socket: Arc<UdpSocket>,
    balancer: Arc<B>,
    opts: UdpOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ForwardError> {
    let vip = socket
        .local_addr()
        .map_err(ForwardError::io("read the UDP socket's address"))?;
    let mut table = Table {
        vip,
        epoch: Instant::now(),
        flows: HashMap::new(),
        opts,
    };
    let sweep_every =
        (opts.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut sweep = tokio::time::interval(sweep_every);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = sweep.tick() => table.expire(&*balancer),
            received = socket.recv_from(&mut buf) => {
                let (n, client) = match received {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::debug!(%vip, error = %e, "UDP receive failed");
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                };
                let now = table.now_ms();
                let Some(entry) = table.flow_for(&socket, &*balancer, client).await else {
                    continue;
                };
                let datagram = buf.get(..n).unwrap_or_default();
                match entry.upstream.send(datagram).await {
                    Ok(_) => {
                        entry.in_bytes += n as u64;
                        entry.in_packets += 1;
                        entry.activity.last_ms.store(now, Ordering::Relaxed);
                    }
                    Err(e) => tracing::debug!(flow = %entry.flow, error = %e, "UDP send to destination failed"),
                }
            }
        }
    }
    for (_, entry) in table.flows.drain() {
        Table::close(&*balancer, entry);
    }
    Ok(())
}
