//! `/v1/deployments`: create from a spec in JSON or YAML (`?dry_run=true` answers the
//! plan and writes nothing), list, show (machines, containers, jobs, history), update,
//! tear down (DELETE), acknowledge leftovers, extend the expiry: what `lc deploy` does,
//! through `lc_deployment::Deployments`. A caller sees only its owner's deployments
//! (and creates only those) unless it is an admin.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use lc_deployment::{
    AckOutcome, CreateOutcome, DeploymentOptions, DeploymentState, DeploymentSummary,
    DeploymentView, Deployments, ExtendOutcome, Plan, Spec, TeardownRequest, UpdateOutcome,
};
use lc_shared::config::parse_duration;
use lc_shared::job::DEFAULT_QUEUE;
use lc_shared::store::KeyClaim;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::auth::Caller;
use crate::body::{self, JsonBody};
use crate::error::{ApiError, ApiResult, Problem};
use crate::idempotency::{self, IdempotencyKey};
use crate::state::AppState;

#[derive(Clone, Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WriteQuery {
    /// Answer the plan (machines, containers, calls, jobs) and write nothing.
    pub dry_run: Option<bool>,
    /// Queue of the deployment's jobs (`default`).
    pub queue: Option<String>,
    /// With `false`, only provision the machines (create only).
    pub deploy: Option<bool>,
}

impl WriteQuery {
    fn options(&self) -> DeploymentOptions {
        DeploymentOptions {
            queue: self
                .queue
                .clone()
                .unwrap_or_else(|| DEFAULT_QUEUE.to_owned()),
            deploy: self.deploy.unwrap_or(true),
        }
    }
}

/// A spec from the body: JSON (`application/json`) or YAML (`application/yaml`,
/// `text/yaml`, `application/x-yaml`), with the bytes it came as.
async fn read_spec(request: Request, state: &AppState) -> ApiResult<(Spec, Vec<u8>)> {
    let json = match body::media_type(&request).as_deref() {
        Some(media) if body::is_json(media) => true,
        Some("application/yaml" | "text/yaml" | "application/x-yaml") => false,
        _ => {
            return Err(body::unsupported_media_type(
                "application/json or application/yaml",
            ));
        }
    };
    let bytes = body::read_bytes(request, state).await?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::bad_request("the spec is not UTF-8 text"))?;
    let spec = Spec::parse(text, json).map_err(|err| match err {
        lc_deployment::SpecError::Parse(_) => ApiError::bad_request(err.to_string()),
        other => ApiError::invalid(other.to_string()),
    })?;
    Ok((spec, bytes.to_vec()))
}

/// A deployment just created (or, for a repeated `Idempotency-Key`, created before).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DeploymentCreated {
    pub id: Uuid,
    pub name: String,
}

fn created(id: Uuid, name: &str, replayed: bool) -> Response {
    let mut response = (
        StatusCode::CREATED,
        Json(DeploymentCreated {
            id,
            name: name.to_owned(),
        }),
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&format!("/v1/deployments/{name}")) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    if replayed {
        response
            .headers_mut()
            .insert(idempotency::REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

/// Create a deployment: provision its machines, then deploy its containers.
#[utoipa::path(post, path = "/v1/deployments", tag = "deployments",
    params(WriteQuery, IdempotencyKey),
    request_body(description = "The spec (as `lc deploy create` reads it)",
                 content((Object = "application/json"), (Object = "application/yaml"))),
    responses(
        (status = 201, description = "Created; its jobs run now", body = DeploymentCreated),
        (status = 200, description = "With dry_run: the plan", body = Plan),
        (status = 400, description = "Not JSON/YAML, or an unknown field", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A live deployment has this name", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JSON or YAML", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid spec, or an Idempotency-Key used with another spec", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<WriteQuery>,
    request: Request,
) -> ApiResult<Response> {
    let key = idempotency::key(request.headers())?;
    let (spec, bytes) = read_spec(request, &state).await?;
    let deployments = caller.deployments(&state);
    let options = query.options();
    if query.dry_run.unwrap_or(false) {
        let mut plan = deployments.plan_create(&spec, &options).await?;
        if plan.refused.is_some() && !visible(&caller, &deployments, &spec.name).await {
            plan.refused = Some(taken_by_another(&spec.name));
        }
        return Ok(Json(plan).into_response());
    }
    if let Some(key) = &key {
        match state
            .tokens
            .claim_idempotency_key(&caller.owner, key, &bytes)
            .await?
        {
            KeyClaim::Different => return Err(idempotency::reused(key)),
            KeyClaim::Same { result: Some(id) } => return Ok(created(id, &spec.name, true)),
            KeyClaim::Same { result: None } | KeyClaim::New => {}
        }
    }
    match deployments.create(&spec, &options).await? {
        CreateOutcome::Created { id, .. } => {
            if let Some(key) = &key {
                state
                    .tokens
                    .record_idempotency_result(&caller.owner, key, id)
                    .await?;
            }
            Ok(created(id, &spec.name, false))
        }
        CreateOutcome::NameTaken { .. } if !visible(&caller, &deployments, &spec.name).await => {
            Err(ApiError::conflict(taken_by_another(&spec.name)))
        }
        CreateOutcome::NameTaken { id, state: found } => Err(ApiError::conflict(format!(
            "deployment {:?} already exists ({id}, {found}); tear it down first, or change its payload with an update (PUT)",
            spec.name
        ))),
    }
}

/// Whether the caller may see the live deployment of this name (an admin sees all).
async fn visible(caller: &Caller, deployments: &Deployments, name: &str) -> bool {
    caller.admin || deployments.resolve(name).await.is_ok()
}

/// Names are unique among live deployments of every owner; that one is taken says no
/// more than that (not whose, nor its id).
fn taken_by_another(name: &str) -> String {
    format!("deployment name {name:?} is taken by a live deployment; choose another name")
}

#[derive(Clone, Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Torn down ones too.
    pub all: Option<bool>,
    /// At most this many (100 by default).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// Deployments, newest first, with their ready machines and running containers.
#[utoipa::path(get, path = "/v1/deployments", tag = "deployments", params(ListQuery),
    responses((status = 200, description = "Deployments", body = [DeploymentSummary])))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> ApiResult<Response> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit must be between 1 and 1000"));
    }
    let found = caller
        .deployments(&state)
        .list(query.all.unwrap_or(false), limit)
        .await?;
    Ok(Json(found).into_response())
}

async fn resolve(deployments: &Deployments, name: &str) -> ApiResult<Uuid> {
    Ok(deployments.resolve(name).await?)
}

#[derive(Clone, Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ShowQuery {
    /// History entries to include, newest (20 by default).
    #[param(minimum = 1, maximum = 1000)]
    pub events: Option<i64>,
}

/// A deployment with its machines, containers, jobs, history and warnings.
#[utoipa::path(get, path = "/v1/deployments/{name}", tag = "deployments",
    params(("name" = String, Path, description = "The deployment's name or id"), ShowQuery),
    responses(
        (status = 200, description = "The deployment", body = DeploymentView),
        (status = 404, description = "No such deployment (or another owner's)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<ShowQuery>,
) -> ApiResult<Response> {
    let events = query.events.unwrap_or(20);
    if !(1..=1000).contains(&events) {
        return Err(ApiError::invalid("events must be between 1 and 1000"));
    }
    let deployments = caller.deployments(&state);
    let id = resolve(&deployments, &name).await?;
    Ok(Json(deployments.get(id, events).await?).into_response())
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DeploymentUpdated {
    pub id: Uuid,
    pub generation: i64,
    pub deploy_job: Uuid,
}

/// What an update answers: the update made, or (with `dry_run`) its plan.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum UpdateAnswer {
    Updated(DeploymentUpdated),
    Plan(Box<Plan>),
}

/// Change a deployment's payload: the next generation replaces its containers one
/// machine at a time.
#[utoipa::path(put, path = "/v1/deployments/{name}", tag = "deployments",
    params(("name" = String, Path, description = "The deployment's name (the spec's)"), WriteQuery),
    request_body(description = "The changed spec (same name, nodes and provider)",
                 content((Object = "application/json"), (Object = "application/yaml"))),
    responses(
        (status = 200, description = "Updated (or, with dry_run, the plan)", body = UpdateAnswer),
        (status = 404, description = "No live deployment of this name", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not updatable in its state", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid spec, or one of another name", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<WriteQuery>,
    request: Request,
) -> ApiResult<Response> {
    let (spec, _) = read_spec(request, &state).await?;
    if spec.name != name {
        return Err(ApiError::invalid(format!(
            "the spec names deployment {:?}, the path {name:?}",
            spec.name
        )));
    }
    let deployments = caller.deployments(&state);
    let options = query.options();
    if query.dry_run.unwrap_or(false) {
        let plan = deployments.plan_update(&spec, &options).await?;
        return Ok(Json(UpdateAnswer::Plan(Box::new(plan))).into_response());
    }
    match deployments.update(&spec, &options).await? {
        UpdateOutcome::Updated {
            id,
            generation,
            deploy,
        } => Ok(Json(UpdateAnswer::Updated(DeploymentUpdated {
            id,
            generation,
            deploy_job: deploy.id,
        }))
        .into_response()),
        UpdateOutcome::NotFound => Err(ApiError::not_found(format!(
            "no live deployment named {name:?}"
        ))),
        UpdateOutcome::NotUpdatable { state, reason } => Err(ApiError::conflict(format!(
            "deployment {name:?} is {state}: {reason}"
        ))),
    }
}

/// A teardown asked for (or already done).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct TeardownAnswer {
    pub id: Uuid,
    /// `tearing_down`, or `torn_down` when it was already.
    pub state: DeploymentState,
    /// The teardown job (absent when it was torn down already).
    pub teardown_job: Option<Uuid>,
    /// The state it was in.
    pub was: Option<DeploymentState>,
}

#[derive(Clone, Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TeardownQuery {
    /// Queue of the teardown job (default: the queue the deployment was made on).
    pub queue: Option<String>,
}

/// Tear a deployment down: its containers, then its machines.
#[utoipa::path(delete, path = "/v1/deployments/{name}", tag = "deployments",
    params(("name" = String, Path, description = "The deployment's name or id"), TeardownQuery),
    responses(
        (status = 202, description = "Tearing down", body = TeardownAnswer),
        (status = 200, description = "Torn down already", body = TeardownAnswer),
        (status = 404, description = "No such deployment (or another owner's)", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn teardown(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<TeardownQuery>,
) -> ApiResult<Response> {
    let deployments = caller.deployments(&state);
    let id = resolve(&deployments, &name).await?;
    let queue = match query.queue {
        Some(queue) => queue,
        None => deployments.queue_of(id).await?,
    };
    let options = DeploymentOptions {
        queue,
        ..Default::default()
    };
    match deployments
        .teardown(id, "teardown requested through the HTTP API", &options)
        .await?
    {
        TeardownRequest::Requested { job, was } => Ok((
            StatusCode::ACCEPTED,
            Json(TeardownAnswer {
                id,
                state: DeploymentState::TearingDown,
                teardown_job: Some(job.id),
                was: Some(was),
            }),
        )
            .into_response()),
        TeardownRequest::AlreadyTornDown => Ok(Json(TeardownAnswer {
            id,
            state: DeploymentState::TornDown,
            teardown_job: None,
            was: None,
        })
        .into_response()),
        TeardownRequest::NotFound => Err(ApiError::not_found(format!("no deployment {name}"))),
    }
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// What the operator checked at the provider (kept in the history).
    pub note: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AckAnswer {
    pub deployment_id: Uuid,
    pub state: DeploymentState,
    /// The machines given up on.
    pub abandoned: Vec<String>,
}

/// Close a `leftovers` deployment once an operator checked the provider.
#[utoipa::path(post, path = "/v1/deployments/{name}/ack", tag = "deployments",
    params(("name" = String, Path, description = "The deployment's name or id")),
    request_body = AckRequest,
    responses(
        (status = 200, description = "Acknowledged: torn down", body = AckAnswer),
        (status = 404, description = "No such deployment", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not leftovers", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn ack(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: JsonBody<AckRequest>,
) -> ApiResult<Json<AckAnswer>> {
    let deployments = caller.deployments(&state);
    let id = resolve(&deployments, &name).await?;
    match deployments
        .acknowledge_leftovers(id, &body.value.note)
        .await?
    {
        AckOutcome::Acknowledged { abandoned } => Ok(Json(AckAnswer {
            deployment_id: id,
            state: DeploymentState::TornDown,
            abandoned,
        })),
        AckOutcome::NotLeftovers(found) => Err(ApiError::conflict(format!(
            "deployment {name} is {found}, not leftovers: nothing to acknowledge"
        ))),
        AckOutcome::NotFound => Err(ApiError::not_found(format!("no deployment {name}"))),
    }
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendRequest {
    /// How much later it expires (30m, 2h, 7d).
    pub by: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ExtendAnswer {
    pub id: Uuid,
    pub was: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub teardown_job: Uuid,
}

/// Move a deployment's expiry later.
#[utoipa::path(post, path = "/v1/deployments/{name}/extend", tag = "deployments",
    params(("name" = String, Path, description = "The deployment's name or id")),
    request_body = ExtendRequest,
    responses(
        (status = 200, description = "Extended", body = ExtendAnswer),
        (status = 404, description = "No such deployment", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No expiry, or not live", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid duration", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn extend(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: JsonBody<ExtendRequest>,
) -> ApiResult<Json<ExtendAnswer>> {
    let by: Duration =
        parse_duration(&body.value.by).map_err(|err| ApiError::invalid(format!("by: {err}")))?;
    let deployments = caller.deployments(&state);
    let id = resolve(&deployments, &name).await?;
    match deployments.extend(id, by).await? {
        ExtendOutcome::Extended {
            id,
            was,
            expires_at,
            teardown,
        } => Ok(Json(ExtendAnswer {
            id,
            was,
            expires_at,
            teardown_job: teardown.id,
        })),
        ExtendOutcome::NotExpiring => Err(ApiError::conflict(format!(
            "deployment {name} has no expiry, so there is nothing to extend (give one at create: ttl or expires_at in the spec)"
        ))),
        ExtendOutcome::NotLive(found) => Err(ApiError::conflict(format!(
            "deployment {name} is {found}: its expiry no longer applies"
        ))),
        ExtendOutcome::NotFound => Err(ApiError::not_found(format!("no deployment {name}"))),
    }
}
