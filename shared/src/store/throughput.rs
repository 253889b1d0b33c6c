//! Jobs finished per queue and time bucket: what the dashboard's throughput and
//! failure charts show.

use super::{Replay, Result, Store, retry};
use crate::state::JobState;

/// How many jobs of a queue reached a state within one time bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinishedCount {
    pub queue: String,
    pub state: JobState,
    /// Whole buckets between the bucket and now: 0 is the newest (the last
    /// `bucket_secs` seconds).
    pub buckets_ago: i64,
    pub count: i64,
}

impl Store {
    /// Per queue, state (succeeded or dead) and bucket of `bucket_secs` seconds, the
    /// jobs that finished within the last `window_secs` seconds, by database time.
    pub async fn finished_by_bucket(
        &self,
        window_secs: i64,
        bucket_secs: i64,
    ) -> Result<Vec<FinishedCount>> {
        // `updated_at` is never before `finished_at` (every change of a row sets it),
        // so the filter on it is a superset that the `jobs_finished` index serves.
        const SQL: &str = "
SELECT queue, state, floor(extract(epoch FROM now() - finished_at)::FLOAT8 / $2::FLOAT8)::INT8 AS ago, count(*)
FROM jobs
WHERE state IN ($3, $4)
  AND updated_at > now() - $1::FLOAT8 * INTERVAL '1 second'
  AND finished_at > now() - $1::FLOAT8 * INTERVAL '1 second'
GROUP BY queue, state, ago";
        let window = window_secs as f64;
        let bucket = bucket_secs as f64;
        let succeeded = JobState::Succeeded.as_str();
        let dead = JobState::Dead.as_str();
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            let rows = client
                .query(SQL, &[&window, &bucket, &succeeded, &dead])
                .await?;
            rows.iter()
                .map(|row| {
                    let state: String = row.get(1);
                    Ok(FinishedCount {
                        queue: row.get(0),
                        state: state.parse().map_err(|_| super::StoreError::Corrupt {
                            column: "jobs.state",
                            value: state.clone(),
                        })?,
                        buckets_ago: row.get(2),
                        count: row.get(3),
                    })
                })
                .collect()
        })
        .await
    }
}
