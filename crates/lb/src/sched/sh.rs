//! Source hashing (`ip_vs_sh.c`), with `sh-fallback` and `sh-port`.
//!
//! Kernel behaviour reproduced: a 256-bucket table filled by walking the
//! destination list cyclically, each destination taking `max(weight, 1)`
//! consecutive buckets, rebuilt on every add, delete or edit. A connection
//! hashes its source: `hash_32(port + ntohl(fold(saddr)), 8)` where `port`
//! is the source port with `sh-port` (flag 2) and 0 otherwise. The bucket's
//! destination is refused if its weight is ≤ 0 or it is overloaded. With
//! `sh-fallback` (flag 1) the kernel then probes buckets
//! `(offset + 2 × h) mod 256` for offset 0..255 (its `roffset` is added to
//! the hash a second time) and takes the first usable one.

use super::hash::{fold, hash_32};
use super::{Pool, Request};
use crate::table::{DestEntry, DestId};
use rvs_model::ServiceFlags;

const TAB_BITS: u32 = 8;
const TAB_SIZE: usize = 1 << TAB_BITS;

#[derive(Debug)]
pub(crate) struct Sh {
    buckets: Vec<DestId>,
}

impl Sh {
    pub(crate) fn new(pool: &Pool<'_>) -> Sh {
        let mut sh = Sh {
            buckets: Vec::new(),
        };
        sh.reassign(pool);
        sh
    }

    pub(crate) fn reassign(&mut self, pool: &Pool<'_>) {
        self.buckets.clear();
        let n = pool.len();
        if n == 0 {
            return;
        }
        let mut p = 0;
        let mut count = 0;
        while self.buckets.len() < TAB_SIZE {
            let Some(id) = pool.id(p) else { break };
            self.buckets.push(id);
            count += 1;
            if count >= pool.weight(p) {
                p = (p + 1) % n;
                count = 0;
            }
        }
    }

    pub(crate) fn schedule(&mut self, pool: &Pool<'_>, req: &Request<'_>) -> Option<DestId> {
        let port = if req.flags.has(ServiceFlags::SCHED2) {
            u32::from(req.client.port())
        } else {
            0
        };
        let h = hash_32(port.wrapping_add(fold(req.client.ip())), TAB_BITS) as usize;
        let unavailable = |d: &DestEntry| d.cfg.weight <= 0 || pool.entry_overloaded(d);
        let first = *self.buckets.get(h)?;
        let d = pool.entry(first)?;
        if !unavailable(d) {
            return Some(first);
        }
        if !req.flags.has(ServiceFlags::SCHED1) {
            return None;
        }
        for offset in 0..TAB_SIZE {
            let roffset = (offset + h) % TAB_SIZE;
            let id = *self.buckets.get((roffset + h) % TAB_SIZE)?;
            if pool.entry(id).is_some_and(|d| !unavailable(d)) {
                return Some(id);
            }
        }
        None
    }
}
