//! The one-producer reference: `pgbench -M prepared -c 1 -j 1 -T 5` running lc's own
//! single-job insert ([`SINGLE_JOB_INSERT`], the job and its event in one statement)
//! against the bench database, in the same run, right after lc's one-producer enqueue.
//! One client committing one prepared statement at a time is what a perfect producer
//! would reach on this server; lc's one producer is reported as a share of it.
//!
//! The latency section runs the same script paced (`-R`, one client, each
//! transaction's time logged with `-l`) at its own rate, right after its run: what
//! one durable commit of the enqueue takes on this server at that pace, beside lc's
//! call → commit leg.
//!
//! The script is made from the statement's constant, so the two cannot drift: each
//! `$n` becomes a pgbench variable `:pn` (set with `-D` to what one noop job sends,
//! in text form), except the job ids (`$1::UUID[]`): pgbench cannot make a UUID, so
//! the server makes one per transaction, time-ordered like the producer's UUIDv7s
//! (PostgreSQL 15 has no `uuidv7()`), which costs the reference a few function calls
//! of CPU per commit. Its jobs go to their own queue and are deleted afterwards.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use lc_shared::state::Transition;
use lc_shared::store::SINGLE_JOB_INSERT;
use lc_shared::{JobKind, JobState, NewJob};
use serde_json::{Value, json};
use tokio::process::Command;

use crate::bench::Bench;
use crate::stats::{cpu_per_job, cpu_sample, cpu_split, percentiles, round};

/// The queue of the reference's jobs (deleted after the run).
pub(crate) const QUEUE: &str = "pgbench-reference";
/// How long pgbench runs.
pub(crate) const SECONDS: u64 = 5;
/// The job ids' parameter as the statement takes it.
const IDS_PARAM: &str = "$1::UUID[]";
/// One time-ordered id, made by the server: 48 bits of milliseconds, then a version
/// digit and random digits (as a UUIDv7 lays them out).
const ONE_ID: &str = "(lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::INT8), 12, '0') || '7' || substr(md5(random()::TEXT), 1, 19))::UUID";

/// The ids' array for `jobs` jobs per statement (one without the subquery, as the
/// one-producer reference always ran).
fn ids_expr(jobs: usize) -> String {
    if jobs == 1 {
        format!("ARRAY[{ONE_ID}]")
    } else {
        format!("ARRAY(SELECT {ONE_ID} FROM generate_series(1, {jobs}))")
    }
}

/// The pgbench script for `sql` inserting `jobs` jobs per statement: every `$n` a
/// variable `:pn`, `$1::UUID[]` the server-made ids.
pub(crate) fn script(sql: &str, jobs: usize) -> Result<String> {
    ensure!(sql.contains(IDS_PARAM), "the insert takes no {IDS_PARAM}");
    let sql = sql.replace(IDS_PARAM, &ids_expr(jobs));
    let mut out = String::with_capacity(sql.len() + 64);
    let mut chars = sql.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch != '$' {
            out.push(ch);
            continue;
        }
        let mut digits = String::new();
        while let Some(digit) = chars.peek().copied().filter(char::is_ascii_digit) {
            digits.push(digit);
            chars.next();
        }
        ensure!(!digits.is_empty(), "a '$' that is not a parameter");
        ensure!(digits != "1", "job ids used other than as {IDS_PARAM}");
        out.push_str(":p");
        out.push_str(&digits);
    }
    out.push_str(";\n");
    Ok(out)
}

/// The `-D name=value` definitions: what `jobs` noop jobs of `queue` in one statement
/// send for `$2`..`$15`, in PostgreSQL's text form (pgbench sends text).
pub(crate) fn definitions(queue: &str, jobs: usize) -> Vec<String> {
    let job = NewJob::new(JobKind::Noop, json!({})).with_queue(queue);
    let array = |element: String| format!("{{{}}}", vec![element; jobs].join(","));
    let quoted = |text: &str| {
        array(format!(
            "\"{}\"",
            text.replace('\\', "\\\\").replace('"', "\\\"")
        ))
    };
    let values = [
        (2, quoted(job.kind.as_str())),
        (3, quoted(&job.queue)),
        (4, array(job.priority.as_db().to_string())),
        (5, quoted(&job.payload.to_string())),
        (6, array(job.max_attempts.to_string())),
        (7, array("NULL".to_owned())),
        (8, array("NULL".to_owned())),
        (9, array("NULL".to_owned())),
        (10, array("t".to_owned())),
        (11, JobState::Queued.as_str().to_owned()),
        (12, Transition::Enqueue.label().to_owned()),
        (13, "{NULL}".to_owned()),
        (14, "{NULL}".to_owned()),
        // The traceparents: none (tracing off), an empty array as the producer sends.
        (15, "{}".to_owned()),
    ];
    values
        .into_iter()
        .map(|(index, value)| format!("p{index}={value}"))
        .collect()
}

/// The pgbench to run: `--pgbench`/`LC_PGBENCH`, else the newest PostgreSQL's, else
/// the one on the PATH.
fn find_pgbench(given: Option<&Path>) -> Option<PathBuf> {
    if let Some(path) = given {
        return Some(path.to_owned());
    }
    let mut installed: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin/pgbench"))
        .filter(|path| path.is_file())
        .collect();
    installed.sort_by_key(|path| {
        path.parent()
            .and_then(Path::parent)
            .and_then(Path::file_name)
            .and_then(|name| name.to_str())
            .and_then(|name| name.parse::<u32>().ok())
            .unwrap_or(0)
    });
    installed.pop().or_else(|| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("pgbench"))
                .find(|path| path.is_file())
        })
    })
}

/// "tps = 3690.123456 (without initial connection time)" and "number of transactions
/// actually processed: 18450" from pgbench's report.
fn parse_report(text: &str) -> Result<(f64, u64)> {
    let tps = text
        .lines()
        .find_map(|line| {
            let rest = line.trim().strip_prefix("tps = ")?;
            (!rest.contains("including")).then(|| rest.split_whitespace().next())?
        })
        .and_then(|number| number.parse::<f64>().ok())
        .ok_or_else(|| anyhow!("no tps line in pgbench's report"))?;
    let transactions = text
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("number of transactions actually processed: ")
        })
        .and_then(|rest| rest.split(['/', ' ']).next()?.parse::<u64>().ok())
        .ok_or_else(|| anyhow!("no transaction count in pgbench's report"))?;
    Ok((tps, transactions))
}

/// The commit times in pgbench's per-transaction logs (`-l`) of a paced run, in
/// milliseconds: each line is `client transaction time script epoch µs lag`, where
/// `time` counts from the transaction's scheduled start, so `time - lag` is the
/// transaction itself.
fn paced_commit_ms(logs: &[String]) -> Result<Vec<f64>> {
    let mut times = Vec::new();
    for text in logs {
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            ensure!(
                fields.len() >= 7,
                "a pgbench log line without its schedule lag: {line:?}"
            );
            let time: f64 = fields[2].parse().context("pgbench log: time")?;
            let lag: f64 = fields[6].parse().context("pgbench log: lag")?;
            times.push((time - lag) / 1000.0);
        }
    }
    Ok(times)
}

/// The per-transaction logs of a run with `--log-prefix=prefix` (one file per thread,
/// `prefix.<pid>[.<thread>]`), read and then removed.
fn read_logs(prefix: &Path) -> Result<Vec<String>> {
    let dir = prefix.parent().unwrap_or(Path::new("."));
    let stem = format!(
        "{}.",
        prefix.file_name().unwrap_or_default().to_string_lossy()
    );
    let mut logs = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = entry?.path();
        let named = path.file_name().unwrap_or_default().to_string_lossy();
        if named.starts_with(&stem) {
            logs.push(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("read {}", path.display()))?,
            );
            std::fs::remove_file(&path)?;
        }
    }
    ensure!(!logs.is_empty(), "pgbench wrote no log named {stem}*");
    Ok(logs)
}

impl Bench {
    /// Runs a reference: `clients` pgbench clients, each committing lc's insert of
    /// `jobs` jobs per statement; its commits and jobs per second, the jobs it made
    /// (counted, then deleted) and the CPU it took.
    pub(crate) async fn pgbench_reference(&mut self, clients: usize, jobs: usize) -> Result<Value> {
        self.pgbench_run(clients, jobs, None).await
    }

    /// The paced reference: one client committing lc's single-job insert at `rate`
    /// per second, with the p50 / p99 of its commits (`commit_ms`).
    pub(crate) async fn pgbench_paced(&mut self, rate: u64) -> Result<Value> {
        self.pgbench_run(1, 1, Some(rate)).await
    }

    async fn pgbench_run(
        &mut self,
        clients: usize,
        jobs: usize,
        rate: Option<u64>,
    ) -> Result<Value> {
        let pgbench = find_pgbench(self.args.pgbench.as_deref())
            .ok_or_else(|| anyhow!("pgbench not found (give --pgbench or LC_PGBENCH)"))?;
        let script_path = self.work_dir.join(format!("pgbench-insert-{jobs}.sql"));
        std::fs::write(&script_path, script(SINGLE_JOB_INSERT, jobs)?)
            .with_context(|| format!("write {}", script_path.display()))?;
        let threads = clients.min(2);
        let mut command = Command::new(&pgbench);
        command
            .args(["-n", "-M", "prepared", "-c"])
            .arg(clients.to_string())
            .arg("-j")
            .arg(threads.to_string())
            .arg("-T")
            .arg(SECONDS.to_string())
            .arg("-f")
            .arg(&script_path);
        // A paced run: its rate, and where pgbench logs each transaction.
        let paced = rate.map(|rate| (rate, self.work_dir.join(format!("pgbench-paced-{rate}"))));
        if let Some((rate, prefix)) = &paced {
            command
                .arg("-R")
                .arg(rate.to_string())
                .arg("-l")
                .arg(format!("--log-prefix={}", prefix.display()));
        }
        for definition in definitions(QUEUE, jobs) {
            command.arg("-D").arg(definition);
        }
        // The producer's sessions start at the configured isolation (the URL's own
        // options, if any, come after and win, as in the producer's pool).
        command
            .env(
                "PGOPTIONS",
                format!(
                    "-c default_transaction_isolation={}",
                    match self.args.connect.isolation.as_arg() {
                        "serializable" => "serializable",
                        _ => r"read\ committed",
                    }
                ),
            )
            .arg(&self.args.connect.database_url)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let cpu_before = cpu_sample(&[]);
        let output = tokio::time::timeout(Duration::from_secs(SECONDS + 60), command.output())
            .await
            .map_err(|_| anyhow!("pgbench did not finish"))?
            .with_context(|| format!("run {}", pgbench.display()))?;
        let cpu = cpu_split(&cpu_before, &cpu_sample(&[]), self.clk_tck);
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "pgbench exited with {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let (tps, transactions) = parse_report(&stdout)?;
        let made = self.remove_jobs_of(QUEUE).await?;
        // pgbench, reaped by now, is the bench's child.
        let made_by_pgbench = transactions * jobs as u64;
        let mut per_job = cpu_per_job(&cpu, made_by_pgbench as f64);
        if let Some(object) = per_job.as_object_mut()
            && let Some(pgbench) = object.remove("lc-bench-children")
        {
            object.insert("pgbench".to_owned(), pgbench);
        }
        ensure!(
            made == made_by_pgbench as i64,
            "pgbench reported {transactions} transactions of {jobs} jobs but {made} jobs are in {QUEUE}"
        );
        let paced = match &paced {
            Some((rate, prefix)) => {
                let logs = read_logs(prefix)?;
                let mut commits = paced_commit_ms(&logs)?;
                ensure!(
                    commits.len() as u64 == transactions,
                    "pgbench logged {} of its {transactions} transactions",
                    commits.len()
                );
                json!({"rate_per_s": rate, "commit_ms": percentiles(&mut commits)})
            }
            None => Value::Null,
        };
        let pace = rate
            .map(|rate| format!(" -R {rate} -l"))
            .unwrap_or_default();
        Ok(json!({
            "command": format!("pgbench -n -M prepared -c {clients} -j {threads} -T {SECONDS}{pace} -f {}", script_path.display()),
            "paced": paced,
            "pgbench": pgbench.display().to_string(),
            "clients": clients,
            "jobs_per_commit": jobs,
            "commits_per_s": round(tps, 0),
            "jobs_per_s": round(tps * jobs as f64, 0),
            "transactions": transactions,
            "jobs_made_then_deleted": made,
            "cpu": cpu,
            "cpu_us_per_job": per_job,
        }))
    }

    /// Deletes the jobs of `queue` and their events (the references' own, never
    /// meant to run); returns how many jobs there were.
    pub(crate) async fn remove_jobs_of(&self, queue: &str) -> Result<i64> {
        let client = self.store.client().await?;
        client
            .execute(
                "DELETE FROM job_events WHERE job_id IN (SELECT id FROM jobs WHERE queue = $1)",
                &[&queue],
            )
            .await?;
        let deleted = client
            .execute("DELETE FROM jobs WHERE queue = $1", &[&queue])
            .await?;
        Ok(i64::try_from(deleted)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A paced run's log: the commit is the logged time less the schedule lag.
    #[test]
    fn a_paced_commit_is_its_logged_time_less_its_lag() {
        let log = "0 0 540 0 1765130000 120000 40\n0 1 1500 0 1765130000 122000 1000\n".to_owned();
        let commits = paced_commit_ms(&[log]).expect("parsed");
        assert_eq!(commits, [0.5, 0.5]);
        let unpaced = "0 0 540 0 1765130000 120000\n".to_owned();
        assert!(
            paced_commit_ms(&[unpaced]).is_err(),
            "a line without its lag"
        );
    }

    /// Put back, the script is the producer's statement exactly.
    #[test]
    fn the_script_is_the_producers_single_job_insert() {
        let made = script(SINGLE_JOB_INSERT, 32).expect("script");
        let mut back = made
            .trim_end()
            .trim_end_matches(';')
            .replace(&ids_expr(32), IDS_PARAM);
        for index in (2..=15).rev() {
            back = back.replace(&format!(":p{index}"), &format!("${index}"));
        }
        assert_eq!(back, SINGLE_JOB_INSERT);
        assert!(!made.contains('$'), "{made}");
    }

    #[test]
    fn every_variable_of_the_script_is_defined() {
        let made = script(SINGLE_JOB_INSERT, 1).expect("script");
        let defined = definitions(QUEUE, 1);
        assert_eq!(defined.len(), 14);
        for definition in &defined {
            let name = definition.split('=').next().expect("name");
            assert!(made.contains(&format!(":{name}")), "{name} unused");
        }
        // And the other way: a parameter the statement gains (say, a new column) needs
        // its value here, or pgbench stops at its first transaction.
        let mut rest = made.as_str();
        while let Some(at) = rest.find(":p") {
            let digits: String = rest[at + 2..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            rest = &rest[at + 2..];
            if digits.is_empty() {
                continue;
            }
            assert!(
                defined
                    .iter()
                    .any(|d| d.starts_with(&format!("p{digits}="))),
                "the script's :p{digits} has no value in definitions()"
            );
        }
        assert!(defined.contains(&"p3={\"pgbench-reference\"}".to_owned()));
        assert!(defined.contains(&"p5={\"{}\"}".to_owned()));
    }

    #[test]
    fn a_statement_of_many_jobs_repeats_each_value() {
        let defined = definitions(QUEUE, 3);
        assert!(defined.contains(&"p10={t,t,t}".to_owned()), "{defined:?}");
        assert!(
            defined.contains(&"p7={NULL,NULL,NULL}".to_owned()),
            "{defined:?}"
        );
        assert!(
            defined.contains(
                &"p3={\"pgbench-reference\",\"pgbench-reference\",\"pgbench-reference\"}"
                    .to_owned()
            ),
            "{defined:?}"
        );
        assert!(
            script(SINGLE_JOB_INSERT, 3)
                .expect("script")
                .contains("generate_series(1, 3)")
        );
        assert!(
            !script(SINGLE_JOB_INSERT, 1)
                .expect("script")
                .contains("generate_series")
        );
    }

    #[test]
    fn pgbench_15_reports_are_read() {
        let report = "transaction type: /tmp/x.sql\nscaling factor: 1\nquery mode: prepared\n\
            number of clients: 1\nnumber of threads: 1\nmaximum number of tries: 1\n\
            duration: 5 s\nnumber of transactions actually processed: 18450\n\
            number of failed transactions: 0 (0.000%)\nlatency average = 0.271 ms\n\
            initial connection time = 2.1 ms\ntps = 3690.123456 (without initial connection time)\n";
        assert_eq!(parse_report(report).expect("parsed"), (3690.123456, 18450));
        assert!(parse_report("nothing").is_err());
    }
}
