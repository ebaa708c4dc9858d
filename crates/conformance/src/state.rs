//! A node's state after a step: the guest's raw dump, read into sections
//! and normalised so that two nodes can be compared line by line.
//!
//! The guest prints each dump as `== SECTION` lines followed by what a
//! tool printed (see [`crate::script`]); [`State::parse`] turns one dump
//! into named [`Section`]s:
//!
//! | section | from | normalised |
//! |---|---|---|
//! | `ipvs` | `ipvsadm -Sn` | sorted |
//! | `ipvs-timeouts` | `ipvsadm -L --timeout` | as is |
//! | `ipsets` | `ipset save` | hash seeds (`initval`) dropped, sorted |
//! | `iptables-nat`, `iptables-filter`, `iptables-mangle`, `ip6tables-*`, `iptables-legacy` | `iptables-save -t TABLE` | comments and counters dropped; chains sorted, rules kept in their order within each chain |
//! | `addresses` | `ip -o addr` | interface indexes and lifetimes dropped, sorted |
//! | `links` | `ip -o link` | indexes and MAC addresses dropped, sorted |
//! | `sysctls` | `/proc/sys` | as is |
//! | `healthz`, `livez`, `hcnp/PORT` | an HTTP GET | status code, headers (names lower-cased; `date` and `content-length` dropped), the JSON body flattened to `path=value` with times replaced by their format |
//! | `listeners` | `netstat -ltnu` | protocol and local address, sorted |
//! | `metrics` | `GET /metrics` | the series' names, sorted |
//! | `proxy`, `converged` | the guest script | as is |
//!
//! Lines naming the harness's marker (see [`crate::harness`]) are dropped
//! everywhere.

use std::collections::BTreeMap;

use serde_json::Value;

/// Addresses of the harness's step marker, filtered out of every section.
pub const MARKER_ADDRESSES: [&str; 4] = [
    "10.96.255.254",
    "10.255.255.254",
    "fd00:96::fffe",
    "fd00:255::fffe",
];

/// One part of a node's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Section {
    /// Normalised lines.
    pub lines: Vec<String>,
    /// Whether the order of the lines matters (iptables rules within a
    /// chain); otherwise the lines are sorted.
    pub ordered: bool,
}

/// A node's normalised state after one step.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// The sections by name.
    pub sections: BTreeMap<String, Section>,
    /// How long the step took to converge (not compared).
    pub timing: String,
    /// The step's label as the guest printed it (not compared).
    pub label: String,
}

impl State {
    /// Reads one dump (the lines between the guest's dump markers). A
    /// section the guest marks unchanged (`== metrics =`) is taken from
    /// `previous`, the same node's state after the step before.
    pub fn parse(dump: &str, previous: Option<&State>) -> State {
        let mut raw: Vec<(String, Vec<&str>)> = Vec::new();
        for line in dump.lines() {
            if let Some(name) = line.strip_prefix("== ") {
                raw.push((name.trim().to_owned(), Vec::new()));
            } else if let Some((_, lines)) = raw.last_mut() {
                lines.push(line);
            }
        }
        let mut sections = BTreeMap::new();
        let mut timing = String::new();
        let mut label = String::new();
        for (name, lines) in raw {
            if name == "timing" {
                timing = lines.join(" ");
                continue;
            }
            if name == "label" {
                label = lines.join(" ");
                continue;
            }
            if let Some(same) = name.strip_suffix(" =") {
                if let Some(section) = previous.and_then(|p| p.sections.get(same)) {
                    sections.insert(same.to_owned(), section.clone());
                }
                continue;
            }
            let lines: Vec<&str> = lines
                .into_iter()
                .filter(|l| !MARKER_ADDRESSES.iter().any(|m| mentions(l, m)))
                .collect();
            let section = normalise(&name, &lines);
            let key = match name.strip_prefix("http ") {
                Some(rest) => rest.replace(' ', "/"),
                None => name,
            };
            sections.insert(key, section);
        }
        State {
            sections,
            timing,
            label,
        }
    }

    /// The lines of section `name` (empty when it is missing).
    pub fn lines(&self, name: &str) -> &[String] {
        self.sections
            .get(name)
            .map(|s| s.lines.as_slice())
            .unwrap_or_default()
    }
}

/// Whether `line` names the address `addr` (not as part of a longer one).
fn mentions(line: &str, addr: &str) -> bool {
    line.match_indices(addr).any(|(i, _)| {
        let before = &line[..i];
        let after = &line[i + addr.len()..];
        let digit = |c: char| c.is_ascii_digit();
        let longer_before = before.ends_with(|c: char| digit(c) || c == '.');
        let longer_after = after.starts_with(digit)
            || after
                .strip_prefix('.')
                .is_some_and(|r| r.starts_with(digit));
        !longer_before && !longer_after
    })
}

fn sorted(mut lines: Vec<String>) -> Section {
    lines.sort();
    Section {
        lines,
        ordered: false,
    }
}

fn normalise(name: &str, lines: &[&str]) -> Section {
    let owned = || lines.iter().map(|l| l.trim_end().to_owned()).collect();
    match name {
        "ipvs" | "sysctls" | "metrics" => sorted(
            lines
                .iter()
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect(),
        ),
        "ipsets" => sorted(
            lines
                .iter()
                .map(|l| strip_word_pair(l.trim(), "initval"))
                .filter(|l| !l.is_empty())
                .collect(),
        ),
        "addresses" => sorted(lines.iter().filter_map(|l| address(l)).collect()),
        "links" => sorted(lines.iter().filter_map(|l| link(l)).collect()),
        "listeners" => sorted(lines.iter().filter_map(|l| listener(l)).collect()),
        n if n.starts_with("iptables") || n.starts_with("ip6tables") => iptables(lines),
        n if n.starts_with("http ") => Section {
            lines: http(lines),
            ordered: false,
        },
        _ => Section {
            lines: owned(),
            ordered: false,
        },
    }
}

/// Drops `WORD VALUE` from a line of words.
fn strip_word_pair(line: &str, word: &str) -> String {
    let mut out = Vec::new();
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == word {
            words.next();
        } else {
            out.push(w);
        }
    }
    out.join(" ")
}

/// `2: eth0    inet 10.0.2.15/24 brd 10.0.2.255 scope global eth0\  valid_lft ...`
/// → `eth0 inet 10.0.2.15/24 brd 10.0.2.255 scope global eth0`.
fn address(line: &str) -> Option<String> {
    let line = line.split('\\').next()?;
    let mut words = line.split_whitespace();
    words.next()?; // the index
    let rest: Vec<&str> = words.collect();
    (!rest.is_empty()).then(|| rest.join(" "))
}

/// `3: kube-ipvs0: <BROADCAST,NOARP> mtu 1500 qdisc noop state DOWN ... link/ether MAC brd MAC`
/// → the same without the index and the MAC addresses.
fn link(line: &str) -> Option<String> {
    let mut words = line.split_whitespace();
    words.next()?;
    let mut out = Vec::new();
    let mut skip_next = false;
    for w in words {
        if skip_next {
            skip_next = false;
            continue;
        }
        if w == "\\" {
            continue;
        }
        let w = w.trim_end_matches('\\');
        out.push(w);
        if w.starts_with("link/") || w == "brd" || w == "permaddr" {
            skip_next = true;
        }
    }
    (!out.is_empty()).then(|| out.join(" "))
}

/// `tcp  0  0 127.0.0.1:10249  0.0.0.0:*  LISTEN` → `tcp 127.0.0.1:10249`.
fn listener(line: &str) -> Option<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        [proto, _, _, local, ..] if proto.starts_with("tcp") || proto.starts_with("udp") => {
            Some(format!("{proto} {local}"))
        }
        _ => None,
    }
}

/// iptables-save output: chains sorted, each chain's rules in order.
fn iptables(lines: &[&str]) -> Section {
    let mut chains: BTreeMap<String, String> = BTreeMap::new();
    let mut rules: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut other = Vec::new();
    for line in lines {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line == "COMMIT" || line.starts_with('*') {
            continue;
        }
        if let Some(decl) = line.strip_prefix(':') {
            let mut words = decl.split_whitespace();
            let chain = words.next().unwrap_or_default().to_owned();
            let policy = words.next().unwrap_or("-");
            chains.insert(chain.clone(), format!(":{chain} {policy}"));
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let chain = rule
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            rules.entry(chain).or_default().push(line.to_owned());
        } else {
            other.push(line.to_owned());
        }
    }
    let mut out: Vec<String> = chains.into_values().collect();
    for (_, mut chain_rules) in rules {
        out.append(&mut chain_rules);
    }
    out.append(&mut other);
    Section {
        lines: out,
        ordered: true,
    }
}

/// An HTTP response: `code N`, `header NAME: VALUE`, `body PATH=VALUE`.
fn http(lines: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut iter = lines.iter().map(|l| l.trim_end_matches('\r'));
    let Some(status) = iter.next() else {
        return vec!["no answer".to_owned()];
    };
    match status.split_whitespace().nth(1) {
        Some(code) if status.starts_with("HTTP/") => out.push(format!("code {code}")),
        _ => {
            out.push(format!("no answer: {status}"));
            return out;
        }
    }
    let mut body = String::new();
    let mut in_body = false;
    for line in iter {
        if in_body {
            body.push_str(line);
            body.push('\n');
        } else if line.is_empty() {
            in_body = true;
        } else if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            if name != "date" && name != "content-length" {
                out.push(format!("header {name}: {}", value.trim()));
            }
        }
    }
    let body = body.trim();
    match serde_json::from_str::<Value>(body) {
        Ok(json) => flatten("body", &json, &mut out),
        Err(_) if body.is_empty() => {}
        Err(_) => out.push(format!("body (not JSON) {body}")),
    }
    out.sort();
    out
}

fn flatten(path: &str, value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if map.is_empty() {
                out.push(format!("{path}={{}}"));
            }
            for (k, v) in map {
                flatten(&format!("{path}.{k}"), v, out);
            }
        }
        Value::Array(items) => {
            if items.is_empty() {
                out.push(format!("{path}=[]"));
            }
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{path}[{i}]"), v, out);
            }
        }
        Value::String(s) => out.push(format!("{path}={}", time_format(s).unwrap_or(s))),
        other => out.push(format!("{path}={other}")),
    }
}

/// A time stamp's format in place of its value: `<RFC 3339>` for
/// `2026-01-02T03:04:05.123Z`, `<Go time.String>` for
/// `2026-01-02 03:04:05.123 +0000 UTC`.
fn time_format(s: &str) -> Option<&'static str> {
    let b = s.as_bytes();
    let date = b.len() >= 19
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && b[13] == b':'
        && b[16] == b':';
    if !date {
        return None;
    }
    match b[10] {
        b'T' => Some("<RFC 3339>"),
        b' ' => Some("<Go time.String>"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DUMP: &str = "\
== ipvs
-A -t 10.96.0.1:443 -s rr
-A -t 10.96.255.254:1003 -s rr
-a -t 10.96.255.254:1003 -r 10.255.255.254:1003 -m -w 1
-A -t 10.96.0.10:80 -s rr
== ipsets
create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x65f3fe46
add KUBE-CLUSTER-IP 10.96.255.254,tcp:1003
add KUBE-CLUSTER-IP 10.96.0.1,tcp:443
== iptables-nat
# Generated by iptables-save v1.8.9 (nf_tables) on Sat Dec  5 07:52:14 2026
*nat
:PREROUTING ACCEPT [3:180]
:KUBE-SERVICES - [0:0]
:KUBE-MARK-MASQ - [0:0]
-A PREROUTING -j KUBE-SERVICES
-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-SERVICES -j ACCEPT
COMMIT
== addresses
2: eth0    inet 10.0.2.15/24 scope global eth0\\       valid_lft forever preferred_lft forever
3: kube-ipvs0    inet 10.96.255.254/32 scope global kube-ipvs0\\       valid_lft forever preferred_lft forever
3: kube-ipvs0    inet 10.96.0.1/32 scope global kube-ipvs0\\       valid_lft forever preferred_lft forever
== links
3: kube-ipvs0: <BROADCAST,NOARP> mtu 1500 qdisc noop state DOWN qlen 1000\\    link/ether 4a:1b:2c:3d:4e:5f brd ff:ff:ff:ff:ff:ff
== http healthz
HTTP/1.0 200 OK\r
Content-Type: application/json\r
Date: Sat, 05 Dec 2026 07:52:15 GMT\r
Content-Length: 283\r
\r
{\"lastUpdated\":\"2026-12-05T07:52:15.441624705Z\",\"nodeEligible\":true,\"status\":{\"IPv4\":{\"healthy\":true}}}
== http hcnp 30500
HTTP/1.0 503 Service Unavailable
== listeners
Active Internet connections (only servers)
Proto Recv-Q Send-Q Local Address           Foreign Address         State
tcp        0      0 127.0.0.1:10249         0.0.0.0:*               LISTEN
tcp        0      0 :::10256                :::*                    LISTEN
== metrics
kubeproxy_sync_proxy_rules_last_timestamp_seconds
== proxy
running
";

    #[test]
    fn a_dump_is_normalised() {
        let s = State::parse(DUMP, None);
        assert_eq!(
            s.lines("ipvs"),
            ["-A -t 10.96.0.10:80 -s rr", "-A -t 10.96.0.1:443 -s rr"]
        );
        assert_eq!(
            s.lines("ipsets"),
            [
                "add KUBE-CLUSTER-IP 10.96.0.1,tcp:443",
                "create KUBE-CLUSTER-IP hash:ip,port family inet hashsize 1024 maxelem 65536 bucketsize 12",
            ]
        );
        assert_eq!(
            s.lines("iptables-nat"),
            [
                ":KUBE-MARK-MASQ -",
                ":KUBE-SERVICES -",
                ":PREROUTING ACCEPT",
                "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
                "-A KUBE-SERVICES -s 127.0.0.0/8 -j RETURN",
                "-A KUBE-SERVICES -j ACCEPT",
                "-A PREROUTING -j KUBE-SERVICES",
            ]
        );
        assert!(s.sections["iptables-nat"].ordered);
        assert_eq!(
            s.lines("addresses"),
            [
                "eth0 inet 10.0.2.15/24 scope global eth0",
                "kube-ipvs0 inet 10.96.0.1/32 scope global kube-ipvs0"
            ]
        );
        assert_eq!(
            s.lines("links"),
            [
                "kube-ipvs0: <BROADCAST,NOARP> mtu 1500 qdisc noop state DOWN qlen 1000 link/ether brd"
            ]
        );
        assert_eq!(
            s.lines("healthz"),
            [
                "body.lastUpdated=<RFC 3339>",
                "body.nodeEligible=true",
                "body.status.IPv4.healthy=true",
                "code 200",
                "header content-type: application/json",
            ]
        );
        assert_eq!(s.lines("hcnp/30500"), ["code 503"]);
        assert_eq!(
            s.lines("listeners"),
            ["tcp 127.0.0.1:10249", "tcp :::10256"]
        );
        assert_eq!(s.lines("proxy"), ["running"]);
        let next = State::parse("== metrics =\n== timing\n3 s\n", Some(&s));
        assert_eq!(next.lines("metrics"), s.lines("metrics"));
        assert_eq!(next.timing, "3 s");
    }

    #[test]
    fn the_marker_is_matched_as_a_whole_address() {
        assert!(mentions("add S 10.96.255.254,tcp:1", "10.96.255.254"));
        assert!(mentions("-A -t 10.96.255.254:1003", "10.96.255.254"));
        assert!(!mentions("-A -t 10.96.255.2540:1", "10.96.255.254"));
        assert!(!mentions("-A -t 110.96.255.254:1", "10.96.255.254"));
        assert!(!mentions("10.96.255.254.1", "10.96.255.254"));
    }

    #[test]
    fn times_keep_only_their_format() {
        assert_eq!(time_format("2026-12-05T07:52:15.44Z"), Some("<RFC 3339>"));
        assert_eq!(
            time_format("2026-12-05 07:52:49.874221211 +0000 UTC"),
            Some("<Go time.String>")
        );
        assert_eq!(time_format("default"), None);
    }
}
