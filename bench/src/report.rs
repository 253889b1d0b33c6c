//! The report: the printed table (rows from `rows`) with each section's details.

use serde_json::Value;

use crate::bench::Bench;
use crate::rows::{Row, verdict};

/// Prints the settings, the table, each section's details and the notes.
pub(crate) fn print_table(bench: &Bench, out: &serde_json::Map<String, Value>) {
    print_settings(&out["settings"]);
    print_rows(bench);
    print_enqueue_details(out);
    print_latency_details(out);
    print_fanout_details(out);
    print_drain_details(out);
    if !bench.notes.is_empty() {
        println!();
        println!("notes:");
        for note in &bench.notes {
            println!("  - {note}");
        }
    }
    println!();
    println!(
        "bench took {} s; worker logs in {}",
        out["bench_seconds"],
        bench.work_dir.display()
    );
}

fn print_settings(settings: &Value) {
    println!();
    println!("LaunchControl benchmark");
    println!(
        "machine   {} cores, {}, kernel {}",
        settings["machine"]["nproc"],
        settings["machine"]["cpu_model"].as_str().unwrap_or("?"),
        settings["machine"]["kernel"].as_str().unwrap_or("?")
    );
    let pg = &settings["postgres"];
    println!(
        "postgres  {} synchronous_commit={} fsync={} isolation={} wal_sync_method={}",
        pg["server_version"].as_str().unwrap_or("?"),
        pg["synchronous_commit"].as_str().unwrap_or("?"),
        pg["fsync"].as_str().unwrap_or("?"),
        pg["default_transaction_isolation"].as_str().unwrap_or("?"),
        pg["wal_sync_method"].as_str().unwrap_or("?"),
    );
    let redis = &settings["redis"];
    println!(
        "redis     {} appendonly={} appendfsync={} save='{}'",
        redis["redis_version"].as_str().unwrap_or("?"),
        redis["appendonly"].as_str().unwrap_or("?"),
        redis["appendfsync"].as_str().unwrap_or("?"),
        redis["save"].as_str().unwrap_or("?"),
    );
    println!(
        "build     {} (commit {})",
        settings["rustc"].as_str().unwrap_or("?"),
        settings["git_commit"].as_str().unwrap_or("?")
    );
    println!();
}

/// The table: one line per row, columns as wide as their widest cell.
fn print_rows(bench: &Bench) {
    let column = |text: fn(&Row) -> &str, title: &str| {
        bench
            .rows
            .iter()
            .map(|row| text(row).chars().count())
            .max()
            .unwrap_or(0)
            .max(title.chars().count())
    };
    let figure = column(|row| &row.figure, "figure");
    let measured = column(|row| &row.measured, "measured");
    let target = column(|row| &row.target, "target");
    let compared = bench.peer.is_some();
    let peer_title = format!("{} (same run)", bench.peer_name());
    let peer = if compared {
        column(|row| &row.peer, &peer_title)
    } else {
        0
    };
    let ratio = if compared {
        column(|row| &row.ratio, "ratio")
    } else {
        0
    };
    // Widths count characters ("≥" is one), which `{:width$}` pads by.
    let line = |row: [&str; 6]| {
        let mut text = format!("{:figure$}  {:>measured$}", row[0], row[1]);
        if compared {
            text.push_str(&format!("  {:>peer$}  {:>ratio$}", row[2], row[3]));
        }
        text.push_str(&format!("  {:target$}  {}", row[4], row[5]));
        println!("{}", text.trim_end());
    };
    line([
        "figure",
        "measured",
        &peer_title,
        "ratio",
        "target",
        "result",
    ]);
    println!(
        "{}",
        "-".repeat(figure + measured + peer + ratio + target + if compared { 18 } else { 12 })
    );
    for row in &bench.rows {
        line([
            &row.figure,
            &row.measured,
            &row.peer,
            &row.ratio,
            &row.target,
            verdict(row),
        ]);
    }
}

/// "machine busy 1.9 of 2 cores: lc-worker 0.8, postgres 0.9"
fn cpu_text(cpu: &Value) -> String {
    let procs = cpu["by_process"]
        .as_object()
        .map(|map| {
            map.iter()
                .filter(|(_, cores)| cores.as_f64().unwrap_or(0.0) > 0.0)
                .map(|(name, cores)| format!("{name} {cores}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    format!(
        "machine busy {} of {} cores: {procs}",
        cpu["machine_busy_cores"], cpu["machine_cores"]
    )
}

/// "postgres 48.1, lc-worker 25.0"
fn per_process(per_job: &serde_json::Map<String, Value>) -> String {
    // "other" is everything else on the machine (the report's CPU line shows it).
    per_job
        .iter()
        .filter(|(name, _)| name.as_str() != "other")
        .map(|(name, micros)| format!("{name} {micros}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_enqueue_details(out: &serde_json::Map<String, Value>) {
    for (section, label) in [
        ("single_enqueue", "enqueue one at a time"),
        ("bulk_enqueue", "bulk enqueue"),
    ] {
        let Some(runs) = out.get(section).and_then(|value| value["runs"].as_array()) else {
            continue;
        };
        for run in runs {
            let pg = &run["postgres"];
            println!();
            println!(
                "{label}, {} tasks: {} jobs/s; {}",
                run["concurrency"],
                run["jobs_per_s"],
                cpu_text(&run["cpu"])
            );
            println!(
                "  postgres: {} commits/job, {} rollbacks, {} WAL syncs ({} jobs/sync), {} WAL bytes/job",
                pg["commits_per_job"],
                pg["rollbacks"],
                pg["wal_syncs"],
                pg["jobs_per_wal_sync"],
                pg["wal_bytes_per_job"]
            );
            if let Some(per_job) = run["cpu_us_per_job"].as_object() {
                println!("  CPU per job (µs): {}", per_process(per_job));
            }
            for reference in run["pgbench_references"].as_array().into_iter().flatten() {
                println!(
                    "  pgbench reference (same statement, same server, just after): {} commits/s of {} job(s) = {} jobs/s; CPU per job (µs): {}; {}",
                    reference["commits_per_s"],
                    reference["jobs_per_commit"],
                    reference["jobs_per_s"],
                    reference["cpu_us_per_job"]
                        .as_object()
                        .map(per_process)
                        .unwrap_or_default(),
                    reference["command"].as_str().unwrap_or("")
                );
            }
        }
    }
}

fn print_latency_details(out: &serde_json::Map<String, Value>) {
    let latencies = out.get("latency").and_then(Value::as_object);
    for (rate, latency) in latencies.into_iter().flatten() {
        if latency.get("cpu").is_none() {
            continue;
        }
        println!();
        println!(
            "latency at {rate}/s: {} jobs at {}/s; enqueue call p50 {} / p99 {} ms; {}",
            latency["jobs"],
            latency["achieved_rate_per_s"],
            latency["enqueue_call_ms"]["p50"],
            latency["enqueue_call_ms"]["p99"],
            cpu_text(&latency["cpu"])
        );
        println!(
            "  postgres: {} commits/job, {} rollbacks",
            latency["postgres"]["commits_per_job"], latency["postgres"]["rollbacks"]
        );
        let legs = &latency["where_the_time_goes_ms"];
        if !legs.is_null() {
            println!(
                "  call->insert / insert->claim / claim->handler: median {} ms, slowest 1% mean {} ms",
                legs["all_jobs_median"], legs["slowest_1pct_mean"]
            );
        }
    }
}

fn print_fanout_details(out: &serde_json::Map<String, Value>) {
    if let Some(fanout) = out.get("fanout").filter(|value| value.get("cpu").is_some()) {
        println!();
        println!(
            "fan-out: timeline (s after `lc deploy create`): {}",
            fanout["timeline_s"]
        );
        println!("  {}", cpu_text(&fanout["cpu"]));
    }
}

fn print_drain_details(out: &serde_json::Map<String, Value>) {
    let drains = out.get("drain").and_then(Value::as_object);
    for (workers, drain) in drains.into_iter().flatten() {
        if !drain.is_object() || drain.get("error").is_some() {
            continue;
        }
        let label = format!("{workers} worker(s)");
        println!(
            "drain, {label}: {} jobs in {} s from the first handler start ({} s from spawn, {} s start-up), at most {} rows running; {}",
            drain["jobs"],
            drain["first_start_to_last_finish_s"],
            drain["spawn_to_last_finish_s"],
            drain["startup_s"],
            drain["max_running_rows_seen"],
            cpu_text(&drain["cpu"])
        );
        let pg = &drain["postgres"];
        println!(
            "  postgres: {} commits ({} jobs/commit), {} rollbacks, {} WAL syncs ({} jobs/sync), {} WAL bytes/job, {} rows updated/job",
            pg["commits"],
            pg["jobs_per_commit"],
            pg["rollbacks"],
            pg["wal_syncs"],
            pg["jobs_per_wal_sync"],
            pg["wal_bytes_per_job"],
            pg["rows_updated_per_job"]
        );
        if let Some(per_job) = drain["cpu_us_per_job"].as_object() {
            println!("  CPU per job (µs): {}", per_process(per_job));
        }
        let redis = &drain["redis"];
        if let Some(commands) = redis["commands"].as_object() {
            let text = commands
                .iter()
                .map(|(name, stats)| format!("{name} {}", stats["calls"]))
                .collect::<Vec<_>>()
                .join(", ");
            println!(
                "  redis: {} calls/job ({text}), redis CPU {} s",
                redis["calls_per_job"], redis["cpu_s"]
            );
        }
    }
}
