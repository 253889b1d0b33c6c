//! Jobs finished per queue over a recent window, in equal time buckets: the
//! throughput (succeeded) and failures (dead) the dashboard charts.

use std::collections::BTreeMap;
use std::time::Duration;

use lc_shared::JobState;

use super::{InspectError, Inspector, Result};

/// Most buckets one series holds.
pub const MAX_BUCKETS: u64 = 1440;

/// A queue's finished jobs over the window, one count per bucket, oldest first: the
/// last entry is the newest bucket, which ends now.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueThroughput {
    pub queue: String,
    /// Seconds each bucket spans.
    pub bucket_secs: u64,
    /// Jobs that succeeded in each bucket.
    pub succeeded: Vec<i64>,
    /// Jobs that died (attempts used up, or a fatal error) in each bucket and are
    /// dead still: a dead job retried since counts where its new attempts end.
    pub dead: Vec<i64>,
}

impl QueueThroughput {
    fn empty(queue: String, bucket_secs: u64, buckets: usize) -> QueueThroughput {
        QueueThroughput {
            queue,
            bucket_secs,
            succeeded: vec![0; buckets],
            dead: vec![0; buckets],
        }
    }
}

impl Inspector {
    /// Every known queue's (and every queue with finished jobs in the window) jobs
    /// that succeeded and died within the last `window`, in buckets of `bucket`, by
    /// name. Counts are queue-wide, like [`Inspector::queues`].
    pub async fn throughput(
        &self,
        window: Duration,
        bucket: Duration,
    ) -> Result<Vec<QueueThroughput>> {
        let (window_secs, bucket_secs) = (window.as_secs(), bucket.as_secs());
        if bucket_secs == 0 || window_secs < bucket_secs || window_secs % bucket_secs != 0 {
            return Err(InspectError::Invalid(
                "the window must be a whole number of buckets of at least a second".into(),
            ));
        }
        let buckets = window_secs / bucket_secs;
        if buckets > MAX_BUCKETS {
            return Err(InspectError::Invalid(format!(
                "at most {MAX_BUCKETS} buckets (the window divided by the bucket), not {buckets}"
            )));
        }
        let buckets = buckets as usize;
        let mut series: BTreeMap<String, QueueThroughput> = BTreeMap::new();
        for (queue, _) in self.store.known_queues().await? {
            series.insert(
                queue.clone(),
                QueueThroughput::empty(queue, bucket_secs, buckets),
            );
        }
        let counts = self
            .store
            .finished_by_bucket(window_secs as i64, bucket_secs as i64)
            .await?;
        for found in counts {
            let Some(ago) = usize::try_from(found.buckets_ago)
                .ok()
                .filter(|ago| *ago < buckets)
            else {
                continue;
            };
            let row = series
                .entry(found.queue.clone())
                .or_insert_with(|| QueueThroughput::empty(found.queue, bucket_secs, buckets));
            let slot = buckets - 1 - ago;
            match found.state {
                JobState::Succeeded => row.succeeded[slot] += found.count,
                JobState::Dead => row.dead[slot] += found.count,
                _ => {}
            }
        }
        Ok(series.into_values().collect())
    }

    /// One queue's series (all zeros when nothing of it finished in the window).
    pub async fn queue_throughput(
        &self,
        queue: &str,
        window: Duration,
        bucket: Duration,
    ) -> Result<QueueThroughput> {
        lc_shared::job::validate_queue_name(queue)
            .map_err(|err| InspectError::Invalid(err.to_string()))?;
        let all = self.throughput(window, bucket).await?;
        Ok(all
            .into_iter()
            .find(|row| row.queue == queue)
            .unwrap_or_else(|| {
                let buckets = (window.as_secs() / bucket.as_secs()) as usize;
                QueueThroughput::empty(queue.to_owned(), bucket.as_secs(), buckets)
            }))
    }
}
