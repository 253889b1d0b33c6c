//! Workers: live, gone (silent for too long) or stopped, with their heartbeat age.

use std::time::Duration;

use lc_shared::store::WorkerRow;

use super::{Inspector, Result};

/// Whether a worker is there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum WorkerStatus {
    /// Heartbeating.
    Live,
    /// Silent for longer than the `dead_after` asked for, without a clean stop: killed,
    /// frozen or cut off.
    Gone,
    /// Exited cleanly.
    Stopped,
}

impl WorkerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerStatus::Live => "live",
            WorkerStatus::Gone => "gone",
            WorkerStatus::Stopped => "stopped",
        }
    }
}

/// A worker as `lc workers` shows it: its row and whether it is there.
#[derive(Clone, Debug, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Worker {
    #[serde(flatten)]
    pub worker: WorkerRow,
    pub status: WorkerStatus,
}

impl Inspector {
    /// Workers still marked running, and those seen within `recent`, newest first; a
    /// worker silent for longer than `dead_after` is [`WorkerStatus::Gone`].
    pub async fn workers(&self, recent: Duration, dead_after: Duration) -> Result<Vec<Worker>> {
        let recent_secs = i64::try_from(recent.as_secs()).unwrap_or(i64::MAX);
        let workers = self.store.workers(recent_secs).await?;
        Ok(workers
            .into_iter()
            .map(|worker| Worker {
                status: if worker.stopped_at.is_some() {
                    WorkerStatus::Stopped
                } else if worker.heartbeat_age_secs > dead_after.as_secs_f64() {
                    WorkerStatus::Gone
                } else {
                    WorkerStatus::Live
                },
                worker,
            })
            .collect())
    }
}
