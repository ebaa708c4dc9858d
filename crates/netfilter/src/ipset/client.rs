//! The thin socket side: an `NETLINK_NETFILTER` socket that sends
//! [`Op`]s in batches (many messages per `sendmsg`), collects their
//! acknowledgements, and runs list dumps.
//!
//! The socket is bound to the network namespace of the thread that opens
//! it.

use std::io;

use netlink_sys::protocols::NETLINK_NETFILTER;
use netlink_sys::{Socket, SocketAddr};

use super::IpsetError;
use super::message::{IpsetCmd, IpsetMessage, Netlink, parse_buffer};
use super::ops::{Op, collect_sets, describe_error, list_request};
use super::types::ListedSet;

/// Bytes of requests sent per `sendmsg`. Acknowledgements of errors echo
/// the request, so this also bounds what one batch can queue on the
/// receive side.
const BATCH_BYTES: usize = 32 * 1024;
/// Receive buffer: dump messages are at most 32 KiB.
const RECV_BYTES: usize = 64 * 1024;
/// Socket receive buffer asked for, so that many acknowledgements fit.
const SO_RCVBUF: usize = 1 << 20;

/// An ipset client on an nfnetlink socket.
#[derive(Debug)]
pub struct IpsetClient {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
    /// Every buffer received, when recording (for fixtures).
    recorded: Option<Vec<Vec<u8>>>,
}

fn io_err(context: &'static str) -> impl FnOnce(io::Error) -> IpsetError {
    move |source| IpsetError::Io { context, source }
}

impl IpsetClient {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> Result<IpsetClient, IpsetError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(io_err("open nfnetlink socket"))?;
        socket
            .bind_auto()
            .map_err(io_err("bind nfnetlink socket"))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(io_err("connect nfnetlink socket"))?;
        // Best effort: the default buffer works for moderate batches.
        let _ = socket.set_rx_buf_sz(SO_RCVBUF);
        Ok(IpsetClient {
            socket,
            seq: 1,
            buf: vec![0; RECV_BYTES],
            recorded: None,
        })
    }

    /// Starts keeping a copy of every buffer received.
    pub fn record(&mut self) {
        self.recorded = Some(Vec::new());
    }

    /// The buffers received since [`IpsetClient::record`].
    pub fn take_recorded(&mut self) -> Vec<Vec<u8>> {
        self.recorded.take().unwrap_or_default()
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    fn recv(&mut self) -> Result<Vec<Netlink>, IpsetError> {
        let len = self
            .socket
            .recv(&mut &mut self.buf[..], 0)
            .map_err(io_err("receive from nfnetlink"))?;
        let data = self.buf.get(..len).unwrap_or_default();
        if let Some(recorded) = &mut self.recorded {
            recorded.push(data.to_vec());
        }
        parse_buffer(data).map_err(|e| IpsetError::Decode {
            context: "nfnetlink reply".into(),
            source: e,
        })
    }

    /// Runs `ops` in order, batching many per `sendmsg`, and returns each
    /// op's outcome. The outer error is for failures of the socket itself.
    pub fn batch(&mut self, ops: &[Op]) -> Result<Vec<Result<(), IpsetError>>, IpsetError> {
        let mut results: Vec<Result<(), IpsetError>> = Vec::with_capacity(ops.len());
        let mut index = 0;
        while index < ops.len() {
            // Build one chunk.
            let mut out = Vec::with_capacity(BATCH_BYTES);
            let mut pending = Vec::new(); // (seq, op index)
            let first = index;
            while index < ops.len() && (out.len() < BATCH_BYTES || index == first) {
                let op = &ops[index];
                match op.to_message() {
                    Ok(mut msg) => {
                        msg.seq = self.next_seq();
                        pending.push((msg.seq, index));
                        msg.emit(&mut out);
                        results.push(Ok(()));
                    }
                    Err(e) => results.push(Err(e)),
                }
                index += 1;
            }
            if pending.is_empty() {
                continue;
            }
            self.socket
                .send(&out, 0)
                .map_err(io_err("send ipset requests"))?;
            let mut waiting = pending.len();
            while waiting > 0 {
                for reply in self.recv()? {
                    let Netlink::Error { header, code, .. } = reply else {
                        continue;
                    };
                    let Some(&(_, op_index)) = pending.iter().find(|(s, _)| *s == header.seq)
                    else {
                        continue;
                    };
                    waiting -= 1;
                    if code != 0 {
                        let op = &ops[op_index];
                        let cmd = op.to_message().map(|m| m.cmd).unwrap_or(IpsetCmd::Other(0));
                        if let Some(slot) = results.get_mut(op_index) {
                            *slot = Err(IpsetError::Kernel {
                                set: op.set().to_owned(),
                                op: op.describe(),
                                code: -code,
                                reason: describe_error(-code, cmd),
                            });
                        }
                    }
                }
            }
        }
        Ok(results)
    }

    /// Runs `ops` and fails with the first error.
    pub fn apply(&mut self, ops: &[Op]) -> Result<(), IpsetError> {
        self.batch(ops)?.into_iter().collect()
    }

    /// Runs a dump request and returns its ipset messages.
    pub fn dump(&mut self, mut request: IpsetMessage) -> Result<Vec<IpsetMessage>, IpsetError> {
        request.seq = self.next_seq();
        let set = request.set_name().unwrap_or("*").to_owned();
        self.socket
            .send(&request.to_bytes(), 0)
            .map_err(io_err("send ipset dump request"))?;
        let mut out = Vec::new();
        loop {
            for reply in self.recv()? {
                if reply.seq() != request.seq {
                    continue;
                }
                match reply {
                    Netlink::Ipset(msg) => out.push(msg),
                    Netlink::Done { .. } => return Ok(out),
                    Netlink::Error { code: 0, .. } => return Ok(out),
                    Netlink::Error { code, .. } => {
                        return Err(IpsetError::Kernel {
                            set,
                            op: "list".into(),
                            code: -code,
                            reason: describe_error(-code, request.cmd),
                        });
                    }
                    Netlink::Other { header, .. } => {
                        return Err(IpsetError::Unexpected(format!(
                            "message type {:#x} in an ipset dump",
                            header.kind
                        )));
                    }
                }
            }
        }
    }

    /// Lists `set` (or every set) with headers and members.
    pub fn list(&mut self, set: Option<&str>) -> Result<Vec<ListedSet>, IpsetError> {
        let replies = self.dump(list_request(set)?)?;
        collect_sets(&replies).map_err(|e| IpsetError::Decode {
            context: format!("list of {}", set.unwrap_or("all sets")),
            source: e,
        })
    }

    /// Lists one set; `None` when it does not exist.
    pub fn get(&mut self, set: &str) -> Result<Option<ListedSet>, IpsetError> {
        match self.list(Some(set)) {
            Ok(sets) => Ok(sets.into_iter().find(|s| s.name == set)),
            Err(e) if e.is_missing_set() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Destroys `set` if it exists.
    pub fn destroy_if_exists(&mut self, set: &str) -> Result<(), IpsetError> {
        match self.apply(&[Op::Destroy(set.to_owned())]) {
            Err(e) if e.is_missing_set() => Ok(()),
            other => other,
        }
    }
}
