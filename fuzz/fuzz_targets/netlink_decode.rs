//! Any bytes handed to the IPVS netlink decoder: it must not panic, and
//! every IPVS message it accepts must re-emit (after `finalize`, since the
//! input's length field may lie) to bytes that decode to the same message.
//! (Re-emitting a non-IPVS message with a lying length makes
//! netlink-packet-core 0.9's emitter panic; the client never re-emits what
//! it receives, so the target does not either.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use netlink_packet_core::NetlinkMessage;
use netlink_packet_generic::GenlMessage;
use rvs_ipvs_proto::IpvsMessage;

type Msg = NetlinkMessage<GenlMessage<IpvsMessage>>;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut msg) = Msg::deserialize(data) {
        if !matches!(msg.payload, netlink_packet_core::NetlinkPayload::InnerMessage(_)) {
            return;
        }
        msg.finalize();
        let mut out = vec![0; msg.buffer_len()];
        msg.serialize(&mut out);
        let again = Msg::deserialize(&out).expect("re-emitted bytes decode");
        assert_eq!(again.payload, msg.payload);
    }
});
