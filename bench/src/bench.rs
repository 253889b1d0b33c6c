//! The `Bench`: the run's connections, settings and collected rows and notes, and the
//! helpers every section uses (producers, queue preparation, waiting for jobs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use lc_producer::Producer;
use lc_shared::migrate;
use lc_shared::queue::Hints;
use lc_shared::store::Store;
use serde_json::Value;

use crate::args::{Args, Section};
use crate::peer::{Peer, PeerKind};
use crate::rows::{Check, Numbers, Row, Unit, verdict};
use crate::stats::command_line;

/// How often the bench looks at the database while waiting for jobs.
pub(crate) const POLL: Duration = Duration::from_millis(50);

pub(crate) struct Bench {
    pub(crate) args: Args,
    pub(crate) store: Store,
    pub(crate) queue: Hints,
    pub(crate) bin_dir: PathBuf,
    pub(crate) work_dir: PathBuf,
    pub(crate) repo_dir: PathBuf,
    pub(crate) clk_tck: f64,
    /// How many jobs the bench enqueued itself, per queue: all must end `succeeded`.
    pub(crate) enqueued: BTreeMap<String, u64>,
    pub(crate) worker_seq: usize,
    /// Which repetition of `--repeat` runs (0 for the first).
    pub(crate) repetition: u32,
    /// The peer of `--compare`, run beside each workload.
    pub(crate) peer: Option<Peer>,
    pub(crate) rows: Vec<Row>,
    pub(crate) notes: Vec<String>,
}

impl Bench {
    /// Checks the binaries, connects to the database (migrated) and Redis, and sets up
    /// the peer of `--compare`.
    pub(crate) async fn connect(args: Args) -> Result<Self> {
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
        for binary in ["lc", "lc-bench-worker", "lc-bench-http-floor"] {
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
        let store = observer_store(&args).await?;
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
        Ok(Bench {
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
            repetition: 0,
            rows: Vec::new(),
            notes: Vec::new(),
        })
    }

    /// A queue name of its own for each repetition (a drain checks that its queue holds
    /// exactly its jobs): `drain-1`, then `drain-1-r2`, ...
    pub(crate) fn queue_name(&self, base: &str) -> String {
        if self.repetition == 0 {
            base.to_owned()
        } else {
            format!("{base}-r{}", self.repetition + 1)
        }
    }

    pub(crate) fn wants(&self, section: Section) -> bool {
        (self.args.only.is_empty() || self.args.only.contains(&section))
            && !self.args.skip.contains(&section)
    }

    pub(crate) fn row(
        &mut self,
        figure: impl Into<String>,
        measured: impl Into<String>,
        target: impl Into<String>,
        met: Option<bool>,
    ) {
        let row = Row {
            figure: figure.into(),
            measured: measured.into(),
            peer: String::new(),
            ratio: String::new(),
            target: target.into(),
            met,
            failed: false,
            numbers: None,
        };
        self.push_row(row);
    }

    /// A row whose figures are numbers (lc's `values`, the peer's when there is one):
    /// printed in `unit`, summarised as medians under `--repeat`, its verdict from
    /// `check` (a ratio check takes lc's first value over the peer's).
    pub(crate) fn figure_row(
        &mut self,
        figure: impl Into<String>,
        unit: Unit,
        values: Vec<f64>,
        peer: Option<Vec<f64>>,
        target: impl Into<String>,
        check: Option<Check>,
    ) -> Option<bool> {
        let ratio = peer
            .as_ref()
            .and_then(|peer| match (values.first(), peer.first()) {
                (Some(lc), Some(peer)) if *peer > 0.0 => Some(lc / peer),
                _ => None,
            });
        let numbers = Numbers {
            unit,
            lc: values,
            peer,
            ratio,
            check,
        };
        self.numbers_row(figure, numbers, target, None)
    }

    /// A row of figures without a peer, a target or a verdict: what a reference
    /// measured, printed beside the figures it explains.
    pub(crate) fn info_row(&mut self, figure: impl Into<String>, unit: Unit, values: Vec<f64>) {
        self.figure_row(figure, unit, values, None, "", None);
    }

    /// `target` (a rate against the peer) as a share of what a reference reached
    /// (`reference`, per second), as the row `  the <what> against <peer> / <of>`;
    /// `above` says what a share over 100% means. Nothing without a target or a
    /// reference rate.
    pub(crate) fn target_share_row(
        &mut self,
        what: &str,
        of: &str,
        target: Option<f64>,
        reference: f64,
        above: &str,
    ) {
        let Some(target) = target.filter(|_| reference > 0.0) else {
            return;
        };
        let peer = self.peer_name();
        self.figure_row(
            format!("  the {what} against {peer} / {of}"),
            Unit::Percent,
            vec![target / reference],
            None,
            format!("> 100%: {above}"),
            None,
        );
    }

    /// A row of `numbers` (see [`Bench::figure_row`]); its verdict is `numbers.check`'s,
    /// or `met` for a target that is not a simple rule (a summary of repetitions then
    /// takes the majority).
    pub(crate) fn numbers_row(
        &mut self,
        figure: impl Into<String>,
        numbers: Numbers,
        target: impl Into<String>,
        met: Option<bool>,
    ) -> Option<bool> {
        let met = numbers.check.map(|check| check.met(&numbers)).or(met);
        let unit = numbers.unit;
        let row = Row {
            figure: figure.into(),
            measured: unit.text(&numbers.lc),
            peer: numbers
                .peer
                .as_ref()
                .map(|peer| unit.text(peer))
                .unwrap_or_default(),
            ratio: numbers
                .ratio
                .map(|ratio| format!("{ratio:.2}x"))
                .unwrap_or_default(),
            target: target.into(),
            met,
            failed: false,
            numbers: Some(numbers),
        };
        self.push_row(row);
        met
    }

    fn push_row(&mut self, row: Row) {
        eprintln!(
            "[bench]   {} = {}{} (target {}) {}",
            row.figure,
            row.measured,
            if row.peer.is_empty() {
                String::new()
            } else {
                format!(", {} {} ({})", self.peer_name(), row.peer, row.ratio)
            },
            row.target,
            verdict(&row)
        );
        self.rows.push(row);
    }

    pub(crate) fn peer_name(&self) -> &'static str {
        self.peer.as_ref().map_or("peer", Peer::name)
    }

    /// Runs a workload on the peer, if there is one; a failure is a note, not the end.
    pub(crate) async fn on_peer<F>(&mut self, what: &str, body: F) -> Option<Value>
    where
        F: AsyncFnOnce(&Peer) -> Result<Value>,
    {
        let peer = self.peer.as_ref()?;
        eprintln!("[bench]   {} {what} ...", peer.name());
        match body(peer).await {
            Ok(value) => Some(value),
            Err(err) => {
                let name = peer.name();
                self.note(format!("{name} {what}: {err:#}"));
                None
            }
        }
    }

    pub(crate) fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        eprintln!("[bench]   note: {text}");
        self.notes.push(text);
    }

    /// A producer with its own pool of `pool` connections (`Producer::connect` keeps 8),
    /// opened before the clock starts.
    pub(crate) async fn producer(&self, pool: usize) -> Result<Producer> {
        let store = self.args.connect.store(pool)?;
        let mut clients = Vec::with_capacity(pool);
        for _ in 0..pool {
            clients.push(store.client().await?);
        }
        drop(clients);
        let queue = Hints::connect(
            &self.args.connect.redis_url,
            &self.args.connect.redis_prefix,
        )
        .await?;
        queue.ping().await.context("redis does not answer")?;
        Ok(Producer::from_parts(store, Some(queue))?)
    }

    pub(crate) async fn prepare_queue(&self, queue: &str) -> Result<()> {
        if !self.args.no_markers {
            self.queue.set_marker(queue).await?;
        }
        Ok(())
    }

    pub(crate) fn count_enqueued(&mut self, queue: &str, jobs: u64) {
        *self.enqueued.entry(queue.to_owned()).or_default() += jobs;
    }

    pub(crate) async fn query_i64(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<i64> {
        let client = self.store.client().await?;
        Ok(client.query_one(sql, params).await?.get(0))
    }

    pub(crate) async fn unfinished(
        &self,
        client: &deadpool_postgres::Object,
        queue: &str,
    ) -> Result<i64> {
        let (queued, running) = unfinished_split(client, queue).await?;
        Ok(queued + running)
    }

    /// Waits until no job of `queues` is queued or running; returns how many polls it made.
    pub(crate) async fn wait_finished(&self, queues: &[String], timeout: Duration) -> Result<u64> {
        let client = self.store.client().await?;
        let started = Instant::now();
        let mut polls = 0;
        loop {
            let mut left = 0;
            for queue in queues {
                left += self.unfinished(&client, queue).await?;
                polls += 1;
            }
            if left == 0 {
                return Ok(polls);
            }
            if started.elapsed() > timeout {
                bail!(
                    "timed out after {timeout:?} with {left} jobs of {} unfinished",
                    queues.join(",")
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Jobs of `queue` not finished yet (cheap: both partial indexes): queued, running.
pub(crate) async fn unfinished_split(
    client: &deadpool_postgres::Object,
    queue: &str,
) -> Result<(i64, i64)> {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM jobs WHERE state = 'queued' AND queue = $1),
                    (SELECT count(*) FROM jobs WHERE state = 'running' AND queue = $1)",
            &[&queue],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// The bench's own store, migrated. Its reads run at READ COMMITTED: as SERIALIZABLE
/// readers they would take part in (and be cancelled by) the workers' serialization
/// conflicts.
async fn observer_store(args: &Args) -> Result<Store> {
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
    Ok(store)
}

/// The database URL with `default_transaction_isolation = read committed` for the
/// bench's own (observing) sessions.
fn observer_url(url: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-c%20default_transaction_isolation%3Dread%5C%20committed")
}
