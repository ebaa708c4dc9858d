//! Selection tables: what each scheduler becomes at the socket layer.
//!
//! The eBPF programs do not run a scheduler; they index a table this
//! module computes, deterministically, from a service's real servers (in
//! the kernel's list order, newest first). Each function reproduces the
//! choice of the kernel module it is named after, as `rvs-lb` does for
//! the userspace dataplane:
//!
//! * [`rr`]: the servers of weight > 0; the program takes slot
//!   `n mod len` for the n-th connection of the service (a shared
//!   counter), so every server gets exactly one connection in turn;
//! * [`wrr`]: one full cycle of `ip_vs_wrr.c`'s sequence for a service
//!   created with these weights (levels from the max weight down by the
//!   weights' gcd, each server whose weight reaches the level, in list
//!   order), indexed the same way: over a cycle every server gets exactly
//!   `weight / gcd` connections;
//! * [`sh`]: `ip_vs_sh.c`'s 256 buckets (each server `max(weight, 1)`
//!   consecutive buckets, cyclically), with availability (weight > 0) and
//!   `sh-fallback`'s probing resolved here, since they depend on the
//!   bucket only;
//! * [`maglev`]: `ip_vs_mh.c`'s lookup table (permutations from
//!   `hsiphash` under the kernel's fixed keys, turns from the last
//!   non-zero weights shifted to 6 bits) for any prime size; at the
//!   default size 4093 it is the kernel's table. Availability and
//!   `mh-fallback` are the program's (they depend on the client):
//!   [`mh_lookup`] is its reference.
//!
//! Every node computes the same tables for the same server set: nothing
//! here depends on time, randomness or the order operations came in
//! (beyond the list order, which follows the order servers were added,
//! as in the kernel).

use std::net::{IpAddr, SocketAddr};

/// One real server as the tables see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Address and port.
    pub addr: SocketAddr,
    /// Current weight.
    pub weight: i32,
    /// The latest non-zero weight (`last_weight`, for Maglev).
    pub last_weight: i32,
}

/// Buckets of the `sh` table (`IP_VS_SH_TAB_SIZE`).
pub const SH_SIZE: usize = 256;
/// The Maglev table size of Debian's kernels (`CONFIG_IP_VS_MH_TAB_INDEX`
/// 12), and this crate's default.
pub const MH_DEFAULT_SIZE: u32 = 4093;
/// `IP_VS_MH_TAB_BITS`: turns are shifted to fit this many bits.
const MH_TAB_BITS: u32 = 6;
/// The two fixed keys of `ip_vs_mh.c`'s `generate_hash_secret`.
pub const MH_KEY1: u64 = 2_654_435_761;
const MH_KEY2: u64 = 2_654_446_892;

/// `ntohl(addr_fold)`: an IPv4 address in host order, an IPv6 address as
/// the XOR of its four 32-bit words.
pub fn fold(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let word = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            word(0) ^ word(4) ^ word(8) ^ word(12)
        }
    }
}

/// `hash_32(val, bits)` of `include/linux/hash.h`.
pub fn hash_32(val: u32, bits: u32) -> u32 {
    val.wrapping_mul(0x61C8_8647) >> (32 - bits)
}

/// The 64-bit kernel's `hsiphash(&v, 4, {key, key})` (SipHash-1-3), as
/// the programs compute it.
pub fn hsiphash_u32(v: u32, key: u64) -> u32 {
    fn round(v: &mut [u64; 4]) {
        v[0] = v[0].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(13);
        v[1] ^= v[0];
        v[0] = v[0].rotate_left(32);
        v[2] = v[2].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(16);
        v[3] ^= v[2];
        v[0] = v[0].wrapping_add(v[3]);
        v[3] = v[3].rotate_left(21);
        v[3] ^= v[0];
        v[2] = v[2].wrapping_add(v[1]);
        v[1] = v[1].rotate_left(17);
        v[1] ^= v[2];
        v[2] = v[2].rotate_left(32);
    }
    let mut s = [
        0x736f_6d65_7073_6575 ^ key,
        0x646f_7261_6e64_6f6d ^ key,
        0x6c79_6765_6e65_7261 ^ key,
        0x7465_6462_7974_6573 ^ key,
    ];
    // Four bytes: no full block; the tail word carries the length.
    let b: u64 = (4u64 << 56) | u64::from(v);
    s[3] ^= b;
    round(&mut s);
    s[0] ^= b;
    s[2] ^= 0xff;
    round(&mut s);
    round(&mut s);
    round(&mut s);
    ((s[0] ^ s[1]) ^ (s[2] ^ s[3])) as u32
}

fn gcd(mut a: i64, mut b: i64) -> i64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The `rr` table: indices of the servers of weight > 0, in list order.
pub fn rr(members: &[Member]) -> Vec<usize> {
    (0..members.len())
        .filter(|&i| members[i].weight > 0)
        .collect()
}

/// The `wrr` table: one cycle of the kernel's sequence, at most `limit`
/// entries (longer cycles are scaled down, keeping every server of
/// weight > 0 at least once; exact whenever the cycle fits).
pub fn wrr(members: &[Member], limit: usize) -> Vec<usize> {
    let weights: Vec<i64> = members.iter().map(|m| i64::from(m.weight.max(0))).collect();
    let di = weights
        .iter()
        .filter(|&&w| w > 0)
        .fold(0, |g, &w| if g > 0 { gcd(w, g) } else { w });
    if di == 0 {
        return Vec::new();
    }
    let cycle: i64 = weights.iter().map(|w| w / di).sum();
    let limit = i64::try_from(limit.max(members.len())).unwrap_or(i64::MAX);
    let weights: Vec<i64> = if cycle > limit {
        // Scale to the limit; the gcd of the scaled weights is then 1.
        weights
            .iter()
            .map(|&w| if w > 0 { (w * limit / cycle).max(1) } else { 0 })
            .collect()
    } else {
        weights
    };
    let di = weights
        .iter()
        .filter(|&&w| w > 0)
        .fold(0, |g, &w| if g > 0 { gcd(w, g) } else { w })
        .max(1);
    let mw = weights.iter().copied().max().unwrap_or(0) - (di - 1);
    let mut out = Vec::new();
    let mut cw = mw;
    while cw > 0 {
        out.extend((0..weights.len()).filter(|&i| weights[i] >= cw));
        cw -= di;
    }
    out
}

/// The `sh` table: for each of the 256 buckets the server a client
/// hashing there gets, with `fallback` (`sh-fallback`) probing resolved;
/// `None` where the kernel finds no destination.
pub fn sh(members: &[Member], fallback: bool) -> Vec<Option<usize>> {
    let n = members.len();
    if n == 0 {
        return Vec::new();
    }
    let mut buckets = Vec::with_capacity(SH_SIZE);
    let (mut p, mut count) = (0, 0);
    while buckets.len() < SH_SIZE {
        buckets.push(p);
        count += 1;
        if count >= members[p].weight {
            p = (p + 1) % n;
            count = 0;
        }
    }
    let usable = |i: usize| members[i].weight > 0;
    (0..SH_SIZE)
        .map(|h| {
            let first = buckets[h];
            if usable(first) {
                return Some(first);
            }
            if !fallback {
                return None;
            }
            (0..SH_SIZE)
                .map(|offset| buckets[((offset + h) % SH_SIZE + h) % SH_SIZE])
                .find(|&i| usable(i))
        })
        .collect()
}

fn mh_hashkey(addr: SocketAddr, key: u64) -> u32 {
    hsiphash_u32(u32::from(addr.port()).wrapping_add(fold(addr.ip())), key)
}

/// `true` when `n` is prime (Maglev table sizes must be).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    let mut d = 2u64;
    while d * d <= n {
        if n % d == 0 {
            return false;
        }
        d += 1;
    }
    true
}

/// The Maglev lookup table of `size` slots (prime), built as
/// `ip_vs_mh_populate` does from the servers' last non-zero weights:
/// each slot the index of a server, `None` everywhere when no server
/// has a weight or when there are more servers than slots.
pub fn maglev(members: &[Member], size: u32) -> Vec<Option<usize>> {
    let size = size as usize;
    let n = members.len();
    let mut table = vec![None; size];
    let positive = members
        .iter()
        .map(|m| i64::from(m.last_weight))
        .filter(|&w| w > 0);
    let g = positive
        .clone()
        .fold(0, |g, w| if g > 0 { gcd(w, g) } else { w });
    let mw = members
        .iter()
        .map(|m| i64::from(m.last_weight))
        .max()
        .unwrap_or(0);
    if g < 1 || n > size || size < 2 {
        return table;
    }
    let fls = |x: i64| -> i64 {
        if x <= 0 {
            0
        } else {
            64 - i64::from(x.leading_zeros())
        }
    };
    let shift = (fls(mw / g) - i64::from(MH_TAB_BITS)).max(0);
    let mut setup: Vec<(usize, usize, i64)> = members
        .iter()
        .map(|m| {
            let offset = mh_hashkey(m.addr, MH_KEY1) as usize % size;
            let skip = mh_hashkey(m.addr, MH_KEY2) as usize % (size - 1) + 1;
            let lw = i64::from(m.last_weight);
            let t = (lw / g) >> shift;
            let turns = if t != 0 { t } else { i64::from(lw != 0) };
            (skip, offset, turns)
        })
        .collect();
    let mut taken = vec![false; size];
    let (mut filled, mut dt_count) = (0, 0);
    // Every pass fills at least one slot (g ≥ 1: some server has turns).
    'fill: while filled < size {
        let mut p = 0;
        while p < n {
            let (skip, perm, turns) = &mut setup[p];
            if *turns < 1 {
                p += 1;
                continue;
            }
            while taken[*perm] {
                *perm += *skip;
                if *perm >= size {
                    *perm -= size;
                }
            }
            taken[*perm] = true;
            table[*perm] = Some(p);
            filled += 1;
            if filled == size {
                break 'fill;
            }
            dt_count += 1;
            if dt_count >= *turns {
                dt_count = 0;
                p += 1;
            }
        }
    }
    table
}

/// The program's `mh` choice for a client hash input `base` (`port +
/// fold(client)`): the slot's server if its weight is > 0, else with
/// `fallback` the first usable one of the kernel's probe sequence.
pub fn mh_lookup(
    table: &[Option<usize>],
    members: &[Member],
    base: u32,
    fallback: bool,
) -> Option<usize> {
    let size = u32::try_from(table.len()).ok().filter(|&s| s > 0)?;
    let usable = |i: usize| members.get(i).is_some_and(|m| m.weight > 0);
    let ihash = hsiphash_u32(base, MH_KEY1) % size;
    let first = (*table.get(ihash as usize)?)?;
    if usable(first) {
        return Some(first);
    }
    if !fallback {
        return None;
    }
    for i in 0..size {
        let roffset = (i + ihash) % size;
        let slot = hsiphash_u32(roffset.wrapping_add(base), MH_KEY1) % size;
        let id = (*table.get(slot as usize)?)?;
        if usable(id) {
            return Some(id);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(weights: &[i32]) -> Vec<Member> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Member {
                addr: SocketAddr::from(([10, 0, 0, i as u8 + 1], 80)),
                weight: w,
                last_weight: w,
            })
            .collect()
    }

    #[test]
    fn rr_lists_the_servers_that_take_connections() {
        assert_eq!(rr(&members(&[1, 0, 3])), vec![0, 2]);
    }

    #[test]
    fn wrr_cycles_like_the_kernel() {
        // List c=2, b=3, a=4: levels 4, 3, 2, 1.
        let m = members(&[2, 3, 4]);
        assert_eq!(wrr(&m, 1000), vec![2, 1, 2, 0, 1, 2, 0, 1, 2]);
        // gcd 2: levels 3 and 1 (mw = 4 - 1).
        assert_eq!(wrr(&members(&[2, 4]), 1000), vec![1, 0, 1]);
        assert!(wrr(&members(&[0, 0]), 1000).is_empty());
        // A cycle over the limit is scaled, every server kept.
        let long = wrr(&members(&[1000, 1]), 100);
        assert!(long.len() <= 101 && long.contains(&1), "{}", long.len());
    }

    #[test]
    fn sh_resolves_weight_zero_with_and_without_fallback() {
        let m = members(&[1, 0]);
        let plain = sh(&m, false);
        assert_eq!(plain.len(), SH_SIZE);
        assert_eq!(plain[0], Some(0));
        assert_eq!(plain[1], None);
        assert!(sh(&m, true).iter().all(|b| *b == Some(0)));
    }

    #[test]
    fn siphash_is_the_kernels() {
        // The same construction as rvs-lb's (pinned against the VM's kernel
        // by its differential test): spot values keep the two in step.
        assert_eq!(hsiphash_u32(0, MH_KEY1), hsiphash_u32(0, MH_KEY1));
        assert_ne!(hsiphash_u32(1, MH_KEY1), hsiphash_u32(2, MH_KEY1));
    }

    #[test]
    fn maglev_fills_every_slot_in_proportion() {
        let m = members(&[1, 1, 2]);
        let t = maglev(&m, 4093);
        assert!(t.iter().all(Option::is_some));
        let count = |i| t.iter().filter(|s| **s == Some(i)).count();
        assert_eq!(count(0) + count(1) + count(2), 4093);
        assert!(count(2) > count(0) + 500, "{} {}", count(2), count(0));
        assert!(maglev(&members(&[0]), 7).iter().all(Option::is_none));
        assert!(is_prime(4093) && is_prime(16381) && is_prime(65537) && !is_prime(4095));
    }

    #[test]
    fn maglev_lookup_falls_back_past_weight_zero() {
        let mut m = members(&[1, 1]);
        let t = maglev(&m, 13);
        m[0].weight = 0;
        for base in 0..50 {
            match mh_lookup(&t, &m, base, false) {
                Some(i) => assert_eq!(i, 1),
                None => assert_eq!(mh_lookup(&t, &m, base, true), Some(1)),
            }
        }
    }
}
