//! `noop` and `sleep`: built-in kinds for tests, drills and benchmarks.

use std::time::Duration;

use lc_shared::job::SleepPayload;

use super::{JobContext, JobError};

pub async fn noop(context: &JobContext) -> Result<(), JobError> {
    let payload: SleepPayload = if context
        .job
        .payload
        .as_object()
        .is_some_and(|o| o.is_empty())
    {
        SleepPayload::default()
    } else {
        context.payload()?
    };
    finish(context, &payload).await
}

pub async fn sleep(context: &JobContext) -> Result<(), JobError> {
    let payload: SleepPayload = context.payload()?;
    if payload.ms > 0 {
        tokio::select! {
            _ = context.cancel.cancelled() => return Err(JobError::Cancelled),
            _ = tokio::time::sleep(Duration::from_millis(payload.ms)) => {}
        }
    }
    finish(context, &payload).await
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
