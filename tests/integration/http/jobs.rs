//! Jobs over HTTP: every endpoint, owners, idempotency, pagination under inserts.

use std::collections::HashSet;
use std::time::Duration;

use lc_tests::{TestEnv, wait_for};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Server, expect_json, expect_problem, jobs_of, token};

/// Alice's jobs are hers: she enqueues (one and a batch), lists, reads, cancels,
/// retries; bob gets 404 for each of them (as for a job that does not exist); the
/// admin sees and acts on all; queue-wide actions need an admin.
#[tokio::test]
async fn http_jobs_endpoints_and_owner_isolation() {
    let env = TestEnv::new().await;
    let server = Server::start(&env, &[]).await;
    let alice = token(&env, "alice", false);
    let bob = token(&env, "bob", false);
    let admin = token(&env, "ops", true);

    let one = expect_json(
        server
            .post("/v1/jobs", &alice, &json!({"kind": "sleep", "payload": {"ms": 10}, "queue": "q-http", "priority": "high", "delay": "1h"}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let id = one["id"].as_str().unwrap().to_owned();
    let batch = expect_json(
        server
            .post("/v1/jobs/batch", &alice, &json!({"jobs": [{"kind": "noop", "queue": "q-http"}, {"kind": "noop", "queue": "q-http"}]}))
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(batch["jobs"].as_array().unwrap().len(), 2);
    expect_json(
        server
            .post(
                "/v1/jobs",
                &bob,
                &json!({"kind": "noop", "queue": "q-http"}),
            )
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(jobs_of(&env, "alice").await, 3);

    // Show: the job with its history.
    let detail = expect_json(
        server.get(&format!("/v1/jobs/{id}"), &alice).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(detail["job"]["id"], id.as_str());
    assert_eq!(detail["job"]["state"], "queued");
    assert_eq!(detail["job"]["priority"], "high");
    assert_eq!(detail["job"]["owner"], "alice");
    assert_eq!(detail["events"][0]["to_state"], "queued");

    // Lists: each owner sees its own; the admin sees all; filters apply.
    let list = |token: String, query: &'static str| {
        let server = &server;
        async move {
            expect_json(
                server.get(&format!("/v1/jobs{query}"), &token).await,
                StatusCode::OK,
            )
            .await
        }
    };
    assert_eq!(
        list(alice.clone(), "").await["jobs"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        list(bob.clone(), "").await["jobs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        list(admin.clone(), "").await["jobs"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        list(alice.clone(), "?kind=sleep").await["jobs"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        list(alice.clone(), "?state=queued&queue=q-http&limit=2").await["jobs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Bob cannot see or touch alice's job: the same 404 as an id that names nothing.
    let missing = uuid::Uuid::now_v7();
    for path in [format!("/v1/jobs/{id}"), format!("/v1/jobs/{missing}")] {
        let problem = expect_problem(server.get(&path, &bob).await, StatusCode::NOT_FOUND).await;
        assert!(
            problem["detail"].as_str().unwrap().starts_with("no job "),
            "{problem}"
        );
    }
    for action in ["cancel", "retry", "requeue"] {
        expect_problem(
            server
                .request(Method::POST, &format!("/v1/jobs/{id}/{action}"), Some(&bob))
                .send()
                .await
                .unwrap(),
            StatusCode::NOT_FOUND,
        )
        .await;
    }
    assert_eq!(
        expect_json(
            server.get(&format!("/v1/jobs/{id}"), &alice).await,
            StatusCode::OK
        )
        .await["job"]["state"],
        "queued",
        "bob's refused actions changed nothing"
    );

    // Requeue of a queued job is a conflict; cancel, then retry, work; a second
    // cancel is a conflict in the CLI's words.
    let requeue = server
        .request(
            Method::POST,
            &format!("/v1/jobs/{id}/requeue"),
            Some(&alice),
        )
        .send()
        .await
        .unwrap();
    expect_problem(requeue, StatusCode::CONFLICT).await;
    let cancelled = expect_json(
        server
            .request(Method::POST, &format!("/v1/jobs/{id}/cancel"), Some(&alice))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (cancelled["was"].as_str(), cancelled["state"].as_str()),
        (Some("queued"), Some("cancelled"))
    );
    let again = expect_problem(
        server
            .request(Method::POST, &format!("/v1/jobs/{id}/cancel"), Some(&alice))
            .send()
            .await
            .unwrap(),
        StatusCode::CONFLICT,
    )
    .await;
    assert_eq!(
        again["detail"],
        format!("job {id} is already cancelled; nothing to cancel")
    );
    let retried = expect_json(
        server
            .request(Method::POST, &format!("/v1/jobs/{id}/retry"), Some(&admin))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(retried["state"], "queued");

    // The deployment domain's kinds act on deployments by id, whoever owns them: an
    // owner's token makes them only through /v1/deployments.
    let someone_elses = uuid::Uuid::new_v4();
    for (kind, payload) in [
        ("teardown", json!({"deployment_id": someone_elses})),
        (
            "deploy",
            json!({"deployment_id": someone_elses, "generation": 1}),
        ),
    ] {
        let response = server
            .post(
                "/v1/jobs",
                &alice,
                &json!({"kind": kind, "payload": payload}),
            )
            .await;
        let problem = expect_problem(response, StatusCode::FORBIDDEN).await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("/v1/deployments"),
            "{problem}"
        );
    }
    let batch = json!({"jobs": [{"kind": "noop"}, {"kind": "teardown", "payload": {"deployment_id": someone_elses}}]});
    expect_problem(
        server.post("/v1/jobs/batch", &alice, &batch).await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(
        jobs_of(&env, "alice").await,
        3,
        "the refused enqueues made nothing"
    );

    // Queues, workers, stuck, limits: read by all; pause, resume and limits by admins.
    let queues = expect_json(server.get("/v1/queues", &alice).await, StatusCode::OK).await;
    assert!(
        queues
            .as_array()
            .unwrap()
            .iter()
            .any(|queue| queue["queue"] == "q-http"),
        "{queues}"
    );
    expect_json(server.get("/v1/workers", &alice).await, StatusCode::OK).await;
    expect_json(
        server.get("/v1/stuck?older_than=1s", &alice).await,
        StatusCode::OK,
    )
    .await;
    expect_json(
        server.get("/v1/concurrency-limits", &alice).await,
        StatusCode::OK,
    )
    .await;
    for (method, path, body) in [
        (Method::POST, "/v1/queues/q-http/pause", None),
        (Method::POST, "/v1/queues/q-http/resume", None),
        (
            Method::PUT,
            "/v1/concurrency-limits/tenant-a",
            Some(json!({"limit": 2})),
        ),
        (Method::DELETE, "/v1/concurrency-limits/tenant-a", None),
    ] {
        let mut request = server.request(method.clone(), path, Some(&alice));
        if let Some(body) = &body {
            request = request.json(body);
        }
        expect_problem(request.send().await.unwrap(), StatusCode::FORBIDDEN).await;
        let mut request = server.request(method, path, Some(&admin));
        if let Some(body) = &body {
            request = request.json(body);
        }
        expect_json(request.send().await.unwrap(), StatusCode::OK).await;
    }
    let paused = expect_json(
        server
            .request(Method::POST, "/v1/queues/q-http/pause", Some(&admin))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(paused, json!({"queue": "q-http", "paused": true}));
    let queues = expect_json(server.get("/v1/queues", &admin).await, StatusCode::OK).await;
    let queue = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|queue| queue["queue"] == "q-http")
        .unwrap();
    assert_eq!(queue["paused"], true);
    let limit = expect_json(
        server
            .request(Method::PUT, "/v1/concurrency-limits/tenant-b", Some(&admin))
            .json(&json!({"limit": 3}))
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (limit["key"].as_str(), limit["limit"].as_i64()),
        (Some("tenant-b"), Some(3))
    );

    // Health, readiness, metrics, the document: no token needed.
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        let response = server
            .request(Method::GET, path, None)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    let metrics = server
        .request(Method::GET, "/metrics", None)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("lc_http_requests_total{route=\"/v1/jobs/{id}\""),
        "{metrics}"
    );
}

/// The same Idempotency-Key with the same body answers the same and makes one job,
/// also when the requests race; with another body it is refused and makes nothing.
/// Keys are the owner's: bob's same key is another job.
#[tokio::test]
async fn http_idempotency_key_makes_one_job_and_refuses_another_body() {
    let env = TestEnv::new().await;
    let server = Server::start(&env, &[]).await;
    let alice = token(&env, "alice", false);
    let bob = token(&env, "bob", false);
    let body = json!({"kind": "sleep", "payload": {"ms": 42}});
    let send = |token: String, key: &'static str, body: Value| {
        let server = &server;
        async move {
            server
                .request(Method::POST, "/v1/jobs", Some(&token))
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let first = send(alice.clone(), "order-42", body.clone()).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(!first.headers().contains_key("idempotent-replayed"));
    let first = first.json::<Value>().await.unwrap();
    let second = send(alice.clone(), "order-42", body.clone()).await;
    assert_eq!(second.status(), StatusCode::CREATED);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    assert_eq!(
        second.json::<Value>().await.unwrap(),
        first,
        "the same answer"
    );
    assert_eq!(jobs_of(&env, "alice").await, 1);

    let other = send(
        alice.clone(),
        "order-42",
        json!({"kind": "sleep", "payload": {"ms": 43}}),
    )
    .await;
    let problem = expect_problem(other, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("used before with another request"),
        "{problem}"
    );
    assert_eq!(
        jobs_of(&env, "alice").await,
        1,
        "the refused request made nothing"
    );

    let bobs = expect_json(
        send(bob.clone(), "order-42", body.clone()).await,
        StatusCode::CREATED,
    )
    .await;
    assert_ne!(bobs["id"], first["id"], "keys are per owner");

    // Eight at once with a new key: one job, eight equal answers.
    let racing: Vec<_> = (0..8)
        .map(|_| send(alice.clone(), "race-1", body.clone()))
        .collect();
    let mut ids = HashSet::new();
    for response in futures_util::future::join_all(racing).await {
        ids.insert(
            expect_json(response, StatusCode::CREATED).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(jobs_of(&env, "alice").await, 2);

    // A batch with a key: the same jobs again, in the same order.
    let batch = json!({"jobs": [{"kind": "noop"}, {"kind": "noop"}, {"kind": "noop"}]});
    let send_batch = || {
        server
            .request(Method::POST, "/v1/jobs/batch", Some(&alice))
            .header("Idempotency-Key", "batch-1")
            .json(&batch)
            .send()
    };
    let first = expect_json(send_batch().await.unwrap(), StatusCode::CREATED).await;
    let again = expect_json(send_batch().await.unwrap(), StatusCode::CREATED).await;
    assert_eq!(first, again);
    assert_eq!(jobs_of(&env, "alice").await, 5);
}

/// Keys are held to their first request for `--idempotency-ttl` only, then pruned:
/// another body with the key is then no longer refused, and the job made with the key
/// still answers for it (no second job).
#[tokio::test]
async fn http_idempotency_keys_are_pruned_after_their_ttl() {
    let env = TestEnv::new().await;
    let server = Server::start(&env, &["--idempotency-ttl", "3s"]).await;
    let alice = token(&env, "alice", false);
    let send = |ms: u64| {
        server
            .request(Method::POST, "/v1/jobs", Some(&alice))
            .header("Idempotency-Key", "order-7")
            .json(&json!({"kind": "sleep", "payload": {"ms": ms}}))
            .send()
    };
    let first = expect_json(send(1).await.unwrap(), StatusCode::CREATED).await;
    expect_problem(send(2).await.unwrap(), StatusCode::UNPROCESSABLE_ENTITY).await;
    let client = env.sql().await;
    wait_for("the key to be pruned", Duration::from_secs(30), || async {
        let left: i64 = client
            .query_one("SELECT count(*) FROM api_idempotency_keys", &[])
            .await
            .ok()?
            .get(0);
        (left == 0).then_some(())
    })
    .await;
    let again = expect_json(send(2).await.unwrap(), StatusCode::CREATED).await;
    assert_eq!(
        again["id"], first["id"],
        "the job made with the key answers"
    );
    assert_eq!(jobs_of(&env, "alice").await, 1);
}

/// Walking the pages of the job list while other jobs are being enqueued returns every
/// job that existed at the start exactly once: no row skipped, none repeated.
#[tokio::test]
async fn http_cursor_pages_neither_skip_nor_repeat_while_jobs_are_added() {
    let env = TestEnv::new().await;
    let server = Server::start(&env, &["--rate-limit", "off"]).await;
    let alice = token(&env, "alice", false);
    let mut existing = HashSet::new();
    for _ in 0..3 {
        let jobs: Vec<Value> = (0..50)
            .map(|_| json!({"kind": "noop", "run_at": "2099-01-01T00:00:00Z"}))
            .collect();
        let answer = expect_json(
            server
                .post("/v1/jobs/batch", &alice, &json!({"jobs": jobs}))
                .await,
            StatusCode::CREATED,
        )
        .await;
        for job in answer["jobs"].as_array().unwrap() {
            existing.insert(job["id"].as_str().unwrap().to_owned());
        }
    }
    let adding = async {
        let mut added = 0;
        for _ in 0..40 {
            server
                .post(
                    "/v1/jobs",
                    &alice,
                    &json!({"kind": "noop", "run_at": "2099-01-01T00:00:00Z"}),
                )
                .await;
            added += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        added
    };
    let walking = async {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(cursor) => format!("/v1/jobs?limit=7&cursor={cursor}"),
                None => "/v1/jobs?limit=7".to_owned(),
            };
            let page = expect_json(server.get(&path, &alice).await, StatusCode::OK).await;
            for job in page["jobs"].as_array().unwrap() {
                seen.push(job["id"].as_str().unwrap().to_owned());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            match page["next"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        seen
    };
    let (added, seen) = tokio::join!(adding, walking);
    assert_eq!(added, 40);
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "a job was listed twice");
    assert!(
        existing.is_subset(&unique),
        "{} of the first jobs were skipped",
        existing.difference(&unique).count()
    );
    let bad = expect_problem(
        server.get("/v1/jobs?cursor=not-a-cursor", &alice).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(bad["detail"], "invalid cursor \"not-a-cursor\"");
}
