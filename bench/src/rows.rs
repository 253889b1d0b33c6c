//! Table rows: lc's figure, the peer's, the ratio, the target, the verdict; the bench
//! collects them and the report prints them.

use serde_json::Value;

pub(crate) struct Row {
    pub(crate) figure: String,
    pub(crate) measured: String,
    /// The peer's figure and lc's ratio to it (empty without `--compare`).
    pub(crate) peer: String,
    pub(crate) ratio: String,
    pub(crate) target: String,
    /// `Some(true)` MET, `Some(false)` MISSED, `None` no target or not measured.
    pub(crate) met: Option<bool>,
    /// The measurement itself failed (see the notes).
    pub(crate) failed: bool,
}

impl Row {
    pub(crate) fn failed(figure: impl Into<String>, target: impl Into<String>) -> Self {
        Row {
            figure: figure.into(),
            measured: "failed".to_owned(),
            peer: String::new(),
            ratio: String::new(),
            target: target.into(),
            met: None,
            failed: true,
        }
    }
}

/// A figure of the peer, measured beside one of lc's.
pub(crate) struct Compared {
    /// The peer's figure as shown, e.g. "10,300 jobs/s".
    pub(crate) text: String,
    /// lc's figure divided by the peer's.
    pub(crate) ratio: f64,
}

impl Compared {
    /// lc's `rate` beside the peer's `jobs_per_s`.
    pub(crate) fn rate(rate: f64, peer: &Value) -> Self {
        let peer_rate = peer["jobs_per_s"].as_f64().unwrap_or(0.0);
        Compared::new(rate, peer_rate, format!("{} jobs/s", thousands(peer_rate)))
    }

    pub(crate) fn new(lc: f64, peer: f64, text: String) -> Self {
        Compared {
            text,
            ratio: if peer > 0.0 { lc / peer } else { f64::NAN },
        }
    }
}

pub(crate) fn verdict(row: &Row) -> &'static str {
    match (row.failed, row.met) {
        (true, _) => "FAILED",
        (false, Some(true)) => "MET",
        (false, Some(false)) => "MISSED",
        (false, None) => "-",
    }
}

/// 12345.6 → "12,346"
pub(crate) fn thousands(value: f64) -> String {
    let rounded = value.round() as i64;
    let digits = rounded.abs().to_string();
    let mut out = String::new();
    for (index, ch) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    if rounded < 0 { format!("-{out}") } else { out }
}
