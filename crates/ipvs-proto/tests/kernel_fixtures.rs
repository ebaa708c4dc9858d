//! Replies captured from a real kernel (the IPVS family of Debian's
//! `6.1.0-57-cloud-amd64`, in the test VM; see the crate documentation
//! for how, and refresh with `RVS_WRITE_FIXTURES=1 cargo test -p rvs-ipvs
//! --test kernel_vm`) parse and re-emit to the very same bytes. Their
//! decoding into rvs's model is tested in `rvs-ipvs`
//! (`tests/kernel_replies.rs`).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use netlink_packet_core::NetlinkMessage;
use netlink_packet_generic::GenlMessage;
use rvs_ipvs_proto::IpvsMessage;

type Msg = NetlinkMessage<GenlMessage<IpvsMessage>>;

fn fixtures() -> Vec<Vec<u8>> {
    rvs_testrig::fixtures::read_hex(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/kernel-replies.hex"
    ))
    .unwrap()
}

#[test]
fn every_captured_message_re_emits_identically() {
    let all = fixtures();
    assert!(all.len() >= 8, "fixture file too small");
    for bytes in all {
        let msg = Msg::deserialize(&bytes).unwrap();
        let mut again = vec![0; msg.buffer_len()];
        msg.serialize(&mut again);
        assert_eq!(again, bytes, "{msg:?}");
    }
}
