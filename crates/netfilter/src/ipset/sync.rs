//! Update in place: from the desired members of a set and what the
//! kernel lists, the adds and dels that make them equal, and nothing
//! else. A set whose creation parameters changed (e.g. `maxelem`) is
//! rebuilt under a temporary name and swapped in, so iptables rules that
//! reference it never see it missing. Sets are created with the newest
//! revision the kernel has, up to [`SetType::revision`] (Linux 6.1 lacks
//! `hash:ip` 6 and `hash:ip,port` 7, which came with 6.3's bitmask).
//!
//! [`SetType::revision`]: super::types::SetType::revision

use std::collections::BTreeSet;

use super::IpsetError;
use super::client::IpsetClient;
use super::ops::Op;
use super::types::{Entry, ListedSet, SetSpec};

/// What differs between desired and current members.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetDiff {
    /// Members to add.
    pub add: Vec<Entry>,
    /// Members to delete.
    pub del: Vec<Entry>,
}

impl SetDiff {
    /// Computes the difference (both lists sorted).
    pub fn between<'a>(
        desired: &BTreeSet<Entry>,
        current: impl IntoIterator<Item = &'a Entry>,
    ) -> SetDiff {
        let current: BTreeSet<Entry> = current.into_iter().copied().collect();
        SetDiff {
            add: desired.difference(&current).copied().collect(),
            del: current.difference(desired).copied().collect(),
        }
    }

    /// Whether nothing needs doing.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.del.is_empty()
    }

    /// The ops for set `set`: dels first (they free room under maxelem).
    pub fn ops(&self, set: &str) -> Vec<Op> {
        let dels = self.del.iter().map(|e| Op::Del {
            set: set.to_owned(),
            entry: *e,
            missing_ok: true,
        });
        let adds = self.add.iter().map(|e| Op::Add {
            set: set.to_owned(),
            entry: *e,
            comment: None,
            exist_ok: true,
        });
        dels.chain(adds).collect()
    }
}

/// What [`sync_set`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// The set did not exist and was created.
    pub created: bool,
    /// The set's parameters differed; it was rebuilt and swapped in.
    pub rebuilt: bool,
    /// Members added.
    pub added: usize,
    /// Members deleted.
    pub deleted: usize,
}

/// Checks every desired member against the spec.
pub fn check_members(spec: &SetSpec, desired: &BTreeSet<Entry>) -> Result<(), IpsetError> {
    spec.validate()?;
    desired.iter().try_for_each(|e| e.check_fits(spec))
}

/// Whether an existing set's creation parameters are `spec`'s.
fn same_params(spec: &SetSpec, listed: &ListedSet) -> Result<bool, IpsetError> {
    if listed.set_type != Some(spec.set_type) {
        return Err(IpsetError::Mismatch {
            set: spec.name.clone(),
            found: listed.type_name.clone(),
            wanted: spec.set_type.name().into(),
        });
    }
    if spec.set_type.is_hash() {
        if listed.family() != Some(spec.family) {
            return Err(IpsetError::Mismatch {
                set: spec.name.clone(),
                found: format!("family {}", listed.nfproto),
                wanted: format!("family {}", spec.family.name()),
            });
        }
        return Ok(listed.maxelem() == Some(spec.maxelem));
    }
    let range = (
        listed.header.iter().find_map(|a| match a {
            super::DataAttr::Port(p) => Some(*p),
            _ => None,
        }),
        listed.header.iter().find_map(|a| match a {
            super::DataAttr::PortTo(p) => Some(*p),
            _ => None,
        }),
    );
    Ok(range == (Some(spec.port_range.0), Some(spec.port_range.1)))
}

/// `IPSET_ERR_FIND_TYPE`: the kernel lacks the type or its revision.
const ERR_FIND_TYPE: i32 = 4098;

/// Creates `spec` (fine if an identical set exists), stepping the
/// revision down while the kernel does not know it. Returns the
/// revision created.
pub fn create(client: &mut IpsetClient, spec: &SetSpec, exist_ok: bool) -> Result<u8, IpsetError> {
    let mut spec = spec.clone();
    loop {
        match client.apply(&[Op::Create {
            spec: spec.clone(),
            exist_ok,
        }]) {
            Ok(()) => return Ok(spec.revision),
            Err(IpsetError::Kernel {
                code: ERR_FIND_TYPE,
                ..
            }) if spec.revision > 0 => spec.revision -= 1,
            Err(e) => return Err(e),
        }
    }
}

/// The temporary name a set is rebuilt under.
fn temp_name(name: &str) -> String {
    let mut tmp = format!("RVS-TMP-{name}");
    tmp.truncate(31);
    tmp
}

/// Makes the kernel's set `spec.name` hold exactly `desired`: creates
/// it if missing, otherwise adds and deletes only what differs. If its
/// parameters (maxelem, range) differ, fills a temporary set and swaps
/// it in. Returns what was done; fails naming the set and member.
pub fn sync_set(
    client: &mut IpsetClient,
    spec: &SetSpec,
    desired: &BTreeSet<Entry>,
) -> Result<SyncReport, IpsetError> {
    check_members(spec, desired)?;
    let mut report = SyncReport::default();
    match client.get(&spec.name)? {
        None => {
            create(client, spec, true)?;
            let diff = SetDiff::between(desired, []);
            client.apply(&diff.ops(&spec.name))?;
            report.created = true;
            report.added = diff.add.len();
        }
        Some(listed) if same_params(spec, &listed)? => {
            let diff = SetDiff::between(desired, listed.members.iter().map(|m| &m.entry));
            client.apply(&diff.ops(&spec.name))?;
            report.added = diff.add.len();
            report.deleted = diff.del.len();
        }
        Some(listed) => {
            let tmp = temp_name(&spec.name);
            client.destroy_if_exists(&tmp)?;
            let mut tmp_spec = spec.clone();
            tmp_spec.name.clone_from(&tmp);
            create(client, &tmp_spec, false)?;
            let mut ops = SetDiff::between(desired, []).ops(&tmp);
            ops.push(Op::Swap(tmp.clone(), spec.name.clone()));
            ops.push(Op::Destroy(tmp));
            client.apply(&ops)?;
            let diff = SetDiff::between(desired, listed.members.iter().map(|m| &m.entry));
            report.rebuilt = true;
            report.added = diff.add.len();
            report.deleted = diff.del.len();
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code

    use super::*;
    use crate::ipset::types::SetType;

    fn e(s: &str) -> Entry {
        Entry::parse(SetType::HashIpPort, s).unwrap()
    }

    #[test]
    fn diff_adds_and_deletes_only_what_differs() {
        let desired: BTreeSet<Entry> = [e("10.0.0.1,tcp:80"), e("10.0.0.2,udp:53")].into();
        let current = [e("10.0.0.1,tcp:80"), e("10.0.0.3,tcp:443")];
        let diff = SetDiff::between(&desired, current.iter());
        assert_eq!(diff.add, vec![e("10.0.0.2,udp:53")]);
        assert_eq!(diff.del, vec![e("10.0.0.3,tcp:443")]);
        let ops = diff.ops("S");
        assert!(matches!(ops[0], Op::Del { .. }));
        assert!(matches!(ops[1], Op::Add { .. }));
        assert!(SetDiff::between(&desired, desired.iter()).is_empty());
    }

    #[test]
    fn temp_names_fit_ipset() {
        assert!(temp_name("KUBE-6-LOAD-BALANCER-SOURCE-CID").len() <= 31);
    }
}
