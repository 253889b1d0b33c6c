//! Printing for `lc`: aligned tables for people, JSON for scripts.

use chrono::{DateTime, Utc};
use comfy_table::{ContentArrangement, Table, presets};

/// Prints rows under headers, each column as wide as its widest cell, two spaces apart,
/// no borders (the layout the README shows).
pub fn table(headers: &[&str], rows: &[Vec<String>]) {
    for line in layout(headers, rows) {
        println!("{line}");
    }
}

fn layout(headers: &[&str], rows: &[Vec<String>]) -> Vec<String> {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(headers.to_vec())
        .add_rows(rows.iter().cloned());
    for column in table.column_iter_mut() {
        column.set_padding((0, 2));
    }
    table
        .lines()
        .map(|line| line.trim_end().to_owned())
        .collect()
}

pub fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// "3s", "4m 10s", "2h 5m", "3days 5h": how long ago or how long, to two units.
pub fn age(seconds: f64) -> String {
    lc_shared::duration::format_age(seconds)
}

pub fn since(at: DateTime<Utc>) -> String {
    age((Utc::now() - at).num_milliseconds() as f64 / 1000.0)
}

pub fn opt<T: ToString>(value: &Option<T>) -> String {
    value
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_else(|| "-".to_owned())
}

/// First line of a text, cut to `max` characters.
pub fn short(text: &str, max: usize) -> String {
    let first = text.lines().next().unwrap_or_default();
    if first.chars().count() > max {
        format!("{}…", first.chars().take(max - 1).collect::<String>())
    } else {
        first.to_owned()
    }
}

/// A history row's change: "queued → running", "→ queued", or `other` for rows that
/// record no transition (log lines).
pub fn change<S: std::fmt::Display>(from: &Option<S>, to: &Option<S>, other: &str) -> String {
    match (from, to) {
        (Some(from), Some(to)) => format!("{from} → {to}"),
        (None, Some(to)) => format!("→ {to}"),
        _ => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::layout;

    #[test]
    fn tables_are_plain_columns_two_spaces_apart() {
        let rows = vec![
            vec![
                "default".to_owned(),
                "3".to_owned(),
                "queued → running".to_owned(),
            ],
            vec!["emails-long".to_owned(), "12".to_owned(), String::new()],
        ];
        assert_eq!(
            layout(&["QUEUE", "N", "CHANGE"], &rows),
            [
                "QUEUE        N   CHANGE",
                "default      3   queued → running",
                "emails-long  12",
            ]
        );
        assert_eq!(layout(&["ID", "STATE"], &[]), ["ID  STATE"]);
    }
}
