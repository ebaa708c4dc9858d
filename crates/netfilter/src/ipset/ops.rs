//! Requests as values: what to ask the kernel ([`Op`]) and the messages
//! that ask it, plus reading list replies into [`ListedSet`]s and naming
//! kernel error codes. Sans-IO; the socket is in [`super::client`].

use super::message::{AdtAttr, DataAttr, IpsetAttr, IpsetCmd, IpsetMessage};
use super::types::{Entry, ListedSet, Member, SetSpec, SetType, check_name};
use super::wire::{NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL};
use super::{DecodeError, IpsetError};

/// One change to the kernel's sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create a set; with `exist_ok`, an identical existing set is fine
    /// (`ipset create -exist`).
    Create {
        /// The set.
        spec: SetSpec,
        /// Succeed when an identical set exists.
        exist_ok: bool,
    },
    /// Destroy a set.
    Destroy(String),
    /// Remove every member of a set.
    Flush(String),
    /// Exchange two sets' contents and names.
    Swap(String, String),
    /// Rename a set.
    Rename(String, String),
    /// Add a member; with `exist_ok` a present member is fine.
    Add {
        /// The set.
        set: String,
        /// The member.
        entry: Entry,
        /// Its comment (the set needs the `comment` extension).
        comment: Option<String>,
        /// Succeed when the member is already there.
        exist_ok: bool,
    },
    /// Delete a member; with `missing_ok` an absent member is fine.
    Del {
        /// The set.
        set: String,
        /// The member.
        entry: Entry,
        /// Succeed when the member is not there.
        missing_ok: bool,
    },
}

impl Op {
    /// The set the op is about (the first one for swap and rename).
    pub fn set(&self) -> &str {
        match self {
            Op::Create { spec, .. } => &spec.name,
            Op::Destroy(s) | Op::Flush(s) | Op::Swap(s, _) | Op::Rename(s, _) => s,
            Op::Add { set, .. } | Op::Del { set, .. } => set,
        }
    }

    /// A short description for errors: `add 10.0.0.1,tcp:80`.
    pub fn describe(&self) -> String {
        match self {
            Op::Create { spec, .. } => format!("create ({})", spec.set_type),
            Op::Destroy(_) => "destroy".into(),
            Op::Flush(_) => "flush".into(),
            Op::Swap(_, b) => format!("swap with {b}"),
            Op::Rename(_, b) => format!("rename to {b}"),
            Op::Add { entry, .. } => format!("add {entry}"),
            Op::Del { entry, .. } => format!("del {entry}"),
        }
    }

    /// The request for this op (sequence number 0), after checking names
    /// and, for creates, the spec.
    pub fn to_message(&self) -> Result<IpsetMessage, IpsetError> {
        check_name(self.set())?;
        let name = IpsetAttr::SetName(self.set().to_owned());
        let excl = |ok: bool| if ok { 0 } else { NLM_F_EXCL };
        let msg = match self {
            Op::Create { spec, exist_ok } => {
                spec.validate()?;
                IpsetMessage::request(
                    IpsetCmd::Create,
                    NLM_F_ACK | NLM_F_CREATE | excl(*exist_ok),
                    vec![
                        name,
                        IpsetAttr::TypeName(spec.set_type.name().into()),
                        IpsetAttr::Revision(spec.revision),
                        IpsetAttr::Family(spec.nfproto()),
                        IpsetAttr::Data(spec.create_data()),
                    ],
                )
            }
            Op::Destroy(_) => IpsetMessage::request(IpsetCmd::Destroy, NLM_F_ACK, vec![name]),
            Op::Flush(_) => IpsetMessage::request(IpsetCmd::Flush, NLM_F_ACK, vec![name]),
            Op::Swap(_, other) | Op::Rename(_, other) => {
                check_name(other)?;
                let cmd = if matches!(self, Op::Swap(..)) {
                    IpsetCmd::Swap
                } else {
                    IpsetCmd::Rename
                };
                IpsetMessage::request(
                    cmd,
                    NLM_F_ACK,
                    vec![name, IpsetAttr::TypeName(other.clone())],
                )
            }
            Op::Add {
                entry,
                comment,
                exist_ok,
                ..
            } => {
                let mut data = entry.data();
                if let Some(comment) = comment {
                    if comment.len() > 255 || comment.contains('\0') {
                        return Err(IpsetError::InvalidEntry {
                            set: self.set().to_owned(),
                            entry: entry.to_string(),
                            reason: "comment must be at most 255 bytes without NUL".into(),
                        });
                    }
                    data.push(DataAttr::Comment(comment.clone()));
                }
                IpsetMessage::request(
                    IpsetCmd::Add,
                    NLM_F_ACK | excl(*exist_ok),
                    vec![name, IpsetAttr::Data(data)],
                )
            }
            Op::Del {
                entry, missing_ok, ..
            } => IpsetMessage::request(
                IpsetCmd::Del,
                NLM_F_ACK | excl(*missing_ok),
                vec![name, IpsetAttr::Data(entry.data())],
            ),
        };
        Ok(msg)
    }
}

/// The dump request that lists `set`, or every set.
pub fn list_request(set: Option<&str>) -> Result<IpsetMessage, IpsetError> {
    let mut attrs = Vec::new();
    if let Some(set) = set {
        check_name(set)?;
        attrs.push(IpsetAttr::SetName(set.to_owned()));
    }
    Ok(IpsetMessage::request(IpsetCmd::List, NLM_F_DUMP, attrs))
}

/// Folds list replies (one set may span several messages) into sets.
pub fn collect_sets(replies: &[IpsetMessage]) -> Result<Vec<ListedSet>, DecodeError> {
    let mut sets: Vec<ListedSet> = Vec::new();
    for msg in replies {
        let Some(name) = msg.set_name() else {
            return Err(DecodeError::new("list reply without IPSET_ATTR_SETNAME"));
        };
        let is_new = sets.last().is_none_or(|s| s.name != name);
        if is_new {
            sets.push(ListedSet {
                name: name.to_owned(),
                type_name: String::new(),
                set_type: None,
                revision: 0,
                nfproto: 0,
                header: Vec::new(),
                members: Vec::new(),
            });
        }
        let Some(set) = sets.last_mut() else {
            continue;
        };
        for attr in &msg.attrs {
            match attr {
                IpsetAttr::TypeName(t) => {
                    set.type_name = t.clone();
                    set.set_type = SetType::from_name(t);
                }
                IpsetAttr::Revision(r) => set.revision = *r,
                IpsetAttr::Family(f) => set.nfproto = *f,
                IpsetAttr::Data(header) => set.header = header.clone(),
                IpsetAttr::Adt(items) => {
                    let Some(set_type) = set.set_type else {
                        continue;
                    };
                    for item in items {
                        let AdtAttr::Data(data) = item else {
                            continue;
                        };
                        let entry = Entry::from_data(set_type, data)
                            .map_err(|e| DecodeError::new(format!("set {}: {e}", set.name)))?;
                        let comment = data.iter().find_map(|a| match a {
                            DataAttr::Comment(c) => Some(c.clone()),
                            _ => None,
                        });
                        set.members.push(Member { entry, comment });
                    }
                }
                _ => {}
            }
        }
    }
    Ok(sets)
}

/// The name and meaning of an error code the ipset subsystem returns
/// (positive: errno or `IPSET_ERR_*`).
pub fn describe_error(code: i32, cmd: IpsetCmd) -> String {
    let text = match code {
        1 => "operation not permitted (needs CAP_NET_ADMIN)",
        2 => "the set does not exist",
        12 => "out of memory",
        22 => "invalid argument",
        4097 => "IPSET_ERR_PROTOCOL: protocol error",
        4098 => "IPSET_ERR_FIND_TYPE: set type or revision not supported by the kernel",
        4099 => "IPSET_ERR_MAX_SETS: maximal number of sets reached",
        4100 => "IPSET_ERR_BUSY: set is in use by a kernel component (iptables rule?)",
        4101 => "IPSET_ERR_EXIST_SETNAME2: a set with the new name already exists",
        4102 => "IPSET_ERR_TYPE_MISMATCH: the sets' types differ",
        4103 => match cmd {
            IpsetCmd::Create => {
                "IPSET_ERR_EXIST: a set with this name but other parameters already exists"
            }
            IpsetCmd::Add => "IPSET_ERR_EXIST: the member is already in the set",
            IpsetCmd::Del => "IPSET_ERR_EXIST: the member is not in the set",
            _ => "IPSET_ERR_EXIST",
        },
        4104 => "IPSET_ERR_INVALID_CIDR: invalid prefix length",
        4105 => "IPSET_ERR_INVALID_NETMASK",
        4106 => "IPSET_ERR_INVALID_FAMILY: the address family does not match the set",
        4107 => "IPSET_ERR_TIMEOUT: the set has no timeout support",
        4108 => "IPSET_ERR_REFERENCED: the set is referenced",
        4109 => "IPSET_ERR_IPADDR_IPV4: invalid IPv4 address",
        4110 => "IPSET_ERR_IPADDR_IPV6: invalid IPv6 address",
        4112 => "IPSET_ERR_COMMENT: the set has no comment support",
        4352 => "type-specific error 4352 (hash: the set is full; bitmap: out of range)",
        4353 => "type-specific error 4353 (hash: invalid element; bitmap: range too big)",
        4354 => "IPSET_ERR_INVALID_PROTO: invalid protocol",
        4355 => "IPSET_ERR_MISSING_PROTO: protocol missing",
        _ => "",
    };
    if text.is_empty() {
        std::io::Error::from_raw_os_error(code).to_string()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code

    use super::*;
    use crate::ipset::types::Family;

    #[test]
    fn create_request_matches_the_ipset_cli() {
        // `ipset create A hash:ip,port family inet hashsize 1024 maxelem
        // 65536` from ipset 7.17 (strace), sequence number zeroed.
        let cli: &[u8] = &[
            92, 0, 0, 0, 2, 6, 5, 6, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, //
            5, 0, 1, 0, 7, 0, 0, 0, //
            6, 0, 2, 0, b'A', 0, 0, 0, //
            17, 0, 3, 0, b'h', b'a', b's', b'h', b':', b'i', b'p', b',', b'p', b'o', b'r', b't', 0,
            0, 0, 0, //
            5, 0, 4, 0, 7, 0, 0, 0, //
            5, 0, 5, 0, 2, 0, 0, 0, //
            20, 0, 7, 0x80, 8, 0, 0x12, 0x40, 0, 0, 4, 0, 8, 0, 0x13, 0x40, 0, 1, 0, 0,
        ];
        let op = Op::Create {
            spec: SetSpec::new("A", SetType::HashIpPort, Family::Inet),
            exist_ok: false,
        };
        assert_eq!(op.to_message().unwrap().to_bytes(), cli);
    }

    #[test]
    fn bitmap_create_request_matches_the_ipset_cli() {
        // `ipset create F bitmap:port range 0-65535`.
        let cli: &[u8] = &[
            88, 0, 0, 0, 2, 6, 5, 6, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, //
            5, 0, 1, 0, 7, 0, 0, 0, //
            6, 0, 2, 0, b'F', 0, 0, 0, //
            16, 0, 3, 0, b'b', b'i', b't', b'm', b'a', b'p', b':', b'p', b'o', b'r', b't',
            0, //
            5, 0, 4, 0, 3, 0, 0, 0, //
            5, 0, 5, 0, 0, 0, 0, 0, //
            20, 0, 7, 0x80, 6, 0, 4, 0x40, 0, 0, 0, 0, 6, 0, 5, 0x40, 0xff, 0xff, 0, 0,
        ];
        let op = Op::Create {
            spec: SetSpec::new("F", SetType::BitmapPort, Family::Inet),
            exist_ok: false,
        };
        assert_eq!(op.to_message().unwrap().to_bytes(), cli);
    }

    #[test]
    fn bad_names_are_refused_before_any_request() {
        let err = Op::Flush("THIS-NAME-IS-MUCH-TOO-LONG-FOR-IPSET".into())
            .to_message()
            .unwrap_err();
        assert!(
            err.to_string().contains("THIS-NAME-IS-MUCH-TOO-LONG"),
            "{err}"
        );
        let mut spec = SetSpec::new("KUBE-CLUSTER-IP", SetType::HashIpPort, Family::Inet);
        spec.maxelem = 0;
        let err = Op::Create {
            spec,
            exist_ok: true,
        }
        .to_message()
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("KUBE-CLUSTER-IP") && err.contains("maxelem"),
            "{err}"
        );
    }
}
