//! Queues: depth per state, throughput, the oldest due job, hints waiting in Redis,
//! pausing; and the inbox's dead letters.

use std::collections::BTreeMap;

use lc_shared::JobState;
use lc_shared::job::validate_queue_name;
use lc_shared::queue::DeadLetter;

use super::{InspectError, Inspector, Result};

/// A queue as `lc queues` shows it.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueStats {
    pub queue: String,
    pub paused: bool,
    pub queued: i64,
    pub running: i64,
    pub succeeded: i64,
    pub dead: i64,
    pub cancelled: i64,
    /// Hints waiting in the queue's Redis lists; `None` when Redis did not answer.
    pub hints_in_redis: Option<i64>,
    /// Seconds since the oldest due queued job became due.
    pub oldest_due_secs: Option<f64>,
    /// Jobs that ended (succeeded, dead or cancelled) in the last minute.
    pub finished_last_minute: i64,
}

impl QueueStats {
    fn new(queue: String) -> QueueStats {
        QueueStats {
            queue,
            ..QueueStats::default()
        }
    }

    fn count_mut(&mut self, state: JobState) -> &mut i64 {
        match state {
            JobState::Queued => &mut self.queued,
            JobState::Running => &mut self.running,
            JobState::Succeeded => &mut self.succeeded,
            JobState::Dead => &mut self.dead,
            JobState::Cancelled => &mut self.cancelled,
        }
    }
}

impl Inspector {
    /// Every queue anybody configured or used (with jobs, paused, or served by a live
    /// worker), by name.
    pub async fn queues(&self) -> Result<Vec<QueueStats>> {
        let mut stats = self.queue_counts().await?;
        for (queue, age) in self.store.oldest_due_ages().await? {
            if let Some(row) = stats.get_mut(&queue) {
                row.oldest_due_secs = Some(age);
            }
        }
        for (queue, count) in self.store.finished_last_minute().await? {
            if let Some(row) = stats.get_mut(&queue) {
                row.finished_last_minute = count;
            }
        }
        if let Some(hints) = &self.hints {
            for row in stats.values_mut() {
                row.hints_in_redis = hints.ready_len(&row.queue).await.ok();
            }
        }
        Ok(stats.into_values().collect())
    }

    /// The known queues with their pause flags and job counts.
    async fn queue_counts(&self) -> Result<BTreeMap<String, QueueStats>> {
        let mut stats = BTreeMap::new();
        for (queue, paused) in self.store.known_queues().await? {
            stats
                .entry(queue.clone())
                .or_insert_with(|| QueueStats::new(queue))
                .paused = paused;
        }
        for depth in self.store.job_counts().await? {
            let row = stats
                .entry(depth.queue.clone())
                .or_insert_with(|| QueueStats::new(depth.queue));
            *row.count_mut(depth.state) = depth.count;
        }
        Ok(stats)
    }

    /// Workers stop taking jobs from `queue` at their next heartbeat (running jobs
    /// finish).
    pub async fn pause_queue(&self, queue: &str) -> Result {
        self.set_paused(queue, true).await
    }

    /// Workers take jobs from `queue` again.
    pub async fn resume_queue(&self, queue: &str) -> Result {
        self.set_paused(queue, false).await
    }

    async fn set_paused(&self, queue: &str, paused: bool) -> Result {
        validate_queue_name(queue).map_err(|err| InspectError::Invalid(err.to_string()))?;
        Ok(self.store.set_queue_paused(queue, paused).await?)
    }

    /// Inbox messages that were refused, with the reason, newest first.
    pub async fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>> {
        Ok(self.hints()?.dead_letters(limit).await?)
    }
}
