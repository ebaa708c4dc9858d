//! The kernel IPVS client: [`Admin`] over generic netlink.
//!
//! One netlink socket per client, the IPVS family resolved once. Single
//! operations are sent with `NLM_F_ACK` and wait for their acknowledgement;
//! reads use `NLM_F_DUMP` and collect the multi-part answer. Batches
//! ([`Admin::apply_batch`]) pack hundreds of requests into one `sendmsg`:
//! only the last request of a chunk asks for an acknowledgement, and since
//! the kernel handles the requests of a datagram in order and reports
//! every failure, that one acknowledgement proves the chunk done while the
//! error reports say which requests failed. That is what makes restoring
//! 100,000 operations take a few dozen system calls instead of ipvsadm's
//! socket, family lookup, send and receive per operation.
//!
//! The connection table is not on the netlink interface; like ipvsadm,
//! [`Admin::connections`] reads `/proc/net/ip_vs_conn` ([`crate::conntab`]).

use std::collections::BTreeMap;
use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_generic::GenlMessage;
use netlink_sys::protocols::NETLINK_GENERIC;
use netlink_sys::{Socket, SocketAddr};
use rvs_ipvs_proto::convert::{self, ConvertError};
use rvs_ipvs_proto::{IpvsCmd, IpvsMessage};
use rvs_model::admin::{Admin, AdminError, Op, OpKind, errno};
use rvs_model::{Connection, Daemon, DestinationStatus, Info, ServiceKey, ServiceStatus, Timeouts};

use crate::genl::{GenlError, resolve_family};

/// Requests per `sendmsg` in a batch. Bounded by the socket send buffer
/// (each request is 60–200 bytes; the default buffer holds ~200 KiB).
const BATCH_CHUNK: usize = 512;
const RECV_BUFFER: usize = 128 * 1024;

/// A connection to the kernel's IPVS.
#[derive(Debug)]
pub struct IpvsClient {
    socket: Socket,
    family: u16,
    sequence: u32,
    buf: Vec<u8>,
    capture: Option<Vec<Vec<u8>>>,
}

type Reply = NetlinkMessage<GenlMessage<IpvsMessage>>;

fn transport(op: OpKind, context: &str) -> impl FnOnce(io::Error) -> AdminError + '_ {
    move |source| AdminError::Transport {
        op,
        context: context.to_owned(),
        source,
    }
}

fn protocol(op: OpKind, detail: impl Into<String>) -> AdminError {
    AdminError::Protocol {
        op,
        detail: detail.into(),
    }
}

fn convert_err(op: OpKind) -> impl FnOnce(ConvertError) -> AdminError {
    move |e| protocol(op, e.to_string())
}

impl IpvsClient {
    /// Opens a generic netlink socket and resolves the IPVS family.
    ///
    /// Fails with `Refused { errno: ENOPROTOOPT }` when the kernel has no
    /// IPVS (module not loaded), as the kernel's socket interface would.
    pub fn connect() -> Result<IpvsClient, AdminError> {
        const OP: OpKind = OpKind::GetInfo;
        let family = match resolve_family(rvs_ipvs_proto::FAMILY_NAME) {
            Ok(family) => family.id,
            Err(GenlError::FamilyNotFound { .. }) => {
                return Err(AdminError::Refused {
                    op: OP,
                    errno: errno::ENOPROTOOPT,
                });
            }
            Err(GenlError::Io { context, source }) => {
                return Err(AdminError::Transport {
                    op: OP,
                    context: context.to_owned(),
                    source,
                });
            }
            Err(other) => return Err(protocol(OP, other.to_string())),
        };
        let mut socket =
            Socket::new(NETLINK_GENERIC).map_err(transport(OP, "open netlink socket"))?;
        socket
            .bind_auto()
            .map_err(transport(OP, "bind netlink socket"))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(transport(OP, "connect netlink socket"))?;
        // Acknowledgements carry only the header of the request they answer.
        socket
            .set_cap_ack(true)
            .map_err(transport(OP, "set NETLINK_CAP_ACK"))?;
        socket
            .set_rx_buf_sz(4 * 1024 * 1024)
            .map_err(transport(OP, "set the receive buffer size"))?;
        Ok(IpvsClient {
            socket,
            family,
            sequence: 0,
            buf: vec![0; RECV_BUFFER],
            capture: None,
        })
    }

    /// The generic netlink family id of IPVS on this kernel.
    pub fn family_id(&self) -> u16 {
        self.family
    }

    /// Starts recording every datagram received from the kernel (for
    /// capturing codec fixtures).
    pub fn start_capture(&mut self) {
        self.capture = Some(Vec::new());
    }

    /// Returns the datagrams recorded since [`IpvsClient::start_capture`].
    pub fn take_capture(&mut self) -> Vec<Vec<u8>> {
        self.capture.take().unwrap_or_default()
    }

    fn encode(&mut self, msg: IpvsMessage, flags: u16) -> (u32, Vec<u8>) {
        self.sequence = self.sequence.wrapping_add(1);
        let mut genl = GenlMessage::from_payload(msg);
        genl.set_resolved_family_id(self.family);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.sequence;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::from(genl));
        nl.finalize();
        let mut bytes = vec![0; nl.buffer_len()];
        nl.serialize(&mut bytes);
        (self.sequence, bytes)
    }

    /// Receives one datagram and decodes the messages in it.
    fn receive(&mut self, op: OpKind) -> Result<Vec<Reply>, AdminError> {
        let len = self
            .socket
            .recv(&mut &mut self.buf[..], 0)
            .map_err(transport(op, "receive from netlink socket"))?;
        let datagram = self
            .buf
            .get(..len)
            .ok_or_else(|| protocol(op, "truncated datagram"))?;
        if let Some(capture) = &mut self.capture {
            capture.push(datagram.to_vec());
        }
        decode_datagram(datagram).map_err(|e| protocol(op, e))
    }

    /// Sends one request with `NLM_F_ACK` and waits for its answer.
    fn request_ack(&mut self, op: OpKind, msg: IpvsMessage) -> Result<(), AdminError> {
        let (seq, bytes) = self.encode(msg, NLM_F_REQUEST | NLM_F_ACK);
        self.socket
            .send(&bytes, 0)
            .map_err(transport(op, "send request"))?;
        loop {
            for reply in self.receive(op)? {
                if reply.header.sequence_number != seq {
                    continue;
                }
                if let NetlinkPayload::Error(err) = reply.payload {
                    return match err.code {
                        None => Ok(()),
                        Some(code) => Err(AdminError::Refused {
                            op,
                            errno: -code.get(),
                        }),
                    };
                }
            }
        }
    }

    /// Sends a request and collects its (possibly multi-part) answer.
    fn request_messages(
        &mut self,
        op: OpKind,
        msg: IpvsMessage,
        dump: bool,
    ) -> Result<Vec<IpvsMessage>, AdminError> {
        let flags = if dump {
            NLM_F_REQUEST | NLM_F_DUMP
        } else {
            NLM_F_REQUEST | NLM_F_ACK
        };
        let (seq, bytes) = self.encode(msg, flags);
        self.socket
            .send(&bytes, 0)
            .map_err(transport(op, "send request"))?;
        let mut out = Vec::new();
        loop {
            for reply in self.receive(op)? {
                if reply.header.sequence_number != seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::InnerMessage(genl) => {
                        out.push(genl.payload);
                        if !dump {
                            // The acknowledgement follows; consume it.
                            continue;
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(err) => {
                        return match err.code {
                            None => Ok(out),
                            Some(code) => Err(AdminError::Refused {
                                op,
                                errno: -code.get(),
                            }),
                        };
                    }
                    other => return Err(protocol(op, format!("unexpected message {other:?}"))),
                }
            }
        }
    }

    fn one_reply(&mut self, op: OpKind, msg: IpvsMessage) -> Result<IpvsMessage, AdminError> {
        self.request_messages(op, msg, false)?
            .into_iter()
            .next()
            .ok_or_else(|| protocol(op, "no reply message"))
    }

    /// Applies `ops` in chunks, one `sendmsg` per chunk; see the module docs.
    fn batch(&mut self, ops: &[Op]) -> Result<Vec<Result<(), AdminError>>, AdminError> {
        let mut results = Vec::with_capacity(ops.len());
        for chunk in ops.chunks(BATCH_CHUNK) {
            let mut datagram = Vec::new();
            let mut pending = BTreeMap::new();
            let last = chunk.len().saturating_sub(1);
            for (i, op) in chunk.iter().enumerate() {
                let flags = if i == last {
                    NLM_F_REQUEST | NLM_F_ACK
                } else {
                    NLM_F_REQUEST
                };
                let (seq, bytes) = self.encode(convert::request(op), flags);
                pending.insert(seq, i);
                datagram.extend_from_slice(&bytes);
            }
            let kind = chunk.first().map_or(OpKind::Flush, Op::kind);
            self.socket
                .send(&datagram, 0)
                .map_err(transport(kind, "send batch"))?;
            let mut outcome: Vec<Option<i32>> = vec![None; chunk.len()];
            let last_seq = self.sequence;
            'chunk: loop {
                for reply in self.receive(kind)? {
                    let seq = reply.header.sequence_number;
                    let Some(&index) = pending.get(&seq) else {
                        continue;
                    };
                    if let NetlinkPayload::Error(err) = reply.payload {
                        if let Some(code) = err.code {
                            outcome[index] = Some(-code.get());
                        }
                        if seq == last_seq {
                            break 'chunk;
                        }
                    }
                }
            }
            for (op, errno) in chunk.iter().zip(outcome) {
                results.push(match errno {
                    None => Ok(()),
                    Some(errno) => Err(AdminError::Refused {
                        op: op.kind(),
                        errno,
                    }),
                });
            }
        }
        Ok(results)
    }
}

/// Splits a datagram into netlink messages and decodes each.
fn decode_datagram(mut datagram: &[u8]) -> Result<Vec<Reply>, String> {
    let mut out = Vec::new();
    while datagram.len() >= 16 {
        let len = u32::from_ne_bytes([datagram[0], datagram[1], datagram[2], datagram[3]]) as usize;
        if len < 16 || len > datagram.len() {
            return Err(format!(
                "netlink message length {len} outside datagram of {}",
                datagram.len()
            ));
        }
        let msg = Reply::deserialize(&datagram[..len]).map_err(|e| e.to_string())?;
        out.push(msg);
        let aligned = (len + 3) & !3;
        datagram = datagram.get(aligned..).unwrap_or_default();
    }
    Ok(out)
}

impl Admin for IpvsClient {
    fn info(&mut self) -> Result<Info, AdminError> {
        const OP: OpKind = OpKind::GetInfo;
        let reply = self.one_reply(OP, IpvsMessage::new(IpvsCmd::GetInfo, vec![]))?;
        convert::info(&reply).map_err(convert_err(OP))
    }

    fn services(&mut self) -> Result<Vec<ServiceStatus>, AdminError> {
        const OP: OpKind = OpKind::GetServices;
        let replies =
            self.request_messages(OP, IpvsMessage::new(IpvsCmd::GetService, vec![]), true)?;
        replies
            .iter()
            .map(|m| {
                let attrs = m
                    .service()
                    .ok_or_else(|| protocol(OP, "reply without IPVS_CMD_ATTR_SERVICE"))?;
                convert::service_status(attrs).map_err(convert_err(OP))
            })
            .collect()
    }

    fn service(&mut self, key: &ServiceKey) -> Result<ServiceStatus, AdminError> {
        const OP: OpKind = OpKind::GetServices;
        let reply = self.one_reply(OP, convert::get_service(key))?;
        let attrs = reply
            .service()
            .ok_or_else(|| protocol(OP, "reply without IPVS_CMD_ATTR_SERVICE"))?;
        convert::service_status(attrs).map_err(convert_err(OP))
    }

    fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<DestinationStatus>, AdminError> {
        const OP: OpKind = OpKind::GetDestinations;
        let replies = self.request_messages(OP, convert::get_dests(key), true)?;
        replies
            .iter()
            .map(|m| {
                let attrs = m
                    .dest()
                    .ok_or_else(|| protocol(OP, "reply without IPVS_CMD_ATTR_DEST"))?;
                convert::dest_status(attrs, key.is_ipv6()).map_err(convert_err(OP))
            })
            .collect()
    }

    fn timeouts(&mut self) -> Result<Timeouts, AdminError> {
        let reply = self.one_reply(
            OpKind::GetTimeouts,
            IpvsMessage::new(IpvsCmd::GetConfig, vec![]),
        )?;
        Ok(convert::timeouts(&reply))
    }

    fn daemons(&mut self) -> Result<Vec<Daemon>, AdminError> {
        const OP: OpKind = OpKind::GetDaemons;
        let replies =
            self.request_messages(OP, IpvsMessage::new(IpvsCmd::GetDaemon, vec![]), true)?;
        replies
            .iter()
            .filter_map(|m| m.daemon())
            .map(|attrs| convert::daemon(attrs).map_err(convert_err(OP)))
            .collect()
    }

    fn connections(&mut self) -> Result<Vec<Connection>, AdminError> {
        crate::conntab::read_proc()
    }

    fn apply(&mut self, op: &Op) -> Result<(), AdminError> {
        self.request_ack(op.kind(), convert::request(op))
    }

    fn apply_batch(&mut self, ops: &[Op]) -> Vec<Result<(), AdminError>> {
        match self.batch(ops) {
            Ok(results) => results,
            // The exchange itself failed: every operation's fate is unknown.
            Err(err) => {
                let text = err.to_string();
                ops.iter()
                    .map(|op| Err(protocol(op.kind(), format!("batch aborted: {text}"))))
                    .collect()
            }
        }
    }
}
