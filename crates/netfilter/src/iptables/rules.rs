//! The rule set kube-proxy's IPVS mode writes, as a pure function of the
//! desired ipsets and the proxy's options.
//!
//! Same chains, same rule order, same match/target arguments and
//! comments as kube-proxy's `writeIptablesRules` (1.30+): rules tied to an
//! ipset are only written while that set has members; the rest are
//! fixed. The output is the body of one `iptables-restore --noflush`
//! input per table (declaring a chain with `:` flushes it, so each apply
//! rewrites our chains whole and leaves every other chain alone).

use std::collections::BTreeSet;

use ipnet::IpNet;

use crate::ipset::{Entry, Family, KubeSet, KubeSets};

use super::IptablesError;

/// An iptables table we write to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    /// `nat`.
    Nat,
    /// `filter`.
    Filter,
}

impl Table {
    /// Both tables, in the order they are applied.
    pub const ALL: [Table; 2] = [Table::Nat, Table::Filter];

    /// The table's name.
    pub fn name(self) -> &'static str {
        match self {
            Table::Nat => "nat",
            Table::Filter => "filter",
        }
    }
}

/// Our chains, per table, in kube-proxy's order (`iptablesChains`).
pub const CHAINS: [(Table, &str); 11] = [
    (Table::Nat, "KUBE-SERVICES"),
    (Table::Nat, "KUBE-POSTROUTING"),
    (Table::Nat, "KUBE-NODE-PORT"),
    (Table::Nat, "KUBE-LOAD-BALANCER"),
    (Table::Nat, "KUBE-MARK-MASQ"),
    (Table::Filter, "KUBE-FORWARD"),
    (Table::Filter, "KUBE-NODE-PORT"),
    (Table::Filter, "KUBE-PROXY-FIREWALL"),
    (Table::Filter, "KUBE-SOURCE-RANGES-FIREWALL"),
    (Table::Filter, "KUBE-IPVS-FILTER"),
    (Table::Filter, "KUBE-IPVS-OUT-FILTER"),
];

/// A jump from a built-in chain into one of ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Jump {
    /// The table.
    pub table: Table,
    /// The built-in chain.
    pub from: &'static str,
    /// Our chain.
    pub to: &'static str,
    /// The rule's comment.
    pub comment: &'static str,
}

impl Jump {
    /// The rule's arguments after the chain name, as `iptables-save`
    /// prints them.
    pub fn spec(&self) -> String {
        format!("-m comment --comment \"{}\" -j {}", self.comment, self.to)
    }
}

/// kube-proxy's jumps (`iptablesJumpChain`), each prepended to its
/// built-in chain in this order.
pub const JUMPS: [Jump; 9] = [
    Jump {
        table: Table::Nat,
        from: "OUTPUT",
        to: "KUBE-SERVICES",
        comment: "kubernetes service portals",
    },
    Jump {
        table: Table::Nat,
        from: "PREROUTING",
        to: "KUBE-SERVICES",
        comment: "kubernetes service portals",
    },
    Jump {
        table: Table::Nat,
        from: "POSTROUTING",
        to: "KUBE-POSTROUTING",
        comment: "kubernetes postrouting rules",
    },
    Jump {
        table: Table::Filter,
        from: "FORWARD",
        to: "KUBE-FORWARD",
        comment: "kubernetes forwarding rules",
    },
    Jump {
        table: Table::Filter,
        from: "INPUT",
        to: "KUBE-NODE-PORT",
        comment: "kubernetes health check rules",
    },
    Jump {
        table: Table::Filter,
        from: "INPUT",
        to: "KUBE-PROXY-FIREWALL",
        comment: "kube-proxy firewall rules",
    },
    Jump {
        table: Table::Filter,
        from: "FORWARD",
        to: "KUBE-PROXY-FIREWALL",
        comment: "kube-proxy firewall rules",
    },
    Jump {
        table: Table::Filter,
        from: "INPUT",
        to: "KUBE-IPVS-FILTER",
        comment: "kubernetes ipvs access filter",
    },
    Jump {
        table: Table::Filter,
        from: "OUTPUT",
        to: "KUBE-IPVS-OUT-FILTER",
        comment: "kubernetes ipvs access filter",
    },
];

/// How traffic from local pods is told apart (kube-proxy's
/// `--detect-local-mode`), for masquerading off-cluster traffic to
/// cluster IPs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalDetect {
    /// No detection: masquerade node-originated traffic from a VIP
    /// (`src,dst` match), as kube-proxy does without `--cluster-cidr`.
    None,
    /// `ClusterCIDR` / `NodeCIDR`: local traffic comes from this CIDR
    /// (one per family).
    Cidr(IpNet),
    /// `NodeCIDR` before the node's pod CIDR is known: not renderable;
    /// [`LocalDetect::resolve`] turns it into [`LocalDetect::Cidr`] (or
    /// [`LocalDetect::None`]) at each sync.
    NodeCidr,
    /// `BridgeInterface`: local traffic enters from this bridge.
    BridgeInterface(String),
    /// `InterfaceNamePrefix`: local traffic enters from interfaces with
    /// this prefix.
    InterfaceNamePrefix(String),
}

impl LocalDetect {
    /// The match for "not local" traffic.
    fn if_not_local(&self) -> Option<String> {
        match self {
            LocalDetect::None | LocalDetect::NodeCidr => None,
            LocalDetect::Cidr(net) => Some(format!("! -s {net}")),
            LocalDetect::BridgeInterface(i) => Some(format!("! -i {i}")),
            LocalDetect::InterfaceNamePrefix(p) => Some(format!("! -i {p}+")),
        }
    }
}

/// The options that shape the rule set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RulesConfig {
    /// `--masquerade-all`: masquerade all traffic to cluster IPs.
    pub masquerade_all: bool,
    /// `--iptables-masquerade-bit` (0 to 31; kube-proxy's default 14).
    pub masquerade_bit: u8,
    /// Local-traffic detection (`--cluster-cidr`, `--detect-local-mode`).
    pub local_detect: LocalDetect,
    /// Add `--random-fully` to MASQUERADE (kube-proxy does when iptables
    /// supports it, which every iptables ≥ 1.6.2 does).
    pub random_fully: bool,
}

impl Default for RulesConfig {
    fn default() -> RulesConfig {
        RulesConfig {
            masquerade_all: false,
            masquerade_bit: 14,
            local_detect: LocalDetect::None,
            random_fully: true,
        }
    }
}

/// The rules of one table: our chains and the `-A` lines that fill them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TableRules {
    /// Our chains in this table (all declared, so all flushed).
    pub chains: Vec<&'static str>,
    /// The rule lines, `-A CHAIN …`.
    pub rules: Vec<String>,
}

/// The whole rule set of one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSet {
    /// The family.
    pub family: Family,
    /// The nat table.
    pub nat: TableRules,
    /// The filter table.
    pub filter: TableRules,
}

impl RuleSet {
    /// The rules of `table`.
    pub fn table(&self, table: Table) -> &TableRules {
        match table {
            Table::Nat => &self.nat,
            Table::Filter => &self.filter,
        }
    }

    /// The `iptables-restore --noflush` input for `table`: header, chain
    /// declarations, our rules, then `extra` lines (jump fixups), COMMIT.
    pub fn restore_text(&self, table: Table, extra: &[String]) -> String {
        let t = self.table(table);
        let mut out = format!("*{}\n", table.name());
        for chain in &t.chains {
            out.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for line in t.rules.iter().chain(extra) {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
        out
    }
}

/// A rule written only while its set has members: (set, table, chain,
/// protocol, match directions, target).
type SetRule = (
    KubeSet,
    Table,
    &'static str,
    Option<&'static str>,
    &'static str,
    &'static str,
);

/// kube-proxy's `ipsetWithIptablesChain`.
const SET_RULES: [SetRule; 12] = [
    (
        KubeSet::LoopBack,
        Table::Nat,
        "KUBE-POSTROUTING",
        None,
        "dst,dst,src",
        "MASQUERADE",
    ),
    (
        KubeSet::LoadBalancer,
        Table::Nat,
        "KUBE-SERVICES",
        None,
        "dst,dst",
        "KUBE-LOAD-BALANCER",
    ),
    (
        KubeSet::LoadBalancerLocal,
        Table::Nat,
        "KUBE-LOAD-BALANCER",
        None,
        "dst,dst",
        "RETURN",
    ),
    (
        KubeSet::NodePortLocalTcp,
        Table::Nat,
        "KUBE-NODE-PORT",
        Some("tcp"),
        "dst",
        "RETURN",
    ),
    (
        KubeSet::NodePortTcp,
        Table::Nat,
        "KUBE-NODE-PORT",
        Some("tcp"),
        "dst",
        "KUBE-MARK-MASQ",
    ),
    (
        KubeSet::NodePortLocalUdp,
        Table::Nat,
        "KUBE-NODE-PORT",
        Some("udp"),
        "dst",
        "RETURN",
    ),
    (
        KubeSet::NodePortUdp,
        Table::Nat,
        "KUBE-NODE-PORT",
        Some("udp"),
        "dst",
        "KUBE-MARK-MASQ",
    ),
    (
        KubeSet::NodePortLocalSctp,
        Table::Nat,
        "KUBE-NODE-PORT",
        Some("sctp"),
        "dst,dst",
        "RETURN",
    ),
    (
        KubeSet::NodePortSctp,
        Table::Nat,
        "KUBE-NODE-PORT",
        Some("sctp"),
        "dst,dst",
        "KUBE-MARK-MASQ",
    ),
    (
        KubeSet::LoadBalancerFw,
        Table::Filter,
        "KUBE-PROXY-FIREWALL",
        None,
        "dst,dst",
        "KUBE-SOURCE-RANGES-FIREWALL",
    ),
    (
        KubeSet::LoadBalancerSourceCidr,
        Table::Filter,
        "KUBE-SOURCE-RANGES-FIREWALL",
        None,
        "dst,dst,src",
        "RETURN",
    ),
    (
        KubeSet::LoadBalancerSourceIp,
        Table::Filter,
        "KUBE-SOURCE-RANGES-FIREWALL",
        None,
        "dst,dst,src",
        "RETURN",
    ),
];

/// All the rule set depends on besides the options: which sets have
/// members, and the load-balancer entries the node itself must not
/// reach. Callers that keep set members elsewhere (incrementally) build
/// this without a [`KubeSets`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RulesInput {
    /// The family.
    pub family: Family,
    /// Sets with at least one member.
    pub non_empty: BTreeSet<KubeSet>,
    /// `hash:ip,port` members for the KUBE-IPVS-OUT-FILTER DROP rules.
    pub lb_no_node_access: BTreeSet<Entry>,
}

impl RulesInput {
    /// The input `sets` gives.
    pub fn of(sets: &KubeSets) -> RulesInput {
        RulesInput {
            family: sets.family,
            non_empty: KubeSet::ALL
                .into_iter()
                .filter(|s| !sets.is_empty(*s))
                .collect(),
            lb_no_node_access: sets.lb_no_node_access.clone(),
        }
    }

    fn is_empty(&self, set: KubeSet) -> bool {
        !self.non_empty.contains(&set)
    }
}

/// Renders the rule set for `sets` (one family) with `cfg`.
pub fn render(sets: &KubeSets, cfg: &RulesConfig) -> Result<RuleSet, IptablesError> {
    render_input(&RulesInput::of(sets), cfg)
}

/// Renders the rule set for `sets` (one family's [`RulesInput`]) with
/// `cfg`.
pub fn render_input(sets: &RulesInput, cfg: &RulesConfig) -> Result<RuleSet, IptablesError> {
    if cfg.masquerade_bit > 31 {
        return Err(IptablesError::Config {
            field: "masquerade_bit",
            reason: format!("{} is not in 0..=31", cfg.masquerade_bit),
        });
    }
    if let LocalDetect::Cidr(net) = &cfg.local_detect
        && Family::of(&net.addr()) != sets.family
    {
        return Err(IptablesError::Config {
            field: "local_detect",
            reason: format!("cluster CIDR {net} is not {}", sets.family.name()),
        });
    }
    if cfg.local_detect == LocalDetect::NodeCidr {
        return Err(IptablesError::Config {
            field: "local_detect",
            reason: "NodeCIDR must be resolved to the node's pod CIDR first".into(),
        });
    }
    if let LocalDetect::BridgeInterface(name) | LocalDetect::InterfaceNamePrefix(name) =
        &cfg.local_detect
        && (name.is_empty() || name.len() > 15 || name.contains(char::is_whitespace))
    {
        return Err(IptablesError::Config {
            field: "local_detect",
            reason: format!("{name:?} is not an interface name"),
        });
    }
    for entry in &sets.lb_no_node_access {
        if !matches!(entry, Entry::IpPort(..)) || entry.family() != Some(sets.family) {
            return Err(IptablesError::Config {
                field: "lb_no_node_access",
                reason: format!("{entry} is not an {} ip,proto:port", sets.family.name()),
            });
        }
    }

    let family = sets.family;
    let name = |set: KubeSet| set.name(family);
    let comment = |set: KubeSet| format!("-m comment --comment \"{}\"", set.comment());
    // Go's `%#08x` pads the digits to 8: 0x00004000.
    let mark = format!("{:#010x}", 1u32 << cfg.masquerade_bit);
    let mut nat = Vec::new();
    let mut filter = Vec::new();

    let lo = match family {
        Family::Inet => "127.0.0.0/8",
        Family::Inet6 => "::1/128",
    };
    nat.push(format!("-A KUBE-SERVICES -s {lo} -j RETURN"));

    for (set, table, chain, proto, dirs, target) in SET_RULES {
        if sets.is_empty(set) {
            continue;
        }
        let proto = proto.map(|p| format!(" -p {p}")).unwrap_or_default();
        let line = format!(
            "-A {chain}{proto} {} -m set --match-set {} {dirs} -j {target}",
            comment(set),
            name(set)
        );
        match table {
            Table::Nat => nat.push(line),
            Table::Filter => filter.push(line),
        }
    }

    if !sets.is_empty(KubeSet::ClusterIp) {
        let base = format!(
            "-A KUBE-SERVICES {} -m set --match-set {}",
            comment(KubeSet::ClusterIp),
            name(KubeSet::ClusterIp)
        );
        nat.push(if cfg.masquerade_all {
            format!("{base} dst,dst -j KUBE-MARK-MASQ")
        } else if let Some(not_local) = cfg.local_detect.if_not_local() {
            format!("{base} dst,dst {not_local} -j KUBE-MARK-MASQ")
        } else {
            format!("{base} src,dst -j KUBE-MARK-MASQ")
        });
    }

    let external_ip_rules = |nat: &mut Vec<String>, base: &str| {
        nat.push(format!(
            "{base} -m physdev ! --physdev-is-in -m addrtype ! --src-type LOCAL -j ACCEPT"
        ));
        nat.push(format!("{base} -m addrtype --dst-type LOCAL -j ACCEPT"));
    };
    if !sets.is_empty(KubeSet::ExternalIp) {
        let base = format!(
            "-A KUBE-SERVICES {} -m set --match-set {} dst,dst",
            comment(KubeSet::ExternalIp),
            name(KubeSet::ExternalIp)
        );
        nat.push(format!("{base} -j KUBE-MARK-MASQ"));
        external_ip_rules(&mut nat, &base);
    }
    if !sets.is_empty(KubeSet::ExternalIpLocal) {
        let base = format!(
            "-A KUBE-SERVICES {} -m set --match-set {} dst,dst",
            comment(KubeSet::ExternalIpLocal),
            name(KubeSet::ExternalIpLocal)
        );
        external_ip_rules(&mut nat, &base);
    }

    nat.push("-A KUBE-SERVICES -m addrtype --dst-type LOCAL -j KUBE-NODE-PORT".into());
    nat.push("-A KUBE-LOAD-BALANCER -j KUBE-MARK-MASQ".into());
    filter.push("-A KUBE-SOURCE-RANGES-FIREWALL -j DROP".into());

    for entry in &sets.lb_no_node_access {
        if let Entry::IpPort(ip, proto, port) = entry {
            filter.push(format!(
                "-A KUBE-IPVS-OUT-FILTER -s {ip} -m ipvs --vaddr {ip} --vproto {proto} --vport {port} -j DROP"
            ));
        }
    }

    for set in [KubeSet::ClusterIp, KubeSet::LoadBalancer] {
        if !sets.is_empty(set) {
            nat.push(format!(
                "-A KUBE-SERVICES -m set --match-set {} dst,dst -j ACCEPT",
                name(set)
            ));
        }
    }

    filter.push(format!(
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {mark}/{mark} -j ACCEPT"
    ));
    filter.push(
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
            .into(),
    );
    filter.push(format!(
        "-A KUBE-NODE-PORT {} -m set --match-set {} dst -j ACCEPT",
        comment(KubeSet::HealthCheckNodePort),
        name(KubeSet::HealthCheckNodePort)
    ));
    for (set, dirs) in [
        (KubeSet::LoadBalancer, "dst,dst"),
        (KubeSet::ClusterIp, "dst,dst"),
        (KubeSet::ExternalIp, "dst,dst"),
        (KubeSet::ExternalIpLocal, "dst,dst"),
        (KubeSet::HealthCheckNodePort, "dst"),
    ] {
        filter.push(format!(
            "-A KUBE-IPVS-FILTER -m set --match-set {} {dirs} -j RETURN",
            name(set)
        ));
    }
    filter.push(format!(
        "-A KUBE-IPVS-FILTER -m conntrack --ctstate NEW -m set --match-set {} dst -j REJECT",
        name(KubeSet::IpvsIps)
    ));

    nat.push(format!(
        "-A KUBE-POSTROUTING -m mark ! --mark {mark}/{mark} -j RETURN"
    ));
    nat.push(format!("-A KUBE-POSTROUTING -j MARK --xor-mark {mark}"));
    let random = if cfg.random_fully {
        " --random-fully"
    } else {
        ""
    };
    nat.push(format!(
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE{random}"
    ));
    nat.push(format!("-A KUBE-MARK-MASQ -j MARK --or-mark {mark}"));

    let chains = |table: Table| {
        CHAINS
            .iter()
            .filter(|(t, _)| *t == table)
            .map(|(_, c)| *c)
            .collect()
    };
    Ok(RuleSet {
        family,
        nat: TableRules {
            chains: chains(Table::Nat),
            rules: nat,
        },
        filter: TableRules {
            chains: chains(Table::Filter),
            rules: filter,
        },
    })
}
