//! `lc-bench`: measures LaunchControl on this machine: enqueue (one at a time from 1 and
//! 32 producers, and in batches), drains with a list of worker-process counts (timed from
//! the first handler start, and from the workers' spawn beside it),
//! enqueue→handler-start latency at a list of steady rates, a 10-machine provision
//! fan-out, and recovery after a worker is SIGKILLed. It prints a table and one
//! `BENCH_JSON` line. With `--compare bullmq` the same workloads run on BullMQ in the
//! same run (see `peer`), each lc figure beside the peer's with the ratio and issue 10's
//! relative targets; alone, issue 5's absolute targets. Every figure comes from this run,
//! and every job it enqueues is checked to end `succeeded`. `scripts/bench.sh` gives it
//! a fresh database and Redis key prefix.

use std::time::Instant;

use anyhow::Result;
use chrono::Utc;
use clap::Parser;
use serde_json::{Value, json};

use crate::args::{Args, Section};
use crate::bench::Bench;
use crate::report::print_table;
use crate::rows::Row;
use crate::settings::settings;
use crate::stats::round;

mod args;
mod bench;
mod drain;
mod drain_floor;
mod enqueue;
mod fanout;
mod fleet;
mod fleet_check;
mod fleet_floor;
mod http;
mod latency;
mod peer;
mod pgbench;
mod procs;
mod recovery;
mod repeat;
mod report;
mod rows;
mod settings;
mod starts;
mod stats;
mod verify;

fn main() {
    let args = Args::parse();
    // The bench's own client (producers, HTTP client, latency producer) on as many
    // runtime threads as `--client-threads` (1 by default, like pgbench and the Node
    // peer): with a second thread on 2 cores, the handoffs between the threads cost
    // more than the work (see the README's benchmark section).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("lc-bench: cannot start the runtime: {err}");
            std::process::exit(2);
        }
    };
    runtime.block_on(bench_main(args));
}

async fn bench_main(args: Args) {
    // No traces: the benchmark measures the queue as it runs untraced.
    let _logs =
        lc_shared::telemetry::init(lc_shared::telemetry::LogFormat::Pretty, "warn", "lc-bench");
    match run(args).await {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(err) => {
            eprintln!("lc-bench: {err:#}");
            std::process::exit(2);
        }
    }
}

/// Runs every section; returns whether the run was sound (every job verified).
async fn run(args: Args) -> Result<bool> {
    let mut bench = Bench::connect(args).await?;
    let run_started = Instant::now();
    let mut out = serde_json::Map::new();
    out.insert("version".into(), json!(1));
    out.insert("started_at".into(), json!(Utc::now().to_rfc3339()));
    out.insert(
        "settings".into(),
        settings(&bench)
            .await
            .unwrap_or_else(|err| json!({"error": format!("{err:#}")})),
    );
    run_sections(&mut bench, &mut out).await;
    eprintln!("[bench] checking that every job succeeded");
    out.insert(
        "leftovers".into(),
        section(&mut bench, "leftovers", Bench::finish_leftovers).await,
    );
    let verification = section(&mut bench, "verify", Bench::verify).await;
    let sound = verification["ok"].as_bool().unwrap_or(false);
    out.insert("verification".into(), verification);
    out.insert(
        "bench_seconds".into(),
        json!(round(run_started.elapsed().as_secs_f64(), 1)),
    );
    out.insert("notes".into(), json!(bench.notes));
    out.insert(
        "worker_logs".into(),
        json!(bench.work_dir.display().to_string()),
    );

    print_table(&bench, &out);
    println!("BENCH_JSON {}", Value::Object(out));
    Ok(sound)
}

/// The sections `--only` and `--skip` leave, in the bench's order.
async fn run_sections(bench: &mut Bench, out: &mut serde_json::Map<String, Value>) {
    let sections = [
        (
            Section::Single,
            "1. enqueue one at a time",
            "single",
            "single_enqueue",
        ),
        (Section::Bulk, "2. bulk enqueue", "bulk", "bulk_enqueue"),
        (Section::Drain, "3. drain", "drain", "drain"),
        (Section::Latency, "4. latency", "latency", "latency"),
        (
            Section::Recovery,
            "6. recovery after SIGKILL",
            "recovery",
            "recovery",
        ),
        (Section::Fanout, "5. fan-out", "fanout", "fanout"),
        (
            Section::Http,
            "8. enqueue through lc serve (HTTP) beside the library",
            "http",
            "http",
        ),
        (
            Section::Fleet,
            "7. fleets: create, deploy, teardown under a provider limit",
            "fleet",
            "fleet",
        ),
    ];
    for (which, title, name, key) in sections {
        if !bench.wants(which) {
            continue;
        }
        let value = repeated(bench, which, title, name).await;
        out.insert(key.into(), value);
    }
}

/// Runs a section once, or `--repeat` times when it is a measuring one; then its
/// rows and JSON are the repetitions' medians (see `repeat`).
async fn repeated(bench: &mut Bench, which: Section, title: &str, name: &str) -> Value {
    let times = if which.repeats() {
        bench.args.repeat
    } else {
        1
    };
    let mut values = Vec::new();
    let mut rows = Vec::new();
    for repetition in 0..times {
        bench.repetition = repetition;
        if times > 1 {
            eprintln!("[bench] {title} (repetition {} of {times})", repetition + 1);
        } else {
            eprintln!("[bench] {title}");
        }
        let first_row = bench.rows.len();
        let value = match which {
            Section::Single => section(bench, name, Bench::single).await,
            Section::Bulk => section(bench, name, Bench::bulk).await,
            Section::Drain => section(bench, name, Bench::drains).await,
            Section::Latency => section(bench, name, Bench::latencies).await,
            Section::Recovery => section(bench, name, Bench::recovery).await,
            Section::Fanout => section(bench, name, Bench::fanout).await,
            Section::Http => section(bench, name, Bench::http).await,
            Section::Fleet => section(bench, name, Bench::fleet).await,
        };
        rows.push(bench.rows.split_off(first_row));
        values.push(value);
    }
    bench.repetition = 0;
    if times == 1 {
        bench.rows.extend(rows.into_iter().flatten());
        return values.pop().unwrap_or(Value::Null);
    }
    bench.rows.extend(repeat::summarise_rows(rows));
    repeat::summarise_json(values)
}

/// Runs one section; a failure is reported and the bench goes on.
async fn section<F>(bench: &mut Bench, name: &str, body: F) -> Value
where
    F: AsyncFnOnce(&mut Bench) -> Result<Value>,
{
    match body(bench).await {
        Ok(value) => value,
        Err(err) => {
            bench.note(format!("{name}: failed: {err:#}"));
            bench.rows.push(Row::failed(name, ""));
            json!({"error": format!("{err:#}")})
        }
    }
}
