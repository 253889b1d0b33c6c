//! `lc-bench`: measures LaunchControl on this machine: enqueue (one at a time from 1 and
//! 32 producers, and in batches), drains with a list of worker-process counts,
//! enqueue→handler-start latency at a list of steady rates, a 10-machine provision
//! fan-out, and recovery after a worker is SIGKILLed. It prints a table and one
//! `BENCH_JSON` line. With `--compare bullmq` the same workloads run on BullMQ in the
//! same run (see `peer`), each lc figure beside the peer's with the ratio and issue 10's
//! relative targets; alone, issue 5's absolute targets. Every figure comes from this run,
//! and every job it enqueues is checked to end `succeeded`. `scripts/bench.sh` gives it
//! a fresh database and Redis key prefix.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow, ensure};
use chrono::Utc;
use clap::Parser;
use lc_shared::migrate;
use lc_shared::queue::Hints;
use lc_shared::store::Store;
use serde_json::{Value, json};

use crate::args::{Args, Section};
use crate::bench::{Bench, observer_url};
use crate::peer::{Peer, PeerKind};
use crate::report::{Row, print_table};
use crate::settings::{command_line, settings};
use crate::stats::round;

mod args;
mod bench;
mod drain;
mod enqueue;
mod fanout;
mod latency;
mod peer;
mod procs;
mod recovery;
mod report;
mod settings;
mod stats;
mod verify;

#[tokio::main]
async fn main() {
    let args = Args::parse();
    lc_shared::telemetry::init(lc_shared::telemetry::LogFormat::Pretty, "warn");
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
    let repo_dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| anyhow!("cannot find the directory of lc-bench"))?,
    };
    for binary in ["lc", "lc-worker"] {
        ensure!(
            bin_dir.join(binary).exists(),
            "{} missing: build it first",
            bin_dir.join(binary).display()
        );
    }
    let work_dir = match &args.work_dir {
        Some(dir) => dir.clone(),
        None => repo_dir.join(".lc/bench").join(&args.connect.redis_prefix),
    };
    std::fs::create_dir_all(&work_dir)?;
    // The bench's own reads run at READ COMMITTED: as SERIALIZABLE readers they would
    // take part in (and be cancelled by) the workers' serialization conflicts.
    let store = Store::connect(&observer_url(&args.connect.database_url), 8)?;
    store
        .ping()
        .await
        .context("the bench database does not answer")?;
    let report = migrate::run(&store).await?;
    eprintln!(
        "[bench] database migrated ({} statements)",
        report.applied.len()
    );
    if args.log_statements {
        let client = store.client().await?;
        client
            .batch_execute(
                "DO $$ BEGIN
                   EXECUTE format('ALTER DATABASE %I SET log_min_duration_statement = 0', current_database());
                   EXECUTE format('ALTER DATABASE %I SET log_parameter_max_length = 0', current_database());
                 END $$",
            )
            .await?;
        eprintln!(
            "[bench] logging every statement of this database's new sessions (profiling run)"
        );
    }
    let queue = Hints::connect(&args.connect.redis_url, &args.connect.redis_prefix).await?;
    queue.ping().await.context("redis does not answer")?;
    let clk_tck = command_line("getconf", &["CLK_TCK"], &repo_dir)
        .await
        .and_then(|text| text.parse().ok())
        .unwrap_or(100.0);
    let peer = match args.compare {
        None => None,
        Some(PeerKind::Bullmq) => {
            let install_dir = args.bullmq_dir.clone().ok_or_else(|| {
                anyhow!("--compare bullmq needs --bullmq-dir (scripts/bench.sh sets it)")
            })?;
            Some(Peer::new(
                repo_dir.join("bench/bullmq/peer.mjs"),
                install_dir,
                &args.connect.redis_url,
                &args.connect.redis_prefix,
                &work_dir,
            )?)
        }
    };
    let mut bench = Bench {
        args,
        peer,
        store,
        queue,
        bin_dir,
        work_dir,
        repo_dir,
        clk_tck,
        enqueued: BTreeMap::new(),
        worker_seq: 0,
        rows: Vec::new(),
        notes: Vec::new(),
    };
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

    if bench.wants(Section::Single) {
        eprintln!("[bench] 1. enqueue one at a time");
        let value = section(&mut bench, "single", Bench::single).await;
        out.insert("single_enqueue".into(), value);
    }
    if bench.wants(Section::Bulk) {
        eprintln!("[bench] 2. bulk enqueue");
        let value = section(&mut bench, "bulk", Bench::bulk).await;
        out.insert("bulk_enqueue".into(), value);
    }
    if bench.wants(Section::Drain) {
        eprintln!("[bench] 3. drain");
        out.insert(
            "drain".into(),
            section(&mut bench, "drain", Bench::drains).await,
        );
    }
    if bench.wants(Section::Latency) {
        eprintln!("[bench] 4. latency");
        out.insert(
            "latency".into(),
            section(&mut bench, "latency", Bench::latencies).await,
        );
    }
    if bench.wants(Section::Recovery) {
        eprintln!("[bench] 6. recovery after SIGKILL");
        out.insert(
            "recovery".into(),
            section(&mut bench, "recovery", Bench::recovery).await,
        );
    }
    if bench.wants(Section::Fanout) {
        eprintln!("[bench] 5. fan-out");
        out.insert(
            "fanout".into(),
            section(&mut bench, "fanout", Bench::fanout).await,
        );
    }
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
