//! Reads for operators and callers: one job, its history, filtered lists and counts
//! per queue and state.

use uuid::Uuid;

use super::rows::{
    EventRow, JOB_COLUMNS, JobFilter, JobRow, QueueDepth, event_row, job_row, state_at,
};
use super::{Replay, Result, Store, retry};

impl Store {
    pub async fn job(&self, id: Uuid) -> Result<Option<JobRow>> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            client
                .query_opt(sql.as_str(), &[&id])
                .await?
                .as_ref()
                .map(job_row)
                .transpose()
        })
        .await
    }

    /// A job's whole history, oldest first.
    pub async fn events(&self, id: Uuid) -> Result<Vec<EventRow>> {
        const SQL: &str = "SELECT at, from_state, to_state, attempt, worker_id, message
                           FROM job_events WHERE job_id = $1 ORDER BY at, to_state IS NULL";
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            let rows = client.query(SQL, &[&id]).await?;
            rows.iter().map(event_row).collect()
        })
        .await
    }

    /// Jobs matching `filter`, newest first (see [`JobFilter`] for the order).
    pub async fn list_jobs(&self, filter: &JobFilter) -> Result<Vec<JobRow>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs
             WHERE ($1::TEXT IS NULL OR state = $1)
               AND ($2::TEXT IS NULL OR kind = $2)
               AND ($3::TEXT IS NULL OR queue = $3)
               AND ($4::UUID IS NULL OR group_id = $4)
               AND ($5::INT8 IS NULL OR updated_at < now() - $5 * INTERVAL '1 second')
               AND ($7::TIMESTAMPTZ IS NULL OR (created_at, id) < ($7, $8::UUID))
               AND ($9::TEXT IS NULL OR owner = $9)
             ORDER BY created_at DESC, id DESC LIMIT $6"
        );
        let state = filter.state.map(|state| state.as_str());
        let (before_at, before_id) = filter.before.unzip();
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            let rows = client
                .query(
                    sql.as_str(),
                    &[
                        &state,
                        &filter.kind,
                        &filter.queue,
                        &filter.group_id,
                        &filter.older_than_secs,
                        &filter.limit,
                        &before_at,
                        &before_id,
                        &filter.owner,
                    ],
                )
                .await?;
            rows.iter().map(job_row).collect()
        })
        .await
    }

    /// How many jobs are in each state, by queue.
    pub async fn job_counts(&self) -> Result<Vec<QueueDepth>> {
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            let rows = client
                .query(
                    "SELECT queue, state, count(*) FROM jobs GROUP BY queue, state ORDER BY queue, state",
                    &[],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    Ok(QueueDepth {
                        queue: row.get(0),
                        state: state_at(row, 1, "jobs.state")?,
                        count: row.get(2),
                    })
                })
                .collect()
        })
        .await
    }
}
