//! Copying a TCP connection's bytes both ways, with correct half-close.
//!
//! This module owns the duplex copy between a client and its destination:
//! each direction is pumped independently until its reader reaches end of
//! stream; then the FIN is passed on by shutting down the *write* half of
//! the other socket while the opposite direction keeps flowing, until it
//! ends too. An error in either direction shuts both sockets down so the
//! other direction ends as well.
//!
//! Each direction starts with a buffered `try_read` / `try_write` copy
//! through a small buffer, driven by tokio's readiness
//! (`readable`/`writable` + `try_io`). The buffer comes from a per-thread
//! pool for each read and goes back once its bytes are written, and a
//! short read ends the read side's readiness without a read that returns
//! `EAGAIN`. When the caller closes both sockets right after the copy,
//! the last FIN is left to that close. Once it has moved
//! [`CopyOptions::splice_after`] bytes and a read fills the whole buffer,
//! it streams and switches to `splice(2)` through a pipe (socket → pipe →
//! socket, no copy to userspace); two small reads in a row bring it back
//! to the buffer, where a read and a write cost less than two splices
//! (keep-alive request/response traffic). Short flows thus never pay for a pipe
//! (`pipe2`, two `fcntl`s, two `close`s per direction), and pipes come
//! from a per-thread pool of empty ones, as HAProxy keeps them. The
//! buffered copy stays when splice is disabled, a pipe cannot be made or
//! the kernel refuses to splice these sockets.
//!
//! Packet counts: neither nix 0.30 nor socket2 0.6 expose `TCP_INFO`
//! (`tcpi_segs_in`/`tcpi_segs_out`) without `unsafe`, so the forwarder
//! estimates data segments as `ceil(bytes / MSS)` with the MSS read from
//! `TCP_MAXSEG` ([`estimate_segments`]). Pure ACKs and retransmissions
//! are not counted.

use std::cell::RefCell;
use std::io::{self, Read as _};
use std::net::Shutdown;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice};
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::activity::Activity;

/// A direction's view of the connection's [`Activity`]: the activity and
/// whether this direction writes to the client.
type Watch<'a> = Option<(&'a Activity, bool)>;

/// How the duplex copy moves bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyOptions {
    /// Use `splice(2)` for bulk transfers.
    pub splice: bool,
    /// Bytes a direction moves through the buffer before it may switch to
    /// splice, which it does at a read that fills the whole buffer (a
    /// stream); it comes back to the buffer when its reads turn small
    /// again. 0: splice from the first byte, always.
    pub splice_after: u64,
    /// Pipe capacity to ask for (`F_SETPIPE_SZ`); `None` keeps the
    /// kernel's default (64 KiB).
    pub pipe_size: Option<usize>,
    /// Buffer size of the fallback copy.
    pub buffer_size: usize,
}

impl Default for CopyOptions {
    fn default() -> CopyOptions {
        CopyOptions {
            splice: true,
            splice_after: 64 << 10,
            pipe_size: Some(256 << 10),
            buffer_size: 16 << 10,
        }
    }
}

/// What one direction of a duplex copy did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirectionReport {
    /// Bytes moved.
    pub bytes: u64,
    /// `true` when some of the bytes moved with `splice(2)` (zero-copy),
    /// `false` when all went through a userspace buffer.
    pub zero_copy: bool,
}

/// What a whole duplex copy did.
#[derive(Debug, Default)]
pub struct DuplexReport {
    /// Client to destination ("in").
    pub inbound: DirectionReport,
    /// Destination to client ("out").
    pub outbound: DirectionReport,
    /// The first error either direction met, if any (the connection was
    /// then torn down).
    pub error: Option<io::Error>,
}

/// Estimated count of data segments that carried `bytes` with the given
/// maximum segment size.
pub fn estimate_segments(bytes: u64, mss: u32) -> u64 {
    bytes.div_ceil(u64::from(mss.max(1)))
}

/// Copies `client` ↔ `upstream` until both directions reached end of
/// stream (each FIN passed on as a write shutdown) or one failed.
pub async fn duplex(client: &TcpStream, upstream: &TcpStream, opts: &CopyOptions) -> DuplexReport {
    duplex_watched(client, upstream, opts, None).await
}

/// As [`duplex`], keeping `activity` up to date and carrying out its close
/// requests: a request that finds the connection still idle (see
/// [`Activity::request_close`]) sends a FIN to the client and to the
/// destination; the copy then ends at their own FINs.
pub async fn duplex_watched(
    client: &TcpStream,
    upstream: &TcpStream,
    opts: &CopyOptions,
    activity: Option<&Activity>,
) -> DuplexReport {
    duplex_inner(client, upstream, opts, activity, false).await
}

/// As [`duplex_watched`] for a caller that closes both sockets as soon as
/// it returns: the direction that ends last does not shut its writer
/// down, as the close sends that FIN (nothing is unread then: both
/// directions read to end of stream), which saves a `shutdown` per
/// connection.
pub(crate) async fn duplex_then_close(
    client: &TcpStream,
    upstream: &TcpStream,
    opts: &CopyOptions,
    activity: Option<&Activity>,
) -> DuplexReport {
    duplex_inner(client, upstream, opts, activity, true).await
}

async fn duplex_inner(
    client: &TcpStream,
    upstream: &TcpStream,
    opts: &CopyOptions,
    activity: Option<&Activity>,
    closing: bool,
) -> DuplexReport {
    // When the caller closes right after, set by the first direction
    // that reaches end of stream, so the second leaves its FIN to the close.
    let ended = AtomicBool::new(false);
    let first_ended = closing.then_some(&ended);
    let copy = async {
        tokio::join!(
            one_way(
                client,
                upstream,
                opts,
                activity.map(|a| (a, false)),
                first_ended
            ),
            one_way(
                upstream,
                client,
                opts,
                activity.map(|a| (a, true)),
                first_ended
            )
        )
    };
    tokio::pin!(copy);
    let (inbound, outbound) = match activity {
        None => copy.await,
        Some(activity) => loop {
            tokio::select! {
                both = &mut copy => break both,
                () = activity.close_requested() => {
                    if activity.may_close() && !unread(client) && !unread(upstream) {
                        activity.set_closing();
                        for s in [client, upstream] {
                            if let Err(e) = SockRef::from(s).shutdown(Shutdown::Write)
                                && e.kind() != io::ErrorKind::NotConnected
                            {
                                tracing::debug!(peer = ?s.peer_addr().ok(), error = %e, "shutdown(SHUT_WR) of an idle connection failed");
                            }
                        }
                        break (&mut copy).await;
                    }
                }
            }
        },
    };
    let (inbound, in_err) = inbound;
    let (outbound, out_err) = outbound;
    DuplexReport {
        inbound,
        outbound,
        error: in_err.or(out_err),
    }
}

/// Whether `s` has bytes received but not yet read (a request the copy
/// has not picked up): a close would then cut it.
fn unread(s: &TcpStream) -> bool {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
    // The socket is non-blocking: WouldBlock means nothing is waiting.
    matches!(SockRef::from(s).peek(&mut byte), Ok(n) if n > 0)
}

/// One direction of the copy. `first_ended` is there when the caller
/// closes both sockets right after the copy (see [`duplex_then_close`]):
/// the direction that reaches end of stream second leaves its FIN to the
/// close.
async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    opts: &CopyOptions,
    watch: Watch<'_>,
    first_ended: Option<&AtomicBool>,
) -> (DirectionReport, Option<io::Error>) {
    let mut report = DirectionReport::default();
    let result = pump(from, to, opts, &mut report, watch).await;
    match result {
        // The other way ended already and the caller's close sends this
        // FIN: no shutdown needed.
        Ok(()) if first_ended.is_some_and(|f| f.swap(true, Ordering::Relaxed)) => (report, None),
        Ok(()) => {
            // End of stream: pass the FIN on, keep the other way open.
            if let Err(e) = SockRef::from(to).shutdown(Shutdown::Write)
                && e.kind() != io::ErrorKind::NotConnected
            {
                tracing::debug!(error = %e, "shutdown(SHUT_WR) after end of stream failed");
            }
            (report, None)
        }
        Err(e) => {
            // Tear both sockets down so the other direction ends too.
            let _ = SockRef::from(from).shutdown(Shutdown::Both);
            let _ = SockRef::from(to).shutdown(Shutdown::Both);
            (report, Some(e))
        }
    }
}

async fn pump(
    from: &TcpStream,
    to: &TcpStream,
    opts: &CopyOptions,
    report: &mut DirectionReport,
    watch: Watch<'_>,
) -> io::Result<()> {
    let buffer_size = opts.buffer_size.max(1);
    if !opts.splice {
        buffered_pump(from, to, buffer_size, None, report, watch).await?;
        return Ok(());
    }
    // Splice from the first byte, for good; or buffered until the
    // direction streams, spliced while it does, and back.
    let always = opts.splice_after == 0;
    loop {
        if !always
            && buffered_pump(
                from,
                to,
                buffer_size,
                Some(opts.splice_after),
                report,
                watch,
            )
            .await?
        {
            return Ok(());
        }
        let pipe = match Pipe::take(opts.pipe_size) {
            Ok(pipe) => pipe,
            Err(e) => {
                tracing::debug!(error = %e, "no pipe for splice; copying through a buffer");
                buffered_pump(from, to, buffer_size, None, report, watch).await?;
                return Ok(());
            }
        };
        let before = report.bytes;
        let chatty = (!always).then_some(buffer_size);
        match splice_pump(from, to, &pipe, chatty, report, watch).await {
            Ok(end) => {
                report.zero_copy |= report.bytes > before;
                // The loop ends with the pipe drained: another flow may
                // use it.
                pipe.give_back();
                if end == SpliceEnd::Eof {
                    return Ok(());
                }
            }
            Err(e) if report.bytes == before && splice_unsupported(&e) => {
                tracing::debug!(error = %e, "splice refused; copying through a buffer");
                buffered_pump(from, to, buffer_size, None, report, watch).await?;
                return Ok(());
            }
            // The pipe may still hold bytes: it is dropped, not reused.
            Err(e) => {
                report.zero_copy |= report.bytes > before;
                return Err(e);
            }
        }
    }
}

fn splice_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw),
        Some(Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP)
    )
}

/// A non-blocking pipe used as splice's in-kernel buffer.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

/// Empty pipes kept per thread; a bound keeps an idle forwarder's
/// descriptors in check.
const POOLED_PIPES: usize = 64;

thread_local! {
    static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

impl Pipe {
    /// An empty pipe from this thread's pool, or a new one.
    fn take(size: Option<usize>) -> io::Result<Pipe> {
        match PIPES.with(|p| p.borrow_mut().pop()) {
            Some(pipe) => Ok(pipe),
            None => Pipe::new(size),
        }
    }

    /// Returns an empty pipe to this thread's pool.
    fn give_back(self) {
        PIPES.with(|p| {
            let mut pool = p.borrow_mut();
            if pool.len() < POOLED_PIPES {
                pool.push(self);
            }
        });
    }

    fn new(size: Option<usize>) -> io::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        if let Some(size) = size
            && let Ok(size) = i32::try_from(size)
            && let Err(e) = fcntl(&write, FcntlArg::F_SETPIPE_SZ(size))
        {
            // EPERM above /proc/sys/fs/pipe-max-size: keep the default.
            tracing::trace!(error = %e, "F_SETPIPE_SZ refused");
        }
        let capacity = fcntl(&write, FcntlArg::F_GETPIPE_SZ)
            .ok()
            .and_then(|c| usize::try_from(c).ok())
            .filter(|c| *c > 0)
            .unwrap_or(64 << 10);
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }
}

/// Why [`splice_pump`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SpliceEnd {
    /// End of stream.
    Eof,
    /// The direction stopped streaming (its reads turned small); the
    /// pipe is empty.
    Chatty,
}

/// Consecutive small reads after which a spliced direction goes back to
/// the buffer.
const CHATTY_READS: u32 = 2;

/// Splices until end of stream or, with `chatty` set to the buffer size,
/// until [`CHATTY_READS`] reads in a row moved less than that: for small
/// messages two splices cost more than a read and a write.
async fn splice_pump(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &Pipe,
    chatty: Option<usize>,
    report: &mut DirectionReport,
    watch: Watch<'_>,
) -> io::Result<SpliceEnd> {
    let mut small = 0;
    // No SPLICE_F_MORE: like MSG_MORE it corks the socket, holding a
    // small write back (~200 ms) in the hope of more data, which
    // request/response protocols never send.
    let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
    loop {
        // The pipe is empty here, so EAGAIN can only mean "no data on
        // the socket" and tokio's readiness is cleared correctly.
        from.readable().await?;
        let filled = match from.try_io(Interest::READABLE, || {
            splice(from, None, &pipe.write, None, pipe.capacity, flags).map_err(io::Error::from)
        }) {
            Ok(0) => return Ok(SpliceEnd::Eof),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some((a, _)) = watch {
            a.read();
        }
        small = match chatty {
            Some(size) if filled < size => small + 1,
            _ => 0,
        };
        let mut left = filled;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(&pipe.read, None, to, None, left, flags).map_err(io::Error::from)
            }) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    left -= n;
                    report.bytes += n as u64;
                    if let Some((a, to_client)) = watch {
                        a.written(n as u64, left == 0, to_client);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if small >= CHATTY_READS {
            return Ok(SpliceEnd::Chatty);
        }
    }
}

/// Reads what `from` holds into `buf`. A read that fills less than the
/// buffer emptied the socket's receive queue, so tokio's readiness is
/// cleared with it, as HAProxy does, instead of by one more read that
/// ends in `EAGAIN`. Nothing is lost: bytes arriving later raise a new
/// edge-triggered event (tokio clears only the readiness this read saw),
/// and a FIN stays visible (tokio keeps the read-closed state).
fn read_drained(from: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut short = 0;
    let result = from.try_io(Interest::READABLE, || {
        let n = (&*SockRef::from(from)).read(buf)?;
        if n > 0 && n < buf.len() {
            short = n;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && short > 0 => Ok(short),
        other => other,
    }
}

/// Copy buffers kept per thread: a bound keeps an idle forwarder's
/// memory in check (64 × 16 KiB by default).
const POOLED_BUFFERS: usize = 64;

thread_local! {
    static BUFFERS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A copy buffer from this thread's pool, back in the pool when dropped.
/// Allocating and zeroing 16 KiB for each direction of each connection
/// was half of the user-space instructions of a short connection.
struct Buffer(Vec<u8>);

impl Buffer {
    fn take(size: usize) -> Buffer {
        let pooled = BUFFERS.with(|b| b.borrow_mut().pop());
        match pooled {
            Some(buf) if buf.len() == size => Buffer(buf),
            _ => Buffer(vec![0u8; size]),
        }
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        BUFFERS.with(|b| {
            let mut pool = b.borrow_mut();
            if pool.len() < POOLED_BUFFERS {
                pool.push(buf);
            }
        });
    }
}

/// Copies through a userspace buffer until end of stream (`Ok(true)`)
/// or, with a `limit`, until the direction streams: at least that many
/// bytes moved in all and a read filled the whole buffer (`Ok(false)`:
/// the caller goes on with splice; nothing is left in the buffer).
async fn buffered_pump(
    from: &TcpStream,
    to: &TcpStream,
    buffer_size: usize,
    limit: Option<u64>,
    report: &mut DirectionReport,
    watch: Watch<'_>,
) -> io::Result<bool> {
    let mut streaming = false;
    loop {
        if streaming && limit.is_some_and(|l| report.bytes >= l) {
            return Ok(false);
        }
        from.readable().await?;
        // Held only from a read until its bytes are written: idle
        // directions pin no buffer.
        let mut buf = Buffer::take(buffer_size);
        let n = match read_drained(from, &mut buf.0) {
            Ok(0) => return Ok(true),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if let Some((a, _)) = watch {
            a.read();
        }
        streaming = n == buffer_size;
        let mut chunk = buf.0.get(..n).unwrap_or_default();
        while !chunk.is_empty() {
            to.writable().await?;
            match to.try_write(chunk) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(w) => {
                    chunk = chunk.get(w..).unwrap_or_default();
                    report.bytes += w as u64;
                    if let Some((a, to_client)) = watch {
                        a.written(w as u64, chunk.is_empty(), to_client);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}
