//! The running userspace dataplane.
//!
//! This module owns the dataplane's lifetime: the multi-threaded tokio
//! runtime the forwarder runs on, the housekeeping task (expiring
//! connections and running the rate estimator through the core's
//! `poll`, retrying listeners that could not bind), the instance lock it
//! holds while it runs ([`crate::InstanceLock`]) and shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rvs_forwarder::Protocol;
use rvs_forwarder::listen::ListenOptions;
use rvs_forwarder::tcp::TcpOptions;
use rvs_lb::Core;

use crate::admin::DataplaneAdmin;
use crate::instance::{DEFAULT_INSTANCE_LOCK, Holder, InstanceLock};
use crate::listeners::{ListenerOptions, ListenerState, Listeners};
use crate::sched::Sched;

/// Scheduler ticks between two looks at a forwarding runtime's global
/// queue (tokio's default adapts around 31). A worker's local queue holds
/// 256 tasks; when more connections wake at once, tokio moves the oldest
/// half to the global queue, where they wait behind the newer ones. With
/// 1,000 keep-alive connections on one worker that doubled the p99
/// latency against HAProxy's; looking every 4 ticks halves the tail at
/// no measurable cost in throughput (see `docs/forwarder-path.md`).
pub const GLOBAL_QUEUE_INTERVAL: u32 = 4;

/// How often housekeeping runs at most.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// Why the dataplane could not start.
#[derive(Debug, thiserror::Error)]
pub enum UserspaceError {
    /// The runtime could not be built.
    #[error("starting the userspace dataplane's {workers} worker threads")]
    Runtime {
        /// Worker threads asked for.
        workers: usize,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Another dataplane holds the instance lock of this network
    /// namespace.
    #[error(
        "another userspace dataplane is running in this network namespace ({holder}); stop it first"
    )]
    AlreadyRunning {
        /// The lock's name.
        lock: String,
        /// Who holds it.
        holder: Holder,
    },
    /// The instance lock could not be taken for another reason.
    #[error("taking the userspace dataplane's instance lock @{name}")]
    InstanceLock {
        /// The lock's name.
        name: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// How the dataplane runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Worker threads forwarding traffic (and TCP listeners per virtual
    /// address). 0 means one per CPU.
    pub workers: usize,
    /// Socket options of the listeners.
    pub listen: ListenOptions,
    /// TCP forwarding options.
    pub tcp: TcpOptions,
    /// The name of the lock that keeps a second dataplane from starting
    /// in this network namespace ([`crate::InstanceLock`]); by default
    /// [`DEFAULT_INSTANCE_LOCK`]. Dataplanes with different names do not
    /// exclude each other: tests that run several side by side give each
    /// its own name (or `None`, no lock at all). Production code keeps
    /// the default.
    pub instance_lock: Option<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            workers: 0,
            listen: ListenOptions::default(),
            tcp: TcpOptions::default(),
            instance_lock: Some(DEFAULT_INSTANCE_LOCK.to_owned()),
        }
    }
}

/// What the dataplane's handles share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) sched: Sched,
    pub(crate) listeners: Mutex<Listeners>,
}

impl Shared {
    pub(crate) fn sync_listeners(&self) -> usize {
        self.listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sync()
    }
}

/// The userspace dataplane: forwarding threads plus the core they
/// schedule with. Dropping it stops forwarding.
#[derive(Debug)]
pub struct Dataplane {
    runtime: Option<tokio::runtime::Runtime>,
    shared: Arc<Shared>,
    /// Released after the runtime (fields drop in order).
    _instance: Option<InstanceLock>,
}

impl Dataplane {
    /// Starts an empty dataplane, first taking the instance lock
    /// ([`Options::instance_lock`]): fails with
    /// [`UserspaceError::AlreadyRunning`] while another dataplane holds
    /// it in this network namespace.
    pub fn start(opts: Options) -> Result<Dataplane, UserspaceError> {
        let instance = Self::lock(&opts)?;
        let workers = worker_count(opts.workers);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("rvs-forward")
            .global_queue_interval(GLOBAL_QUEUE_INTERVAL)
            .enable_all()
            .build()
            .map_err(|source| UserspaceError::Runtime { workers, source })?;
        let handle = runtime.handle().clone();
        Ok(Self::run(Some(runtime), &handle, workers, opts, instance))
    }

    /// As [`Dataplane::start`], on the caller's runtime, whose worker
    /// threads then forward (size it with [`worker_count`] and build it
    /// with [`GLOBAL_QUEUE_INTERVAL`], as `start` does). The caller
    /// owns the runtime and drains it: [`Dataplane::shutdown`] only lets
    /// the instance lock go.
    pub fn start_on(
        runtime: &tokio::runtime::Handle,
        opts: Options,
    ) -> Result<Dataplane, UserspaceError> {
        let instance = Self::lock(&opts)?;
        let workers = worker_count(opts.workers);
        Ok(Self::run(None, runtime, workers, opts, instance))
    }

    fn lock(opts: &Options) -> Result<Option<InstanceLock>, UserspaceError> {
        opts.instance_lock
            .as_deref()
            .map(InstanceLock::acquire)
            .transpose()
    }

    fn run(
        runtime: Option<tokio::runtime::Runtime>,
        handle: &tokio::runtime::Handle,
        workers: usize,
        opts: Options,
        instance: Option<InstanceLock>,
    ) -> Dataplane {
        raise_fd_limit();
        let sched = Sched::new(Core::new());
        let listeners = Listeners::new(
            handle.clone(),
            sched.clone(),
            ListenerOptions {
                tcp_per_vip: workers,
                listen: opts.listen,
                tcp: opts.tcp,
            },
        );
        let shared = Arc::new(Shared {
            sched,
            listeners: Mutex::new(listeners),
        });
        handle.spawn(housekeeping(Arc::downgrade(&shared)));
        handle.spawn(rebalancing(Arc::downgrade(&shared)));
        tracing::info!(workers, "userspace dataplane started");
        Dataplane {
            runtime,
            shared,
            _instance: instance,
        }
    }

    /// A handle that programs and reads this dataplane.
    pub fn admin(&self) -> DataplaneAdmin {
        DataplaneAdmin::new(Arc::clone(&self.shared))
    }

    /// The core, for callers that need more than the `Admin` surface.
    pub fn sched(&self) -> &Sched {
        &self.shared.sched
    }

    /// Every listener the services want, and whether it runs.
    pub fn listeners(&self) -> BTreeMap<(Protocol, SocketAddr), ListenerState> {
        self.shared
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .states()
    }

    /// Stops forwarding, giving open connections up to `grace` to finish,
    /// then releases the instance lock.
    pub fn shutdown(mut self, grace: Duration) {
        match self.runtime.take() {
            Some(runtime) => runtime.shutdown_timeout(grace),
            // On the caller's runtime: stop accepting; the caller drains
            // the connections when it shuts its runtime down.
            None => self
                .shared
                .listeners
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .stop_all(),
        }
    }
}

impl Drop for Dataplane {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The forwarding threads for `workers` (0: one per CPU).
pub fn worker_count(workers: usize) -> usize {
    match workers {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
}

/// Every virtual service holds listening sockets and every connection
/// two more, so the soft descriptor limit (often 1,024) is raised to the
/// hard one.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open-file limit"),
            Err(e) => tracing::warn!(soft, hard, error = %e, "could not raise the open-file limit"),
        },
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not read the open-file limit"),
    }
}

/// Runs `step` (it returns how long to wait before the next one, at
/// least 10 ms) until the dataplane is gone.
async fn while_alive(shared: std::sync::Weak<Shared>, step: impl Fn(&Shared, Instant) -> Duration) {
    loop {
        let wait = match shared.upgrade() {
            None => return,
            Some(shared) => step(&shared, Instant::now()),
        };
        tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
    }
}

/// Expires connections, runs the rate estimator and retries listeners,
/// until the dataplane is gone.
async fn housekeeping(shared: std::sync::Weak<Shared>) {
    while_alive(shared, |shared, now| {
        let next = shared.sched.with(|core| {
            core.poll(now);
            core.next_timeout()
        });
        let retry = shared
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .has_failures();
        if retry {
            shared.sync_listeners();
        }
        next.map_or(HOUSEKEEPING, |t| {
            t.saturating_duration_since(now).min(HOUSEKEEPING)
        })
    })
    .await;
}

/// Ticks the connection rebalancing ([`crate::Rebalancing::tick`]) until
/// the dataplane is gone.
async fn rebalancing(shared: std::sync::Weak<Shared>) {
    while_alive(shared, |shared, now| {
        shared
            .sched
            .rebalancing()
            .tick(now, &shared.sched)
            .saturating_duration_since(now)
    })
    .await;
}
