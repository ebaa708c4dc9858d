//! ipsets over nfnetlink, in pure Rust.
//!
//! * [`wire`] and [`message`]: the sans-IO codec, lossless down to the
//!   byte (checked against kernel-captured dumps in the tests);
//! * [`types`]: set types, specs and members in ipset's text format;
//! * [`ops`]: requests as values ([`Op`]) and list replies as
//!   [`ListedSet`]s;
//! * [`client`]: the thin socket side, with batching;
//! * [`sync`]: desired members vs listed members → only adds and dels;
//! * [`kube`]: kube-proxy's IPVS-mode set table (names, types, comments).

pub mod client;
pub mod kube;
pub mod message;
pub mod ops;
pub mod sync;
pub mod types;
pub mod wire;

pub use client::IpsetClient;
pub use kube::{KubeSet, KubeSets};
pub use message::{Addr, AdtAttr, DataAttr, IpsetAttr, IpsetCmd, IpsetMessage, Netlink};
pub use ops::Op;
pub use sync::{SetDiff, SyncReport};
pub use types::{Entry, EntryError, Family, ListedSet, Member, Proto, SetSpec, SetType};
pub use wire::RawNla;

/// Bytes that are not a well-formed netlink/ipset message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(String);

impl DecodeError {
    /// An error saying `what` was wrong.
    pub fn new(what: impl Into<String>) -> DecodeError {
        DecodeError(what.into())
    }
}

/// Errors of ipset programming. Each names the set and what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum IpsetError {
    /// The set name cannot be an ipset name.
    #[error("invalid ipset name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: String,
    },
    /// A creation parameter is out of range.
    #[error("ipset {set}: invalid {field}: {reason}")]
    InvalidSpec {
        /// The set.
        set: String,
        /// The parameter.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A member does not fit its set.
    #[error("ipset {set}: member {entry}: {reason}")]
    InvalidEntry {
        /// The set.
        set: String,
        /// The member, in ipset's text format.
        entry: String,
        /// Why.
        reason: String,
    },
    /// The kernel refused a request.
    #[error("ipset {set}: {op}: {reason} (kernel error {code})")]
    Kernel {
        /// The set.
        set: String,
        /// What was asked (`add 10.0.0.1,tcp:80`).
        op: String,
        /// The positive error code (errno or `IPSET_ERR_*`).
        code: i32,
        /// Its meaning.
        reason: String,
    },
    /// An existing set cannot be brought to the desired one in place.
    #[error("ipset {set}: exists as {found}, wanted {wanted}")]
    Mismatch {
        /// The set.
        set: String,
        /// What exists.
        found: String,
        /// What was asked.
        wanted: String,
    },
    /// A socket operation failed.
    #[error("ipset: {context}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A reply could not be decoded.
    #[error("ipset: cannot decode {context}")]
    Decode {
        /// What was being decoded.
        context: String,
        /// What was wrong.
        #[source]
        source: DecodeError,
    },
    /// The kernel answered something unexpected.
    #[error("ipset: unexpected answer: {0}")]
    Unexpected(String),
}

impl IpsetError {
    /// The kernel said the set does not exist (`ENOENT`).
    pub fn is_missing_set(&self) -> bool {
        matches!(self, IpsetError::Kernel { code: 2, .. })
    }

    /// The kernel said `IPSET_ERR_EXIST`.
    pub fn is_exist(&self) -> bool {
        matches!(self, IpsetError::Kernel { code: 4103, .. })
    }
}
