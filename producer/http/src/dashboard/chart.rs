//! A queue's throughput and failures as a small SVG chart, drawn on the server so
//! that the dashboard needs no charting code: one bar per bucket, succeeded jobs
//! upwards in green, dead jobs downwards in red, the totals in the title (what a
//! screen reader says, and what a pointer over the chart shows).

use std::fmt::Write as _;

use lc_producer::inspect::QueueThroughput;

/// The chart's size in CSS pixels.
const WIDTH: f64 = 240.0;
const HEIGHT: f64 = 48.0;
/// Height of the part above the axis (succeeded); the rest is for dead jobs.
const UP: f64 = 32.0;
const GREEN: &str = "#1a7f37";
const RED: &str = "#cf222e";
const AXIS: &str = "#8c959f";

/// Escapes text for an SVG (XML) text node or attribute.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// "60 minutes", "2 hours", "90 seconds": the window a chart spans.
fn span(secs: u64) -> String {
    match secs {
        s if s % 3600 == 0 => format!("{} hour{}", s / 3600, if s == 3600 { "" } else { "s" }),
        s if s % 60 == 0 => format!("{} minutes", s / 60),
        s => format!("{s} seconds"),
    }
}

/// The chart of one queue's series.
pub fn render(series: &QueueThroughput) -> String {
    let buckets = series.succeeded.len().max(1);
    let succeeded: i64 = series.succeeded.iter().sum();
    let dead: i64 = series.dead.iter().sum();
    let window = span(series.bucket_secs * buckets as u64);
    let title = escape(&format!(
        "queue {}: {succeeded} succeeded, {dead} dead in the last {window}",
        series.queue
    ));
    // Both directions share one scale, so a bar's height compares across them.
    let peak = series
        .succeeded
        .iter()
        .chain(series.dead.iter())
        .copied()
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let down = HEIGHT - UP - 1.0;
    let step = WIDTH / buckets as f64;
    let bar = (step - 1.0).max(1.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-labelledby="t"><title id="t">{title}</title>"#
    );
    let _ = write!(
        svg,
        r#"<line x1="0" y1="{UP}" x2="{WIDTH}" y2="{UP}" stroke="{AXIS}" stroke-width="1"/>"#
    );
    for (index, (&ok, &failed)) in series.succeeded.iter().zip(series.dead.iter()).enumerate() {
        let x = index as f64 * step;
        if ok > 0 {
            let h = (ok as f64 / peak * (UP - 1.0)).max(1.5);
            let _ = write!(
                svg,
                r#"<rect x="{x:.2}" y="{:.2}" width="{bar:.2}" height="{h:.2}" fill="{GREEN}"/>"#,
                UP - h
            );
        }
        if failed > 0 {
            let h = (failed as f64 / peak * down).max(1.5);
            let _ = write!(
                svg,
                r#"<rect x="{x:.2}" y="{:.2}" width="{bar:.2}" height="{h:.2}" fill="{RED}"/>"#,
                UP + 1.0
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(succeeded: Vec<i64>, dead: Vec<i64>) -> QueueThroughput {
        QueueThroughput {
            queue: "mail<&>".into(),
            bucket_secs: 60,
            succeeded,
            dead,
        }
    }

    #[test]
    fn bars_follow_the_counts_and_the_title_tells_the_totals() {
        let mut ok = vec![0; 60];
        let mut dead = vec![0; 60];
        ok[59] = 10;
        ok[0] = 5;
        dead[30] = 2;
        let svg = render(&series(ok, dead));
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{svg}"
        );
        assert!(svg.contains("<title id=\"t\">queue mail&lt;&amp;&gt;: 15 succeeded, 2 dead in the last 1 hour</title>"), "{svg}");
        assert_eq!(
            svg.matches(&format!("fill=\"{GREEN}\"")).count(),
            2,
            "{svg}"
        );
        assert_eq!(svg.matches(&format!("fill=\"{RED}\"")).count(), 1, "{svg}");
        // The newest bucket is the rightmost, and the biggest count the tallest bar.
        assert!(
            svg.contains(r#"<rect x="236.00" y="1.00" width="3.00" height="31.00""#),
            "{svg}"
        );
        assert!(svg.ends_with("</svg>"));
    }

    #[test]
    fn an_idle_queue_is_an_axis_alone() {
        let svg = render(&series(vec![0; 60], vec![0; 60]));
        assert!(!svg.contains("<rect"), "{svg}");
        assert!(svg.contains("0 succeeded, 0 dead"), "{svg}");
        assert_eq!(span(90), "90 seconds");
        assert_eq!(span(7200), "2 hours");
        assert_eq!(span(600), "10 minutes");
    }
}
