//! Raw netlink framing for the ipset subsystem: `nlmsghdr`, `nfgenmsg`
//! and type-length-value attributes, kept byte-exact.
//!
//! This module knows nothing of what attributes mean; [`super::message`]
//! gives them types. Everything here round-trips: what is parsed emits to
//! the same bytes.

use super::DecodeError;

/// `NLA_F_NESTED`: the attribute holds attributes.
pub const NLA_F_NESTED: u16 = 0x8000;
/// `NLA_F_NET_BYTEORDER`: the attribute's integer is big-endian.
pub const NLA_F_NET_BYTEORDER: u16 = 0x4000;
/// Mask of the attribute type without the two flags.
pub const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

/// `NLMSG_ERROR`.
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`.
pub const NLMSG_DONE: u16 = 3;

/// `NLM_F_REQUEST`.
pub const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_MULTI`.
pub const NLM_F_MULTI: u16 = 0x2;
/// `NLM_F_ACK`.
pub const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_DUMP` (`NLM_F_ROOT | NLM_F_MATCH`).
pub const NLM_F_DUMP: u16 = 0x300;
/// `NLM_F_EXCL`: for ipset, "fail if it already exists" (no `-exist`).
pub const NLM_F_EXCL: u16 = 0x200;
/// `NLM_F_CREATE`.
pub const NLM_F_CREATE: u16 = 0x400;

/// Size of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
/// Size of `struct nfgenmsg`.
pub const NFGENMSG_LEN: usize = 4;

/// Rounds `len` up to netlink's 4-byte alignment.
pub const fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// One attribute as it was on the wire: its type including the
/// `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER` flags, and its value without
/// padding.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RawNla {
    /// `nla_type`, flags included.
    pub kind: u16,
    /// The value, `nla_len - 4` bytes.
    pub value: Vec<u8>,
}

impl RawNla {
    /// The type without flags.
    pub fn number(&self) -> u16 {
        self.kind & NLA_TYPE_MASK
    }

    /// Bytes this attribute takes on the wire, padding included.
    pub fn wire_len(&self) -> usize {
        align(4 + self.value.len())
    }

    /// Appends the attribute (header, value, zero padding) to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        emit_nla(out, self.kind, &self.value);
    }
}

/// Appends an attribute with `kind` and `value` to `out`.
pub fn emit_nla(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    // Attribute lengths are u16 on the wire; callers never build values
    // near 64 KiB (the longest is a set comment of 255 bytes).
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len() + (align(len) - len), 0);
}

/// Appends a nested attribute whose content `fill` writes.
pub fn emit_nested(out: &mut Vec<u8>, kind: u16, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&kind.to_ne_bytes());
    fill(out);
    let len = out.len() - start;
    let bytes = (len as u16).to_ne_bytes();
    out[start] = bytes[0];
    out[start + 1] = bytes[1];
    // Content is made of aligned attributes, so no padding is needed.
}

/// Parses a run of attributes filling `buf` exactly.
pub fn parse_nlas(buf: &[u8]) -> Result<Vec<RawNla>, DecodeError> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let (Some(len), Some(kind)) = (rest.get(0..2), rest.get(2..4)) else {
            return Err(DecodeError::new(format!(
                "attribute header truncated: {} bytes left",
                rest.len()
            )));
        };
        let len = usize::from(u16::from_ne_bytes([len[0], len[1]]));
        let kind = u16::from_ne_bytes([kind[0], kind[1]]);
        if len < 4 {
            return Err(DecodeError::new(format!(
                "attribute type {kind:#x} has length {len} < 4"
            )));
        }
        let Some(value) = rest.get(4..len) else {
            return Err(DecodeError::new(format!(
                "attribute type {kind:#x} of length {len} overruns its buffer of {}",
                rest.len()
            )));
        };
        let padded = align(len);
        let padding = rest.get(len..padded.min(rest.len())).unwrap_or_default();
        if padding.iter().any(|&b| b != 0) {
            // Non-zero padding would not re-emit identically.
            return Err(DecodeError::new(format!(
                "attribute type {kind:#x} has non-zero padding"
            )));
        }
        out.push(RawNla {
            kind,
            value: value.to_vec(),
        });
        rest = rest.get(padded..).unwrap_or_default();
    }
    Ok(out)
}

/// `struct nlmsghdr` without its length (which is computed on emission).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NlHeader {
    /// `nlmsg_type`.
    pub kind: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// `nlmsg_pid`.
    pub pid: u32,
}

impl NlHeader {
    /// Appends the header for a message with `payload_len` bytes of payload.
    pub fn emit(&self, out: &mut Vec<u8>, payload_len: usize) {
        let len = (NLMSG_HDRLEN + payload_len) as u32;
        out.extend_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&self.kind.to_ne_bytes());
        out.extend_from_slice(&self.flags.to_ne_bytes());
        out.extend_from_slice(&self.seq.to_ne_bytes());
        out.extend_from_slice(&self.pid.to_ne_bytes());
    }
}

/// Splits a receive buffer into netlink messages: each header and its
/// payload (`nlmsg_len - 16` bytes, padding excluded).
pub fn split_messages(buf: &[u8]) -> Result<Vec<(NlHeader, &[u8])>, DecodeError> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let Some(hdr) = rest.get(..NLMSG_HDRLEN) else {
            return Err(DecodeError::new(format!(
                "netlink header truncated: {} bytes left",
                rest.len()
            )));
        };
        let word = |at: usize| u32::from_ne_bytes([hdr[at], hdr[at + 1], hdr[at + 2], hdr[at + 3]]);
        let len = word(0) as usize;
        let header = NlHeader {
            kind: u16::from_ne_bytes([hdr[4], hdr[5]]),
            flags: u16::from_ne_bytes([hdr[6], hdr[7]]),
            seq: word(8),
            pid: word(12),
        };
        if len < NLMSG_HDRLEN {
            return Err(DecodeError::new(format!(
                "netlink message length {len} is shorter than its header"
            )));
        }
        let Some(payload) = rest.get(NLMSG_HDRLEN..len) else {
            return Err(DecodeError::new(format!(
                "netlink message of length {len} overruns its buffer of {}",
                rest.len()
            )));
        };
        out.push((header, payload));
        rest = rest.get(align(len)..).unwrap_or_default();
    }
    Ok(out)
}

/// Reads a fixed-size array from a value, or says what was wrong.
pub fn fixed<const N: usize>(value: &[u8]) -> Option<[u8; N]> {
    value.try_into().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code

    use super::*;

    #[test]
    fn attributes_are_padded_and_round_trip() {
        let nla = RawNla {
            kind: 2,
            value: b"A\0".to_vec(),
        };
        let mut out = Vec::new();
        nla.emit(&mut out);
        assert_eq!(out, [6, 0, 2, 0, b'A', 0, 0, 0]);
        assert_eq!(parse_nlas(&out).unwrap(), vec![nla]);
    }

    #[test]
    fn truncated_attributes_are_errors_not_panics() {
        assert!(parse_nlas(&[8, 0, 1]).is_err());
        assert!(parse_nlas(&[8, 0, 1, 0, 1]).is_err());
        assert!(parse_nlas(&[2, 0, 1, 0]).is_err());
        assert!(split_messages(&[20, 0, 0, 0, 1]).is_err());
        assert!(split_messages(&[4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
