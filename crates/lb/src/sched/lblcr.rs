//! Locality-based least connection with replication (`ip_vs_lblcr.c`).
//!
//! Kernel behaviour reproduced: a cache maps a *destination* (virtual)
//! address to a set of destinations (newest first). A pick takes the
//! weighted least connection member of the set that is available, not
//! overloaded and of weight > 0; when the set has more than one member
//! and has not changed for `lblcr_expiration` (24 h), its weighted most
//! loaded member is dropped. If that member is missing or "overloaded" in
//! lblc's sense (more active connections than weight while another
//! destination is under half its weight) the service-wide weighted least
//! connection destination is chosen and added to the set. Entries unused
//! for the expiration time are dropped by the periodic collection.

use crate::HashMap;
use std::net::IpAddr;
use std::time::Instant;

use super::lblc::EXPIRATION;
use super::wlc::weighted_least;
use super::{Pool, Request};
use crate::table::DestId;

#[derive(Debug)]
struct Entry {
    set: Vec<DestId>,
    lastmod: Instant,
    lastuse: Instant,
}

#[derive(Debug, Default)]
pub(crate) struct Lblcr {
    cache: HashMap<IpAddr, Entry>,
}

/// `ip_vs_dest_set_min`.
fn set_min(pool: &Pool<'_>, set: &[DestId]) -> Option<DestId> {
    let mut it = set.iter().copied();
    let (mut least, mut loh) = loop {
        let id = it.next()?;
        let Some(d) = pool.entry(id) else { continue };
        if pool.entry_overloaded(d) {
            continue;
        }
        if d.cfg.weight > 0 && d.available() {
            break (id, d.overhead());
        }
    };
    for id in it {
        let Some(d) = pool.entry(id) else { continue };
        if pool.entry_overloaded(d) {
            continue;
        }
        let lw = pool.entry(least).map_or(0, |l| i64::from(l.cfg.weight));
        let doh = d.overhead();
        if loh * i64::from(d.cfg.weight) > doh * lw && d.available() {
            least = id;
            loh = doh;
        }
    }
    Some(least)
}

/// `ip_vs_dest_set_max`.
fn set_max(pool: &Pool<'_>, set: &[DestId]) -> Option<DestId> {
    let mut it = set.iter().copied();
    let (mut most, mut moh) = loop {
        let id = it.next()?;
        let Some(d) = pool.entry(id) else { continue };
        if d.cfg.weight > 0 {
            break (id, d.overhead());
        }
    };
    for id in it {
        let Some(d) = pool.entry(id) else { continue };
        let mw = pool.entry(most).map_or(0, |m| i64::from(m.cfg.weight));
        let doh = d.overhead();
        if moh * i64::from(d.cfg.weight) < doh * mw && d.cfg.weight > 0 {
            most = id;
            moh = doh;
        }
    }
    Some(most)
}

impl Lblcr {
    pub(crate) fn schedule(&mut self, pool: &Pool<'_>, req: &Request<'_>) -> Option<DestId> {
        let daddr = req.vip.ip();
        let now = req.now;
        if let Some(en) = self.cache.get_mut(&daddr) {
            en.lastuse = now;
            let dest = set_min(pool, &en.set);
            if en.set.len() > 1
                && now.saturating_duration_since(en.lastmod) > EXPIRATION
                && let Some(m) = set_max(pool, &en.set)
            {
                en.set.retain(|d| *d != m);
                en.lastmod = now;
            }
            if let Some(id) = dest
                && pool.entry(id).is_some_and(|d| !pool.locality_overloaded(d))
            {
                return Some(id);
            }
            let i = weighted_least(pool, |i| pool.overhead(i))?;
            let id = pool.id(i)?;
            if !en.set.contains(&id) {
                en.set.insert(0, id);
                en.lastmod = now;
            }
            return Some(id);
        }
        let i = weighted_least(pool, |i| pool.overhead(i))?;
        let id = pool.id(i)?;
        self.cache.insert(
            daddr,
            Entry {
                set: vec![id],
                lastmod: now,
                lastuse: now,
            },
        );
        Some(id)
    }

    pub(crate) fn collect(&mut self, now: Instant) {
        self.cache
            .retain(|_, en| now.saturating_duration_since(en.lastuse) <= EXPIRATION);
    }
}
