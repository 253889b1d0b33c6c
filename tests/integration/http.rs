//! The HTTP API (`lc serve`) through a real HTTP client: every test starts its own
//! `lc serve` process on a free loopback port (on the test's own database and Redis
//! prefix) and talks to it with reqwest. Tokens are made with `lc tokens create`.
//!
//! - `jobs`: enqueue, list, show, cancel, retry, requeue, owners, pagination,
//!   idempotency
//! - `errors`: 401, 403, problems on every error path, 413, 429, secrets
//! - `deployments`: a deployment created and torn down with a worker running
//! - `events`: server-sent events, `Last-Event-ID`, owners, shutdown
//! - `schemathesis`: the OpenAPI document checked against the server

#![allow(clippy::unwrap_used)]

mod deployments;
mod errors;
mod events;
mod jobs;
mod schemathesis;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use lc_tests::{TestEnv, bin};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

/// A running `lc serve`.
pub struct Server {
    child: tokio::process::Child,
    pub url: String,
    log: PathBuf,
    pub client: reqwest::Client,
}

impl Server {
    /// Starts `lc serve --listen 127.0.0.1:0 EXTRA...` on this env and waits for its
    /// address.
    pub async fn start(env: &TestEnv, extra: &[&str]) -> Server {
        Server::start_with_client(env, extra, reqwest::Client::builder()).await
    }

    pub async fn start_with_client(
        env: &TestEnv,
        extra: &[&str],
        client: reqwest::ClientBuilder,
    ) -> Server {
        let log = std::env::temp_dir().join(format!("lc-serve-{}.log", env.prefix));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut child = tokio::process::Command::new(bin("lc"))
            .env("DATABASE_URL", &env.database_url)
            .env("REDIS_URL", &env.redis_url)
            .env("LC_REDIS_PREFIX", &env.prefix)
            .env("RUST_LOG", "info")
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("lc serve printed its address within 30s")
            .unwrap()
            .unwrap_or_else(|| {
                panic!(
                    "lc serve exited: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let url = line
            .strip_prefix("lc serve: listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        let client = client.no_proxy().build().unwrap();
        Server {
            child,
            url,
            log,
            client,
        }
    }

    /// Everything the server logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let request = self.client.request(method, format!("{}{path}", self.url));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.request(Method::GET, path, Some(token))
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Response {
        self.request(Method::POST, path, Some(token))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// Sends SIGTERM and waits for the exit code.
    pub async fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().unwrap() as i32;
        lc_tests::unsafe_free_kill(pid, libc::SIGTERM);
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("lc serve exits within 20s of SIGTERM")
            .unwrap();
        status.code()
    }
}

/// `lc tokens create --owner OWNER [--admin]`: the token.
pub fn token(env: &TestEnv, owner: &str, admin: bool) -> String {
    let mut args = vec!["tokens", "create", "--owner", owner];
    if admin {
        args.push("--admin");
    }
    let (code, out, err) = env.lc(&args);
    assert_eq!(code, 0, "lc tokens create failed: {err}");
    let token = out.trim().to_owned();
    assert!(token.starts_with("lc_") && token.len() > 40, "{token}");
    token
}

/// The body of an answer with this status, as JSON.
pub async fn expect_json(response: Response, status: StatusCode) -> Value {
    let got = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(got, status, "unexpected answer: {text}");
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("not JSON ({err}): {text}"))
}

/// Checks an error answer: the status, a problem body with its fields, a request id;
/// returns the problem.
pub async fn expect_problem(response: Response, status: StatusCode) -> Value {
    assert!(
        response.headers().contains_key("x-request-id"),
        "no x-request-id on {status}"
    );
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let problem = expect_json(response, status).await;
    assert_eq!(content_type, "application/problem+json", "{problem}");
    assert_eq!(problem["status"], status.as_u16(), "{problem}");
    assert!(
        problem["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:lc:problem:")
    );
    assert!(
        problem["title"].is_string() && problem["detail"].is_string(),
        "{problem}"
    );
    problem
}

/// Jobs of an owner in the database (by the `owner` column).
pub async fn jobs_of(env: &TestEnv, owner: &str) -> i64 {
    env.sql()
        .await
        .query_one("SELECT count(*) FROM jobs WHERE owner = $1", &[&owner])
        .await
        .unwrap()
        .get(0)
}

/// `lc serve --tls-cert/--tls-key` serves HTTPS with that certificate; `--help`
/// teaches the listen address, TLS, limits and their variables.
#[tokio::test]
async fn http_serves_tls_and_explains_itself() {
    let env = TestEnv::new().await;
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let dir = std::env::temp_dir().join(format!("lc-serve-tls-{}", env.prefix));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let root = reqwest::Certificate::from_pem(certified.cert.pem().as_bytes()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(root)
        .https_only(true);
    let server = Server::start_with_client(
        &env,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        client,
    )
    .await;
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let alice = token(&env, "alice", false);
    let answer = expect_json(server.get("/v1/jobs", &alice).await, StatusCode::OK).await;
    assert_eq!(answer["jobs"], serde_json::json!([]));
    assert_eq!(server.terminate().await, Some(0));

    let (code, help, _) = env.lc(&["serve", "--help"]);
    assert_eq!(code, 0);
    for needle in [
        "--listen",
        "127.0.0.1:8080",
        "LC_LISTEN",
        "--tls-cert",
        "LC_TLS_KEY",
        "--max-body",
        "--rate-limit",
        "lc tokens create",
        "/openapi.json",
    ] {
        assert!(
            help.contains(needle),
            "lc serve --help lacks {needle}: {help}"
        );
    }
}
