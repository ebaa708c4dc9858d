//! Bytes captured from a real kernel (Debian's 6.1 cloud kernel, in the
//! test VM; refreshed with `RVS_WRITE_FIXTURES=1 cargo test -p rvs-ipvs
//! --test kernel_vm`) parse into the expected messages and re-emit to the
//! very same bytes.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_generic::GenlMessage;
use rvs_ipvs_proto::convert;
use rvs_ipvs_proto::{IpvsCmd, IpvsMessage};
use rvs_model::{ForwardMethod, Scheduler, ServiceFlags};

type Msg = NetlinkMessage<GenlMessage<IpvsMessage>>;

fn fixtures() -> Vec<Vec<u8>> {
    let text = include_str!("fixtures/kernel-replies.hex");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            (0..l.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&l[i..i + 2], 16).unwrap())
                .collect()
        })
        .collect()
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

#[test]
fn captured_replies_decode_to_what_was_programmed() {
    let mut services = Vec::new();
    let mut dests = Vec::new();
    let mut info = None;
    let mut timeouts = None;
    let mut errors = Vec::new();
    for bytes in fixtures() {
        let msg = Msg::deserialize(&bytes).unwrap();
        match msg.payload {
            NetlinkPayload::InnerMessage(genl) => {
                let m = genl.payload;
                match m.cmd {
                    IpvsCmd::SetInfo => info = Some(convert::info(&m).unwrap()),
                    IpvsCmd::NewService => {
                        services.push(convert::service_status(m.service().unwrap()).unwrap())
                    }
                    IpvsCmd::NewDest => {
                        dests.push(convert::dest_status(m.dest().unwrap(), false).unwrap())
                    }
                    IpvsCmd::SetConfig => timeouts = Some(convert::timeouts(&m)),
                    other => panic!("unexpected command {other:?}"),
                }
            }
            NetlinkPayload::Error(e) => errors.push(e.code.map(|c| c.get())),
            NetlinkPayload::Done(_) => {}
            other => panic!("unexpected payload {other:?}"),
        }
    }
    let info = info.unwrap();
    assert_eq!((info.version, info.conn_table_size), (0x010201, 4096));
    let t = timeouts.unwrap();
    assert_eq!((t.tcp, t.tcp_fin, t.udp), (900, 120, 300));
    let wlc = services
        .iter()
        .find(|s| s.service.scheduler == Scheduler::WeightedLeastConnection)
        .unwrap();
    assert_eq!(wlc.service.key.to_string(), "TCP 10.96.0.10:80");
    assert!(
        wlc.service
            .flags
            .has(ServiceFlags::PERSISTENT | ServiceFlags::HASHED)
    );
    assert_eq!(wlc.service.timeout, 300);
    let mh = services
        .iter()
        .find(|s| s.service.scheduler == Scheduler::Maglev)
        .unwrap();
    assert_eq!(mh.service.key.to_string(), "UDP [fd00::53]:53");
    assert_eq!(dests.len(), 1);
    assert_eq!(dests[0].destination.addr.to_string(), "10.0.2.2:8080");
    assert_eq!(dests[0].destination.forward, ForwardMethod::Masquerade);
    assert_eq!(dests[0].destination.weight, 1);
    // Deleting a service that is not there: ESRCH.
    assert!(errors.contains(&Some(-3)), "{errors:?}");
}
