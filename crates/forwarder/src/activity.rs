//! What a watcher may know of one TCP connection's copy, and ask of it.
//!
//! This module owns [`Activity`]: counters the duplex copy keeps while it
//! runs (bytes moved, directions holding bytes read but not yet written,
//! and which way the last bytes went) so a rebalancer can tell an idle
//! connection from a busy one without a clock read on the copy's path, and
//! the request to close the connection while it is idle, which the copy
//! carries out by passing a FIN both ways (a write shutdown of the client
//! and of the destination), as an HTTP server closes an idle keep-alive
//! connection.
//!
//! What L4 cannot know: a connection whose destination answered last and
//! then stays quiet looks the same whether the application is done (an
//! idle keep-alive connection) or the destination will speak again on
//! its own (server-sent events, a gRPC server stream between messages).
//! Services carrying such streams should keep rebalancing off.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};

use tokio::sync::Notify;

/// One connection's activity, shared by its copy and its watcher.
#[derive(Debug, Default)]
pub struct Activity {
    moved: AtomicU64,
    /// Which way the last bytes went: [`TO_DEST`], [`TO_CLIENT`], or 0
    /// before any moved.
    last: AtomicU8,
    pending: AtomicU32,
    closing: AtomicBool,
    /// `moved` as the watcher saw it when it asked for a close.
    expect: AtomicU64,
    close: Notify,
}

/// The last bytes went from the client to the destination.
const TO_DEST: u8 = 1;
/// The last bytes went from the destination to the client.
const TO_CLIENT: u8 = 2;

impl Activity {
    /// A connection that has moved nothing yet.
    pub fn new() -> Activity {
        Activity::default()
    }

    /// Bytes moved so far, both ways. A watcher sampling it sees the
    /// connection idle between two equal samples.
    pub fn moved(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }

    /// Whether some bytes have been read from one side and are not yet
    /// all written to the other.
    pub fn in_flight(&self) -> bool {
        self.pending.load(Ordering::Relaxed) > 0
    }

    /// Whether the destination had the last word: bytes have moved and
    /// the last went to the client. A connection whose last bytes went to
    /// the destination may have a request outstanding (a slow answer, a
    /// long poll) and is never idle; one that moved nothing yet (a
    /// handshake to come) neither.
    pub fn answered(&self) -> bool {
        self.last.load(Ordering::Relaxed) == TO_CLIENT
    }

    /// Asks the copy to close the connection if, when it gets to it,
    /// nothing is in flight or waiting unread in either socket, the
    /// destination had the last word and no byte moved since the watcher
    /// read `seen` from [`Activity::moved`] (otherwise the request is
    /// dropped; the watcher may ask again).
    pub fn request_close(&self, seen: u64) {
        self.expect.store(seen, Ordering::Relaxed);
        self.close.notify_one();
    }

    /// Whether a close asked for now would be carried out.
    pub(crate) fn may_close(&self) -> bool {
        !self.in_flight() && self.answered() && self.moved() == self.expect.load(Ordering::Relaxed)
    }

    /// Whether a requested close has been carried out: the FINs are sent
    /// and the copy only waits for the peers' own.
    pub fn closing(&self) -> bool {
        self.closing.load(Ordering::Relaxed)
    }

    pub(crate) fn set_closing(&self) {
        self.closing.store(true, Ordering::Relaxed);
    }

    pub(crate) async fn close_requested(&self) {
        self.close.notified().await;
    }

    pub(crate) fn read(&self) {
        self.pending.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn written(&self, bytes: u64, all: bool, to_client: bool) {
        self.moved.fetch_add(bytes, Ordering::Relaxed);
        let way = if to_client { TO_CLIENT } else { TO_DEST };
        self.last.store(way, Ordering::Relaxed);
        if all {
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
