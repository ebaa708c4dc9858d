//! Locality-based least connection (`ip_vs_lblc.c`).
//!
//! Kernel behaviour reproduced: a cache maps a *destination* (virtual)
//! address to the destination last chosen for it. A cached destination is
//! used while it is available (not deleted), has weight > 0 and is not
//! "overloaded" in lblc's own sense: more active connections than its
//! weight while some destination of the service has fewer than half its
//! weight in active connections (the threshold flag is *not* consulted for
//! the cached destination, as in the kernel). Otherwise the weighted least
//! connection destination (wlc's rule with the connection overhead) is
//! chosen and replaces the cache entry. Each use refreshes the entry;
//! entries unused for `lblc_expiration` (24 h by default) are dropped by
//! the periodic collection.
//!
//! For a userspace forwarder every flow of a service has the same virtual
//! address, so the cache holds one entry per service.

use crate::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::wlc::weighted_least;
use super::{Pool, Request};
use crate::table::DestId;

/// `sysctl_lblc_expiration` default.
pub(crate) const EXPIRATION: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, Default)]
pub(crate) struct Lblc {
    cache: HashMap<IpAddr, (DestId, Instant)>,
}

impl Lblc {
    pub(crate) fn schedule(&mut self, pool: &Pool<'_>, req: &Request<'_>) -> Option<DestId> {
        let daddr = req.vip.ip();
        if let Some((id, lastuse)) = self.cache.get_mut(&daddr) {
            *lastuse = req.now;
            if let Some(d) = pool.entry(*id)
                && d.available()
                && d.cfg.weight > 0
                && !pool.tried(d)
                && !pool.locality_overloaded(d)
            {
                return Some(*id);
            }
        }
        let i = weighted_least(pool, |i| pool.overhead(i))?;
        let id = pool.id(i)?;
        self.cache.insert(daddr, (id, req.now));
        Some(id)
    }

    pub(crate) fn collect(&mut self, now: Instant) {
        self.cache
            .retain(|_, (_, lastuse)| now.saturating_duration_since(*lastuse) <= EXPIRATION);
    }
}
