//! Maglev hashing (`ip_vs_mh.c`), with `mh-fallback` and `mh-port`.
//!
//! Kernel behaviour reproduced, with Debian's `CONFIG_IP_VS_MH_TAB_INDEX=12`
//! (table size 4093, `IP_VS_MH_TAB_BITS` 6):
//!
//! * hashing is `hsiphash` (SipHash-1-3 on 64-bit kernels) of the 32-bit
//!   word `offset + port + ntohl(fold(addr))` under two *fixed* keys
//!   (`generate_hash_secret`: 2654435761 twice, 2654446892 twice) — the
//!   kernel's keys are not random per boot, so choices are reproducible
//!   and comparable with a kernel exactly;
//! * each destination's permutation starts at `hash1(dest) mod 4093` and
//!   steps by `hash2(dest) mod 4092 + 1`; it takes `turns` =
//!   `(last_weight / gcd) >> rshift` slots per round (1 if that is 0 and
//!   the weight is not), where `rshift` keeps `max/gcd` within 6 bits, and
//!   destinations with last weight 0 take none. `last_weight` is the
//!   latest non-zero weight, so quiescing a destination (weight 0) does
//!   not move the table; the table is rebuilt on every add, delete or
//!   edit;
//! * lookup: slot `hash1(source) mod 4093`, with the source port when
//!   `mh-port` (flag 2); the destination is refused if its weight is ≤ 0
//!   or it is overloaded; with `mh-fallback` (flag 1) the slots
//!   `hash1(source, offset = (i + slot) mod 4093)` are probed for i in
//!   0..4093.

use super::hash::{fold, hsiphash_u32};
use super::{Pool, Request, gcd};
use crate::table::{DestEntry, DestId};
use rvs_model::ServiceFlags;
use std::net::SocketAddr;

/// `primes[CONFIG_IP_VS_MH_TAB_INDEX - 8]` with the default index 12.
pub(crate) const TAB_SIZE: usize = 4093;
const TAB_BITS: u32 = 6;
const KEY1: [u64; 2] = [2_654_435_761, 2_654_435_761];
const KEY2: [u64; 2] = [2_654_446_892, 2_654_446_892];

#[derive(Debug)]
pub(crate) struct Mh {
    lookup: Vec<Option<DestId>>,
}

fn hashkey(addr: SocketAddr, port: u16, key: [u64; 2], offset: u32) -> u32 {
    let v = offset
        .wrapping_add(u32::from(port))
        .wrapping_add(fold(addr.ip()));
    hsiphash_u32(v, key)
}

/// Fls: the 1-based index of the highest set bit, 0 for 0.
fn fls(x: i64) -> i64 {
    if x <= 0 {
        0
    } else {
        64 - i64::from(x.leading_zeros())
    }
}

impl Mh {
    pub(crate) fn new(pool: &Pool<'_>) -> Mh {
        let mut mh = Mh {
            lookup: vec![None; TAB_SIZE],
        };
        mh.reassign(pool);
        mh
    }

    pub(crate) fn reassign(&mut self, pool: &Pool<'_>) {
        let n = pool.len();
        let mut g = 0;
        let mut mw = 0;
        for i in 0..n {
            let w = pool.last_weight(i);
            if w > 0 {
                g = if g > 0 { gcd(w, g) } else { w };
            }
            mw = mw.max(w);
        }
        if g < 1 || n > TAB_SIZE {
            if g < 1 {
                self.lookup.iter_mut().for_each(|l| *l = None);
            }
            return;
        }
        let shift = (fls(mw / g) - i64::from(TAB_BITS)).max(0);
        // Permutation setup per destination: (skip, perm, turns).
        let mut setup: Vec<(usize, usize, i64)> = (0..n)
            .map(|i| {
                let addr = pool.addr(i).unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
                let offset = hashkey(addr, addr.port(), KEY1, 0) as usize % TAB_SIZE;
                let skip = hashkey(addr, addr.port(), KEY2, 0) as usize % (TAB_SIZE - 1) + 1;
                let lw = pool.last_weight(i);
                let t = (lw / g) >> shift;
                let turns = if t != 0 { t } else { i64::from(lw != 0) };
                (skip, offset, turns)
            })
            .collect();
        let mut taken = vec![false; TAB_SIZE];
        let mut filled = 0;
        let mut dt_count = 0;
        // Every pass fills at least one slot (gcd ≥ 1 means some
        // destination has turns ≥ 1), so this ends.
        'fill: while filled < TAB_SIZE {
            let mut p = 0;
            while p < n {
                let (skip, perm, turns) = &mut setup[p];
                if *turns < 1 {
                    p += 1;
                    continue;
                }
                while taken[*perm] {
                    *perm += *skip;
                    if *perm >= TAB_SIZE {
                        *perm -= TAB_SIZE;
                    }
                }
                taken[*perm] = true;
                self.lookup[*perm] = pool.id(p);
                filled += 1;
                if filled == TAB_SIZE {
                    break 'fill;
                }
                dt_count += 1;
                if dt_count >= *turns {
                    dt_count = 0;
                    p += 1;
                }
            }
        }
    }

    pub(crate) fn schedule(&mut self, pool: &Pool<'_>, req: &Request<'_>) -> Option<DestId> {
        let port = if req.flags.has(ServiceFlags::SCHED2) {
            req.client.port()
        } else {
            0
        };
        let unavailable = |d: &DestEntry| d.cfg.weight <= 0 || pool.entry_overloaded(d);
        let ihash = hashkey(req.client, port, KEY1, 0) as usize % TAB_SIZE;
        let first = self.lookup.get(ihash).copied().flatten()?;
        let d = pool.entry(first)?;
        if !unavailable(d) {
            return Some(first);
        }
        if !req.flags.has(ServiceFlags::SCHED1) {
            return None;
        }
        for offset in 0..TAB_SIZE {
            let roffset = ((offset + ihash) % TAB_SIZE) as u32;
            let slot = hashkey(req.client, port, KEY1, roffset) as usize % TAB_SIZE;
            let id = self.lookup.get(slot).copied().flatten()?;
            if pool.entry(id).is_some_and(|d| !unavailable(d)) {
                return Some(id);
            }
        }
        None
    }
}
