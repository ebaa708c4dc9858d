//! Address text conversions with glibc's exact semantics.
//!
//! ipvsadm parses addresses with `inet_aton` (which accepts `10.1`,
//! `0x7f.1`, octal parts, ...) and `inet_pton(AF_INET6)`, and prints them
//! with `inet_ntop`, whose IPv6 form differs from Rust's `Display` for
//! IPv4-compatible addresses (`::1.2.3.4`). This module owns those
//! conversions so listings and parsing match ipvsadm byte for byte.

use std::net::{Ipv4Addr, Ipv6Addr};

/// glibc `inet_aton`: one to four parts in decimal, octal (leading `0`) or
/// hex (`0x`), the last part filling the remaining bytes. Parsing stops at
/// the first whitespace, as glibc does.
pub(crate) fn inet_aton(text: &str) -> Option<Ipv4Addr> {
    let text = match text.find(|c: char| c.is_ascii_whitespace()) {
        Some(end) => &text[..end],
        None => text,
    };
    let mut parts: Vec<u32> = Vec::new();
    for part in text.split('.') {
        parts.push(parse_c_number(part)?);
    }
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let last = *parts.last()?;
    let leading = &parts[..parts.len() - 1];
    if leading.iter().any(|&p| p > 0xff) {
        return None;
    }
    let max_last = match parts.len() {
        1 => u32::MAX,
        2 => 0x00ff_ffff,
        3 => 0xffff,
        _ => 0xff,
    };
    if last > max_last {
        return None;
    }
    let mut value = last;
    for (i, &p) in leading.iter().enumerate() {
        value |= p << (24 - 8 * i);
    }
    Some(Ipv4Addr::from(value))
}

/// One `strtoul(.., 0)` number as inet_aton reads it: non-empty, base from
/// the prefix, no sign.
fn parse_c_number(part: &str) -> Option<u32> {
    if part.is_empty() {
        return None;
    }
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() {
        // "0x" alone is 0 for glibc.
        return if radix == 16 { Some(0) } else { None };
    }
    if !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(digits, radix).ok()
}

/// glibc `inet_pton(AF_INET6)`.
pub(crate) fn inet_pton6(text: &str) -> Option<Ipv6Addr> {
    // Rust's parser accepts exactly the RFC 4291 text forms glibc accepts,
    // including an embedded dotted quad at the end.
    text.parse::<Ipv6Addr>().ok()
}

/// glibc `inet_ntop(AF_INET6)`: the longest run (first if tied) of two or
/// more zero groups becomes `::`, and addresses whose first 96 bits are
/// zero (other than `::` and `::1`-like short runs) or are IPv4-mapped end
/// in a dotted quad.
pub(crate) fn inet_ntop6(addr: &Ipv6Addr) -> String {
    let words = addr.segments();
    let mut best: Option<(usize, usize)> = None;
    let mut cur: Option<(usize, usize)> = None;
    for (i, &w) in words.iter().enumerate() {
        if w == 0 {
            cur = Some(match cur {
                Some((base, len)) => (base, len + 1),
                None => (i, 1),
            });
        } else if let Some(c) = cur.take()
            && best.is_none_or(|b| c.1 > b.1)
        {
            best = Some(c);
        }
    }
    if let Some(c) = cur
        && best.is_none_or(|b| c.1 > b.1)
    {
        best = Some(c);
    }
    let best = best.filter(|b| b.1 >= 2);
    let mut out = String::new();
    let mut i = 0;
    while i < 8 {
        if let Some((base, len)) = best
            && i >= base
            && i < base + len
        {
            if i == base {
                out.push(':');
            }
            i += 1;
            continue;
        }
        if i != 0 {
            out.push(':');
        }
        if i == 6
            && best.is_some_and(|(base, len)| {
                base == 0 && (len == 6 || (len == 5 && words[5] == 0xffff))
            })
        {
            let o = addr.octets();
            out.push_str(&format!("{}.{}.{}.{}", o[12], o[13], o[14], o[15]));
            return out;
        }
        out.push_str(&format!("{:x}", words[i]));
        i += 1;
    }
    if best.is_some_and(|(base, len)| base + len == 8) {
        out.push(':');
    }
    out
}

/// `inet_ntop` for either family.
pub(crate) fn ntop(addr: &std::net::IpAddr) -> String {
    match addr {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => inet_ntop6(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inet_aton_accepts_glibc_forms() {
        assert_eq!(inet_aton("10.1"), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(inet_aton("127.1"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(inet_aton("0x7f.1"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(inet_aton("010.0.0.1"), Some(Ipv4Addr::new(8, 0, 0, 1)));
        assert_eq!(inet_aton("16909060"), Some(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(
            inet_aton("255.255.255.0"),
            Some(Ipv4Addr::new(255, 255, 255, 0))
        );
        assert_eq!(
            inet_aton("1.2.3.4 trailing"),
            Some(Ipv4Addr::new(1, 2, 3, 4))
        );
        assert_eq!(inet_aton("1.2.3.256"), None);
        assert_eq!(inet_aton("1.2.3.4.5"), None);
        assert_eq!(inet_aton("localhost"), None);
        assert_eq!(inet_aton(""), None);
        assert_eq!(inet_aton("1..2"), None);
        assert_eq!(inet_aton("09"), None);
    }

    #[test]
    fn inet_ntop6_matches_glibc() {
        let cases = [
            ("::", "::"),
            ("::1", "::1"),
            ("fd00::1", "fd00::1"),
            ("::1.2.3.4", "::1.2.3.4"),
            ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
            ("1:0:0:2:0:0:0:3", "1:0:0:2::3"),
            ("1:0:0:2:0:0:3:4", "1::2:0:0:3:4"),
            ("1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7"),
            ("fd00:1::", "fd00:1::"),
            ("2001:db8::ff00:42:8329", "2001:db8::ff00:42:8329"),
        ];
        for (input, want) in cases {
            let addr: Ipv6Addr = input.parse().unwrap();
            assert_eq!(inet_ntop6(&addr), want, "{input}");
        }
    }
}
