//! Measuring helpers: percentiles, PostgreSQL counter and WAL deltas, CPU per process
//! group from /proc, Redis INFO deltas, rounding and the wall clock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use serde_json::{Value, json};

pub(crate) fn round(value: f64, places: i32) -> f64 {
    let factor = 10f64.powi(places);
    (value * factor).round() / factor
}

pub(crate) fn percentiles(values: &mut [f64]) -> Value {
    if values.is_empty() {
        return json!({"n": 0, "p50": null, "p99": null, "max": null});
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        round(values[rank - 1], 2)
    };
    json!({
        "n": values.len(),
        "p50": at(0.50),
        "p90": at(0.90),
        "p99": at(0.99),
        "max": round(values[values.len() - 1], 2),
        "mean": round(values.iter().sum::<f64>() / values.len() as f64, 2),
    })
}

pub(crate) fn best_run(runs: &[Value]) -> Result<Value> {
    runs.iter()
        .max_by(|a, b| {
            a["jobs_per_s"]
                .as_f64()
                .unwrap_or(0.0)
                .total_cmp(&b["jobs_per_s"].as_f64().unwrap_or(0.0))
        })
        .cloned()
        .ok_or_else(|| anyhow!("no setting measured"))
}

/// Database-wide counters of the bench database and the cluster's WAL counters.
pub(crate) async fn pg_stats(client: &deadpool_postgres::Object) -> Result<BTreeMap<String, i64>> {
    let dialect = lc_shared::dialect::Dialect::detect(&***client).await?;
    if dialect == lc_shared::dialect::Dialect::CockroachDb {
        // No pg_stat_* views there: the node's transaction counters only.
        let row = client
            .query_one(dialect.transaction_counters(), &[])
            .await?;
        let mut out = BTreeMap::new();
        out.insert("xact_commit".to_owned(), row.get::<_, i64>(0));
        out.insert("xact_rollback".to_owned(), row.get::<_, i64>(1));
        return Ok(out);
    }
    // PostgreSQL only from here on (see lc_shared::dialect).
    // Make this backend's own pending counters visible (flushed when it goes idle).
    client
        .simple_query("SELECT pg_stat_force_next_flush()")
        .await?;
    let mut out = BTreeMap::new();
    let row = client
        .query_one(
            "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, tup_fetched,
                    tup_returned, blks_read, blks_hit
             FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await?;
    for (index, name) in [
        "xact_commit",
        "xact_rollback",
        "tup_inserted",
        "tup_updated",
        "tup_deleted",
        "tup_fetched",
        "tup_returned",
        "blks_read",
        "blks_hit",
    ]
    .iter()
    .enumerate()
    {
        out.insert((*name).to_owned(), row.get::<_, i64>(index));
    }
    let row = client
        .query_one(
            "SELECT wal_records, wal_fpi, wal_bytes::INT8, wal_write, wal_sync FROM pg_stat_wal",
            &[],
        )
        .await?;
    for (index, name) in [
        "wal_records",
        "wal_fpi",
        "wal_bytes",
        "wal_write",
        "wal_sync",
    ]
    .iter()
    .enumerate()
    {
        out.insert((*name).to_owned(), row.get::<_, i64>(index));
    }
    for row in client
        .query(
            "SELECT relname::TEXT, n_tup_ins, n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables
             WHERE relname IN ('jobs', 'job_events', 'workers')",
            &[],
        )
        .await?
    {
        let table: String = row.get(0);
        out.insert(format!("{table}.ins"), row.get(1));
        out.insert(format!("{table}.upd"), row.get(2));
        out.insert(format!("{table}.hot_upd"), row.get(3));
    }
    Ok(out)
}

pub(crate) fn pg_delta(
    before: &BTreeMap<String, i64>,
    after: &BTreeMap<String, i64>,
    jobs: f64,
    polls: f64,
) -> Value {
    let delta = |key: &str| {
        (after.get(key).copied().unwrap_or(0) - before.get(key).copied().unwrap_or(0)) as f64
    };
    // The bench's own polls and the stats reads are transactions too.
    let commits = delta("xact_commit") - polls - 4.0;
    json!({
        "commits": commits,
        "commits_per_job": round(commits / jobs, 4),
        "commits_per_1000_jobs": round(commits * 1000.0 / jobs, 1),
        "rollbacks_per_1000_jobs": round(delta("xact_rollback") * 1000.0 / jobs, 2),
        "jobs_per_commit": round(jobs / commits.max(1.0), 1),
        "rollbacks": delta("xact_rollback"),
        "rows_inserted_per_job": round(delta("tup_inserted") / jobs, 3),
        "rows_updated_per_job": round(delta("tup_updated") / jobs, 3),
        "jobs_updates": delta("jobs.upd"),
        "jobs_hot_updates": delta("jobs.hot_upd"),
        "job_events_inserted": delta("job_events.ins"),
        "wal_records_per_job": round(delta("wal_records") / jobs, 2),
        "wal_bytes_per_job": round(delta("wal_bytes") / jobs, 0),
        "wal_full_page_images": delta("wal_fpi"),
        "wal_syncs": delta("wal_sync"),
        "jobs_per_wal_sync": round(jobs / delta("wal_sync").max(1.0), 1),
        "note": "wal_* counters are cluster-wide; commits exclude the bench's own polls",
    })
}

/// Context switches of this process so far, over all its threads (voluntary and not):
/// each is a thread that went to sleep or was pushed off its core, so per job they show
/// how often the producer waits and wakes around one commit.
pub(crate) fn own_context_switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|line| line.contains("ctxt_switches:"))
                .filter_map(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok())
                .collect::<Vec<u64>>()
        })
        .sum()
}

/// utime+stime ticks per process, and the machine's busy/idle ticks.
pub(crate) struct CpuSample {
    pub(crate) busy: u64,
    pub(crate) idle: u64,
    /// pid → (command, own ticks, ticks of waited-for children)
    pub(crate) procs: HashMap<u32, (String, u64, u64)>,
    pub(crate) workers: HashSet<u32>,
}

pub(crate) fn cpu_sample(workers: &[u32]) -> CpuSample {
    let mut busy = 0;
    let mut idle = 0;
    if let Ok(stat) = std::fs::read_to_string("/proc/stat")
        && let Some(line) = stat.lines().next()
    {
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal
        for (index, value) in fields.iter().take(8).enumerate() {
            if index == 3 || index == 4 {
                idle += value;
            } else {
                busy += value;
            }
        }
    }
    let mut procs = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let comm = stat[open + 1..close].to_owned();
            let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            // rest[0] is field 3 (state): utime is field 14, stime field 15.
            let field = |index: usize| {
                rest.get(index)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            procs.insert(pid, (comm, field(11) + field(12), field(13) + field(14)));
        }
    }
    CpuSample {
        busy,
        idle,
        procs,
        workers: workers.iter().copied().collect(),
    }
}

/// Cores used per process group between two samples (processes alive at the second).
pub(crate) fn cpu_split(before: &CpuSample, after: &CpuSample, clk_tck: f64) -> Value {
    let own = std::process::id();
    let mut groups: BTreeMap<&str, u64> = BTreeMap::new();
    let mut others: BTreeMap<&str, u64> = BTreeMap::new();
    for (pid, (comm, ticks, child_ticks)) in &after.procs {
        let (was, children_was) = before
            .procs
            .get(pid)
            .map_or((0, 0), |(_, ticks, children)| (*ticks, *children));
        let used = ticks.saturating_sub(was);
        if after.workers.contains(pid) {
            // Processes the worker ran and reaped (docker-machine): gone by now.
            *groups.entry("lc-worker-children").or_default() +=
                child_ticks.saturating_sub(children_was);
        }
        if *pid == own {
            // Processes the bench ran and reaped (pgbench): gone by now.
            *groups.entry("lc-bench-children").or_default() +=
                child_ticks.saturating_sub(children_was);
        }
        let group = if after.workers.contains(pid) {
            "lc-worker"
        } else if *pid == own {
            "lc-bench"
        } else if comm.starts_with("postgres") {
            "postgres"
        } else if comm.starts_with("redis-server") {
            "redis-server"
        } else if comm == "lc" {
            // `lc serve` of the HTTP section.
            "lc-serve"
        } else if comm.starts_with("lc-bench-http") {
            // The HTTP section's floor server (lc-bench-http-floor).
            "http-floor"
        } else if comm == "pgbench" {
            // The one-producer reference's client.
            "pgbench"
        } else {
            "other"
        };
        *groups.entry(group).or_default() += used;
        if group == "other" && used > 0 {
            *others.entry(comm.as_str()).or_default() += used;
        }
    }
    let busy = after.busy.saturating_sub(before.busy) as f64;
    let idle = after.idle.saturating_sub(before.idle) as f64;
    let total = busy + idle;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    // /proc/stat counts all CPUs: wall seconds = total ticks / cores / clk_tck.
    let wall = if total > 0.0 {
        total / cores / clk_tck
    } else {
        0.0
    };
    let mut out = serde_json::Map::new();
    let mut seconds_by_group = serde_json::Map::new();
    for (group, ticks) in groups {
        let seconds = ticks as f64 / clk_tck;
        seconds_by_group.insert(group.to_owned(), json!(round(seconds, 3)));
        out.insert(
            group.to_owned(),
            json!(if wall > 0.0 {
                round(seconds / wall, 2)
            } else {
                0.0
            }),
        );
    }
    let mut others: Vec<(&str, u64)> = others.into_iter().collect();
    others.sort_by_key(|(_, ticks)| std::cmp::Reverse(*ticks));
    let others: serde_json::Map<String, Value> = others
        .iter()
        .take(4)
        .map(|(comm, ticks)| {
            (
                (*comm).to_owned(),
                json!(if wall > 0.0 {
                    round(*ticks as f64 / clk_tck / wall, 2)
                } else {
                    0.0
                }),
            )
        })
        .collect();
    json!({
        "unit": "cores (CPU seconds per wall second)",
        "wall_s": round(wall, 3),
        "top_other": Value::Object(others),
        "machine_busy_cores": if total > 0.0 { round(busy / total * cores, 2) } else { 0.0 },
        "machine_cores": cores,
        "by_process": Value::Object(out),
        "cpu_s_by_process": Value::Object(seconds_by_group),
    })
}

/// CPU microseconds per job of each process group of a [`cpu_split`], e.g.
/// `{"postgres": 48.1, "lc-worker": 25.0}` (groups that used none left out).
pub(crate) fn cpu_per_job(cpu: &Value, jobs: f64) -> Value {
    let groups = cpu["cpu_s_by_process"]
        .as_object()
        .map(|groups| {
            groups
                .iter()
                .filter_map(|(group, seconds)| {
                    let seconds = seconds.as_f64()?;
                    (seconds > 0.0 && jobs > 0.0)
                        .then(|| (group.clone(), json!(round(seconds * 1e6 / jobs, 1))))
                })
                .collect()
        })
        .unwrap_or_default();
    Value::Object(groups)
}

// ---------------------------------------------------------------------------- redis

/// A fresh connection for the bench's admin reads (INFO, CONFIG GET), apart from the
/// connections under test.
pub(crate) async fn redis_admin(url: &str) -> Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url).context("invalid redis URL")?;
    let connection = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .context("redis did not answer within 5 s")??;
    Ok(connection)
}

/// INFO (all sections) as key → value, plus `cmdstat_*` calls and usec.
pub(crate) async fn redis_info(url: &str) -> Result<BTreeMap<String, String>> {
    let mut connection = redis_admin(url).await?;
    let text: String = redis::cmd("INFO")
        .arg("all")
        .query_async(&mut connection)
        .await?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some((key, value)) = line.split_once(':') {
            if let Some(command) = key.strip_prefix("cmdstat_") {
                for part in value.split(',') {
                    if let Some((field, number)) = part.split_once('=')
                        && (field == "calls" || field == "usec")
                    {
                        out.insert(format!("cmd.{command}.{field}"), number.to_owned());
                    }
                }
            } else {
                out.insert(key.to_owned(), value.trim().to_owned());
            }
        }
    }
    Ok(out)
}

pub(crate) fn redis_delta(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
    jobs: f64,
) -> Value {
    let number = |map: &BTreeMap<String, String>, key: &str| {
        map.get(key)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let mut commands = serde_json::Map::new();
    let mut calls_total = 0.0;
    for key in after
        .keys()
        .filter(|key| key.starts_with("cmd.") && key.ends_with(".calls"))
    {
        let calls = number(after, key) - number(before, key);
        if calls <= 0.0 {
            continue;
        }
        let usec_key = key.replace(".calls", ".usec");
        let usec = number(after, &usec_key) - number(before, &usec_key);
        let name = key
            .trim_start_matches("cmd.")
            .trim_end_matches(".calls")
            .to_owned();
        calls_total += calls;
        commands.insert(
            name,
            json!({"calls": calls, "usec": usec, "per_job": round(calls / jobs, 4)}),
        );
    }
    let cpu = (number(after, "used_cpu_sys") + number(after, "used_cpu_user"))
        - (number(before, "used_cpu_sys") + number(before, "used_cpu_user"));
    json!({
        "commands": Value::Object(commands),
        "calls_per_job": round(calls_total / jobs, 4),
        "cpu_s": round(cpu, 3),
        "note": "counters of the whole Redis instance",
    })
}

/// Wall-clock time in microseconds since the Unix epoch (the workers' handler-start
/// lines use the same clock).
pub(crate) fn unix_micros() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_micros())
        .unwrap_or(0)
}

pub(crate) async fn command_line(
    program: &str,
    args: &[&str],
    dir: &std::path::Path,
) -> Option<String> {
    let output = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}
