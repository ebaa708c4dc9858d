//! The TCP side of the forwarder.
//!
//! This module owns a TCP virtual service's life on one listener: accept
//! a client, ask the [`Balancer`] for a destination, connect (bounded in
//! time; on failure report it and reschedule to another destination, a
//! bounded number of times), then run the half-close-correct duplex copy
//! of [`crate::copy`] and report the flow's counters when it ends.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rvs_model::Protocol;
use socket2::SockRef;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use crate::copy::{CopyOptions, DuplexReport, duplex_watched, estimate_segments};
use crate::{Balancer, Counters, Flow, ForwardError};

/// How TCP flows are forwarded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpOptions {
    /// How long one connection attempt to a destination may take.
    pub connect_timeout: Duration,
    /// How many destinations are tried for one flow (at least 1).
    pub max_attempts: usize,
    /// How bytes are copied.
    pub copy: CopyOptions,
}

impl Default for TcpOptions {
    fn default() -> TcpOptions {
        TcpOptions {
            connect_timeout: Duration::from_secs(3),
            max_attempts: 3,
            copy: CopyOptions::default(),
        }
    }
}

/// Connects a flow to a destination the balancer picks, rescheduling on
/// failure (each failed destination is reported with
/// [`Balancer::connect_failed`] and passed to the next `pick` as tried).
/// On success [`Balancer::opened`] has been called.
pub async fn connect_upstream<B: Balancer + ?Sized>(
    balancer: &B,
    flow: &Flow,
    opts: &TcpOptions,
) -> Result<(TcpStream, SocketAddr), ForwardError> {
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut last: Option<(SocketAddr, io::Error)> = None;
    for _ in 0..opts.max_attempts.max(1) {
        let Some(dest) = balancer.pick(flow, &tried) else {
            break;
        };
        let attempt = tokio::time::timeout(opts.connect_timeout, TcpStream::connect(dest)).await;
        let error = match attempt {
            Ok(Ok(stream)) => {
                if let Err(e) = stream.set_nodelay(true) {
                    tracing::debug!(%flow, %dest, error = %e, "TCP_NODELAY refused");
                }
                balancer.opened(flow, dest);
                return Ok((stream, dest));
            }
            Ok(Err(e)) => e,
            Err(_) => io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {:?}", opts.connect_timeout),
            ),
        };
        tracing::debug!(%flow, %dest, error = %error, "connect to destination failed; rescheduling");
        balancer.connect_failed(flow, dest, &error);
        tried.push(dest);
        last = Some((dest, error));
    }
    match last {
        Some((dest, source)) => Err(ForwardError::ConnectFailed {
            flow: *flow,
            attempts: tried.len(),
            dest,
            source,
        }),
        None => Err(ForwardError::NoDestination { flow: *flow }),
    }
}

/// Forwards one accepted client connection to completion and returns its
/// counters (also reported with [`Balancer::closed`]). When no
/// destination can be reached the client is reset.
pub async fn forward_connection<B: Balancer + ?Sized>(
    client: TcpStream,
    flow: Flow,
    balancer: &B,
    opts: &TcpOptions,
) -> Result<Counters, ForwardError> {
    let (upstream, dest) = match connect_upstream(balancer, &flow, opts).await {
        Ok(pair) => pair,
        Err(e) => {
            // A reset tells the client at once, as a refused SYN would.
            let _ = SockRef::from(&client).set_linger(Some(Duration::ZERO));
            return Err(e);
        }
    };
    if let Err(e) = client.set_nodelay(true) {
        tracing::debug!(%flow, error = %e, "TCP_NODELAY refused");
    }
    let activity = balancer.watch(&flow, dest);
    let report = duplex_watched(&client, &upstream, &opts.copy, activity.as_deref()).await;
    let counters = counters(&report, &client, &upstream);
    balancer.closed(&flow, dest, &counters);
    tracing::trace!(%flow, %dest, ?counters, "TCP flow closed");
    match report.error {
        Some(source) => Err(ForwardError::Io {
            context: format!("{flow}: copying to and from {dest}"),
            source,
        }),
        None => Ok(counters),
    }
}

/// The smallest MSS IPv4 allows: up to this many bytes fit one segment
/// whatever the socket's MSS, so short flows skip the `getsockopt`.
const MIN_MSS: u64 = 536;

fn counters(report: &DuplexReport, client: &TcpStream, upstream: &TcpStream) -> Counters {
    let segments = |bytes: u64, s: &TcpStream| {
        if bytes <= MIN_MSS {
            u64::from(bytes > 0)
        } else {
            estimate_segments(bytes, SockRef::from(s).tcp_mss().unwrap_or(1460))
        }
    };
    Counters {
        in_bytes: report.inbound.bytes,
        out_bytes: report.outbound.bytes,
        in_packets: segments(report.inbound.bytes, client),
        out_packets: segments(report.outbound.bytes, upstream),
    }
}

/// Accepts on `listener` and forwards every connection (a task each)
/// until `shutdown` completes; then stops accepting and aborts the
/// connections still open. The virtual address of each flow is the
/// accepted socket's local address.
pub async fn serve_tcp<B: Balancer + ?Sized>(
    listener: TcpListener,
    balancer: Arc<B>,
    opts: TcpOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ForwardError> {
    let bound = listener
        .local_addr()
        .map_err(ForwardError::io("read the TCP listener's address"))?;
    let opts = Arc::new(opts);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while conns.try_join_next().is_some() {}
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (client, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Out of descriptors, aborted handshakes: pause, go on.
                tracing::warn!(listener = %bound, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        // A listener on one address needs no getsockname per connection.
        let vip = if bound.ip().is_unspecified() {
            client.local_addr().unwrap_or(bound)
        } else {
            bound
        };
        let flow = Flow {
            protocol: Protocol::Tcp,
            client: peer,
            vip,
        };
        let balancer = Arc::clone(&balancer);
        let opts = Arc::clone(&opts);
        conns.spawn(async move {
            if let Err(e) = forward_connection(client, flow, &*balancer, &opts).await {
                tracing::debug!(error = %e, "TCP flow ended with an error");
            }
        });
    }
    tracing::debug!(listener = %bound, open = conns.len(), "TCP listener stopping");
    conns.shutdown().await;
    Ok(())
}
