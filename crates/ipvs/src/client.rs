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
//! A client is made from a new socket in the caller's network namespace
//! ([`IpvsClient::connect`]), in another one ([`IpvsClient::connect_in_netns`]),
//! or from a socket the caller opened ([`IpvsClient::from_socket`]). Calls
//! wait for the kernel without limit unless a receive timeout is set
//! ([`IpvsClient::set_receive_timeout`]). Besides the [`Admin`] surface,
//! [`IpvsClient::request`] and [`IpvsClient::dump`] exchange any
//! [`IpvsMessage`].
//!
//! Dumps leave out, with a warning (once per object and client), a
//! service or destination the model cannot hold (a protocol other than
//! TCP, UDP and SCTP, an unknown address family;
//! [`ConvertError::is_unrepresentable`]): such a service is someone
//! else's, rvs cannot have made it and must not touch it, and failing the
//! whole dump would stop every sync and listing because of it. A
//! scheduler rvs does not know is no such case: it is kept
//! ([`rvs_model::Scheduler::Other`]).
//!
//! Refusals name the operation's service and real server
//! ([`AdminError::refusal_of`]).
//!
//! The connection table is not on the netlink interface; like ipvsadm,
//! [`Admin::connections`] reads `/proc/net/ip_vs_conn` ([`crate::conntab`]).

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io;
use std::path::Path;
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_generic::GenlMessage;
use netlink_sys::protocols::NETLINK_GENERIC;
use netlink_sys::{Socket, SocketAddr};
use nix::sched::{CloneFlags, setns};
use rvs_ipvs_proto::{IpvsCmd, IpvsMessage};
use rvs_model::admin::{Admin, AdminError, Op, OpKind, errno};
use rvs_model::{Connection, Daemon, DestinationStatus, Info, ServiceKey, ServiceStatus, Timeouts};

use crate::convert::{self, ConvertError};
use crate::genl::{GenlError, resolve_family_on};

/// Requests per `sendmsg` in a batch. Bounded by the socket send buffer
/// (each request is 60–200 bytes; the default buffer holds ~200 KiB).
const BATCH_CHUNK: usize = 512;
const RECV_BUFFER: usize = 128 * 1024;
/// The receive buffer a client asks for, so that a batch's error reports
/// and large dumps are not dropped (`ENOBUFS`).
const SOCKET_RCVBUF: usize = 4 * 1024 * 1024;

/// A connection to the kernel's IPVS.
#[derive(Debug)]
pub struct IpvsClient {
    socket: Socket,
    family: u16,
    sequence: u32,
    buf: Vec<u8>,
    receive_timeout: Option<Duration>,
    /// Objects already warned about as unrepresentable.
    warned: HashSet<String>,
    capture: Option<Vec<Vec<u8>>>,
}

type Reply = NetlinkMessage<GenlMessage<IpvsMessage>>;

fn transport(op: OpKind, context: impl Into<String>) -> impl FnOnce(io::Error) -> AdminError {
    let context = context.into();
    move |source| AdminError::Transport {
        op,
        context,
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
    /// Opens a generic netlink socket in the caller's network namespace
    /// and resolves the IPVS family.
    ///
    /// Fails with `Refused { errno: ENOPROTOOPT }` when the kernel has no
    /// IPVS (module not loaded), as the kernel's socket interface would.
    pub fn connect() -> Result<IpvsClient, AdminError> {
        let socket = Socket::new(NETLINK_GENERIC)
            .map_err(transport(OpKind::GetInfo, "open netlink socket"))?;
        IpvsClient::from_socket(socket)
    }

    /// [`IpvsClient::connect`] in the network namespace at `netns` (a
    /// file such as `/run/netns/NAME` or `/proc/PID/ns/net`).
    ///
    /// The socket is opened by a short-lived thread that enters the
    /// namespace (`setns`), so the caller's threads stay where they are;
    /// a netlink socket belongs to the namespace it was opened in for its
    /// whole life.
    pub fn connect_in_netns(netns: impl AsRef<Path>) -> Result<IpvsClient, AdminError> {
        const OP: OpKind = OpKind::GetInfo;
        let netns = netns.as_ref();
        let open = || -> Result<Socket, AdminError> {
            let file = File::open(netns).map_err(transport(
                OP,
                format!("open network namespace {}", netns.display()),
            ))?;
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| {
                transport(OP, format!("enter network namespace {}", netns.display()))(
                    io::Error::from(e),
                )
            })?;
            Socket::new(NETLINK_GENERIC).map_err(transport(
                OP,
                format!("open netlink socket in {}", netns.display()),
            ))
        };
        let socket = std::thread::scope(|scope| scope.spawn(open).join())
            .map_err(|_| protocol(OP, "the thread entering the network namespace panicked"))??;
        IpvsClient::from_socket(socket)
    }

    /// A client on `socket`, a `NETLINK_GENERIC` socket the caller opened
    /// (in whichever network namespace, with whichever options).
    ///
    /// The socket is connected to the kernel (binding it if it is not
    /// bound yet), gets `NETLINK_CAP_ACK` and a 4 MiB receive buffer,
    /// and resolves the IPVS family; a receive timeout already set on it
    /// applies until [`IpvsClient::set_receive_timeout`] changes it.
    pub fn from_socket(socket: Socket) -> Result<IpvsClient, AdminError> {
        const OP: OpKind = OpKind::GetInfo;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(transport(OP, "connect netlink socket"))?;
        // Acknowledgements carry only the header of the request they answer.
        socket
            .set_cap_ack(true)
            .map_err(transport(OP, "set NETLINK_CAP_ACK"))?;
        socket
            .set_rx_buf_sz(SOCKET_RCVBUF)
            .map_err(transport(OP, "set the receive buffer size"))?;
        let receive_timeout = socket2::SockRef::from(&socket)
            .read_timeout()
            .map_err(transport(OP, "read the receive timeout"))?;
        let family = match resolve_family_on(&socket, rvs_ipvs_proto::FAMILY_NAME) {
            Ok(family) => family.id,
            Err(GenlError::FamilyNotFound { .. }) => {
                return Err(AdminError::refused(OP, errno::ENOPROTOOPT));
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
        Ok(IpvsClient {
            socket,
            family,
            sequence: 0,
            buf: vec![0; RECV_BUFFER],
            receive_timeout,
            warned: HashSet::new(),
            capture: None,
        })
    }

    /// How long a call waits for each answer from the kernel; `None`
    /// (the default for a new socket) waits without limit. A call that
    /// waits longer fails with [`AdminError::Transport`] saying so, and
    /// the late answer is ignored by later calls.
    ///
    /// A zero duration is refused (an `InvalidInput` transport error), as
    /// `SO_RCVTIMEO` would take it to mean "no limit".
    pub fn set_receive_timeout(&mut self, timeout: Option<Duration>) -> Result<(), AdminError> {
        const OP: OpKind = OpKind::GetInfo;
        if timeout == Some(Duration::ZERO) {
            return Err(transport(OP, "set the receive timeout")(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a zero timeout would mean none (use None for no limit)",
            )));
        }
        socket2::SockRef::from(&self.socket)
            .set_read_timeout(timeout)
            .map_err(transport(OP, "set the receive timeout"))?;
        self.receive_timeout = timeout;
        Ok(())
    }

    /// The receive timeout in force.
    pub fn receive_timeout(&self) -> Option<Duration> {
        self.receive_timeout
    }

    /// The generic netlink family id of IPVS on this kernel.
    pub fn family_id(&self) -> u16 {
        self.family
    }

    /// The socket, to read or set options on it.
    pub fn socket(&self) -> &Socket {
        &self.socket
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

    /// Sends `msg` with `NLM_F_ACK` and waits for the kernel's answer: the
    /// reply messages, if the command has any (`GET_INFO`, `GET_CONFIG`,
    /// `GET_SERVICE` for one service), or none. A refusal is reported
    /// under `op` as [`AdminError::Refused`].
    pub fn request(
        &mut self,
        op: OpKind,
        msg: IpvsMessage,
    ) -> Result<Vec<IpvsMessage>, AdminError> {
        self.request_messages(op, msg, false, &|errno| AdminError::refused(op, errno))
    }

    /// Sends `msg` with `NLM_F_DUMP` and collects every message of the
    /// multi-part answer. A refusal is reported under `op`.
    pub fn dump(&mut self, op: OpKind, msg: IpvsMessage) -> Result<Vec<IpvsMessage>, AdminError> {
        self.request_messages(op, msg, true, &|errno| AdminError::refused(op, errno))
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
        let len = match self.socket.recv(&mut &mut self.buf[..], 0) {
            Ok(len) => len,
            Err(source) => {
                let timed_out = matches!(
                    source.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                );
                let context = match self.receive_timeout {
                    Some(limit) if timed_out => {
                        format!("no answer from the kernel within the receive timeout ({limit:?})")
                    }
                    _ => "receive from netlink socket".to_owned(),
                };
                return Err(AdminError::Transport {
                    op,
                    context,
                    source,
                });
            }
        };
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
    fn request_ack(&mut self, op: &Op) -> Result<(), AdminError> {
        let kind = op.kind();
        let (seq, bytes) = self.encode(convert::request(op), NLM_F_REQUEST | NLM_F_ACK);
        self.socket
            .send(&bytes, 0)
            .map_err(transport(kind, "send request"))?;
        loop {
            for reply in self.receive(kind)? {
                if reply.header.sequence_number != seq {
                    continue;
                }
                if let NetlinkPayload::Error(err) = reply.payload {
                    return match err.code {
                        None => Ok(()),
                        Some(code) => Err(AdminError::refusal_of(op, -code.get())),
                    };
                }
            }
        }
    }

    /// Sends a request and collects its (possibly multi-part) answer; a
    /// refusal's errno is turned into an error by `refused`.
    fn request_messages(
        &mut self,
        op: OpKind,
        msg: IpvsMessage,
        dump: bool,
        refused: &dyn Fn(i32) -> AdminError,
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
                            Some(code) => Err(refused(-code.get())),
                        };
                    }
                    other => return Err(protocol(op, format!("unexpected message {other:?}"))),
                }
            }
        }
    }

    fn one_reply(
        &mut self,
        op: OpKind,
        msg: IpvsMessage,
        refused: &dyn Fn(i32) -> AdminError,
    ) -> Result<IpvsMessage, AdminError> {
        self.request_messages(op, msg, false, refused)?
            .into_iter()
            .next()
            .ok_or_else(|| protocol(op, "no reply message"))
    }

    /// Warns about an object left out of a dump, once per object.
    fn leave_out(&mut self, what: &str, object: String, err: &ConvertError) {
        if self.warned.len() < 4096 && self.warned.insert(object.clone()) {
            tracing::warn!(
                "leaving out IPVS {what} {object}, which rvs cannot represent ({err}); \
                 it is not rvs's and stays as it is"
            );
        } else {
            tracing::debug!("leaving out IPVS {what} {object} ({err})");
        }
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
                    Some(errno) => Err(AdminError::refusal_of(op, errno)),
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
        let reply = self.one_reply(OP, IpvsMessage::new(IpvsCmd::GetInfo, vec![]), &|errno| {
            AdminError::refused(OP, errno)
        })?;
        convert::info(&reply).map_err(convert_err(OP))
    }

    fn services(&mut self) -> Result<Vec<ServiceStatus>, AdminError> {
        const OP: OpKind = OpKind::GetServices;
        let replies = self.dump(OP, IpvsMessage::new(IpvsCmd::GetService, vec![]))?;
        let mut out = Vec::with_capacity(replies.len());
        for m in &replies {
            let attrs = m
                .service()
                .ok_or_else(|| protocol(OP, "reply without IPVS_CMD_ATTR_SERVICE"))?;
            match convert::service_status(attrs) {
                Ok(status) => out.push(status),
                Err(e) if e.is_unrepresentable() => {
                    self.leave_out("virtual service", convert::describe_service(attrs), &e);
                }
                Err(e) => return Err(convert_err(OP)(e)),
            }
        }
        Ok(out)
    }

    fn service(&mut self, key: &ServiceKey) -> Result<ServiceStatus, AdminError> {
        const OP: OpKind = OpKind::GetServices;
        let key = *key;
        let reply = self.one_reply(OP, convert::get_service(&key), &|errno| {
            AdminError::refused_for(OP, errno, key)
        })?;
        let attrs = reply
            .service()
            .ok_or_else(|| protocol(OP, "reply without IPVS_CMD_ATTR_SERVICE"))?;
        convert::service_status(attrs).map_err(convert_err(OP))
    }

    fn destinations(&mut self, key: &ServiceKey) -> Result<Vec<DestinationStatus>, AdminError> {
        const OP: OpKind = OpKind::GetDestinations;
        let key = *key;
        let replies = self.request_messages(OP, convert::get_dests(&key), true, &|errno| {
            AdminError::refused_for(OP, errno, key)
        })?;
        let mut out = Vec::with_capacity(replies.len());
        for m in &replies {
            let attrs = m
                .dest()
                .ok_or_else(|| protocol(OP, "reply without IPVS_CMD_ATTR_DEST"))?;
            match convert::dest_status(attrs, key.is_ipv6()) {
                Ok(status) => out.push(status),
                Err(e) if e.is_unrepresentable() => {
                    let object = format!("{} of {key}", convert::describe_dest(attrs));
                    self.leave_out("real server", object, &e);
                }
                Err(e) => return Err(convert_err(OP)(e)),
            }
        }
        Ok(out)
    }

    fn timeouts(&mut self) -> Result<Timeouts, AdminError> {
        const OP: OpKind = OpKind::GetTimeouts;
        let reply = self.one_reply(OP, IpvsMessage::new(IpvsCmd::GetConfig, vec![]), &|errno| {
            AdminError::refused(OP, errno)
        })?;
        Ok(convert::timeouts(&reply))
    }

    fn daemons(&mut self) -> Result<Vec<Daemon>, AdminError> {
        const OP: OpKind = OpKind::GetDaemons;
        let replies = self.dump(OP, IpvsMessage::new(IpvsCmd::GetDaemon, vec![]))?;
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
        self.request_ack(op)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A client on a generic netlink socket without resolving IPVS (the
    /// host running the unit tests may have none).
    fn bare_client() -> IpvsClient {
        let socket = Socket::new(NETLINK_GENERIC).unwrap();
        socket.connect(&SocketAddr::new(0, 0)).unwrap();
        IpvsClient {
            socket,
            family: 0x10,
            sequence: 0,
            buf: vec![0; RECV_BUFFER],
            receive_timeout: None,
            warned: HashSet::new(),
            capture: None,
        }
    }

    #[test]
    fn a_receive_that_times_out_says_so() {
        let mut client = bare_client();
        client
            .set_receive_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        assert_eq!(client.receive_timeout(), Some(Duration::from_millis(20)));
        // Nothing was sent, so nothing comes.
        let err = client.receive(OpKind::GetServices).unwrap_err();
        match &err {
            AdminError::Transport { op, context, .. } => {
                assert_eq!(*op, OpKind::GetServices);
                assert_eq!(
                    context,
                    "no answer from the kernel within the receive timeout (20ms)"
                );
            }
            other => panic!("{other:?}"),
        }
        // The source is not repeated in the message.
        assert_eq!(
            err.to_string(),
            "list services: no answer from the kernel within the receive timeout (20ms)"
        );
        client.set_receive_timeout(None).unwrap();
        assert_eq!(client.receive_timeout(), None);
        assert!(
            client
                .set_receive_timeout(Some(Duration::from_secs(0)))
                .is_err()
        );
    }

    #[test]
    fn a_missing_network_namespace_is_named() {
        let err = IpvsClient::connect_in_netns("/nonexistent/netns").unwrap_err();
        match err {
            AdminError::Transport { context, .. } => {
                assert_eq!(context, "open network namespace /nonexistent/netns");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_callers_namespace_by_path_reaches_the_family_lookup() {
        // Entering our own namespace is allowed without privileges only
        // with CAP_SYS_ADMIN; as root (the rig's runs) it succeeds and the
        // client then looks up IPVS, which this host may lack.
        match IpvsClient::connect_in_netns("/proc/self/ns/net") {
            Ok(client) => assert_ne!(client.family_id(), 0),
            Err(err) => {
                let refused_no_ipvs = err.errno() == Some(errno::ENOPROTOOPT);
                let not_root = matches!(&err, AdminError::Transport { context, .. }
                    if context.starts_with("enter network namespace"));
                assert!(refused_no_ipvs || not_root, "{err}");
            }
        }
    }
}
