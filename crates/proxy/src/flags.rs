//! kube-proxy's command line: every flag `kube-proxy --help` of
//! [`KUBE_PROXY_VERSION`] prints, what rvs-proxy does with each, and
//! [`prepare`], the pass over the arguments that lets rvs-proxy's own
//! parser see only what it implements.
//!
//! kube-proxy parses with pflag: `--flag=value` and `--flag value`;
//! booleans as `--flag` or `--flag=true|false` (never `--flag false`);
//! lists comma-separated and repeatable; `-v=2`, `-v 2`, `-v2` and
//! `--v=2`; the last of a repeated single-valued flag wins. [`prepare`]
//! reads arguments that way and hands on:
//!
//! * flags rvs-proxy implements, as `--flag=value` (booleans as `--flag`
//!   when true, dropped when false), so its parser need not know pflag;
//! * flags kube-proxy has and rvs-proxy does not implement, dropped and
//!   listed in [`Prepared::ignored`] to be warned about once, by name;
//! * with `--config`, the flags kube-proxy itself ignores then (all but
//!   [`KubeProxyFlag::with_config`] ones: `--config`, `--cleanup`,
//!   `--init-only`, `--write-config-to`, `--master`,
//!   `--hostname-override`, the logging flags, `--help`, `--version`),
//!   dropped and listed too: kube-proxy v1.37's `Options.Complete`
//!   replaces its whole configuration with the file's
//!   (`o.config = c`), keeping only the logging flags
//!   (`copyLogsFromFlags`), `--hostname-override`
//!   (`processHostnameOverrideFlag`) and the fields outside the
//!   configuration (`--master`, `--cleanup`, …);
//! * anything else (rvs-proxy's own flags, mistakes), untouched.

use std::collections::BTreeMap;
use std::ffi::OsString;

/// The kube-proxy release whose flags this table lists.
pub const KUBE_PROXY_VERSION: &str = "v1.37.2";

/// What rvs-proxy does with a kube-proxy flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handling {
    /// rvs-proxy implements it.
    Implemented,
    /// It only matters to kube-proxy's iptables mode; its ipvs mode
    /// ignores it, and so does rvs-proxy.
    IptablesModeOnly,
    /// Accepted and not acted on; the text says what is left undone.
    NotImplemented(&'static str),
}

/// One flag of kube-proxy's command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KubeProxyFlag {
    /// The long name, without `--`.
    pub name: &'static str,
    /// The one-letter form (`-v`, `-h`).
    pub short: Option<char>,
    /// pflag's value type as `--help` prints it (`duration`, `ip`,
    /// `strings`, …); empty for booleans.
    pub value_type: &'static str,
    /// What rvs-proxy does with it.
    pub handling: Handling,
    /// kube-proxy honours it beside `--config`.
    pub with_config: bool,
    /// Values that ask for what rvs-proxy does anyway: given one of
    /// them, an unimplemented flag is not warned about.
    pub inert: &'static [&'static str],
    /// A plausible value (for tests and examples).
    pub sample: &'static str,
    /// Not printed by `--help` (deprecated), but still accepted.
    pub hidden: bool,
}

impl KubeProxyFlag {
    /// A boolean flag (pflag's `NoOptDefVal` of `true`).
    pub fn is_bool(&self) -> bool {
        self.value_type.is_empty()
    }

    /// A flag whose value is optional (`--version[=raw]`).
    pub fn optional_value(&self) -> bool {
        self.value_type.ends_with("[=true]")
    }
}

const fn flag(
    name: &'static str,
    value_type: &'static str,
    handling: Handling,
    sample: &'static str,
) -> KubeProxyFlag {
    KubeProxyFlag {
        name,
        short: None,
        value_type,
        handling,
        with_config: false,
        inert: &[],
        sample,
        hidden: false,
    }
}

const fn kept(mut f: KubeProxyFlag) -> KubeProxyFlag {
    f.with_config = true;
    f
}

const fn inert(mut f: KubeProxyFlag, values: &'static [&'static str]) -> KubeProxyFlag {
    f.inert = values;
    f
}

use Handling::{Implemented as YES, IptablesModeOnly as IPTABLES, NotImplemented as NO};

const CLIENT: &str = "the API client uses its own defaults";
const LOGGING: &str = "rvs-proxy logs text lines to stderr as they come";

/// Every flag of kube-proxy v1.37.2, in `--help`'s order, then the
/// hidden ones.
pub const KUBE_PROXY_FLAGS: &[KubeProxyFlag] = &[
    flag("bind-address", "ip", YES, "10.0.0.1"),
    flag("bind-address-hard-fail", "", YES, "true"),
    kept(flag("cleanup", "", YES, "true")),
    flag(
        "cluster-cidr",
        "string",
        YES,
        "10.244.0.0/16,fd00:10:244::/56",
    ),
    kept(flag(
        "config",
        "string",
        YES,
        "/var/lib/kube-proxy/config.conf",
    )),
    flag(
        "config-sync-period",
        "duration",
        NO("the API watches never resync"),
        "15m0s",
    ),
    flag("conntrack-max-per-core", "int32", YES, "32768"),
    flag("conntrack-min", "int32", YES, "131072"),
    flag("conntrack-tcp-be-liberal", "", YES, "true"),
    flag(
        "conntrack-tcp-timeout-close-wait",
        "duration",
        YES,
        "1h0m0s",
    ),
    flag(
        "conntrack-tcp-timeout-established",
        "duration",
        YES,
        "24h0m0s",
    ),
    flag("conntrack-udp-timeout", "duration", YES, "30s"),
    flag("conntrack-udp-timeout-stream", "duration", YES, "2m0s"),
    flag("detect-local-mode", "LocalMode", YES, "NodeCIDR"),
    flag(
        "feature-gates",
        "mapStringBool",
        NO("rvs-proxy has no feature gates"),
        "AllAlpha=false",
    ),
    flag("healthz-bind-address", "ipport", YES, "0.0.0.0:10256"),
    KubeProxyFlag {
        short: Some('h'),
        ..kept(flag("help", "", YES, "true"))
    },
    kept(flag("hostname-override", "string", YES, "node-a")),
    kept(flag("init-only", "", YES, "true")),
    flag("iptables-localhost-nodeports", "", IPTABLES, "false"),
    flag("iptables-masquerade-bit", "int32", YES, "14"),
    flag("iptables-min-sync-period", "duration", IPTABLES, "1s"),
    flag("iptables-sync-period", "duration", IPTABLES, "30s"),
    flag("ipvs-exclude-cidrs", "strings", YES, "10.0.0.0/8,fd00::/8"),
    flag("ipvs-min-sync-period", "duration", YES, "1s"),
    flag("ipvs-scheduler", "string", YES, "wlc"),
    flag("ipvs-strict-arp", "", YES, "true"),
    flag("ipvs-sync-period", "duration", YES, "1m"),
    flag("ipvs-tcp-timeout", "duration", YES, "15m"),
    flag("ipvs-tcpfin-timeout", "duration", YES, "2m"),
    flag("ipvs-udp-timeout", "duration", YES, "30s"),
    flag("kube-api-burst", "int32", NO(CLIENT), "10"),
    inert(
        flag(
            "kube-api-content-type",
            "string",
            NO("rvs-proxy reads JSON"),
            "application/json",
        ),
        &["application/json"],
    ),
    flag("kube-api-qps", "float32", NO(CLIENT), "5"),
    flag(
        "kubeconfig",
        "string",
        YES,
        "/var/lib/kube-proxy/kubeconfig.conf",
    ),
    kept(flag("log-flush-frequency", "duration", NO(LOGGING), "5s")),
    kept(inert(
        flag("log-json-info-buffer-size", "quantity", NO(LOGGING), "0"),
        &["0"],
    )),
    kept(inert(
        flag("log-json-split-stream", "", NO(LOGGING), "true"),
        &["false"],
    )),
    kept(inert(
        flag("log-text-info-buffer-size", "quantity", NO(LOGGING), "0"),
        &["0"],
    )),
    kept(inert(
        flag("log-text-split-stream", "", NO(LOGGING), "true"),
        &["false"],
    )),
    kept(inert(
        flag("logging-format", "string", NO(LOGGING), "text"),
        &["text"],
    )),
    flag("masquerade-all", "", YES, "true"),
    kept(flag("master", "string", YES, "https://10.0.0.1:6443")),
    flag("metrics-bind-address", "ipport", YES, "0.0.0.0:10249"),
    flag(
        "nodeport-addresses",
        "strings",
        YES,
        "primary,192.168.0.0/16",
    ),
    flag(
        "oom-score-adj",
        "int32",
        NO("set OOMScoreAdjust= or the pod's QoS instead"),
        "-999",
    ),
    flag("pod-bridge-interface", "string", YES, "cbr0"),
    flag("pod-interface-name-prefix", "string", YES, "veth"),
    inert(
        flag(
            "profiling",
            "",
            NO("rvs-proxy serves no /debug/pprof"),
            "true",
        ),
        &["false"],
    ),
    flag("proxy-mode", "ProxyMode", YES, "ipvs"),
    flag(
        "show-hidden-metrics-for-version",
        "string",
        NO("rvs-proxy has no hidden metrics"),
        "1.36",
    ),
    KubeProxyFlag {
        short: Some('v'),
        ..kept(flag("v", "Level", YES, "2"))
    },
    kept(flag("version", "version[=true]", YES, "true")),
    kept(flag(
        "vmodule",
        "pattern=N,...",
        NO("use RUST_LOG for per-module levels"),
        "proxier=4",
    )),
    kept(flag(
        "write-config-to",
        "string",
        YES,
        "/tmp/kube-proxy.yaml",
    )),
    KubeProxyFlag {
        hidden: true,
        ..flag(
            "healthz-port",
            "int32",
            NO("deprecated: use --healthz-bind-address"),
            "10256",
        )
    },
    KubeProxyFlag {
        hidden: true,
        ..flag(
            "metrics-port",
            "int32",
            NO("deprecated: use --metrics-bind-address"),
            "10249",
        )
    },
];

/// The flag named `name` (long form, without dashes).
pub fn lookup(name: &str) -> Option<&'static KubeProxyFlag> {
    KUBE_PROXY_FLAGS.iter().find(|f| f.name == name)
}

fn lookup_short(c: char) -> Option<&'static KubeProxyFlag> {
    KUBE_PROXY_FLAGS.iter().find(|f| f.short == Some(c))
}

/// Why a flag given on the command line is not acted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// rvs-proxy does not implement it (see [`Handling`]).
    Unimplemented(Handling),
    /// `--config` is given, and kube-proxy then ignores this flag.
    ConfigFile,
    /// `--version=vX.Y.Z` (kube-proxy reports that version instead).
    ReportedVersion,
}

/// A flag accepted and not acted on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ignored {
    /// The flag, as `--name`.
    pub flag: String,
    /// Why.
    pub why: Why,
}

impl std::fmt::Display for Ignored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let flag = &self.flag;
        match self.why {
            Why::Unimplemented(Handling::NotImplemented(what)) => {
                write!(
                    f,
                    "{flag}: kube-proxy's flag is accepted but not implemented by rvs-proxy ({what})"
                )
            }
            Why::Unimplemented(_) => write!(
                f,
                "{flag}: only kube-proxy's iptables mode uses it; the ipvs mode ignores it"
            ),
            Why::ConfigFile => write!(
                f,
                "{flag}: ignored because --config is given, as kube-proxy does; set it in the file"
            ),
            Why::ReportedVersion => {
                write!(f, "{flag}: rvs-proxy does not report another version")
            }
        }
    }
}

/// The arguments for rvs-proxy's own parser, and the flags left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Prepared {
    /// The program name, then the arguments to parse.
    pub args: Vec<OsString>,
    /// Flags accepted and not acted on, each once, in order.
    pub ignored: Vec<Ignored>,
}

/// Go's `strconv.ParseBool`, as pflag reads `--flag=value` of a boolean.
pub fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// One argument as pflag reads it.
enum Token {
    /// A kube-proxy flag, its value (if any) and the raw arguments.
    Known {
        spec: &'static KubeProxyFlag,
        value: Option<String>,
        raw: Vec<OsString>,
    },
    /// Anything else, passed on.
    Other(OsString),
}

fn tokenize(args: Vec<OsString>) -> Vec<Token> {
    let mut out = Vec::new();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let Some(text) = arg.to_str().map(str::to_owned) else {
            out.push(Token::Other(arg));
            continue;
        };
        if text == "--" {
            out.push(Token::Other(arg));
            out.extend(it.by_ref().map(Token::Other));
            break;
        }
        let (spec, inline) = if let Some(long) = text.strip_prefix("--") {
            let (name, value) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (long, None),
            };
            (lookup(name), value)
        } else if let Some(short) = text.strip_prefix('-') {
            let mut chars = short.chars();
            let spec = chars.next().and_then(lookup_short);
            let rest = chars.as_str();
            let rest = rest.strip_prefix('=').unwrap_or(rest);
            (spec, (!rest.is_empty()).then(|| rest.to_owned()))
        } else {
            (None, None)
        };
        let Some(spec) = spec else {
            out.push(Token::Other(arg));
            continue;
        };
        let mut raw = vec![arg];
        let value = match inline {
            Some(v) => Some(v),
            None if spec.is_bool() || spec.optional_value() => None,
            None => it.next().map(|next| {
                raw.push(next.clone());
                next.to_string_lossy().into_owned()
            }),
        };
        out.push(Token::Known { spec, value, raw });
    }
    out
}

fn ignore(flag: &KubeProxyFlag, why: Why, ignored: &mut Vec<Ignored>) {
    let flag = format!("--{}", flag.name);
    if !ignored.iter().any(|i| i.flag == flag) {
        ignored.push(Ignored { flag, why });
    }
}

/// Reads `args` (the program name first) as kube-proxy would and
/// returns what rvs-proxy's parser should see; see the module's text.
pub fn prepare(args: impl IntoIterator<Item = OsString>) -> Prepared {
    let mut args = args.into_iter();
    let mut prepared = Prepared {
        args: args.next().into_iter().collect(),
        ignored: Vec::new(),
    };
    let tokens = tokenize(args.collect());
    let config_given = tokens
        .iter()
        .any(|t| matches!(t, Token::Known { spec, .. } if spec.name == "config"));
    let mut bools: BTreeMap<&'static str, bool> = BTreeMap::new();
    let mut rest = Vec::new();
    for token in tokens {
        let (spec, value, raw) = match token {
            Token::Other(arg) => {
                rest.push(arg);
                continue;
            }
            Token::Known { spec, value, raw } => (spec, value, raw),
        };
        if spec.handling != Handling::Implemented {
            let mut given = value.as_deref().unwrap_or("true");
            if spec.is_bool() {
                given = match parse_go_bool(given) {
                    Some(true) => "true",
                    Some(false) => "false",
                    None => given,
                };
            }
            if !spec.inert.contains(&given) {
                ignore(
                    spec,
                    Why::Unimplemented(spec.handling),
                    &mut prepared.ignored,
                );
            }
            continue;
        }
        if config_given && !spec.with_config {
            ignore(spec, Why::ConfigFile, &mut prepared.ignored);
            continue;
        }
        if spec.optional_value() {
            match value.as_deref().unwrap_or("true") {
                "true" | "raw" => rest.push(format!("--{}", spec.name).into()),
                "false" => {}
                _ => ignore(spec, Why::ReportedVersion, &mut prepared.ignored),
            }
        } else if spec.is_bool() {
            match parse_go_bool(value.as_deref().unwrap_or("true")) {
                Some(on) => {
                    bools.insert(spec.name, on);
                }
                // Not a boolean: the parser says so.
                None => rest.extend(raw),
            }
        } else {
            match value {
                Some(v) => rest.push(format!("--{}={v}", spec.name).into()),
                // No value: the parser says it needs one.
                None => rest.extend(raw),
            }
        }
    }
    let flags = bools
        .into_iter()
        .filter(|(_, on)| *on)
        .map(|(name, _)| OsString::from(format!("--{name}")));
    // Before any `--`, after which nothing is a flag.
    let split = rest.iter().position(|a| a == "--").unwrap_or(rest.len());
    let tail = rest.split_off(split);
    prepared.args.extend(rest);
    prepared.args.extend(flags);
    prepared.args.extend(tail);
    prepared
}

/// A flag line of `kube-proxy --help`: name, one-letter form, value type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelpFlag {
    /// The long name.
    pub name: String,
    /// The one-letter form.
    pub short: Option<char>,
    /// The value type (empty for booleans).
    pub value_type: String,
}

/// The flags of a `kube-proxy --help` text, in order.
pub fn parse_help(text: &str) -> Vec<HelpFlag> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        let (short, rest) = match line.strip_prefix('-') {
            Some(s) if !s.starts_with('-') && s.get(1..3) == Some(", ") => {
                (s.chars().next(), &s[3..])
            }
            _ => (None, line),
        };
        let Some(rest) = rest.strip_prefix("--") else {
            continue;
        };
        let (head, _description) = rest.split_once("  ").unwrap_or((rest, ""));
        let (name, value_type) = head.split_once(' ').unwrap_or((head, ""));
        out.push(HelpFlag {
            name: name.to_owned(),
            short,
            value_type: value_type.to_owned(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prep(args: &[&str]) -> Prepared {
        prepare(
            std::iter::once("rvs-proxy")
                .chain(args.iter().copied())
                .map(OsString::from),
        )
    }

    fn args(p: &Prepared) -> Vec<String> {
        p.args[1..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn pflag_syntaxes_become_one_form() {
        let p = prep(&[
            "--ipvs-scheduler",
            "wlc",
            "--ipvs-sync-period=1m",
            "-v",
            "2",
            "--masquerade-all",
            "--ipvs-strict-arp=false",
            "--bind-address-hard-fail=T",
            "--manifests",
            "/m",
        ]);
        assert_eq!(
            args(&p),
            [
                "--ipvs-scheduler=wlc",
                "--ipvs-sync-period=1m",
                "--v=2",
                "--manifests",
                "/m",
                "--bind-address-hard-fail",
                "--masquerade-all",
            ]
        );
        assert!(p.ignored.is_empty());
        assert_eq!(args(&prep(&["-v=3"])), ["--v=3"]);
        assert_eq!(args(&prep(&["-v4"])), ["--v=4"]);
        assert_eq!(args(&prep(&["--v", "5"])), ["--v=5"]);
        // The last of a boolean's values wins.
        assert!(args(&prep(&["--masquerade-all", "--masquerade-all=0"])).is_empty());
        // Not a Go boolean: left for the parser to refuse.
        assert_eq!(
            args(&prep(&["--masquerade-all=yes"])),
            ["--masquerade-all=yes"]
        );
        // After `--` nothing is a flag.
        assert_eq!(
            args(&prep(&["--masquerade-all", "--", "--conntrack-min=1"])),
            ["--masquerade-all", "--", "--conntrack-min=1"]
        );
    }

    #[test]
    fn unimplemented_flags_are_dropped_and_listed_once() {
        let p = prep(&[
            "--kube-api-qps",
            "5",
            "--kube-api-qps=6",
            "--feature-gates=A=true,B=false",
            "--profiling=0",
            "--logging-format=text",
            "--iptables-sync-period=10s",
            "--log-json-split-stream",
            "--ipvs-scheduler=sh",
        ]);
        assert_eq!(args(&p), ["--ipvs-scheduler=sh"]);
        let flags: Vec<&str> = p.ignored.iter().map(|i| i.flag.as_str()).collect();
        assert_eq!(
            flags,
            [
                "--kube-api-qps",
                "--feature-gates",
                "--iptables-sync-period",
                "--log-json-split-stream"
            ]
        );
        assert!(
            p.ignored[0].to_string().contains("not implemented"),
            "{}",
            p.ignored[0]
        );
        assert!(
            p.ignored[2].to_string().contains("iptables mode"),
            "{}",
            p.ignored[2]
        );
    }

    #[test]
    fn beside_config_only_kube_proxys_survivors_stay() {
        let p = prep(&[
            "--ipvs-scheduler=wlc",
            "--config=/c",
            "--hostname-override=n",
            "--kubeconfig",
            "/k",
            "--master=https://m",
            "-v=4",
            "--cleanup",
            "--masquerade-all",
            "--dataplane=userspace",
        ]);
        assert_eq!(
            args(&p),
            [
                "--config=/c",
                "--hostname-override=n",
                "--master=https://m",
                "--v=4",
                "--dataplane=userspace",
                "--cleanup",
            ]
        );
        let flags: Vec<&str> = p.ignored.iter().map(|i| i.flag.as_str()).collect();
        assert_eq!(
            flags,
            ["--ipvs-scheduler", "--kubeconfig", "--masquerade-all"]
        );
        assert!(p.ignored.iter().all(|i| i.why == Why::ConfigFile));
    }

    #[test]
    fn version_forms() {
        assert_eq!(args(&prep(&["--version"])), ["--version"]);
        assert_eq!(args(&prep(&["--version=raw"])), ["--version"]);
        assert!(args(&prep(&["--version=false"])).is_empty());
        let p = prep(&["--version=v9.9.9"]);
        assert!(args(&p).is_empty());
        assert_eq!(p.ignored[0].why, Why::ReportedVersion);
    }

    #[test]
    fn help_lines_parse() {
        let text = "Flags:\n      --bind-address ip                 Overrides.\n      \
                    --cleanup                         If true\n  -h, --help       help\n  \
                    -v, --v Level   number\n      --version version[=true]     prints\n";
        let flags = parse_help(text);
        let got: Vec<(&str, Option<char>, &str)> = flags
            .iter()
            .map(|f| (f.name.as_str(), f.short, f.value_type.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("bind-address", None, "ip"),
                ("cleanup", None, ""),
                ("help", Some('h'), ""),
                ("v", Some('v'), "Level"),
                ("version", None, "version[=true]"),
            ]
        );
    }
}
