//! Shared attribute plumbing: nested lists, typed scalar parsing that
//! falls back to the raw attribute, and emission helpers.

use netlink_packet_core::{
    DecodeError, DefaultNla, Emitable, NLA_F_NESTED, Nla, NlaBuffer, NlasIterator, Parseable,
};

/// A nested attribute's content: a list of attributes of one level, and
/// whether the sender flagged it with `NLA_F_NESTED` (the kernel's IPVS
/// replies do not; re-emission keeps what was received).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nested<T> {
    /// The attributes inside.
    pub attrs: Vec<T>,
    /// `NLA_F_NESTED` was set on the enclosing attribute.
    pub flagged: bool,
}

impl<T> Nested<T> {
    /// A nested list without the `NLA_F_NESTED` flag, as ipvsadm and the
    /// kernel send them.
    pub fn new(attrs: Vec<T>) -> Nested<T> {
        Nested {
            attrs,
            flagged: false,
        }
    }
}

impl<T: Nla> Nested<T> {
    pub(crate) fn value_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }

    pub(crate) fn emit_value(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer);
    }

    pub(crate) fn kind(&self, kind: u16) -> u16 {
        if self.flagged {
            kind | NLA_F_NESTED
        } else {
            kind
        }
    }
}

/// Parses every attribute in `payload` with `parse`.
pub(crate) fn parse_list<T>(
    payload: &[u8],
    parse: impl Fn(&NlaBuffer<&[u8]>) -> Result<T, DecodeError>,
) -> Result<Vec<T>, DecodeError> {
    NlasIterator::new(payload)
        .map(|nla| nla.and_then(|nla| parse(&nla)))
        .collect()
}

/// Parses a nested attribute's content.
pub(crate) fn parse_nested<T>(
    buf: &NlaBuffer<&[u8]>,
    parse: impl Fn(&NlaBuffer<&[u8]>) -> Result<T, DecodeError>,
) -> Result<Nested<T>, DecodeError> {
    Ok(Nested {
        attrs: parse_list(buf.value(), parse)?,
        flagged: buf.nested_flag(),
    })
}

/// The raw attribute, flags included, for `Other(..)` variants.
///
/// An attribute flagged both nested and network-byte-order is refused: no
/// netlink family uses that combination, and netlink-packet-core 0.9
/// cannot re-emit it (its emitter keeps only one of the two flags), so
/// accepting it would break the lossless round trip.
pub(crate) fn raw(buf: &NlaBuffer<&[u8]>) -> Result<DefaultNla, DecodeError> {
    if buf.nested_flag() && buf.network_byte_order_flag() {
        return Err(DecodeError::from(format!(
            "attribute type {:#06x} has both NLA_F_NESTED and NLA_F_NET_BYTEORDER",
            buf.kind()
        )));
    }
    DefaultNla::parse(buf)
}

/// `true` when the attribute carries flag bits a typed variant would drop.
pub(crate) fn has_flags(buf: &NlaBuffer<&[u8]>) -> bool {
    buf.nested_flag() || buf.network_byte_order_flag()
}

pub(crate) fn exact<const N: usize>(buf: &NlaBuffer<&[u8]>) -> Option<[u8; N]> {
    if has_flags(buf) {
        return None;
    }
    buf.value().try_into().ok()
}

pub(crate) fn u8_of(buf: &NlaBuffer<&[u8]>) -> Option<u8> {
    exact::<1>(buf).map(|b| b[0])
}

pub(crate) fn u16_ne(buf: &NlaBuffer<&[u8]>) -> Option<u16> {
    exact::<2>(buf).map(u16::from_ne_bytes)
}

pub(crate) fn u16_be(buf: &NlaBuffer<&[u8]>) -> Option<u16> {
    exact::<2>(buf).map(u16::from_be_bytes)
}

pub(crate) fn u32_ne(buf: &NlaBuffer<&[u8]>) -> Option<u32> {
    exact::<4>(buf).map(u32::from_ne_bytes)
}

pub(crate) fn u64_ne(buf: &NlaBuffer<&[u8]>) -> Option<u64> {
    exact::<8>(buf).map(u64::from_ne_bytes)
}

/// A NUL-terminated string with nothing after the NUL.
pub(crate) fn c_string(buf: &NlaBuffer<&[u8]>) -> Option<String> {
    if has_flags(buf) {
        return None;
    }
    let value = buf.value();
    let (last, text) = value.split_last()?;
    if *last != 0 || text.contains(&0) {
        return None;
    }
    String::from_utf8(text.to_vec()).ok()
}

/// Writes `s` followed by a NUL.
pub(crate) fn emit_c_string(s: &str, buffer: &mut [u8]) {
    let bytes = s.as_bytes();
    buffer[..bytes.len()].copy_from_slice(bytes);
    buffer[bytes.len()] = 0;
}
