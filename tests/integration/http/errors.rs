//! Refusals over HTTP: tokens (401), bad input on every route (a problem, nothing
//! changed), bodies over the limit (413), the rate limit (429), and no token in any
//! log line or answer.

use std::time::Duration;

use lc_tests::TestEnv;
use reqwest::{Method, StatusCode};
use serde_json::json;

use super::{Server, expect_json, expect_problem, jobs_of, token};

/// No token, a malformed one, an unknown one, a revoked one and an expired one are
/// all 401 with `WWW-Authenticate: Bearer`, and none says which it was.
#[tokio::test]
async fn http_refuses_missing_bad_revoked_and_expired_tokens() {
    let env = TestEnv::new().await;
    let server = Server::start(&env, &[]).await;
    let alice = token(&env, "alice", false);
    expect_json(server.get("/v1/jobs", &alice).await, StatusCode::OK).await;

    let (code, out, _) = env.lc(&[
        "tokens",
        "create",
        "--owner",
        "carol",
        "--expires",
        "1s",
        "--json",
    ]);
    assert_eq!(code, 0);
    let expiring: serde_json::Value = serde_json::from_str(&out).unwrap();
    let expiring = expiring["token"].as_str().unwrap().to_owned();
    let (code, out, _) = env.lc(&["tokens", "create", "--owner", "dave", "--json"]);
    assert_eq!(code, 0);
    let revoked: serde_json::Value = serde_json::from_str(&out).unwrap();
    expect_json(
        server
            .get("/v1/jobs", revoked["token"].as_str().unwrap())
            .await,
        StatusCode::OK,
    )
    .await;
    let (code, _, err) = env.lc(&["tokens", "revoke", revoked["id"].as_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let (code, listed, _) = env.lc(&["tokens", "ls", "--json"]);
    assert_eq!(code, 0);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 3);
    assert!(
        !listed.to_string().contains(&alice),
        "lc tokens ls shows no token"
    );
    // Until carol's 1 s token has expired.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let unknown = format!("lc_{}", "A".repeat(43));
    let cases: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        (
            "not a bearer token",
            Some("Basic YWxpY2U6c2VjcmV0".to_owned()),
        ),
        ("unknown token", Some(format!("Bearer {unknown}"))),
        (
            "almost alice's",
            Some(format!("Bearer {}x", &alice[..alice.len() - 1])),
        ),
        (
            "revoked",
            Some(format!("Bearer {}", revoked["token"].as_str().unwrap())),
        ),
        ("expired", Some(format!("Bearer {expiring}"))),
    ];
    for (what, header) in cases {
        let mut request = server.request(Method::GET, "/v1/jobs", None);
        if let Some(header) = header {
            request = request.header("authorization", header);
        }
        let response = request.send().await.unwrap();
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"lc\"",
            "{what}"
        );
        let problem = expect_problem(response, StatusCode::UNAUTHORIZED).await;
        assert!(!problem.to_string().contains("lc_"), "{what}: {problem}");
    }
    // Routes that are not there, and the document, answer without a token.
    expect_problem(
        server
            .request(Method::GET, "/v1/nothing", None)
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
    )
    .await;
}

/// A request and the status it must get: (method, path, content type, body, status).
type Case = (
    Method,
    String,
    Option<&'static str>,
    Option<String>,
    StatusCode,
);

/// Bad input to every endpoint gets a 4xx problem (JSON syntax, unknown fields, wrong
/// types, missing content type, invalid names, unknown ids, wrong methods, a body over
/// the limit) and changes nothing.
#[tokio::test]
async fn http_bad_input_gets_a_problem_and_changes_nothing() {
    let env = TestEnv::new().await;
    let server = Server::start(&env, &["--max-body", "4KiB", "--rate-limit", "off"]).await;
    let alice = token(&env, "alice", false);
    let admin = token(&env, "ops", true);
    let missing = uuid::Uuid::now_v7();
    let big = json!({"kind": "noop", "payload": {"blob": "x".repeat(8 * 1024)}});
    let cases: Vec<Case> = vec![
        (Method::POST, "/v1/jobs".into(), Some("application/json"), Some("{\"kind\": ".into()), StatusCode::BAD_REQUEST),
        (Method::POST, "/v1/jobs".into(), Some("application/json"), Some("{\"kind\": \"noop\", \"colour\": 1}".into()), StatusCode::BAD_REQUEST),
        (Method::POST, "/v1/jobs".into(), Some("application/json"), Some("{\"kind\": 7}".into()), StatusCode::BAD_REQUEST),
        (Method::POST, "/v1/jobs".into(), Some("application/json"), Some("[]".into()), StatusCode::BAD_REQUEST),
        (Method::POST, "/v1/jobs".into(), None, Some("{\"kind\": \"noop\"}".into()), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (Method::POST, "/v1/jobs".into(), Some("text/plain"), Some("{\"kind\": \"noop\"}".into()), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (Method::POST, "/v1/jobs".into(), Some("application/json"), Some(big.to_string()), StatusCode::PAYLOAD_TOO_LARGE),
        (Method::POST, "/v1/jobs".into(), Some("application/json"), Some("{\"kind\": \"no_such_kind\"}".into()), StatusCode::UNPROCESSABLE_ENTITY),
        (Method::POST, "/v1/jobs".into(), Some("application/json"), Some("{\"kind\": \"noop\", \"queue\": \"Bad Queue!\"}".into()), StatusCode::UNPROCESSABLE_ENTITY),
        (Method::POST, "/v1/jobs".into(), Some("application/json"), Some("{\"kind\": \"noop\", \"max_attempts\": 0}".into()), StatusCode::UNPROCESSABLE_ENTITY),
        (Method::POST, "/v1/jobs".into(), Some("application/json"), Some("{\"kind\": \"noop\", \"priority\": \"urgent\"}".into()), StatusCode::UNPROCESSABLE_ENTITY),
        (Method::POST, "/v1/jobs".into(), Some("application/json"), Some("{\"kind\": \"noop\", \"delay\": \"soon\"}".into()), StatusCode::UNPROCESSABLE_ENTITY),
        (Method::POST, "/v1/jobs".into(), Some("application/json"), Some("{\"kind\": \"sleep\", \"payload\": {\"ms\": \"long\"}}".into()), StatusCode::UNPROCESSABLE_ENTITY),
        (Method::POST, "/v1/jobs/batch".into(), Some("application/json"), Some("{\"jobs\": [{\"kind\": \"noop\"}, {\"kind\": \"nope\"}]}".into()), StatusCode::UNPROCESSABLE_ENTITY),
        (Method::POST, "/v1/jobs/batch".into(), Some("application/json"), Some("{\"jobs\": []}".into()), StatusCode::UNPROCESSABLE_ENTITY),
        (Method::GET, "/v1/jobs/not-a-uuid".into(), None, None, StatusCode::BAD_REQUEST),
        (Method::GET, format!("/v1/jobs/{missing}"), None, None, StatusCode::NOT_FOUND),
        (Method::POST, format!("/v1/jobs/{missing}/cancel"), None, None, StatusCode::NOT_FOUND),
        (Method::GET, "/v1/jobs?state=bogus".into(), None, None, StatusCode::UNPROCESSABLE_ENTITY),
        (Method::GET, "/v1/jobs?limit=0".into(), None, None, StatusCode::UNPROCESSABLE_ENTITY),
        (Method::GET, "/v1/jobs?limit=many".into(), None, None, StatusCode::BAD_REQUEST),
        (Method::GET, "/v1/jobs?colour=red".into(), None, None, StatusCode::BAD_REQUEST),
        (Method::DELETE, "/v1/jobs".into(), None, None, StatusCode::METHOD_NOT_ALLOWED),
        (Method::PATCH, format!("/v1/jobs/{missing}"), None, None, StatusCode::METHOD_NOT_ALLOWED),
        (Method::GET, "/v1/nothing/here".into(), None, None, StatusCode::NOT_FOUND),
        (Method::GET, "/v1/deployments/no-such-deployment".into(), None, None, StatusCode::NOT_FOUND),
        (Method::DELETE, "/v1/deployments/no-such-deployment".into(), None, None, StatusCode::NOT_FOUND),
        (Method::POST, "/v1/deployments".into(), Some("application/json"), Some("{\"name\": \"x\", \"unknown\": 1}".into()), StatusCode::BAD_REQUEST),
        (Method::POST, "/v1/deployments".into(), Some("application/yaml"), Some("name: [".into()), StatusCode::BAD_REQUEST),
        (Method::POST, "/v1/deployments".into(), Some("text/csv"), Some("a,b".into()), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (Method::POST, "/v1/deployments/x/extend".into(), Some("application/json"), Some("{\"by\": \"1h\", \"more\": true}".into()), StatusCode::BAD_REQUEST),
        (Method::GET, "/v1/events?from=yesterday".into(), None, None, StatusCode::UNPROCESSABLE_ENTITY),
        (Method::GET, "/v1/workers?recent=forever".into(), None, None, StatusCode::UNPROCESSABLE_ENTITY),
        // NUL, which no text column holds (found by schemathesis: a 500 before).
        (Method::GET, "/v1/jobs?queue=a%00b".into(), None, None, StatusCode::UNPROCESSABLE_ENTITY),
        (Method::GET, "/v1/jobs?kind=a%00b".into(), None, None, StatusCode::UNPROCESSABLE_ENTITY),
        (Method::GET, "/v1/deployments/a%00b".into(), None, None, StatusCode::NOT_FOUND),
        (Method::GET, "/v1/events?deployment=a%00b".into(), None, None, StatusCode::NOT_FOUND),
        (Method::POST, "/v1/jobs".into(), Some("application/json"), Some("{\"kind\": \"noop\", \"idempotency_key\": \"a\\u0000b\"}".into()), StatusCode::UNPROCESSABLE_ENTITY),
        (Method::POST, "/v1/jobs".into(), Some("application/json"), Some("{\"kind\": \"sleep\", \"payload\": {\"ms\": 1}, \"queue\": \"q\", \"concurrency_key\": \"a\\u0000\"}".into()), StatusCode::UNPROCESSABLE_ENTITY),
        (Method::POST, "/v1/deployments".into(), Some("application/json"), Some(nul_spec()), StatusCode::UNPROCESSABLE_ENTITY),
    ];
    for (method, path, content_type, body, status) in cases {
        let mut request = server.request(method.clone(), &path, Some(&alice));
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap();
        let problem = expect_problem(response, status).await;
        assert!(
            !problem["detail"].as_str().unwrap().is_empty(),
            "{method} {path}"
        );
    }
    // Invalid names and limits on the admin's routes.
    let pause = server
        .request(Method::POST, "/v1/queues/Bad%20Queue/pause", Some(&admin))
        .send()
        .await
        .unwrap();
    expect_problem(pause, StatusCode::UNPROCESSABLE_ENTITY).await;
    let limit = server
        .request(Method::PUT, "/v1/concurrency-limits/k", Some(&admin))
        .json(&json!({"limit": 0}))
        .send()
        .await
        .unwrap();
    expect_problem(limit, StatusCode::UNPROCESSABLE_ENTITY).await;
    let limit = server
        .request(Method::PUT, "/v1/concurrency-limits/k", Some(&admin))
        .json(&json!({"limit": "2"}))
        .send()
        .await
        .unwrap();
    expect_problem(limit, StatusCode::BAD_REQUEST).await;

    assert_eq!(
        jobs_of(&env, "alice").await,
        0,
        "no refused request made a job"
    );
    assert_eq!(env.job_count().await, 0);
    let deployments: i64 = env
        .sql()
        .await
        .query_one("SELECT count(*) FROM deployments", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(deployments, 0);
}

/// A valid local spec but for a NUL in an environment value.
fn nul_spec() -> String {
    json!({
        "name": "nul-spec", "owner": "alice", "nodes": 1, "provider": {"kind": "local"},
        "payload": {"image": "lc-busybox:latest", "env": {"GREETING": "a\u{0}b"}}
    })
    .to_string()
}

/// Over its rate, a token gets 429 with Retry-After; another token is not slowed.
#[tokio::test]
async fn http_rate_limit_answers_429_with_retry_after() {
    let env = TestEnv::new().await;
    let server = Server::start(&env, &["--rate-limit", "5/m"]).await;
    let alice = token(&env, "alice", false);
    let bob = token(&env, "bob", false);
    for _ in 0..5 {
        expect_json(server.get("/v1/jobs", &alice).await, StatusCode::OK).await;
    }
    let limited = server.get("/v1/jobs", &alice).await;
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let problem = expect_problem(limited, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(
        problem["detail"].as_str().unwrap().contains("rate limit"),
        "{problem}"
    );
    expect_json(server.get("/v1/jobs", &bob).await, StatusCode::OK).await;
}

/// Tokens never reach the server's log or any answer, whatever the request did.
#[tokio::test]
async fn http_tokens_never_in_logs_or_answers() {
    let env = TestEnv::new().await;
    let server = Server::start(&env, &[]).await;
    let alice = token(&env, "alice", false);
    let admin = token(&env, "ops", true);
    let wrong = format!("{}Q", &alice[..alice.len() - 1]);
    let mut answers = String::new();
    for token in [&alice, &admin, &wrong] {
        for (method, path, body) in [
            (Method::POST, "/v1/jobs", Some(json!({"kind": "noop"}))),
            (Method::POST, "/v1/jobs", Some(json!({"kind": "nope"}))),
            (Method::GET, "/v1/jobs", None),
            (Method::GET, "/v1/queues", None),
            (Method::POST, "/v1/queues/default/pause", None),
            (Method::GET, "/v1/jobs/not-a-uuid", None),
            (Method::GET, "/v1/deployments", None),
        ] {
            let mut request = server
                .request(method, path, Some(token))
                .header("x-request-id", "secret-check");
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.unwrap();
            answers.push_str(&format!("{:?}", response.headers()));
            answers.push_str(&response.text().await.unwrap());
        }
    }
    let log = server.log_text();
    assert!(
        log.contains("request_id=secret-check"),
        "the log has the request id: {log}"
    );
    for token in [&alice, &admin, &wrong] {
        let secret = &token[3..];
        assert!(!log.contains(secret), "a token is in the server's log");
        assert!(!answers.contains(secret), "a token is in an answer");
    }
    let rows: String = env
        .sql()
        .await
        .query_one("SELECT string_agg(t::TEXT, ' ') FROM api_tokens t", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        !rows.contains(&alice[3..]) && !rows.contains(&admin[3..]),
        "a token is stored in clear"
    );
}
