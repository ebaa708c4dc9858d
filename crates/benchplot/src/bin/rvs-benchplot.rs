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
