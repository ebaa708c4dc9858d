//! The scale benches' raw results: one CSV row per measured value,
//! `env,variant,services,round,metric,value`, where `env` is where it ran
//! (`vm`, `host`), `variant` the proxy and mode (`kube-proxy-iptables`,
//! `rvs-kernel`…), `metric` what was measured (`connect_p50_us`,
//! `cold_s`…) and `value` a number or `cap` (the wait hit the bench's cap:
//! larger than any measured value).

use std::collections::BTreeMap;

/// A CSV line that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    /// The header is not the expected one.
    #[error("line 1: the header is {found:?}, expected {expected:?}")]
    Header {
        /// What the file has.
        found: String,
        /// What it should be.
        expected: &'static str,
    },
    /// A row is malformed.
    #[error("line {line}: {field}: {problem} in {text:?}")]
    Row {
        /// 1-based line number.
        line: usize,
        /// The column.
        field: &'static str,
        /// What is wrong.
        problem: String,
        /// The line.
        text: String,
    },
}

/// The header every results file starts with.
pub const HEADER: &str = "env,variant,services,round,metric,value";

/// One measured value.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Where it ran (`vm`, `host`).
    pub env: String,
    /// Proxy and mode.
    pub variant: String,
    /// Services in the cluster.
    pub services: u64,
    /// The round (interleaved variants run once per round).
    pub round: u32,
    /// What was measured.
    pub metric: String,
    /// The value; `None` when it hit the cap.
    pub value: Option<f64>,
}

impl Row {
    /// The row as a CSV line (no newline).
    pub fn to_csv(&self) -> String {
        let value = self
            .value
            .map_or_else(|| "cap".to_owned(), |v| format!("{v}"));
        format!(
            "{},{},{},{},{},{value}",
            self.env, self.variant, self.services, self.round, self.metric
        )
    }
}

/// The median of one point over its rounds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Median {
    /// A measured median.
    Value(f64),
    /// The median round hit the cap.
    Capped,
}

/// Every row of a results file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    /// The rows, in file order.
    pub rows: Vec<Row>,
}

impl Table {
    /// Reads a results file's text.
    pub fn parse(text: &str) -> Result<Table, ResultsError> {
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, h)) if h.trim() == HEADER => {}
            found => {
                return Err(ResultsError::Header {
                    found: found.map(|(_, h)| h.to_owned()).unwrap_or_default(),
                    expected: HEADER,
                });
            }
        }
        let mut rows = Vec::new();
        for (i, text) in lines {
            let line = i + 1;
            if text.trim().is_empty() || text.starts_with('#') {
                continue;
            }
            let err = |field, problem: String| ResultsError::Row {
                line,
                field,
                problem,
                text: text.to_owned(),
            };
            let cols: Vec<&str> = text.split(',').map(str::trim).collect();
            let [env, variant, services, round, metric, value] = cols[..] else {
                return Err(err(
                    "columns",
                    format!("{} columns, expected 6", cols.len()),
                ));
            };
            let services = services
                .parse()
                .map_err(|e| err("services", format!("{e}")))?;
            let round = round.parse().map_err(|e| err("round", format!("{e}")))?;
            let value = match value {
                "cap" => None,
                v => Some(
                    v.parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite())
                        .ok_or_else(|| err("value", "not a number or `cap`".into()))?,
                ),
            };
            rows.push(Row {
                env: env.to_owned(),
                variant: variant.to_owned(),
                services,
                round,
                metric: metric.to_owned(),
                value,
            });
        }
        Ok(Table { rows })
    }

    /// The medians of `metric` in `env`: per variant (in order of first
    /// appearance), per number of Services (ascending).
    pub fn medians(&self, env: &str, metric: &str) -> Vec<(String, Vec<(u64, Median)>)> {
        let mut order: Vec<&str> = Vec::new();
        let mut points: BTreeMap<(&str, u64), Vec<Option<f64>>> = BTreeMap::new();
        for r in self
            .rows
            .iter()
            .filter(|r| r.env == env && r.metric == metric)
        {
            if !order.contains(&r.variant.as_str()) {
                order.push(&r.variant);
            }
            points
                .entry((&r.variant, r.services))
                .or_default()
                .push(r.value);
        }
        order
            .into_iter()
            .map(|variant| {
                let series = points
                    .iter()
                    .filter(|((v, _), _)| *v == variant)
                    .filter_map(|((_, n), values)| median(values).map(|m| (*n, m)))
                    .collect();
                (variant.to_owned(), series)
            })
            .collect()
    }
}

/// The median of `values`, a capped value counting as larger than any
/// measured one (the mean of the middle two for an even count).
pub fn median(values: &[Option<f64>]) -> Option<Median> {
    if values.is_empty() {
        return None;
    }
    let mut v: Vec<f64> = values.iter().map(|x| x.unwrap_or(f64::INFINITY)).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let m = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(if m.is_finite() {
        Median::Value(m)
    } else {
        Median::Capped
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "env,variant,services,round,metric,value\n\
        vm,a,100,1,cold_s,2\nvm,a,100,2,cold_s,4\nvm,a,100,3,cold_s,3\n\
        vm,b,100,1,cold_s,cap\nvm,b,100,2,cold_s,cap\nvm,b,100,3,cold_s,1\n\
        vm,a,1000,1,cold_s,9\nhost,a,100,1,cold_s,7\nvm,a,100,1,connect_p50_us,40\n";

    #[test]
    fn medians_per_variant_and_size_with_caps_the_largest() {
        let t = Table::parse(CSV).unwrap();
        assert_eq!(t.rows.len(), 9);
        let m = t.medians("vm", "cold_s");
        assert_eq!(
            m,
            vec![
                (
                    "a".to_owned(),
                    vec![(100, Median::Value(3.0)), (1000, Median::Value(9.0))]
                ),
                ("b".to_owned(), vec![(100, Median::Capped)]),
            ]
        );
        assert_eq!(
            t.medians("host", "cold_s")[0].1,
            vec![(100, Median::Value(7.0))]
        );
        assert_eq!(median(&[Some(1.0), Some(2.0)]), Some(Median::Value(1.5)));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn rows_round_trip_and_bad_ones_are_named() {
        let t = Table::parse(CSV).unwrap();
        let again = format!(
            "{HEADER}\n{}\n",
            t.rows
                .iter()
                .map(Row::to_csv)
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert_eq!(Table::parse(&again).unwrap(), t);
        let e = Table::parse("env,variant,services,round,metric,value\nvm,a,x,1,m,1\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("line 2: services: "), "{e}");
        let e = Table::parse("nope\n").unwrap_err().to_string();
        assert!(e.contains("header"), "{e}");
        let e = Table::parse(&format!("{HEADER}\nvm,a,1,1,m,NaN\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("value: not a number"), "{e}");
    }
}
