//! The `Bench`: the run's connections, settings and collected rows and notes, and the
//! helpers every section uses (producers, queue preparation, waiting for jobs).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lc_producer::Producer;
use lc_shared::queue::Hints;
use lc_shared::store::Store;
use serde_json::Value;

use crate::args::{Args, Section};
use crate::peer::Peer;
use crate::report::{Compared, Row, verdict};

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
    /// The peer of `--compare`, run beside each workload.
    pub(crate) peer: Option<Peer>,
    pub(crate) rows: Vec<Row>,
    pub(crate) notes: Vec<String>,
}

impl Bench {
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
        self.compared_row(figure, measured, None, target, met);
    }

    pub(crate) fn compared_row(
        &mut self,
        figure: impl Into<String>,
        measured: impl Into<String>,
        peer: Option<&Compared>,
        target: impl Into<String>,
        met: Option<bool>,
    ) {
        let row = Row {
            figure: figure.into(),
            measured: measured.into(),
            peer: peer.map(|peer| peer.text.clone()).unwrap_or_default(),
            ratio: peer
                .map(|peer| format!("{:.2}x", peer.ratio))
                .unwrap_or_default(),
            target: target.into(),
            met,
            failed: false,
        };
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
        Ok(Producer::from_parts(store, Some(queue)))
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

    /// Jobs of `queue` not finished yet (cheap: both partial indexes): queued, running.
    pub(crate) async fn unfinished_split(
        &self,
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

    pub(crate) async fn unfinished(
        &self,
        client: &deadpool_postgres::Object,
        queue: &str,
    ) -> Result<i64> {
        let (queued, running) = self.unfinished_split(client, queue).await?;
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

/// The database URL with `default_transaction_isolation = read committed` for the
/// bench's own (observing) sessions.
pub(crate) fn observer_url(url: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-c%20default_transaction_isolation%3Dread%5C%20committed")
}
