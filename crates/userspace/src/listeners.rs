//! Listening sockets that follow the core's virtual services.
//!
//! This module owns the set of running listeners: for every
//! (protocol, VIP:port) the core serves, TCP listeners (one per worker
//! thread, sharing the port with `SO_REUSEPORT` so the kernel spreads new
//! connections across workers) or one UDP socket, each a task on the
//! dataplane's runtime. `Listeners::sync` starts what is missing, stops
//! what is no longer wanted (dropping a listener's stop sender ends its
//! task) and remembers what failed to bind, to retry later and report.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use rvs_forwarder::listen::{ListenOptions, tokio_tcp_listener, tokio_udp_socket};
use rvs_forwarder::tcp::{TcpOptions, serve_tcp};
use rvs_forwarder::udp::{UdpOptions, serve_udp};
use rvs_forwarder::{ForwardError, Protocol};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::sched::Sched;

/// What became of one wanted listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenerState {
    /// Accepting.
    Running,
    /// Could not be set up; retried on every sync.
    Failed(String),
    /// The userspace dataplane cannot serve this protocol.
    Unsupported,
}

/// How listeners are set up.
#[derive(Clone, Copy, Debug)]
pub struct ListenerOptions {
    /// TCP listeners per virtual address (one per worker thread).
    pub tcp_per_vip: usize,
    /// Socket options.
    pub listen: ListenOptions,
    /// TCP forwarding options.
    pub tcp: TcpOptions,
}

/// A running listener; dropping it stops its tasks.
#[derive(Debug)]
struct Running {
    _stop: oneshot::Sender<()>,
}

/// The listeners of one dataplane.
#[derive(Debug)]
pub(crate) struct Listeners {
    handle: Handle,
    sched: Sched,
    opts: ListenerOptions,
    running: BTreeMap<(Protocol, SocketAddr), Running>,
    failed: BTreeMap<(Protocol, SocketAddr), ListenerState>,
}

impl Listeners {
    pub(crate) fn new(handle: Handle, sched: Sched, opts: ListenerOptions) -> Listeners {
        Listeners {
            handle,
            sched,
            opts,
            running: BTreeMap::new(),
            failed: BTreeMap::new(),
        }
    }

    /// Brings the running listeners in line with the core's services.
    /// Returns how many are not running.
    pub(crate) fn sync(&mut self) -> usize {
        let (wanted, udp_idle) = self.sched.with(|core| {
            let wanted: BTreeSet<(Protocol, SocketAddr)> = core.listeners().into_iter().collect();
            (wanted, core.timeouts().udp)
        });
        self.running.retain(|key, _| wanted.contains(key));
        self.failed.retain(|key, _| wanted.contains(key));
        for key in wanted {
            if self.running.contains_key(&key) {
                continue;
            }
            let state = match key.0 {
                Protocol::Tcp | Protocol::Udp => match self.start(key, udp_idle) {
                    Ok(running) => {
                        if self.failed.remove(&key).is_some() {
                            tracing::info!(protocol = %key.0, vip = %key.1, "listener bound after earlier failures");
                        }
                        self.running.insert(key, running);
                        continue;
                    }
                    Err(e) => ListenerState::Failed(format!("{e:#}")),
                },
                _ => ListenerState::Unsupported,
            };
            let previous = self.failed.insert(key, state.clone());
            if previous.as_ref() != Some(&state) {
                match &state {
                    ListenerState::Failed(why) => {
                        tracing::warn!(protocol = %key.0, vip = %key.1, error = %why, "cannot listen on virtual service; will retry")
                    }
                    _ => {
                        tracing::warn!(protocol = %key.0, vip = %key.1, "the userspace dataplane does not serve this protocol")
                    }
                }
            }
        }
        self.failed.len()
    }

    /// Stops every listener (connections already open go on).
    pub(crate) fn stop_all(&mut self) {
        self.running.clear();
        self.failed.clear();
    }

    /// Every wanted listener and its state.
    pub(crate) fn states(&self) -> BTreeMap<(Protocol, SocketAddr), ListenerState> {
        let mut states: BTreeMap<_, _> = self
            .running
            .keys()
            .map(|k| (*k, ListenerState::Running))
            .collect();
        states.extend(self.failed.iter().map(|(k, s)| (*k, s.clone())));
        states
    }

    /// Whether some wanted listener could not bind (and is worth a retry).
    pub(crate) fn has_failures(&self) -> bool {
        self.failed
            .values()
            .any(|s| matches!(s, ListenerState::Failed(_)))
    }

    fn start(
        &self,
        (protocol, vip): (Protocol, SocketAddr),
        udp_idle: u32,
    ) -> Result<Running, ForwardError> {
        let _entered = self.handle.enter();
        let (stop, stopped) = oneshot::channel::<()>();
        let stopped = async move {
            let _ = stopped.await;
        };
        let balancer = Arc::new(self.sched.clone());
        if protocol == Protocol::Udp {
            let socket = Arc::new(tokio_udp_socket(vip, self.opts.listen)?);
            let mut opts = UdpOptions::default();
            if udp_idle > 0 {
                opts.idle_timeout = std::time::Duration::from_secs(u64::from(udp_idle));
            }
            self.handle.spawn(async move {
                if let Err(e) = serve_udp(socket, balancer, opts, stopped).await {
                    tracing::error!(%vip, error = %e, "UDP virtual service stopped");
                }
            });
            return Ok(Running { _stop: stop });
        }
        // Bind every socket first, so a failure leaves nothing half-open.
        let listeners = (0..self.opts.tcp_per_vip.max(1))
            .map(|_| tokio_tcp_listener(vip, self.opts.listen))
            .collect::<Result<Vec<_>, _>>()?;
        let (fan_out, _) = tokio::sync::watch::channel(());
        let fan_out = Arc::new(fan_out);
        for listener in listeners {
            let mut closed = fan_out.subscribe();
            let balancer = Arc::clone(&balancer);
            let tcp = self.opts.tcp;
            self.handle.spawn(async move {
                let shutdown = async move {
                    let _ = closed.changed().await;
                };
                if let Err(e) = serve_tcp(listener, balancer, tcp, shutdown).await {
                    tracing::error!(%vip, error = %e, "TCP virtual service stopped");
                }
            });
        }
        // The stop sender's drop ends `stopped`, which drops the watch
        // sender, which ends every listener's `changed()`.
        self.handle.spawn(async move {
            stopped.await;
            drop(fan_out);
        });
        Ok(Running { _stop: stop })
    }
}
