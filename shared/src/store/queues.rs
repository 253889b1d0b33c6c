//! SQL for `queue_settings`: paused queues.

use super::{Isolation, Replay, Result, Store, retry};

impl Store {
    /// Queues that workers must not take jobs from.
    pub async fn paused_queues(&self) -> Result<Vec<String>> {
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            let statement = client
                .prepare_cached("SELECT queue FROM queue_settings WHERE paused")
                .await?;
            let rows = client.query(&statement, &[]).await?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        })
        .await
    }

    /// Pauses or resumes a queue; workers notice at their next heartbeat.
    pub async fn set_queue_paused(&self, queue: &str, paused: bool) -> Result {
        // Read committed: one upsert of one row.
        self.statement(
            Isolation::ReadCommitted,
            Replay::Safe,
            "INSERT INTO queue_settings (queue, paused, updated_at) VALUES ($1, $2, now())
             ON CONFLICT (queue) DO UPDATE SET paused = excluded.paused, updated_at = now()",
            &[&queue, &paused],
        )
        .await?;
        Ok(())
    }

    /// Per queue, seconds since the oldest due queued job became due.
    pub async fn oldest_due_ages(&self) -> Result<Vec<(String, f64)>> {
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            let rows = client
                .query(
                    "SELECT queue, EXTRACT(EPOCH FROM (now() - min(run_at)))::FLOAT8 FROM jobs
                     WHERE state = $1 AND run_at <= now() GROUP BY queue ORDER BY queue",
                    &[&crate::state::JobState::Queued.as_str()],
                )
                .await?;
            Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
        })
        .await
    }
}
