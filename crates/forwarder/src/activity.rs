//! What a watcher may know of one TCP connection's copy, and ask of it.
//!
//! This module owns [`Activity`]: counters the duplex copy keeps while it
//! runs (bytes moved, directions holding bytes read but not yet written)
//! so a rebalancer can tell an idle connection from a busy one without a
//! clock read on the copy's path, and the request to close the connection
//! while it is idle, which the copy carries out by passing a FIN both
//! ways (a write shutdown of the client and of the destination), as an
//! HTTP server closes an idle keep-alive connection.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use tokio::sync::Notify;

/// One connection's activity, shared by its copy and its watcher.
#[derive(Debug, Default)]
pub struct Activity {
    moved: AtomicU64,
    pending: AtomicU32,
    closing: AtomicBool,
    close: Notify,
}

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

    /// Asks the copy to close the connection if it has nothing in flight
    /// when it gets to it (otherwise the request is dropped; the watcher
    /// may ask again).
    pub fn request_close(&self) {
        self.close.notify_one();
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

    pub(crate) fn written(&self, bytes: u64, all: bool) {
        self.moved.fetch_add(bytes, Ordering::Relaxed);
        if all {
            self.pending.fetch_sub(1, Ordering::Relaxed);
        }
    }
}
