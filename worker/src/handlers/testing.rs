//! `noop` and `sleep`: built-in kinds for tests, drills and benchmarks.

use std::time::Duration;

use lc_shared::builtin::{Noop, Sleep, SleepPayload};

use super::{Handler, JobContext, JobError};

impl Handler for Noop {
    async fn run(context: &JobContext, payload: SleepPayload) -> Result<(), JobError> {
        finish(context, &payload).await
    }
}

impl Handler for Sleep {
    async fn run(context: &JobContext, payload: SleepPayload) -> Result<(), JobError> {
        if payload.ms > 0 {
            tokio::select! {
                _ = context.cancel.cancelled() => return Err(JobError::Cancelled),
                _ = tokio::time::sleep(Duration::from_millis(payload.ms)) => {}
            }
        }
        finish(context, &payload).await
    }
}

/// Fails the first `fail_times` attempts as asked, and records the effect when asked.
async fn finish(context: &JobContext, payload: &SleepPayload) -> Result<(), JobError> {
    if context.job.attempt <= payload.fail_times {
        let message = format!(
            "induced failure {} of {}",
            context.job.attempt, payload.fail_times
        );
        return Err(if payload.fatal {
            JobError::fatal(message)
        } else {
            JobError::retryable(message)
        });
    }
    if payload.record {
        let recorded = context
            .worker
            .store
            .record_effect(context.job.id, context.job.attempt, context.worker.id)
            .await
            .map_err(|err| JobError::retryable_from("could not record the effect", err))?;
        if !recorded {
            // The attempt lost the job (lease taken over, cancelled): whoever holds it
            // now owns its outcome, and this result will be refused anyway.
            return Err(JobError::Cancelled);
        }
    }
    Ok(())
}
