//! `/v1/events`: the event stream (`lc:{events}` in Redis, what `lc events tail`
//! follows) as server-sent events. Each event's SSE id is its stream entry id, so a
//! client that reconnects with `Last-Event-ID` resumes right after the last event it
//! saw. A caller sees the events of its own jobs and deployments (a deployment's jobs
//! carry the deployment's id as their group) unless it is an admin.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use lc_producer::{EventReader, EventsFrom, StreamEvent};
use lc_shared::events::Event;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Problem};
use crate::state::AppState;

/// How long one read of the stream waits for an entry.
const READ_WAIT: Duration = Duration::from_secs(5);
/// Subjects whose visibility a stream remembers before it starts over.
const MAX_REMEMBERED: usize = 10_000;

#[derive(Clone, Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// `now` (default): events from now on; `start`: from the oldest the stream keeps.
    /// Ignored when resuming with `Last-Event-ID`.
    pub from: Option<String>,
    /// Only this deployment's events (name or id).
    pub deployment: Option<String>,
}

/// Decides, and remembers, which events a caller may see.
struct Visibility {
    caller: Caller,
    state: AppState,
    seen: HashMap<Uuid, bool>,
}

impl Visibility {
    async fn allows(&mut self, event: &Event) -> bool {
        if self.caller.admin {
            return true;
        }
        // A deployment's events and its jobs' carry its id as their group; other jobs'
        // events are their job's.
        let (subject, is_deployment) = match (event.group_id, event.job()) {
            (Some(group), _) => (group, true),
            (None, Some(job)) => (job.id, false),
            (None, None) => return false,
        };
        if let Some(&visible) = self.seen.get(&subject) {
            return visible;
        }
        let visible = if is_deployment {
            self.caller
                .deployments(&self.state)
                .resolve(&subject.to_string())
                .await
                .is_ok()
        } else {
            self.caller
                .inspector(&self.state)
                .job(subject)
                .await
                .is_ok()
        };
        if self.seen.len() >= MAX_REMEMBERED {
            self.seen.clear();
        }
        self.seen.insert(subject, visible);
        visible
    }
}

fn sse_event(entry: &StreamEvent) -> SseEvent {
    let kind = entry
        .event
        .as_ref()
        .map_or("unknown", |event| event.kind.as_str());
    SseEvent::default()
        .id(entry.entry_id.clone())
        .event(kind)
        .data(entry.raw.clone())
}

struct Follow {
    reader: EventReader,
    visibility: Visibility,
    pending: std::collections::VecDeque<StreamEvent>,
}

/// Follow the events of the caller's jobs and deployments (server-sent events; each
/// `data` is the event's JSON, each `id` its place to resume from).
#[utoipa::path(get, path = "/v1/events", tag = "events",
    params(EventsQuery,
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event id")),
    responses(
        (status = 200, description = "An endless stream of events", content_type = "text/event-stream", body = String),
        (status = 404, description = "No such deployment", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid `from` or Last-Event-ID", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn follow(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    Query(query): Query<EventsQuery>,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let last_id = headers
        .get("last-event-id")
        .map(|value| {
            value
                .to_str()
                .map(str::to_owned)
                .map_err(|_| ApiError::invalid("Last-Event-ID is not text"))
        })
        .transpose()?;
    let from = match (last_id, query.from.as_deref()) {
        (Some(id), _) => EventsFrom::After(id),
        (None, None | Some("now")) => EventsFrom::Now,
        (None, Some("start")) => EventsFrom::Start,
        (None, Some(other)) => {
            return Err(ApiError::invalid(format!(
                "from must be now or start, not {other:?}"
            )));
        }
    };
    let group = match &query.deployment {
        Some(name) => Some(caller.deployments(&state).resolve(name).await?),
        None => None,
    };
    let reader = caller.inspector(&state).events(from, group).await?;
    let shutdown = state.shutdown.clone();
    let follow = Follow {
        reader,
        visibility: Visibility {
            caller,
            state,
            seen: HashMap::new(),
        },
        pending: Default::default(),
    };
    let stream = futures_util::stream::unfold(follow, |mut follow| async move {
        loop {
            if let Some(entry) = follow.pending.pop_front() {
                let visible = match &entry.event {
                    Some(event) => follow.visibility.allows(event).await,
                    None => follow.visibility.caller.admin,
                };
                if visible {
                    return Some((Ok(sse_event(&entry)), follow));
                }
                continue;
            }
            match follow.reader.next(READ_WAIT).await {
                Ok(entries) => follow.pending.extend(entries),
                Err(err) => {
                    tracing::warn!(error = %lc_shared::store::error_chain(&err),
                                   "event stream ended: reading it failed");
                    return None;
                }
            }
        }
    });
    let stream = futures_util::StreamExt::take_until(stream, shutdown.cancelled_owned());
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
