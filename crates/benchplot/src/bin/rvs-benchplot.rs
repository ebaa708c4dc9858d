//! Draws the services_scale bench's figures from its CSV:
//! `rvs-benchplot --csv docs/bench/services_scale.csv --out docs/bench`.

#![allow(clippy::print_stdout)] // a command-line tool reports what it wrote

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use rvs_benchplot::{Figure, Series, Table, default_font, render};

/// Draws the services_scale bench's PNG figures from its CSV.
#[derive(Debug, Parser)]
struct Cli {
    /// The bench's results.
    #[arg(long, default_value = "docs/bench/services_scale.csv")]
    csv: PathBuf,
    /// Where the PNG files go.
    #[arg(long, default_value = "docs/bench")]
    out: PathBuf,
    /// A TrueType font (default: Debian's DejaVu Sans).
    #[arg(long)]
    font: Option<PathBuf>,
    /// Also draw the rebalancing bench's figures from its CSV (written by
    /// `cargo bench -p rvs-ebpf --bench rebalance`).
    #[arg(long)]
    rebalance_csv: Option<PathBuf>,
}

/// The rebalancing bench's figures: per protocol, requests per real
/// server over time, the dataplanes in rows and the policy (idle, off) in
/// columns, from the last round of each.
fn rebalance_figures(csv: &std::path::Path, out: &std::path::Path) -> anyhow::Result<()> {
    use rvs_benchplot::timeline::{Panel, Timeline, parse_windows, render_timeline, shares};
    let text =
        std::fs::read_to_string(csv).with_context(|| format!("reading {}", csv.display()))?;
    let windows = parse_windows(&text)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("reading {}", csv.display()))?;
    for (http, file) in [
        ("HTTP/1.1", "rebalance_http1.png"),
        ("HTTP/2", "rebalance_http2.png"),
    ] {
        let mut panels = Vec::new();
        for (dataplane, name) in [("userspace", "userspace"), ("ebpf", "eBPF")] {
            let round = windows
                .iter()
                .filter(|w| w.dataplane == dataplane && w.http == http)
                .map(|w| w.round)
                .max();
            let Some(round) = round else { continue };
            for (policy, caption) in [
                ("idle", "rebalance=idle"),
                ("off", "rebalance=off (control)"),
            ] {
                panels.push(Panel {
                    title: format!("{name}, {caption}, round {round}"),
                    lines: shares(&windows, dataplane, http, policy, round),
                });
            }
        }
        if panels.is_empty() {
            println!("{file}: no {http} rows, not drawn");
            continue;
        }
        let path = out.join(file);
        render_timeline(
            &Timeline {
                title: format!(
                    "Share of requests per real server, 2 scaled to 4 at 10 s ({http}, 40 keep-alive clients)"
                ),
                y_label: "share of requests (%)".into(),
                marker: Some(10.0),
                cols: 2,
                panels,
            },
            &path,
        )?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// (file, env, metric, title, y axis, log y)
const FIGURES: &[(&str, &str, &str, &str, &str, bool)] = &[
    (
        "services_scale_connect.png",
        "vm",
        "connect_p50_us",
        "New TCP connection through a Service, p50 (VM, TCG; compare shapes)",
        "connect() to first byte, p50 (µs)",
        false,
    ),
    (
        "services_scale_programming.png",
        "vm",
        "cold_s",
        "Proxy start to dataplane complete (VM, TCG; compare shapes)",
        "programming time (s)",
        true,
    ),
    (
        "services_scale_connect_host.png",
        "host",
        "connect_p50_us",
        "New TCP connection through a Service, p50 (host kernel)",
        "connect() to first byte, p50 (µs)",
        false,
    ),
    (
        "services_scale_programming_host.png",
        "host",
        "cold_s",
        "Proxy start to dataplane complete (host kernel)",
        "programming time (s)",
        true,
    ),
];

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let text = std::fs::read_to_string(&cli.csv)
        .with_context(|| format!("reading {}", cli.csv.display()))?;
    let table = Table::parse(&text).with_context(|| format!("reading {}", cli.csv.display()))?;
    default_font(cli.font.as_deref())?;
    std::fs::create_dir_all(&cli.out).with_context(|| format!("creating {}", cli.out.display()))?;
    if let Some(csv) = &cli.rebalance_csv {
        rebalance_figures(csv, &cli.out)?;
    }
    for &(file, env, metric, title, y_label, log_y) in FIGURES {
        let series: Vec<Series> = table
            .medians(env, metric)
            .into_iter()
            .map(|(label, points)| Series { label, points })
            .collect();
        if series.is_empty() {
            println!("{file}: no {env} {metric} rows, not drawn");
            continue;
        }
        let path = cli.out.join(file);
        render(
            &Figure {
                title: title.to_owned(),
                y_label: y_label.to_owned(),
                log_y,
                series,
            },
            &path,
        )?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
