//! The standard `process_*` metrics every Go Kubernetes component (so
//! kube-proxy) exports and node dashboards use: CPU seconds, memory, file
//! descriptors, start time and network bytes, read from `/proc` at each
//! scrape. A value that cannot be read is left out, as Go's process
//! collector does.

use std::fs;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The kernel's `USER_HZ` for `/proc/PID/stat` times (100 on every Linux
/// architecture, as Go's procfs also assumes).
const USER_HZ: f64 = 100.0;

/// A scrape's worth of `/proc/self` values.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ProcessSample {
    pub(crate) cpu_seconds: Option<f64>,
    pub(crate) open_fds: Option<f64>,
    pub(crate) max_fds: Option<f64>,
    pub(crate) virtual_memory_bytes: Option<f64>,
    pub(crate) virtual_memory_max_bytes: Option<f64>,
    pub(crate) resident_memory_bytes: Option<f64>,
    pub(crate) start_time_seconds: Option<f64>,
    pub(crate) network_receive_bytes: Option<f64>,
    pub(crate) network_transmit_bytes: Option<f64>,
}

impl ProcessSample {
    /// Reads this process's values.
    pub(crate) fn read() -> ProcessSample {
        let text = |path: &str| fs::read_to_string(path).ok();
        let mut s = ProcessSample::default();
        if let Some(stat) = text("/proc/self/stat") {
            let boot_time = text("/proc/stat").as_deref().and_then(boot_time);
            (s.cpu_seconds, s.start_time_seconds) = stat_times(&stat, boot_time);
        }
        if let Some(status) = text("/proc/self/status") {
            s.virtual_memory_bytes = status_kib(&status, "VmSize:").map(|k| k * 1024.0);
            s.resident_memory_bytes = status_kib(&status, "VmRSS:").map(|k| k * 1024.0);
        }
        if let Some(limits) = text("/proc/self/limits") {
            s.max_fds = soft_limit(&limits, "Max open files");
            s.virtual_memory_max_bytes = soft_limit(&limits, "Max address space");
        }
        s.open_fds = fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as f64);
        if let Some(netstat) = text("/proc/self/net/netstat") {
            s.network_receive_bytes = netstat_value(&netstat, "IpExt", "InOctets");
            s.network_transmit_bytes = netstat_value(&netstat, "IpExt", "OutOctets");
        }
        s
    }
}

/// `btime` of `/proc/stat`: the boot time in Unix seconds.
fn boot_time(stat: &str) -> Option<f64> {
    stat.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// CPU seconds (user + system) and the start time (Unix seconds, given
/// the boot time) from `/proc/self/stat`.
fn stat_times(stat: &str, boot_time: Option<f64>) -> (Option<f64>, Option<f64>) {
    // The command name is in parentheses and may hold spaces: fields are
    // counted after its closing parenthesis (field 3, the state, first).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return (None, None);
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    let cpu = match (field(14), field(15)) {
        (Some(user), Some(system)) => Some((user + system) / USER_HZ),
        _ => None,
    };
    let start = match (field(22), boot_time) {
        (Some(ticks), Some(boot)) => Some(boot + ticks / USER_HZ),
        _ => None,
    };
    (cpu, start)
}

/// A `NAME:   N kB` line of `/proc/self/status`, in KiB.
fn status_kib(status: &str, name: &str) -> Option<f64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The soft limit of a `/proc/self/limits` row; `unlimited` is the largest
/// 64-bit value, as Go reads it.
fn soft_limit(limits: &str, name: &str) -> Option<f64> {
    let rest = limits.lines().find_map(|l| l.strip_prefix(name))?;
    match rest.split_whitespace().next()? {
        "unlimited" => Some(u64::MAX as f64),
        v => v.parse().ok(),
    }
}

/// A value of `/proc/net/netstat`: a header line `PREFIX: NAME…` followed
/// by a value line `PREFIX: N…`.
fn netstat_value(netstat: &str, prefix: &str, name: &str) -> Option<f64> {
    let tag = format!("{prefix}:");
    let mut lines = netstat.lines().filter(|l| l.starts_with(&tag));
    let names = lines.next()?;
    let values = lines.next()?;
    let i = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(i)?.parse().ok()
}

/// Encodes [`ProcessSample::read`] at each scrape.
#[derive(Debug, Default)]
pub(crate) struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = ProcessSample::read();
        let counters = [
            (
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                s.cpu_seconds,
            ),
            (
                "process_network_receive_bytes",
                "Number of bytes received by the process over the network.",
                s.network_receive_bytes,
            ),
            (
                "process_network_transmit_bytes",
                "Number of bytes sent by the process over the network.",
                s.network_transmit_bytes,
            ),
        ];
        for (name, help, value) in counters {
            if let Some(v) = value {
                let metric = ConstCounter::new(v);
                metric.encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    metric.metric_type(),
                )?)?;
            }
        }
        let gauges = [
            (
                "process_open_fds",
                "Number of open file descriptors.",
                s.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                s.max_fds,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                s.virtual_memory_bytes,
            ),
            (
                "process_virtual_memory_max_bytes",
                "Maximum amount of virtual memory available in bytes.",
                s.virtual_memory_max_bytes,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                s.resident_memory_bytes,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                s.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(v) = value {
                let metric = ConstGauge::new(v);
                metric.encode(encoder.encode_descriptor(
                    name,
                    help,
                    None,
                    metric.metric_type(),
                )?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read() {
        let stat = "1234 (rvs proxy) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 4200 123456 789 ...";
        let (cpu, start) = stat_times(stat, Some(1_700_000_000.0));
        assert_eq!(cpu, Some(3.0));
        assert_eq!(start, Some(1_700_000_042.0));
        assert_eq!(boot_time("cpu  1 2 3\nbtime 1700000000\n"), Some(1.7e9));
        let status = "Name:\trvs-proxy\nVmSize:\t  20480 kB\nVmRSS:\t    512 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(512.0));
        assert_eq!(status_kib(status, "VmSize:"), Some(20480.0));
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n\
                      Max address space         unlimited            unlimited            bytes\n";
        assert_eq!(soft_limit(limits, "Max open files"), Some(1024.0));
        assert_eq!(
            soft_limit(limits, "Max address space"),
            Some(u64::MAX as f64)
        );
        let netstat = "TcpExt: SyncookiesSent X\nTcpExt: 0 1\nIpExt: InNoRoutes InOctets OutOctets\nIpExt: 0 1500 900\n";
        assert_eq!(netstat_value(netstat, "IpExt", "InOctets"), Some(1500.0));
        assert_eq!(netstat_value(netstat, "IpExt", "OutOctets"), Some(900.0));
        assert_eq!(netstat_value(netstat, "IpExt", "Missing"), None);
    }

    #[test]
    fn this_process_has_every_value() {
        let s = ProcessSample::read();
        assert!(s.cpu_seconds.is_some_and(|v| v >= 0.0), "{s:?}");
        assert!(s.start_time_seconds.is_some_and(|v| v > 1.0e9), "{s:?}");
        assert!(s.open_fds.is_some_and(|v| v >= 3.0), "{s:?}");
        assert!(s.max_fds.is_some(), "{s:?}");
        assert!(s.resident_memory_bytes.is_some_and(|v| v > 0.0), "{s:?}");
        assert!(s.virtual_memory_bytes.is_some_and(|v| v > 0.0), "{s:?}");
        assert!(s.virtual_memory_max_bytes.is_some(), "{s:?}");
    }
}
