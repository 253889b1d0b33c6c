//! Durations as people write them on command lines, in environment variables and in
//! wire messages (`500ms`, `30s`, `5m`, `1h 30m`), and as operators read them (`4m
//! 10s`). A leaf: it imports nothing of the project, so every module may use it.

use std::time::Duration;

/// Parses a duration the way `humantime` reads it: `500ms`, `30s`, `5m`, `1h`, `1d`,
/// `1h 30m`. A bare number means milliseconds, as it always has here.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) {
        return text
            .parse()
            .map(Duration::from_millis)
            .map_err(|err| format!("invalid duration {text:?}: {err}"));
    }
    humantime::parse_duration(text)
        .map_err(|err| format!("invalid duration {text:?}: {err} (examples: 500ms, 30s, 5m, 1h)"))
}

/// "3s", "4m 10s", "2h 5m", "3days 5h": how long ago or how long, to two units (what
/// `lc` prints, and what the inspection API writes into its reasons).
pub fn format_age(seconds: f64) -> String {
    let seconds = seconds.max(0.0) as u64;
    let kept = match seconds {
        0..3600 => seconds,
        3600..86400 => seconds - seconds % 60,
        _ => seconds - seconds % 3600,
    };
    humantime::format_duration(Duration::from_secs(kept)).to_string()
}

#[cfg(test)]
mod tests {
    use super::{format_age, parse_duration};
    use std::time::Duration;

    #[test]
    fn ages_keep_two_units() {
        assert_eq!(format_age(0.0), "0s");
        assert_eq!(format_age(41.7), "41s");
        assert_eq!(format_age(720.0), "12m");
        assert_eq!(format_age(250.0), "4m 10s");
        assert_eq!(format_age(7_530.0), "2h 5m");
        assert_eq!(format_age(3.0 * 86_400.0 + 5.0 * 3600.0 + 59.0), "3days 5h");
        assert_eq!(format_age(-5.0), "0s");
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1s 500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration(" 30s "), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("100"), Ok(Duration::from_millis(100)));
        let err = parse_duration("soon").expect_err("not a duration");
        assert!(err.starts_with("invalid duration \"soon\""), "{err}");
        assert!(err.contains("examples: 500ms"), "{err}");
        let err = parse_duration("5 parsecs").expect_err("not a unit");
        assert!(err.contains("parsecs"), "{err}");
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-5s").is_err());
    }
}
