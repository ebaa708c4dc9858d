//! The server side: exposing any [`Admin`] on a unix socket.
//!
//! This module owns the accept loop, one thread per client connection
//! (each reading request lines and answering each with exactly one
//! response line), the audit log of who changed what, and stopping all
//! of it cleanly: a [`ShutdownHandle`] wakes the accept loop, shuts every
//! client connection down and lets [`Server::run`] return once the client
//! threads have finished (then the socket file is removed, if it is still
//! the one the server created: see [`crate::AdminListener`]).
//!
//! The accept loop waits in `poll(2)` on the listener and on one end of a
//! socket pair; shutting down closes the other end. Stopping therefore
//! never goes through the socket's path, which may have been removed or
//! replaced by then.
//!
//! Every client is identified when it connects (`SO_PEERCRED`: uid, gid,
//! pid), logged at debug level; every change it applies (each operation
//! of an `Apply` or `ApplyBatch`) is logged at info level with its uid,
//! pid, the operation and its outcome; reads are logged at debug level.
//!
//! It is blocking on purpose (the admin socket carries a handful of
//! requests a second at most). From a tokio program, [`Server::spawn`] it
//! on its own thread, keep the [`ShutdownHandle`] (it is `Send + Sync`
//! and never blocks for long) in the task that waits for SIGTERM, and
//! collect the result with `tokio::task::spawn_blocking(move ||
//! running.join())`.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{getsockopt, sockopt};
use rvs_model::admin::{Admin, Op, OpKind};

use crate::bind::AdminListener;
use crate::wire::{
    self, MAX_REQUEST_LINE, Reply, Request, ResponseLine, VERSION, WireError, decode_request,
};

/// How many client connections a server serves at once; more are
/// answered with an error line and closed.
pub const MAX_CLIENTS: usize = 128;

/// The dataplane a server exposes, shared with whatever else drives it.
pub type SharedAdmin = Arc<Mutex<dyn Admin + Send>>;

/// Serves `admin` on `listener` until the listener fails.
///
/// A thread serves each client. Use [`Server`] instead to be able to
/// stop it.
pub fn serve(
    listener: impl Into<AdminListener>,
    admin: Arc<Mutex<dyn Admin + Send>>,
) -> io::Result<()> {
    Server::new(listener, admin)?.run()
}

/// An admin server: a listener and the dataplane it exposes.
pub struct Server {
    listener: AdminListener,
    /// Readable once [`ShutdownHandle::shutdown`] closed its peer,
    /// [`Shared::wake`].
    woken: UnixStream,
    admin: SharedAdmin,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("listener", &self.listener)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

struct Shared {
    /// Shut down to wake the accept loop's `poll`.
    wake: UnixStream,
    /// `stopping` and the open client connections, under one lock so that
    /// no connection is registered after a shutdown swept them.
    state: Mutex<State>,
    stopping: AtomicBool,
}

#[derive(Default)]
struct State {
    stopping: bool,
    next_id: u64,
    clients: HashMap<u64, UnixStream>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("wake", &self.wake)
            .field("stopping", &self.stopping)
            .finish_non_exhaustive()
    }
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Stops a [`Server`]: cheap to clone, `Send + Sync`, usable from a
/// signal handler task.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    shared: Arc<Shared>,
}

impl ShutdownHandle {
    /// Asks the server to stop: no new connections are accepted, every
    /// open one is shut down (a request being executed still completes),
    /// and [`Server::run`] returns once all client threads are done.
    /// Calling it again does nothing.
    pub fn shutdown(&self) {
        {
            let mut state = lock(&self.shared.state);
            if state.stopping {
                return;
            }
            state.stopping = true;
            self.shared.stopping.store(true, Ordering::SeqCst);
            for stream in state.clients.values() {
                // Wakes the client thread's blocking read.
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
        // Wakes the accept loop's poll; it sees `stopping` and returns.
        if let Err(e) = self.shared.wake.shutdown(Shutdown::Write) {
            tracing::warn!(error = %e, "could not wake the admin server's accept loop; it stops at its next connection");
        }
    }

    /// `true` once [`ShutdownHandle::shutdown`] has been called.
    pub fn is_shutdown(&self) -> bool {
        self.shared.stopping.load(Ordering::SeqCst)
    }
}

/// A [`Server`] running on its own thread.
#[derive(Debug)]
pub struct RunningServer {
    handle: ShutdownHandle,
    thread: JoinHandle<io::Result<()>>,
}

impl RunningServer {
    /// A handle that stops the server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// Waits for the server to stop (after a shutdown or a failure).
    pub fn join(self) -> io::Result<()> {
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the admin server thread panicked")))
    }

    /// Stops the server and waits for it.
    pub fn stop(self) -> io::Result<()> {
        self.handle.shutdown();
        self.join()
    }
}

impl Server {
    /// A server for `admin` on `listener` (not yet accepting): an
    /// [`AdminListener`] from [`crate::bind`] (its file is removed when
    /// the server stops) or a plain [`std::os::unix::net::UnixListener`]
    /// (left alone).
    pub fn new(listener: impl Into<AdminListener>, admin: SharedAdmin) -> io::Result<Server> {
        let listener = listener.into();
        listener.listener().set_nonblocking(true)?;
        let (wake, woken) = UnixStream::pair()?;
        Ok(Server {
            listener,
            woken,
            admin,
            shared: Arc::new(Shared {
                wake,
                state: Mutex::new(State::default()),
                stopping: AtomicBool::new(false),
            }),
        })
    }

    /// A handle that stops this server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Runs the server on a new thread.
    pub fn spawn(self) -> io::Result<RunningServer> {
        let handle = self.shutdown_handle();
        let thread = thread::Builder::new()
            .name("rvs-admin".into())
            .spawn(move || self.run())?;
        Ok(RunningServer { handle, thread })
    }

    /// Accepts and serves clients until shut down (then returns `Ok`
    /// after every client thread finished) or until the listener fails.
    /// Either way the socket file is then removed if it is still ours.
    pub fn run(self) -> io::Result<()> {
        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        let result = self.accept_loop(&mut threads);
        if result.is_err() {
            // Stop the clients too: the server is going away.
            self.shutdown_handle().shutdown();
        }
        for thread in threads {
            if thread.join().is_err() {
                tracing::error!("an admin client thread panicked");
            }
        }
        // Closes the listener and removes the socket file.
        drop(self);
        tracing::debug!("admin server stopped");
        result
    }

    /// Waits until a client is waiting (`true`) or the server is asked to
    /// stop (`false`).
    fn wait(&self) -> io::Result<bool> {
        loop {
            if self.shared.stopping.load(Ordering::SeqCst) {
                return Ok(false);
            }
            let mut fds = [
                PollFd::new(self.listener.listener().as_fd(), PollFlags::POLLIN),
                PollFd::new(self.woken.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
            if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                return Ok(false);
            }
            let ready = fds[0].revents().unwrap_or(PollFlags::empty());
            if ready.intersects(PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL) {
                return Err(io::Error::other(format!(
                    "the admin socket's listener failed ({ready:?})"
                )));
            }
            if ready.contains(PollFlags::POLLIN) {
                return Ok(true);
            }
        }
    }

    fn accept_loop(&self, threads: &mut Vec<JoinHandle<()>>) -> io::Result<()> {
        loop {
            if !self.wait()? {
                return Ok(());
            }
            let accepted = self.listener.listener().accept();
            if self.shared.stopping.load(Ordering::SeqCst) {
                return Ok(());
            }
            threads.retain(|t| !t.is_finished());
            let stream = match accepted {
                Ok((stream, _)) => stream,
                // Someone else took it, or the client went away.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if is_fatal(&e) => {
                    tracing::error!(error = %e, "admin socket accept failed");
                    return Err(e);
                }
                Err(e) => {
                    // Out of descriptors or memory, an aborted connection:
                    // wait a little and go on.
                    tracing::warn!(error = %e, "admin socket accept failed; retrying");
                    thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            // An accepted socket does not inherit the listener's O_NONBLOCK
            // on Linux; make sure of it, the client thread blocks on reads.
            if let Err(e) = stream.set_nonblocking(false) {
                tracing::warn!(error = %e, "cannot set up an admin client's connection");
                continue;
            }
            let peer = match identify(&stream) {
                Ok(peer) => peer,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot identify an admin client; closing its connection");
                    reject(stream, "cannot identify the client (SO_PEERCRED)");
                    continue;
                }
            };
            tracing::debug!(
                peer_uid = peer.uid,
                peer_pid = peer.pid,
                peer_gid = peer.gid,
                "admin client connected"
            );
            let id = {
                let mut state = lock(&self.shared.state);
                if state.stopping {
                    return Ok(());
                }
                if state.clients.len() >= MAX_CLIENTS {
                    drop(state);
                    reject(stream, "too many admin clients");
                    continue;
                }
                let clone = match stream.try_clone() {
                    Ok(clone) => clone,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot register an admin client");
                        continue;
                    }
                };
                state.next_id += 1;
                let id = state.next_id;
                state.clients.insert(id, clone);
                id
            };
            let admin = Arc::clone(&self.admin);
            let shared = Arc::clone(&self.shared);
            let spawned = thread::Builder::new()
                .name("rvs-admin-client".into())
                .spawn(move || {
                    if let Err(e) = serve_client(stream, &admin, peer) {
                        tracing::debug!(
                            peer_uid = peer.uid,
                            peer_pid = peer.pid,
                            error = %e,
                            "admin client connection ended"
                        );
                    }
                    lock(&shared.state).clients.remove(&id);
                });
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start a thread for an admin client");
                    if let Some(stream) = lock(&self.shared.state).clients.remove(&id) {
                        let _ = stream.shutdown(Shutdown::Both);
                    }
                }
            }
        }
    }
}

/// Errors after which the listener cannot be used any more.
fn is_fatal(e: &io::Error) -> bool {
    const EBADF: i32 = 9;
    const EINVAL: i32 = 22;
    const ENOTSOCK: i32 = 88;
    matches!(e.raw_os_error(), Some(EBADF | EINVAL | ENOTSOCK))
}

/// Who is at the other end of a client connection.
#[derive(Clone, Copy, Debug)]
struct Peer {
    uid: u32,
    gid: u32,
    pid: i32,
}

/// The client's credentials as the kernel recorded them at `connect`.
fn identify(stream: &UnixStream) -> io::Result<Peer> {
    let creds = getsockopt(stream, sockopt::PeerCredentials)?;
    Ok(Peer {
        uid: creds.uid(),
        gid: creds.gid(),
        pid: creds.pid(),
    })
}

fn reject(mut stream: UnixStream, why: &str) {
    let reply = Reply::Error(WireError::BadRequest {
        detail: why.to_owned(),
    });
    if let Ok(mut line) = wire::encode(&ResponseLine { v: VERSION, reply }) {
        line.push(b'\n');
        let _ = stream.write_all(&line);
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// Reads request lines and answers each until the client goes away.
fn serve_client(stream: UnixStream, admin: &SharedAdmin, peer: Peer) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let limit = u64::try_from(MAX_REQUEST_LINE).unwrap_or(u64::MAX);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader).take(limit + 1).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        let too_long = line.len() > MAX_REQUEST_LINE;
        let reply = if too_long {
            Reply::Error(WireError::BadRequest {
                detail: format!("request line longer than {MAX_REQUEST_LINE} bytes"),
            })
        } else {
            let text = line.trim_ascii();
            if text.is_empty() {
                continue;
            }
            match decode_request(text) {
                Ok(request) => {
                    let reply = dispatch_ref(admin, &request);
                    audit(peer, &request, &reply);
                    reply
                }
                Err(err) => {
                    tracing::debug!(?err, "bad admin request line");
                    Reply::Error(err)
                }
            }
        };
        let mut out = match wire::encode(&ResponseLine { v: VERSION, reply }) {
            Ok(out) => out,
            Err(e) => wire::encode(&ResponseLine {
                v: VERSION,
                reply: Reply::Error(WireError::BadRequest {
                    detail: format!("cannot encode the reply: {e}"),
                }),
            })
            .map_err(io::Error::other)?,
        };
        out.push(b'\n');
        writer.write_all(&out)?;
        if too_long {
            // The rest of the line is still unread: no way to find the
            // next request, so end the connection.
            return Ok(());
        }
    }
}

/// Executes one request against the dataplane.
pub fn dispatch(admin: &SharedAdmin, request: Request) -> Reply {
    dispatch_ref(admin, &request)
}

fn dispatch_ref(admin: &SharedAdmin, request: &Request) -> Reply {
    let op = request.kind();
    let mut guard = lock(admin);
    let dataplane: &mut (dyn Admin + Send) = &mut *guard;
    let outcome = catch_unwind(AssertUnwindSafe(|| execute(dataplane, request)));
    match outcome {
        Ok(reply) => reply,
        Err(_) => {
            tracing::error!(%op, "the dataplane panicked while serving an admin request");
            Reply::Error(WireError::Protocol {
                op,
                detail: "the dataplane failed internally".into(),
            })
        }
    }
}

/// Logs who asked for `request` and what came of it: each change at info
/// level, reads at debug level.
fn audit(peer: Peer, request: &Request, reply: &Reply) {
    let ops: &[Op] = match request {
        Request::Apply(op) => std::slice::from_ref(op),
        Request::ApplyBatch(ops) => ops,
        read => {
            tracing::debug!(
                peer_uid = peer.uid,
                peer_pid = peer.pid,
                op = %read.kind(),
                failed = matches!(reply, Reply::Error(_)),
                "admin read"
            );
            return;
        }
    };
    for (i, op) in ops.iter().enumerate() {
        let outcome = match reply {
            Reply::Applied => None,
            Reply::Batch(results) => results.get(i).and_then(|r| r.as_ref().err()),
            Reply::Error(e) => Some(e),
            _ => None,
        };
        let detail = serde_json::to_string(op).unwrap_or_else(|e| format!("{op:?} ({e})"));
        match outcome {
            None => tracing::info!(
                peer_uid = peer.uid,
                peer_pid = peer.pid,
                op = %op.kind(),
                %detail,
                "admin change applied"
            ),
            Some(error) => tracing::info!(
                peer_uid = peer.uid,
                peer_pid = peer.pid,
                op = %op.kind(),
                %detail,
                ?error,
                "admin change refused"
            ),
        }
    }
}

fn execute(admin: &mut (dyn Admin + Send), request: &Request) -> Reply {
    let err = |e: rvs_model::admin::AdminError| Reply::Error(WireError::from_admin(&e));
    match request {
        Request::Info => admin.info().map_or_else(err, Reply::Info),
        Request::Services => admin.services().map_or_else(err, Reply::Services),
        Request::Service(key) => admin.service(key).map_or_else(err, Reply::Service),
        Request::Destinations(key) => admin
            .destinations(key)
            .map_or_else(err, Reply::Destinations),
        Request::Timeouts => admin.timeouts().map_or_else(err, Reply::Timeouts),
        Request::Daemons => admin.daemons().map_or_else(err, Reply::Daemons),
        Request::Connections => admin.connections().map_or_else(err, Reply::Connections),
        Request::Rebalancing => admin.rebalancing().map_or_else(err, Reply::Rebalancing),
        Request::Apply(op) => admin.apply(op).map_or_else(err, |()| Reply::Applied),
        Request::ApplyBatch(ops) => {
            let results = admin.apply_batch(ops);
            if results.len() != ops.len() {
                let op = ops.first().map_or(OpKind::Flush, |o| o.kind());
                return Reply::Error(WireError::Protocol {
                    op,
                    detail: format!(
                        "the dataplane returned {} results for {} operations",
                        results.len(),
                        ops.len()
                    ),
                });
            }
            Reply::Batch(
                results
                    .into_iter()
                    .map(|r| r.map_err(|e| WireError::from_admin(&e)))
                    .collect(),
            )
        }
    }
}
