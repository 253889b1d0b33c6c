//! `/v1/events`: the caller's job events as server-sent events, resumable with
//! `Last-Event-ID`, none of another owner's; an open stream does not hold up shutdown.

use std::time::Duration;

use futures_util::StreamExt;
use lc_tests::TestEnv;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Server, expect_json, token};

/// One server-sent event: its id, its event name and its data as JSON.
#[derive(Debug, Clone)]
struct Sse {
    id: String,
    event: String,
    data: Value,
}

/// Reads events from an SSE response until `done` says so (or 60 s pass).
struct SseReader {
    stream: futures_util::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buffer: String,
}

impl SseReader {
    fn new(response: reqwest::Response) -> SseReader {
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        SseReader {
            stream: response
                .bytes_stream()
                .map(|chunk| chunk.map(|bytes| bytes.to_vec()))
                .boxed(),
            buffer: String::new(),
        }
    }

    async fn next(&mut self) -> Sse {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = Sse {
                    id: String::new(),
                    event: String::new(),
                    data: Value::Null,
                };
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id:") {
                        event.id = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("event:") {
                        event.event = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                event.data = serde_json::from_str(&data).unwrap();
                return event;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(60), self.stream.next())
                .await
                .expect("an event within 60s")
                .expect("the stream goes on")
                .unwrap();
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Events until one about job `id` reaching `state`, that one included.
    async fn until(&mut self, id: &str, state: &str) -> Vec<Sse> {
        let mut seen = Vec::new();
        loop {
            let event = self.next().await;
            let done = event.data["job"]["id"] == id && event.data["to"] == state;
            seen.push(event);
            if done {
                return seen;
            }
        }
    }
}

async fn open(server: &Server, token: &str, last_event_id: Option<&str>) -> SseReader {
    let mut request = server.request(Method::GET, "/v1/events", Some(token));
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    SseReader::new(request.send().await.unwrap())
}

#[tokio::test]
async fn http_events_stream_resumes_with_last_event_id_and_shows_only_own_jobs() {
    let env = TestEnv::new().await;
    let server = Server::start(&env, &[]).await;
    let alice = token(&env, "alice", false);
    let bob = token(&env, "bob", false);
    let worker = env.spawn_worker(env.worker_config());
    let mut alices = open(&server, &alice, None).await;
    let mut bobs = open(&server, &bob, None).await;

    let bob_job = expect_json(
        server
            .post("/v1/jobs", &bob, &json!({"kind": "noop"}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let bob_job = bob_job["id"].as_str().unwrap().to_owned();
    let job = expect_json(
        server
            .post("/v1/jobs", &alice, &json!({"kind": "noop"}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let job = job["id"].as_str().unwrap().to_owned();

    let seen = alices.until(&job, "succeeded").await;
    let states: Vec<&str> = seen
        .iter()
        .map(|event| event.data["to"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["queued", "running", "succeeded"], "{seen:?}");
    for event in &seen {
        assert_eq!(
            event.data["job"]["id"],
            job.as_str(),
            "alice sees only her job: {event:?}"
        );
        assert_eq!(event.event, "job.state_changed");
        assert!(!event.id.is_empty());
    }
    let bob_seen = bobs.until(&bob_job, "succeeded").await;
    assert!(
        bob_seen
            .iter()
            .all(|event| event.data["job"]["id"] == bob_job.as_str()),
        "{bob_seen:?}"
    );

    // Resuming after the first event gives the second, then the third.
    let mut resumed = open(&server, &alice, Some(&seen[0].id)).await;
    let next = resumed.next().await;
    assert_eq!(next.id, seen[1].id);
    assert_eq!(resumed.next().await.id, seen[2].id);
    let bad = server
        .request(Method::GET, "/v1/events", Some(&alice))
        .header("last-event-id", "yesterday")
        .send()
        .await
        .unwrap();
    super::expect_problem(bad, StatusCode::UNPROCESSABLE_ENTITY).await;

    // Open streams do not hold up a graceful shutdown.
    worker.stop().await;
    assert_eq!(server.terminate().await, Some(0));
}
