//! Table rows: lc's figure, the peer's, the ratio, the target, the verdict; the bench
//! collects them and the report prints them.

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
    /// The figure as numbers, for the summary of `--repeat` (median, min–max); `None`
    /// for rows that are text only.
    pub(crate) numbers: Option<Numbers>,
}

/// A row's figures as numbers: lc's, the peer's, lc's ratio to the peer's, and the
/// target as a rule that a summary of repetitions can apply to its medians.
#[derive(Clone, Debug)]
pub(crate) struct Numbers {
    pub(crate) unit: Unit,
    pub(crate) lc: Vec<f64>,
    pub(crate) peer: Option<Vec<f64>>,
    pub(crate) ratio: Option<f64>,
    /// `None`: the summary's verdict is the majority of the repetitions' verdicts.
    pub(crate) check: Option<Check>,
}

/// What a figure is, for printing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unit {
    /// "12,345 jobs/s"
    JobsPerS,
    /// "1.23x"
    Times,
    /// "0.95 / 3.10 / 12.00 ms" (several values: p50 / p99 / max)
    Ms,
    /// "93%" (a fraction)
    Percent,
    /// "48.1 / 25.0 µs" (CPU per job)
    Micros,
}

impl Unit {
    fn one(self, value: f64) -> String {
        match self {
            Unit::JobsPerS => thousands(value),
            Unit::Times => format!("{value:.2}"),
            Unit::Ms => format!("{value:.2}"),
            Unit::Percent => format!("{:.0}", value * 100.0),
            Unit::Micros => format!("{value:.1}"),
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Unit::JobsPerS => " jobs/s",
            Unit::Times => "x",
            Unit::Ms => " ms",
            Unit::Percent => "%",
            Unit::Micros => " µs",
        }
    }

    /// "12,345 jobs/s", "1.06 / 7.34 / 20.00 ms"
    pub(crate) fn text(self, values: &[f64]) -> String {
        let numbers: Vec<String> = values.iter().map(|value| self.one(*value)).collect();
        format!("{}{}", numbers.join(" / "), self.suffix())
    }

    /// Medians with their ranges: "12,345 (11,900–12,800) jobs/s".
    pub(crate) fn spread(self, medians: &[f64], mins: &[f64], maxs: &[f64]) -> String {
        let parts: Vec<String> = medians
            .iter()
            .zip(mins.iter().zip(maxs))
            .map(|(median, (min, max))| {
                format!(
                    "{} ({}–{})",
                    self.one(*median),
                    self.one(*min),
                    self.one(*max)
                )
            })
            .collect();
        format!("{}{}", parts.join(" / "), self.suffix())
    }
}

/// A target as a rule on a row's numbers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Check {
    /// lc's first value at least this.
    AtLeast(f64),
    /// lc's ratio to the peer (or to the reference) at least this.
    RatioAtLeast(f64),
}

impl Check {
    pub(crate) fn met(self, numbers: &Numbers) -> bool {
        match self {
            Check::AtLeast(bound) => numbers.lc.first().is_some_and(|value| *value >= bound),
            Check::RatioAtLeast(bound) => numbers.ratio.is_some_and(|ratio| ratio >= bound),
        }
    }
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
            numbers: None,
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
