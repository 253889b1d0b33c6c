//! Runs one claimed job: the handler under its cancellation token and its time limit,
//! panics caught, and the result handed to the completer. A handler stopped by its
//! token records nothing: whoever stopped it (cancel, lost lease, shutdown) owns the
//! job's next transition. A handler past its time limit is stopped the same way (its
//! child processes killed) and the attempt fails as retryable.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use lc_shared::state::{RunResult, after_run, retry_delay};
use lc_shared::store::{ClaimedJob, Completion};
use lc_shared::telemetry::job_trace;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use crate::config::WorkerConfig;
use crate::handlers::{ClaimTimes, JobContext, Registry};
use crate::slots::{Finished, Slot};
use crate::worker::Worker;

/// How long a handler stopped at its time limit may take to wind down.
const STOP_GRACE: Duration = Duration::from_secs(10);

pub(crate) async fn run_job(
    worker: Arc<Worker>,
    registry: Registry,
    job: ClaimedJob,
    cancel: CancellationToken,
    slot: Option<Slot>,
    trace: Option<job_trace::Context>,
    claim_times: ClaimTimes,
) {
    let span = info_span!(
        "job",
        job.id = %job.id,
        job.kind = %job.kind,
        job.attempt = job.attempt,
        job.group = job.group_id.map(|id| id.to_string()).unwrap_or_default(),
        otel.name = tracing::field::Empty,
    );
    // In a trace, the job's span (its handler and every call the handler makes) goes
    // under the claim, and is named by the kind.
    if trace.is_some() {
        span.record("otel.name", format!("job {}", job.kind));
        job_trace::set_parent(&span, trace);
    }
    async move {
        let started = Instant::now();
        worker.metrics.job_started(job.kind.as_str());
        // The handler's own token: cancelled with the job's, or alone at its time limit.
        let handler_cancel = cancel.child_token();
        let context = JobContext::new(
            job.clone(),
            worker.clone(),
            registry.clone(),
            handler_cancel.clone(),
            claim_times,
        );
        let limit = timeout_for(&worker.config, &registry, &job);
        let result = run_within(&registry, &context, limit, &handler_cancel).await;
        // The handler is done: free its running place now; the held place goes with the
        // result and is freed once the result is committed.
        let permit = slot.map(|Slot { run, held }| {
            drop(run);
            held
        });
        if cancel.is_cancelled() {
            debug!("handler stopped by its token; outcome not recorded");
            worker.running.remove_stopped(job.id, job.attempt);
            return;
        }
        let transition = after_run(&result, job.attempt, job.max_attempts);
        worker
            .metrics
            .job_finished(job.kind.as_str(), transition, started.elapsed());
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
        worker.running.finishing(job.id, job.attempt);
        let completion = Completion {
            id: job.id,
            attempt: job.attempt,
            claimed_at: job.claimed_at,
            max_attempts: job.max_attempts,
            result,
            retry_delay_ms: i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
        };
        let finished = Finished {
            completion,
            permit,
            concurrency_key: job.concurrency_key.clone(),
        };
        if worker.completions.send(finished).is_err() {
            warn!("completer gone; the job returns to the queue when its lease expires");
        }
    }
    .instrument(span)
    .await
}

/// Runs the handler under its time limit, panics caught; a handler past its limit is
/// stopped through its token and its attempt fails as retryable.
async fn run_within(
    registry: &Registry,
    context: &JobContext,
    limit: Duration,
    handler_cancel: &CancellationToken,
) -> RunResult {
    let handler = AssertUnwindSafe(registry.run(context)).catch_unwind();
    tokio::pin!(handler);
    let outcome = tokio::select! {
        outcome = &mut handler => Some(outcome),
        _ = tokio::time::sleep(limit) => None,
    };
    let outcome = match outcome {
        Some(outcome) => Some(outcome),
        None => {
            warn!(timeout = ?limit, "handler ran past its time limit; stopping it");
            handler_cancel.cancel();
            // Handlers stop their calls and kill their child processes on cancel;
            // one that does not within the grace is dropped, which kills what it
            // spawned (kill on drop).
            let _ = tokio::time::timeout(STOP_GRACE, &mut handler).await;
            None
        }
    };
    match outcome {
        None => RunResult::Retryable(format!("timed out after {limit:?}")),
        Some(Ok(Ok(()))) => RunResult::Succeeded,
        Some(Ok(Err(err))) => err.into_run_result(),
        Some(Err(panic)) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|text| (*text).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_owned());
            RunResult::Fatal(format!("handler panicked: {what}"))
        }
    }
}

/// How long one attempt of `job` may run: its own limit, else this worker's
/// `--kind-timeout` for its kind, else the kind's own.
fn timeout_for(config: &WorkerConfig, registry: &Registry, job: &ClaimedJob) -> Duration {
    job.timeout
        .or_else(|| {
            config
                .kind_timeouts
                .iter()
                .rev()
                .find(|(kind, _)| *kind == job.kind.as_str())
                .map(|(_, limit)| *limit)
        })
        .or_else(|| registry.timeout(job.kind.as_str()))
        .unwrap_or(Duration::from_secs(3600))
}
