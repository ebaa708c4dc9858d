//! Destination hashing (`ip_vs_dh.c`).
//!
//! Kernel behaviour reproduced: a 256-bucket table where bucket `i` holds
//! the `i mod n`-th destination of the list (weights play no part), rebuilt
//! when a destination is added or deleted. A connection goes to the
//! bucket `hash_32(ntohl(fold(daddr)), 8)` of its *destination* (virtual)
//! address (Linux 6.1 hashes with `hash_32`; older kernels multiplied by
//! 2654435761 and masked, which the differential test against the VM's
//! kernel told apart); the bucket's destination is refused if it has weight
//! ≤ 0 or is overloaded (no fallback). For a userspace forwarder the
//! destination address is the virtual address, so one service always maps
//! to one destination.

use super::hash::{fold, hash_32};
use super::{Pool, Request};
use crate::table::DestId;

const TAB_BITS: u32 = 8;
const TAB_SIZE: usize = 1 << TAB_BITS;

#[derive(Debug)]
pub(crate) struct Dh {
    buckets: Vec<DestId>,
}

impl Dh {
    pub(crate) fn new(pool: &Pool<'_>) -> Dh {
        let mut dh = Dh {
            buckets: Vec::new(),
        };
        dh.reassign(pool);
        dh
    }

    pub(crate) fn reassign(&mut self, pool: &Pool<'_>) {
        let n = pool.len();
        self.buckets = (0..if n == 0 { 0 } else { TAB_SIZE })
            .filter_map(|i| pool.id(i % n))
            .collect();
    }

    pub(crate) fn schedule(&mut self, pool: &Pool<'_>, req: &Request<'_>) -> Option<DestId> {
        let id = *self
            .buckets
            .get(hash_32(fold(req.vip.ip()), TAB_BITS) as usize)?;
        let d = pool.entry(id)?;
        (d.available() && d.cfg.weight > 0 && !pool.entry_overloaded(d)).then_some(id)
    }
}
