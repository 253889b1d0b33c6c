//! SQL for the `workers` table: each worker process registers at start, heartbeats,
//! and marks itself stopped on a clean exit, so operators can list live and dead ones.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Isolation, Replay, Result, Store, retry};

/// What a worker says about itself when it registers.
#[derive(Clone, Debug)]
pub struct WorkerInfo {
    pub id: Uuid,
    pub host: String,
    pub pid: i64,
    pub queues: Vec<String>,
    pub concurrency: i64,
    pub version: String,
}

/// A worker as `lc workers` shows it.
#[derive(Clone, Debug, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WorkerRow {
    pub id: Uuid,
    pub host: String,
    pub pid: i64,
    pub queues: String,
    pub concurrency: i64,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    /// Seconds since the last heartbeat, by database time.
    pub heartbeat_age_secs: f64,
    /// Jobs running under this worker's lease right now.
    pub running_jobs: i64,
}

impl Store {
    pub async fn register_worker(&self, info: &WorkerInfo) -> Result {
        let queues = info.queues.join(",");
        // Read committed: each statement of this file writes one row of its own worker.
        self.statement(
            Isolation::ReadCommitted,
            Replay::Safe,
            "INSERT INTO workers (id, host, pid, queues, concurrency, version)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
            &[
                &info.id,
                &info.host,
                &info.pid,
                &queues,
                &info.concurrency,
                &info.version,
            ],
        )
        .await?;
        Ok(())
    }

    pub async fn worker_heartbeat(&self, id: Uuid) -> Result {
        self.statement(
            Isolation::ReadCommitted,
            Replay::Safe,
            "UPDATE workers SET last_heartbeat_at = now() WHERE id = $1",
            &[&id],
        )
        .await?;
        Ok(())
    }

    pub async fn worker_stopped(&self, id: Uuid) -> Result {
        self.statement(
            Isolation::ReadCommitted,
            Replay::Safe,
            "UPDATE workers SET stopped_at = now(), last_heartbeat_at = now() WHERE id = $1",
            &[&id],
        )
        .await?;
        Ok(())
    }

    /// Workers seen within `recent_secs`, or still marked running, newest first.
    pub async fn workers(&self, recent_secs: i64) -> Result<Vec<WorkerRow>> {
        const SQL: &str = "
SELECT w.id, w.host, w.pid, w.queues, w.concurrency, w.version, w.started_at,
       w.last_heartbeat_at, w.stopped_at,
       EXTRACT(EPOCH FROM (now() - w.last_heartbeat_at))::FLOAT8,
       (SELECT count(*) FROM jobs j WHERE j.state = $2 AND j.lease_owner = w.id)
FROM workers w
WHERE w.last_heartbeat_at > now() - $1::INT8 * INTERVAL '1 second'
   OR (w.stopped_at IS NULL AND w.last_heartbeat_at > now() - INTERVAL '1 day')
ORDER BY w.started_at DESC";
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            let rows = client
                .query(
                    SQL,
                    &[&recent_secs, &crate::state::JobState::Running.as_str()],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|row| WorkerRow {
                    id: row.get(0),
                    host: row.get(1),
                    pid: row.get(2),
                    queues: row.get(3),
                    concurrency: row.get(4),
                    version: row.get(5),
                    started_at: row.get(6),
                    last_heartbeat_at: row.get(7),
                    stopped_at: row.get(8),
                    heartbeat_age_secs: row.get(9),
                    running_jobs: row.get(10),
                })
                .collect())
        })
        .await
    }
}
