//! Errors of the forwarder.
//!
//! This module owns [`ForwardError`]: why a flow could not be forwarded
//! or a listener could not be set up, with the addresses involved.

use std::io;
use std::net::SocketAddr;

use crate::Flow;

/// Why the forwarder could not do something.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The balancer had no destination for the flow.
    #[error("{flow}: no destination available")]
    NoDestination {
        /// The flow.
        flow: Flow,
    },
    /// Every connection attempt failed.
    #[error("{flow}: {attempts} connection attempt(s) failed, the last to {dest}")]
    ConnectFailed {
        /// The flow.
        flow: Flow,
        /// How many destinations were tried.
        attempts: usize,
        /// The last destination tried.
        dest: SocketAddr,
        /// Why the last attempt failed.
        #[source]
        source: io::Error,
    },
    /// A socket operation failed.
    #[error("{context}")]
    Io {
        /// What was being done, with the addresses involved.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl ForwardError {
    /// An I/O error with context.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> ForwardError {
        let context = context.into();
        move |source| ForwardError::Io { context, source }
    }
}
