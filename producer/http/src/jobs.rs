//! `/v1/jobs`: enqueue one or a batch (the validation of `lc enqueue`), list with the
//! filters of `lc jobs ls` and an opaque cursor, one job with its history, cancel,
//! retry, requeue. A caller sees only its owner's jobs unless it is an admin.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use lc_producer::inspect::{JobDetail, JobListParams, JobPage, RequeueParams, Transitioned};
use lc_shared::config::parse_duration;
use lc_shared::job::{DEFAULT_MAX_ATTEMPTS, DEFAULT_QUEUE, MAX_IDEMPOTENCY_KEY_LEN};
use lc_shared::store::KeyClaim;
use lc_shared::{JobState, NewJob, Priority};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::{ApiError, ApiResult, Problem};
use crate::idempotency::{self, IdempotencyKey};
use crate::state::AppState;

/// Most jobs one batch holds.
const MAX_BATCH: usize = 1000;

/// A job to enqueue: the fields of `lc enqueue`.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueRequest {
    /// The job kind: noop, sleep, provision, provision_machine, deploy, teardown, ...
    pub kind: String,
    /// The kind's payload (a JSON object, at most 256 KiB).
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// Queue name (a-z, 0-9, '-', '_'); `default` if not given.
    pub queue: Option<String>,
    /// high, normal (default) or low.
    pub priority: Option<String>,
    /// Not before this time (RFC 3339).
    pub run_at: Option<DateTime<Utc>>,
    /// Not before this long from now (500ms, 10s, 5m, 2h); not with `run_at`.
    pub delay: Option<String>,
    /// Attempts before the job is dead (1 to 100, 5 by default).
    pub max_attempts: Option<i64>,
    /// Time limit of each attempt (10s, 5m); the kind's default if not given.
    pub timeout: Option<String>,
    /// The same key (of the same owner) always names the same job.
    pub idempotency_key: Option<String>,
    /// At most the key's limit of jobs with this key run at once.
    pub concurrency_key: Option<String>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// Many jobs in one commit: all are enqueued, or (when one is invalid) none.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub jobs: Vec<EnqueueRequest>,
}

/// An enqueued job. The same request again (same `Idempotency-Key`, or same job
/// `idempotency_key`) answers the same, with `Idempotent-Replayed: true`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EnqueuedJob {
    pub id: Uuid,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EnqueuedBatch {
    pub jobs: Vec<EnqueuedJob>,
}

/// The job keys of this API live in their owner's space: `api:<owner>:<key>`.
fn scoped_key(owner: &str, key: &str) -> Result<String, ApiError> {
    let scoped = format!("api:{owner}:{key}");
    // NUL passes the core's check but no text column holds it.
    if key.is_empty() || scoped.len() > MAX_IDEMPOTENCY_KEY_LEN || key.contains('\0') {
        return Err(ApiError::invalid(format!(
            "invalid job: idempotency key must be 1 to {} characters, none of them NUL",
            MAX_IDEMPOTENCY_KEY_LEN.saturating_sub(scoped.len() - key.len())
        )));
    }
    Ok(scoped)
}

fn duration(field: &str, text: &str) -> Result<Duration, ApiError> {
    parse_duration(text).map_err(|err| ApiError::invalid(format!("invalid job: {field}: {err}")))
}

impl EnqueueRequest {
    /// The job asked for, validated as `lc enqueue` validates it.
    fn into_job(self, state: &AppState, caller: &Caller, key: Option<String>) -> ApiResult<NewJob> {
        let kinds = state.deployments.producer().kinds();
        let invalid =
            |err: lc_shared::job::InvalidJob| ApiError::invalid(format!("invalid job: {err}"));
        let kind = kinds.parse(&self.kind).map_err(invalid)?;
        if !caller.admin && lc_deployment::kinds::acts_on_deployments(kind.as_str()) {
            return Err(ApiError::forbidden(format!(
                "jobs of kind {kind} act on a deployment by id: create, update and tear down deployments through /v1/deployments (or use an admin token)"
            )));
        }
        let priority: Priority = self
            .priority
            .as_deref()
            .unwrap_or("normal")
            .parse()
            .map_err(invalid)?;
        let mut job = NewJob::new(kind, self.payload)
            .with_queue(self.queue.unwrap_or_else(|| DEFAULT_QUEUE.to_owned()))
            .with_priority(priority)
            .with_max_attempts(self.max_attempts.unwrap_or(DEFAULT_MAX_ATTEMPTS))
            .with_owner(&caller.owner);
        job.run_at = match (self.run_at, self.delay) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(
                    "invalid job: give run_at or delay, not both",
                ));
            }
            (Some(at), None) => Some(at),
            (None, Some(delay)) => {
                let delay = chrono::Duration::from_std(duration("delay", &delay)?)
                    .map_err(|_| ApiError::invalid("invalid job: delay is too long"))?;
                Some(Utc::now() + delay)
            }
            (None, None) => None,
        };
        job.timeout = self
            .timeout
            .map(|text| duration("timeout", &text))
            .transpose()?;
        job.concurrency_key = self.concurrency_key;
        job.idempotency_key = match self.idempotency_key.or(key) {
            Some(key) => Some(scoped_key(&caller.owner, &key)?),
            None => None,
        };
        kinds.validate(&job).map_err(invalid)?;
        Ok(job)
    }
}

/// The 201 of an enqueue; `replayed` when no job of it was new.
fn created<T: Serialize>(body: T, location: Option<Uuid>, replayed: bool) -> Response {
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Some(id) = location
        && let Ok(value) = HeaderValue::from_str(&format!("/v1/jobs/{id}"))
    {
        response.headers_mut().insert(header::LOCATION, value);
    }
    if replayed {
        response
            .headers_mut()
            .insert(idempotency::REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

/// Enqueue one job.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs",
    params(IdempotencyKey),
    request_body = EnqueueRequest,
    responses(
        (status = 201, description = "Enqueued (or, for a repeated key, enqueued before)", body = EnqueuedJob),
        (status = 400, description = "Not JSON, a wrong type or an unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid job, or an Idempotency-Key used with another request", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn enqueue(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: JsonBody<EnqueueRequest>,
) -> ApiResult<Response> {
    let key = idempotency::key(&headers)?;
    let job = body.value.into_job(&state, &caller, key.clone())?;
    if let Some(key) = &key
        && state
            .tokens
            .claim_idempotency_key(&caller.owner, key, &body.bytes)
            .await?
            == KeyClaim::Different
    {
        return Err(idempotency::reused(key));
    }
    let enqueued = state.deployments.producer().enqueue(job).await?;
    Ok(created(
        EnqueuedJob { id: enqueued.id },
        Some(enqueued.id),
        !enqueued.created,
    ))
}

/// Enqueue many jobs in one commit (all or none).
#[utoipa::path(post, path = "/v1/jobs/batch", tag = "jobs",
    params(IdempotencyKey),
    request_body = BatchRequest,
    responses(
        (status = 201, description = "Enqueued, in the order asked", body = EnqueuedBatch),
        (status = 400, description = "Not JSON, a wrong type or an unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid job (nothing was enqueued)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn enqueue_batch(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: JsonBody<BatchRequest>,
) -> ApiResult<Response> {
    let key = idempotency::key(&headers)?;
    let requests = body.value.jobs;
    if requests.is_empty() || requests.len() > MAX_BATCH {
        return Err(ApiError::invalid(format!(
            "a batch holds 1 to {MAX_BATCH} jobs"
        )));
    }
    let jobs = requests
        .into_iter()
        .enumerate()
        .map(|(index, request)| {
            let job_key = key.as_ref().map(|key| format!("{key}#{index}"));
            request.into_job(&state, &caller, job_key)
        })
        .collect::<ApiResult<Vec<NewJob>>>()?;
    if let Some(key) = &key
        && state
            .tokens
            .claim_idempotency_key(&caller.owner, key, &body.bytes)
            .await?
            == KeyClaim::Different
    {
        return Err(idempotency::reused(key));
    }
    let enqueued = state.deployments.producer().enqueue_batch(&jobs).await?;
    let replayed = enqueued.iter().all(|job| !job.created);
    let jobs = enqueued
        .iter()
        .map(|job| EnqueuedJob { id: job.id })
        .collect();
    Ok(created(EnqueuedBatch { jobs }, None, replayed))
}

/// The filters of `lc jobs ls`.
#[derive(Clone, Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// queued, running, succeeded, dead or cancelled
    pub state: Option<String>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    /// Only the jobs of this deployment (name or id; one the caller may see).
    pub deployment: Option<String>,
    /// Only jobs unchanged for this long (10m, 2h).
    pub older_than: Option<String>,
    /// Jobs per page, 1 to 10000 (50 by default).
    #[param(minimum = 1, maximum = 10000)]
    pub limit: Option<i64>,
    /// The `next` of the page before.
    pub cursor: Option<String>,
}

/// A page of jobs, newest first.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListQuery),
    responses(
        (status = 200, description = "A page; `next` is the cursor of the next one", body = JobPage),
        (status = 422, description = "An invalid filter or cursor", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Json<JobPage>> {
    let state_filter = query
        .state
        .as_deref()
        .map(str::parse::<JobState>)
        .transpose()
        .map_err(ApiError::invalid)?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 10000"));
    }
    let mut params = JobListParams {
        state: state_filter,
        kind: query.kind,
        queue: query.queue,
        older_than: query
            .older_than
            .map(|text| {
                parse_duration(&text).map_err(|err| ApiError::invalid(format!("older_than: {err}")))
            })
            .transpose()?,
        limit,
        cursor: query.cursor,
        ..Default::default()
    };
    let inspector = match &query.deployment {
        // A deployment's jobs are the domain's (no owner of their own): whoever may see
        // the deployment sees them, as its view shows them.
        Some(name) => {
            params.group = Some(caller.deployments(&state).resolve(name).await?);
            state.deployments.inspector()
        }
        None => caller.inspector(&state),
    };
    Ok(Json(inspector.jobs(&params).await?))
}

/// A job and its whole history.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    params(("id" = Uuid, Path, description = "The job's id")),
    responses(
        (status = 200, description = "The job and its history, oldest first", body = JobDetail),
        (status = 404, description = "No such job (or another owner's)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<JobDetail>> {
    Ok(Json(caller.inspector(&state).job(id).await?))
}

/// Cancel a queued or running job.
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = Uuid, Path, description = "The job's id")),
    responses(
        (status = 200, description = "Cancelled", body = Transitioned),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job has ended already", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Transitioned>> {
    Ok(Json(caller.inspector(&state).cancel(id).await?))
}

/// Send a dead or cancelled job back to its queue with fresh attempts.
#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "jobs",
    params(("id" = Uuid, Path, description = "The job's id")),
    responses(
        (status = 200, description = "Queued again", body = Transitioned),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The job is not dead or cancelled", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<Transitioned>> {
    Ok(Json(caller.inspector(&state).retry(id).await?))
}

#[derive(Clone, Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RequeueQuery {
    /// Requeue even if the job's worker still heartbeats.
    pub force: Option<bool>,
    /// A worker silent this long counts as gone (30s by default).
    pub dead_after: Option<String>,
}

/// Put a running job whose worker is gone back in its queue now.
#[utoipa::path(post, path = "/v1/jobs/{id}/requeue", tag = "jobs",
    params(("id" = Uuid, Path, description = "The job's id"), RequeueQuery),
    responses(
        (status = 200, description = "Queued again", body = Transitioned),
        (status = 404, description = "No such job", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not running, or its worker is alive", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn requeue(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(query): Query<RequeueQuery>,
) -> ApiResult<Json<Transitioned>> {
    let mut params = RequeueParams {
        force: query.force.unwrap_or(false),
        ..Default::default()
    };
    if let Some(text) = query.dead_after {
        params.dead_after =
            parse_duration(&text).map_err(|err| ApiError::invalid(format!("dead_after: {err}")))?;
    }
    Ok(Json(caller.inspector(&state).requeue(id, params).await?))
}
