//! Traces across the queue: `lc` and two `lc-worker`s export over OTLP/HTTP to a
//! receiver inside the test (a real HTTP server on loopback decoding the protobuf
//! requests), and a 2-node docker-machine deployment must arrive as one trace:
//! `deployment.create` at the root, every `claim` under an `enqueue`, every job under
//! its claim, every docker-machine and Engine API call under a job. Secrets planted in
//! the environment and the spec (a driver token, a container's env value, the secret
//! key) must appear in no attribute.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use lc_tests::{TestEnv, bin, wait_for};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use uuid::Uuid;

use crate::deploy::{Containers, image};

/// One span as received, with its process's `service.name`.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
    attributes: HashMap<String, String>,
    /// Every string the span carries: attributes, event names and attributes, and its
    /// resource's attributes.
    texts: Vec<String>,
}

impl Received {
    fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// An OTLP/HTTP trace receiver on a loopback port, on a runtime of its own (so that the
/// test's blocking waits for worker processes cannot stall their last export).
struct Receiver {
    endpoint: String,
    spans: Arc<Mutex<Vec<Received>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Receiver {
    fn start() -> Receiver {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (bound, address) = std::sync::mpsc::channel();
        let state = spans.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                bound.send(listener.local_addr().unwrap()).unwrap();
                let app = axum::Router::new()
                    .route("/v1/traces", axum::routing::post(receive))
                    .with_state(state);
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let address = address.recv_timeout(Duration::from_secs(10)).unwrap();
        Receiver {
            endpoint: format!("http://{address}"),
            spans,
            stop: Some(stop),
        }
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn receive(State(spans): State<Arc<Mutex<Vec<Received>>>>, body: Bytes) -> impl IntoResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new()).into_response();
    };
    let mut received = Vec::new();
    for resource_spans in request.resource_spans {
        let resource: Vec<KeyValue> = resource_spans
            .resource
            .map(|resource| resource.attributes)
            .unwrap_or_default();
        let service = resource
            .iter()
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref()))
            .unwrap_or_default();
        let resource_texts: Vec<String> = resource.iter().flat_map(pair_texts).collect();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                let attributes: HashMap<String, String> = span
                    .attributes
                    .iter()
                    .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
                    .collect();
                let mut texts: Vec<String> = span.attributes.iter().flat_map(pair_texts).collect();
                texts.push(span.name.clone());
                for event in &span.events {
                    texts.push(event.name.clone());
                    texts.extend(event.attributes.iter().flat_map(pair_texts));
                }
                texts.extend(resource_texts.iter().cloned());
                received.push(Received {
                    service: service.clone(),
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent: span.parent_span_id,
                    attributes,
                    texts,
                });
            }
        }
    }
    spans.lock().unwrap().extend(received);
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

fn pair_texts(kv: &KeyValue) -> Vec<String> {
    vec![kv.key.clone(), text(kv.value.as_ref())]
}

/// An attribute's value as text, whatever its type (arrays and maps flattened).
fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|value| value.value.as_ref()) {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::BoolValue(value)) => value.to_string(),
        Some(any_value::Value::IntValue(value)) => value.to_string(),
        Some(any_value::Value::DoubleValue(value)) => value.to_string(),
        Some(any_value::Value::BytesValue(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        Some(any_value::Value::ArrayValue(array)) => array
            .values
            .iter()
            .map(|value| text(Some(value)))
            .collect::<Vec<_>>()
            .join(" "),
        Some(any_value::Value::KvlistValue(list)) => list
            .values
            .iter()
            .flat_map(pair_texts)
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn docker_host() -> String {
    std::env::var("DOCKER_HOST")
        .expect("DOCKER_HOST must name the test engine (. .lc/env, or scripts/test.sh)")
}

/// Runs `lc` with this env's settings plus `extra` variables, off the test's runtime.
async fn lc(env: &TestEnv, args: &[&str], extra: &[(&str, &str)]) -> (i32, String, String) {
    let output = tokio::process::Command::new(bin("lc"))
        .env("DATABASE_URL", &env.database_url)
        .env("REDIS_URL", &env.redis_url)
        .env("LC_REDIS_PREFIX", &env.prefix)
        .envs(extra.iter().copied())
        .args(args)
        .output()
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Walks up from `span` through the spans received; the first ancestor whose name
/// `is_wanted`, if any.
fn ancestor<'a>(
    by_id: &HashMap<Vec<u8>, &'a Received>,
    span: &Received,
    is_wanted: impl Fn(&Received) -> bool,
) -> Option<&'a Received> {
    let mut parent = by_id.get(&span.parent).copied();
    while let Some(found) = parent {
        if is_wanted(found) {
            return Some(found);
        }
        parent = by_id.get(&found.parent).copied();
    }
    None
}

/// `span` and its descendants, one per line, indented by depth (shown when the test
/// fails, and with `--no-capture`).
fn tree(spans: &[Received], span: &Received, depth: usize) -> String {
    let mut out = format!("{}{} [{}]\n", "  ".repeat(depth), span.name, span.service);
    for child in spans.iter().filter(|child| child.parent == span.span_id) {
        out.push_str(&tree(spans, child, depth + 1));
    }
    out
}

#[tokio::test]
async fn traces_a_deployment_is_one_trace_from_create_to_its_last_container() {
    let env = TestEnv::new().await;
    let name = format!("traced-{}", &env.prefix[1..9]);
    let _guard = Containers(vec![name.clone()]);
    let receiver = Receiver::start();
    let token = format!("dop_v1_{}", Uuid::new_v4().simple());
    let env_secret = format!("env-secret-{}", Uuid::new_v4().simple());
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
        // Batches go out every 100 ms instead of every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ("DIGITALOCEAN_ACCESS_TOKEN", token.as_str()),
    ];
    let engine = format!("STANDIN_ENGINE_URL={}", docker_host());
    let mut workers: Vec<_> = (0..2)
        .map(|_| env.spawn_worker_process_with_env(&["--machine-env", &engine], &otel))
        .collect();
    let spec = format!(
        "name: {name}\nowner: tests\nnodes: 2\n\
         provider: {{kind: docker-machine, driver: digitalocean, \
         driver_flags: {{digitalocean-region: fra1}}, credentials_env: [DIGITALOCEAN_ACCESS_TOKEN]}}\n\
         payload:\n  image: {}\n  command: [sleep, '3600']\n  network_mode: none\n  pull: never\n  \
         env: {{TRACE_TEST_SECRET: {env_secret}}}\n\
         max_attempts: 3\ntimeouts: {{stop: 1s}}\nhealth_interval: 1s\n",
        image()
    );
    let path = std::env::temp_dir().join(format!("lc-spec-{}-traced.yaml", env.prefix));
    std::fs::write(&path, &spec).unwrap();
    let (code, out, err) = lc(
        &env,
        &["deploy", "create", path.to_str().unwrap(), "--json"],
        &otel,
    )
    .await;
    assert_eq!(code, 0, "lc deploy create failed: {err}");
    let id: Uuid = serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let store = env.deployment_store();
    wait_for(
        "the deployment to be deployed",
        Duration::from_secs(90),
        || async {
            let row = store.deployment(id).await.unwrap().unwrap();
            assert_ne!(row.state, "torn_down", "{:?}", row.last_error);
            (row.state == "deployed").then_some(())
        },
    )
    .await;

    // The health checks' chain goes on as long as the deployment: wait for its second
    // link, which starts a trace of its own.
    let client = env.sql().await;
    wait_for(
        "the second health check",
        Duration::from_secs(60),
        || async {
            let done: i64 = client
                .query_one(
                    "SELECT count(*) FROM jobs WHERE group_id = $1 AND kind = 'health_check'
                   AND (payload->>'chain')::INT8 >= 2 AND state = 'succeeded'",
                    &[&id],
                )
                .await
                .unwrap()
                .get(0);
            (done > 0).then_some(())
        },
    )
    .await;

    // Workers flush what they still hold when they stop.
    for worker in &workers {
        worker.signal(libc::SIGTERM);
    }
    for worker in &mut workers {
        assert!(
            worker.wait(Duration::from_secs(30)).is_some(),
            "worker did not stop: {}",
            worker.log_text()
        );
    }
    let all_spans = receiver.spans();
    let roots: Vec<&Received> = all_spans
        .iter()
        .filter(|span| span.name == "deployment.create")
        .collect();
    assert_eq!(roots.len(), 1, "one deployment.create span: {all_spans:#?}");
    let root = roots[0];
    assert_eq!(root.service, "lc");
    assert!(root.parent.is_empty(), "deployment.create is the root");
    assert_eq!(
        root.attribute("deployment.id"),
        Some(id.to_string().as_str())
    );

    let by_id: HashMap<Vec<u8>, &Received> = all_spans
        .iter()
        .map(|span| (span.span_id.clone(), span))
        .collect();
    for span in &all_spans {
        if !span.parent.is_empty() {
            assert!(
                by_id.contains_key(&span.parent),
                "the parent of {} never arrived",
                span.name
            );
        }
    }
    eprintln!("the trace, as received:\n{}", tree(&all_spans, root, 0));

    // Later health checks are traces of their own, each from the check before it.
    let (spans, others): (Vec<Received>, Vec<Received>) = all_spans
        .iter()
        .cloned()
        .partition(|span| span.trace_id == root.trace_id);
    let other_roots: Vec<&Received> = others
        .iter()
        .filter(|span| span.parent.is_empty())
        .collect();
    assert!(
        !other_roots.is_empty(),
        "the second health check has a trace"
    );
    for other in &others {
        let root_of_other = other_roots
            .iter()
            .find(|candidate| candidate.trace_id == other.trace_id)
            .unwrap_or_else(|| panic!("{} is in a trace without a root", other.name));
        assert_eq!(
            root_of_other.name, "health_check.schedule",
            "{}",
            other.name
        );
        assert_eq!(root_of_other.service, "lc-worker");
    }
    assert!(
        others.iter().any(|span| span.name == "job health_check"),
        "a later check ran in its own trace"
    );

    // The deployment's own trace: one root, and everything else under it.
    let names: Vec<&str> = spans.iter().map(|span| span.name.as_str()).collect();
    let named = |prefix: &str| -> Vec<&Received> {
        spans
            .iter()
            .filter(|span| span.name.starts_with(prefix))
            .collect()
    };
    for span in &spans {
        if span.parent.is_empty() {
            assert_eq!(span.name, "deployment.create", "a second root: {span:?}");
        }
    }
    assert!(
        spans
            .iter()
            .filter(|span| span.name == "job health_check")
            .count()
            <= 1,
        "only the first health check is in the deployment's trace: {names:?}"
    );

    // Each claim is under the enqueue that stored its job; each job's span under its
    // claim; the first enqueue under deployment.create, the later ones under the jobs
    // (handlers) that made them.
    let claims = named("claim ");
    let jobs = named("job ");
    assert!(
        claims.len() >= 4,
        "provision, 2 machines, deploy: {names:?}"
    );
    for claim in &claims {
        let parent = by_id[&claim.parent];
        assert_eq!(
            parent.name, "enqueue",
            "{} is under {}",
            claim.name, parent.name
        );
        assert_eq!(claim.service, "lc-worker");
    }
    assert_eq!(
        jobs.len(),
        claims.len(),
        "one job span per claim: {names:?}"
    );
    for job in &jobs {
        let claim = by_id[&job.parent];
        assert!(
            claim.name.starts_with("claim "),
            "{} is under {}",
            job.name,
            claim.name
        );
        assert_eq!(claim.attribute("job.id"), job.attribute("job.id"));
        assert_eq!(job.name["job ".len()..], claim.name["claim ".len()..]);
    }
    for enqueue in named("enqueue") {
        let parent = by_id[&enqueue.parent];
        assert!(
            parent.name == "deployment.create"
                || ancestor(&by_id, enqueue, |span| span.name.starts_with("job ")).is_some(),
            "enqueue under {}",
            parent.name
        );
    }
    for kind in ["provision", "provision_machine", "deploy"] {
        assert!(
            jobs.iter().any(|job| job.name == format!("job {kind}")),
            "no job {kind}: {names:?}"
        );
    }
    let provisioned: Vec<&&Received> = jobs
        .iter()
        .filter(|job| job.name == "job provision_machine")
        .collect();
    assert!(provisioned.len() >= 2, "{names:?}");

    // Every docker-machine call and Engine API call is under the job that made it.
    let machine_calls = named("docker-machine ");
    let engine_calls = named("docker ");
    for call in machine_calls.iter().chain(engine_calls.iter()) {
        assert!(
            ancestor(&by_id, call, |span| span.name.starts_with("job ")).is_some(),
            "{} is under no job",
            call.name
        );
        assert_eq!(call.service, "lc-worker");
    }
    let creates: Vec<&&Received> = machine_calls
        .iter()
        .filter(|call| call.name == "docker-machine create")
        .collect();
    assert_eq!(creates.len(), 2, "one create per node: {names:?}");
    for create in &creates {
        let job = ancestor(&by_id, create, |span| span.name.starts_with("job ")).unwrap();
        assert_eq!(job.name, "job provision_machine");
        assert_eq!(create.attribute("process.exit_code"), Some("0"));
    }
    let containers_started = engine_calls
        .iter()
        .filter(|call| call.name == "docker start_container")
        .count();
    assert_eq!(containers_started, 2, "both containers started: {names:?}");

    // No secret in any attribute, event or resource.
    let secret_key = std::env::var("LC_SECRET_KEY").ok();
    for span in &all_spans {
        for text in &span.texts {
            assert!(
                !text.contains(&token),
                "the driver token in {}: {text}",
                span.name
            );
            assert!(
                !text.contains(&env_secret),
                "a container env value in {}: {text}",
                span.name
            );
            assert!(
                !text.contains("PRIVATE KEY"),
                "a private key in {}",
                span.name
            );
            if let Some(key) = &secret_key {
                assert!(
                    !text.contains(key.as_str()),
                    "LC_SECRET_KEY in {}",
                    span.name
                );
            }
        }
    }

    // Tear down with an untraced worker: nothing left behind.
    let mut cleaner = env.spawn_worker_process_with_env(
        &["--machine-env", &engine],
        &[("DIGITALOCEAN_ACCESS_TOKEN", token.as_str())],
    );
    let (code, _, err) = lc(
        &env,
        &["deploy", "teardown", &name, "--wait", "--timeout", "60s"],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    cleaner.signal(libc::SIGTERM);
    cleaner.wait(Duration::from_secs(20));
    let _ = std::fs::remove_file(&path);
}

/// A request to `lc serve` that carries a caller's `traceparent` continues the caller's
/// trace: the request, the enqueue it makes, and the job's claim and run on a worker
/// are all in it. The API token appears in no attribute.
#[tokio::test]
async fn traces_an_http_request_continues_the_callers_trace_to_the_job() {
    use tokio::io::AsyncBufReadExt;

    let env = TestEnv::new().await;
    let receiver = Receiver::start();
    let otel = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let token = crate::http::token(&env, "alice", false);
    let mut server = tokio::process::Command::new(bin("lc"))
        .env("DATABASE_URL", &env.database_url)
        .env("REDIS_URL", &env.redis_url)
        .env("LC_REDIS_PREFIX", &env.prefix)
        .envs(otel)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let url = line
        .strip_prefix("lc serve: listening on ")
        .unwrap()
        .to_owned();
    let mut worker = env.spawn_worker_process_with_env(&[], &otel);

    let trace_id = Uuid::new_v4().simple().to_string();
    let caller_span = "00f067aa0ba902b7";
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("{url}/v1/jobs"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        .json(&serde_json::json!({"kind": "noop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::CREATED);
    let job: Uuid = response.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    env.wait_terminal(&[job], Duration::from_secs(30)).await;

    lc_tests::unsafe_free_kill(server.id().unwrap() as i32, libc::SIGTERM);
    tokio::time::timeout(Duration::from_secs(20), server.wait())
        .await
        .unwrap()
        .unwrap();
    worker.signal(libc::SIGTERM);
    assert!(worker.wait(Duration::from_secs(30)).is_some());

    let spans = receiver.spans();
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let find = |name: &str| {
        spans
            .iter()
            .find(|span| span.name == name)
            .unwrap_or_else(|| panic!("no {name} span: {spans:#?}"))
    };
    let request = find("request");
    assert_eq!(request.service, "lc-serve");
    assert_eq!(
        hex(&request.trace_id),
        trace_id,
        "the request continues the caller's trace"
    );
    assert_eq!(hex(&request.parent), caller_span);
    let enqueue = find("enqueue");
    assert_eq!(enqueue.parent, request.span_id);
    let claim = find("claim noop");
    assert_eq!(claim.parent, enqueue.span_id);
    assert_eq!(claim.attribute("job.id"), Some(job.to_string().as_str()));
    let run = find("job noop");
    assert_eq!(run.parent, claim.span_id);
    for span in [enqueue, claim, run] {
        assert_eq!(hex(&span.trace_id), trace_id, "{}", span.name);
    }
    for span in &spans {
        for text in &span.texts {
            assert!(
                !text.contains(&token),
                "the API token in {}: {text}",
                span.name
            );
        }
    }
}
