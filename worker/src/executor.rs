//! Runs one claimed job: the handler under its cancellation token, panics caught, and
//! the result handed to the completer. A handler stopped by its token records
//! nothing: whoever stopped it (cancel, lost lease, shutdown) owns the job's next
//! transition.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use lc_shared::state::{RunResult, after_run, retry_delay};
use lc_shared::store::{ClaimedJob, Completion};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use crate::completer::Finished;
use crate::fetcher::Slot;
use crate::handlers::{self, JobContext};
use crate::worker::Worker;

pub(crate) async fn run_job(
    worker: Arc<Worker>,
    job: ClaimedJob,
    cancel: CancellationToken,
    slot: Option<Slot>,
) {
    let span = info_span!(
        "job",
        job.id = %job.id,
        job.kind = %job.kind,
        job.attempt = job.attempt,
        deployment = job.deployment_id.map(|id| id.to_string()).unwrap_or_default(),
    );
    async move {
        let started = Instant::now();
        worker.metrics.job_started(&job.kind);
        let context = JobContext {
            job: job.clone(),
            worker: worker.clone(),
            cancel: cancel.clone(),
        };
        let result = match AssertUnwindSafe(handlers::run(&context))
            .catch_unwind()
            .await
        {
            Ok(Ok(())) => RunResult::Succeeded,
            Ok(Err(err)) => err.into_run_result(),
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|text| (*text).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".to_owned());
                RunResult::Fatal(format!("handler panicked: {what}"))
            }
        };
        // The handler is done: free its running place now; the held place goes with the
        // result and is freed once the result is committed.
        let permit = slot.map(|Slot { run, held }| {
            drop(run);
            held
        });
        if cancel.is_cancelled() {
            debug!("handler stopped by its token; outcome not recorded");
            return;
        }
        let transition = after_run(&result, job.attempt, job.max_attempts);
        worker
            .metrics
            .job_finished(&job.kind, transition, started.elapsed());
        match &result {
            RunResult::Succeeded => debug!("succeeded"),
            RunResult::Retryable(error) | RunResult::Fatal(error) => {
                warn!(error = %error, next = ?transition, "job failed");
            }
        }
        let delay = retry_delay(
            job.attempt,
            worker.config.backoff_base,
            worker.config.backoff_max,
        );
        let completion = Completion {
            id: job.id,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            result,
            retry_delay_ms: i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
        };
        if worker
            .completions
            .send(Finished { completion, permit })
            .is_err()
        {
            warn!("completer gone; the job returns to the queue when its lease expires");
        }
    }
    .instrument(span)
    .await
}
