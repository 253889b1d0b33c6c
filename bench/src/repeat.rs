//! `--repeat N`: each measuring section runs N times, one repetition after the other
//! (within each, lc then the peer, as always), and the report shows the medians with
//! their ranges. Rows with numbers get "median (min–max)" and their ratio is the median
//! of the repetitions' ratios (each ratio comes from figures measured side by side, so
//! it is steadier on a shared machine than a ratio of medians); text rows show each
//! repetition's text when they differ. The section's JSON keeps its usual shape with
//! every number the median of the repetitions', and the raw repetitions beside it.

use serde_json::{Value, json};

use crate::rows::{Numbers, Row};

/// The median of `values` (the mean of the middle two for an even count).
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    }
}

/// One row per figure from the rows of each repetition (figures in the order they
/// first appeared).
pub(crate) fn summarise_rows(repetitions: Vec<Vec<Row>>) -> Vec<Row> {
    let mut figures: Vec<String> = Vec::new();
    for rows in &repetitions {
        for row in rows {
            if !figures.contains(&row.figure) {
                figures.push(row.figure.clone());
            }
        }
    }
    figures
        .into_iter()
        .map(|figure| {
            let rows: Vec<&Row> = repetitions
                .iter()
                .filter_map(|rows| rows.iter().find(|row| row.figure == figure))
                .collect();
            summarise(&figure, &rows, repetitions.len())
        })
        .collect()
}

fn summarise(figure: &str, rows: &[&Row], repetitions: usize) -> Row {
    let measured: Vec<&Row> = rows.iter().copied().filter(|row| !row.failed).collect();
    let first = rows[0];
    let figure = if measured.len() < repetitions {
        format!("{figure} [{} of {repetitions} measured]", measured.len())
    } else {
        figure.to_owned()
    };
    if measured.is_empty() {
        return Row::failed(figure, first.target.clone());
    }
    // Numbers in every measured repetition, of one shape: medians.
    let numbers: Option<Vec<&Numbers>> = measured.iter().map(|row| row.numbers.as_ref()).collect();
    if let Some(numbers) = numbers
        && numbers
            .iter()
            .all(|n| n.unit == numbers[0].unit && n.lc.len() == numbers[0].lc.len())
    {
        let unit = numbers[0].unit;
        let (lc_text, lc) = spread(unit, numbers.iter().map(|n| n.lc.clone()).collect());
        let peers: Option<Vec<Vec<f64>>> = numbers.iter().map(|n| n.peer.clone()).collect();
        let (peer_text, peer) = match peers {
            Some(peers) if peers.iter().all(|p| p.len() == peers[0].len()) => {
                let (text, medians) = spread(unit, peers);
                (text, Some(medians))
            }
            _ => (String::new(), None),
        };
        let ratios: Vec<f64> = numbers.iter().filter_map(|n| n.ratio).collect();
        let ratio = (ratios.len() == numbers.len()).then(|| median(&ratios));
        let summary = Numbers {
            unit,
            lc,
            peer,
            ratio,
            check: numbers[0].check,
        };
        let met = match summary.check {
            Some(check) => Some(check.met(&summary)),
            None => majority(&measured),
        };
        return Row {
            figure,
            measured: lc_text,
            peer: peer_text,
            ratio: ratio
                .map(|ratio| format!("{ratio:.2}x"))
                .unwrap_or_default(),
            target: first.target.clone(),
            met,
            failed: false,
            numbers: Some(summary),
        };
    }
    let joined = |text: fn(&Row) -> &str| {
        let mut texts: Vec<&str> = measured.iter().map(|row| text(row)).collect();
        texts.dedup();
        texts.join(" | ")
    };
    Row {
        figure,
        measured: joined(|row| &row.measured),
        peer: joined(|row| &row.peer),
        ratio: joined(|row| &row.ratio),
        target: first.target.clone(),
        met: majority(&measured),
        failed: false,
        numbers: None,
    }
}

/// "median (min–max)" per value, and the medians.
fn spread(unit: crate::rows::Unit, repetitions: Vec<Vec<f64>>) -> (String, Vec<f64>) {
    let width = repetitions[0].len();
    let column = |index: usize| -> Vec<f64> { repetitions.iter().map(|r| r[index]).collect() };
    let medians: Vec<f64> = (0..width).map(|i| median(&column(i))).collect();
    let mins: Vec<f64> = (0..width)
        .map(|i| column(i).into_iter().fold(f64::INFINITY, f64::min))
        .collect();
    let maxs: Vec<f64> = (0..width)
        .map(|i| column(i).into_iter().fold(f64::NEG_INFINITY, f64::max))
        .collect();
    (unit.spread(&medians, &mins, &maxs), medians)
}

/// Met when most repetitions met it; `None` when any had no verdict.
fn majority(rows: &[&Row]) -> Option<bool> {
    let verdicts: Option<Vec<bool>> = rows.iter().map(|row| row.met).collect();
    verdicts.map(|verdicts| verdicts.iter().filter(|met| **met).count() * 2 > verdicts.len())
}

/// A section's JSON over its repetitions: the first repetition's shape with every
/// number the median of the repetitions' (integers stay integers where all were),
/// plus `repeat` and the raw `repetitions`.
pub(crate) fn summarise_json(repetitions: Vec<Value>) -> Value {
    let mut out = median_json(&repetitions.iter().collect::<Vec<_>>());
    if let Value::Object(map) = &mut out {
        map.insert("repeat".into(), json!(repetitions.len()));
        map.insert(
            "summary".into(),
            json!("numbers are medians of the repetitions; see `repetitions`"),
        );
        map.insert("repetitions".into(), Value::Array(repetitions));
    }
    out
}

fn median_json(values: &[&Value]) -> Value {
    let first = values[0];
    match first {
        Value::Number(_) => {
            let numbers: Vec<f64> = values.iter().filter_map(|v| v.as_f64()).collect();
            if numbers.len() != values.len() {
                return first.clone();
            }
            let middle = median(&numbers);
            if values.iter().all(|v| v.is_i64()) && middle.fract() == 0.0 {
                json!(middle as i64)
            } else {
                json!((middle * 1000.0).round() / 1000.0)
            }
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| {
                    let same: Vec<&Value> = values.iter().filter_map(|v| v.get(key)).collect();
                    let merged = if same.len() == values.len() {
                        median_json(&same)
                    } else {
                        value.clone()
                    };
                    (key.clone(), merged)
                })
                .collect(),
        ),
        Value::Array(items) => {
            let arrays: Vec<&Vec<Value>> = values.iter().filter_map(|v| v.as_array()).collect();
            if arrays.len() != values.len() || arrays.iter().any(|a| a.len() != items.len()) {
                return first.clone();
            }
            Value::Array(
                (0..items.len())
                    .map(|index| median_json(&arrays.iter().map(|a| &a[index]).collect::<Vec<_>>()))
                    .collect(),
            )
        }
        _ => first.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::{Check, Unit};

    fn rate_row(lc: f64, peer: f64) -> Row {
        let numbers = Numbers {
            unit: Unit::JobsPerS,
            lc: vec![lc],
            peer: Some(vec![peer]),
            ratio: Some(lc / peer),
            check: Some(Check::RatioAtLeast(1.0)),
        };
        Row {
            figure: "drain".into(),
            measured: Unit::JobsPerS.text(&numbers.lc),
            peer: String::new(),
            ratio: String::new(),
            target: "≥ 1.0x".into(),
            met: Some(Check::RatioAtLeast(1.0).met(&numbers)),
            failed: false,
            numbers: Some(numbers),
        }
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn a_summary_row_shows_medians_ranges_and_the_median_ratio() {
        let rows = summarise_rows(vec![
            vec![rate_row(1000.0, 1000.0)],
            vec![rate_row(1200.0, 1000.0)],
            vec![rate_row(900.0, 1000.0)],
        ]);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].measured, "1,000 (900–1,200) jobs/s");
        assert_eq!(rows[0].peer, "1,000 (1,000–1,000) jobs/s");
        assert_eq!(rows[0].ratio, "1.00x");
        assert_eq!(rows[0].met, Some(true));
    }

    #[test]
    fn text_rows_show_each_differing_text_and_the_majority_verdict() {
        let text = |measured: &str, met: bool| Row {
            figure: "commits".into(),
            measured: measured.into(),
            peer: String::new(),
            ratio: String::new(),
            target: String::new(),
            met: Some(met),
            failed: false,
            numbers: None,
        };
        let rows = summarise_rows(vec![
            vec![text("1 / 0", true)],
            vec![text("2 / 0", false)],
            vec![text("2 / 0", false)],
        ]);
        assert_eq!(rows[0].measured, "1 / 0 | 2 / 0");
        assert_eq!(rows[0].met, Some(false));
    }

    #[test]
    fn json_numbers_become_medians_and_the_repetitions_are_kept() {
        let out = summarise_json(vec![
            json!({"jobs_per_s": 10, "cpu": {"pg": 0.5}, "queue": "a"}),
            json!({"jobs_per_s": 30, "cpu": {"pg": 0.7}, "queue": "b"}),
            json!({"jobs_per_s": 20, "cpu": {"pg": 0.6}, "queue": "c"}),
        ]);
        assert_eq!(out["jobs_per_s"], json!(20));
        assert_eq!(out["cpu"]["pg"], json!(0.6));
        assert_eq!(out["queue"], json!("a"));
        assert_eq!(out["repeat"], json!(3));
        assert_eq!(out["repetitions"].as_array().map(Vec::len), Some(3));
    }
}
