//! `noop` and `sleep`: built-in kinds for tests, drills and benchmarks.

use std::time::Duration;

use lc_shared::builtin::{Noop, Sleep, SleepPayload};

use super::{Handler, JobContext, JobError};

// Every domain's lists may hold the core's kinds: their handlers serve any domain.
impl<D> Handler<D> for Noop {
    async fn run(context: &JobContext, payload: SleepPayload) -> Result<(), JobError> {
        finish(context, &payload).await
    }
}

impl<D> Handler<D> for Sleep {
    async fn run(context: &JobContext, payload: SleepPayload) -> Result<(), JobError> {
        if payload.ms > 0 {
            tokio::select! {
                _ = context.cancelled() => return Err(JobError::Cancelled),
                _ = tokio::time::sleep(Duration::from_millis(payload.ms)) => {}
            }
        }
        finish(context, &payload).await
    }
}

/// Fails the first `fail_times` attempts as asked, and records the effect when asked.
async fn finish(context: &JobContext, payload: &SleepPayload) -> Result<(), JobError> {
    let attempt = context.job().attempt;
    if attempt <= payload.fail_times {
        let message = format!("induced failure {attempt} of {}", payload.fail_times);
        return Err(if payload.fatal {
            JobError::fatal(message)
        } else {
            JobError::retryable(message)
        });
    }
    // An attempt that lost the job (lease taken over, cancelled) records nothing:
    // whoever holds it now owns its outcome, and this result will be refused anyway.
    if payload.record && !context.record_effect().await? {
        return Err(JobError::Cancelled);
    }
    Ok(())
}
