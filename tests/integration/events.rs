//! Events for upstream services (`lc_shared::events`): every job and deployment state
//! change reaches the event stream `<prefix>:{events}` once per id and in order per
//! subject; a worker killed between the commit of its changes and their delivery loses
//! none of them (a batch sent again keeps its ids); a deployment's webhook gets each of
//! its changes, signed, in stream order, checked by the Standard Webhooks reference
//! library in a loopback receiver; `lc events tail` follows the stream; bad webhook
//! specs are refused before anything is written.

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use lc_shared::events::Event;
use lc_shared::store::{Isolation, enqueue_in_transaction, relay_turn};
use lc_shared::{JobKind, NewJob};
use lc_tests::{TestEnv, bin, enqueue_many, wait_for};
use serde_json::{Value, json};
use uuid::Uuid;

/// Every entry of the test's event stream, oldest first: (entry id, JSON, event).
async fn stream(env: &TestEnv) -> Vec<(String, String, Event)> {
    let client = redis::Client::open(env.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let reply: redis::streams::StreamRangeReply =
        redis::AsyncCommands::xrange_all(&mut conn, env.queue.events_key())
            .await
            .unwrap();
    reply
        .ids
        .into_iter()
        .map(|entry| {
            let raw: String = entry.get("event").expect("an event field");
            let event: Event = serde_json::from_str(&raw)
                .unwrap_or_else(|err| panic!("not an event: {raw}: {err}"));
            (entry.id, raw, event)
        })
        .collect()
}

/// History rows not on the stream yet (job and deployment transitions).
async fn unpublished(env: &TestEnv) -> i64 {
    env.sql()
        .await
        .query_one(
            "SELECT (SELECT count(*) FROM job_events WHERE published_at IS NULL AND to_state IS NOT NULL)
                  + (SELECT count(*) FROM deployment_events WHERE published_at IS NULL AND to_state IS NOT NULL)",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn wait_published(env: &TestEnv) {
    wait_for(
        "every event on the stream",
        Duration::from_secs(60),
        || async { (unpublished(env).await == 0).then_some(()) },
    )
    .await;
}

/// A job transition as the history holds it.
#[derive(Debug)]
struct Transition {
    job_id: Uuid,
    from: Option<String>,
    to: String,
    attempt: i64,
}

/// Every job transition, by event id.
async fn job_transitions(env: &TestEnv) -> HashMap<Uuid, Transition> {
    env.sql()
        .await
        .query(
            "SELECT id, job_id, from_state, to_state, attempt FROM job_events WHERE to_state IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| {
            (
                row.get(0),
                Transition {
                    job_id: row.get(1),
                    from: row.get(2),
                    to: row.get(3),
                    attempt: row.get(4),
                },
            )
        })
        .collect()
}

/// Checks that each subject's events, in stream order, form a chain of changes: each
/// one starts where the one before ended. `subject` names an event's subject.
fn assert_chains(events: &[&Event], subject: impl Fn(&Event) -> String) {
    let mut last: HashMap<String, &Event> = HashMap::new();
    for event in events {
        let key = subject(event);
        if let (Some(before), Some(from)) = (last.get(&key), &event.from) {
            assert_eq!(
                from, &before.to,
                "{key}: {} ({:?} -> {}) follows {} (-> {}) on the stream",
                event.id, event.from, event.to, before.id, before.to
            );
        }
        last.insert(key, event);
    }
}

/// Every job change reaches the stream once, with the history's facts, and each job's
/// changes arrive in the order they happened, with two workers' relays at work at once.
#[tokio::test]
async fn every_job_change_reaches_the_stream_once_and_in_order() {
    let env = TestEnv::new().await;
    let mut ids = enqueue_many(&env, JobKind::Noop, json!({}), 40).await;
    ids.extend(enqueue_many(&env, JobKind::Sleep, json!({"ms": 1, "fail_times": 1}), 5).await);
    ids.extend(
        enqueue_many(
            &env,
            JobKind::Sleep,
            json!({"fail_times": 1, "fatal": true}),
            3,
        )
        .await,
    );
    let workers = [
        env.spawn_worker(env.worker_config()),
        env.spawn_worker(env.worker_config()),
    ];
    env.wait_terminal(&ids, Duration::from_secs(60)).await;
    wait_published(&env).await;
    let transitions = job_transitions(&env).await;
    let stream = stream(&env).await;

    let mut seen = HashSet::new();
    for (entry, raw, event) in &stream {
        assert!(
            seen.insert(event.id),
            "event {} twice on the stream",
            event.id
        );
        let row = transitions
            .get(&event.id)
            .unwrap_or_else(|| panic!("entry {entry} is no transition: {raw}"));
        let job = event.job().unwrap_or_else(|| panic!("no job in {raw}"));
        assert_eq!(event.v, 1);
        assert_eq!(event.kind, "job.state_changed");
        assert_eq!(job.id, row.job_id);
        assert_eq!(job.attempt, row.attempt);
        assert_eq!(event.from, row.from);
        assert_eq!(event.to, row.to);
        assert!(
            matches!(job.kind.as_deref(), Some("noop" | "sleep")),
            "{raw}"
        );
        assert_eq!(job.queue.as_deref(), Some("default"));
    }
    assert_eq!(
        seen,
        transitions.keys().copied().collect::<HashSet<_>>(),
        "the stream and the history hold different transitions"
    );
    // 48 jobs: enqueued, claimed, ended; 5 retried once more (more only if a lease
    // expired on a slow machine).
    assert!(stream.len() >= 48 * 3 + 5 * 2, "{} events", stream.len());
    let events: Vec<&Event> = stream.iter().map(|(_, _, event)| event).collect();
    assert_chains(&events, |event| event.job().unwrap().id.to_string());
    for id in &ids {
        let mine: Vec<&&Event> = events
            .iter()
            .filter(|event| event.job().unwrap().id == *id)
            .collect();
        assert_eq!(
            mine.first().unwrap().from,
            None,
            "job {id} starts elsewhere"
        );
        assert!(
            ["succeeded", "dead"].contains(&mine.last().unwrap().to.as_str()),
            "job {id} does not end on the stream"
        );
    }
    for worker in workers {
        worker.stop().await;
    }
}

/// The outbox, directly: a worker whose relay has sent a batch to the stream but not
/// marked it is killed (SIGKILL) while its jobs' changes keep committing behind it. A
/// restarted worker delivers every change; the batch comes again with the same ids and
/// the same content, and nothing else twice.
#[tokio::test]
async fn a_worker_killed_between_commit_and_delivery_loses_no_event() {
    let env = TestEnv::new().await;
    let ids = enqueue_many(&env, JobKind::Noop, json!({}), 30).await;
    let marker = std::env::temp_dir().join(format!("lc-events-drill-{}", env.prefix));
    let mut drill = env.spawn_worker_binary(
        &bin("lc-events-drill"),
        &[],
        &[("LC_EVENTS_DRILL_PAUSE", marker.to_str().unwrap())],
    );
    // The drill's jobs run on while its relay waits, holding its first batch.
    env.wait_terminal(&ids, Duration::from_secs(60)).await;
    let sent: Vec<Uuid> = wait_for(
        "the drill's relay to pause",
        Duration::from_secs(30),
        || {
            let marker = marker.clone();
            async move { std::fs::read_to_string(&marker).ok() }
        },
    )
    .await
    .lines()
    .map(|line| line.parse().unwrap())
    .collect();
    assert!(!sent.is_empty());
    let before: Vec<Uuid> = stream(&env).await.iter().map(|(_, _, e)| e.id).collect();
    assert_eq!(
        before, sent,
        "the stream holds the paused batch, and only it"
    );
    let transitions = job_transitions(&env).await;
    assert!(transitions.len() >= 30 * 3);
    assert_eq!(
        unpublished(&env).await,
        transitions.len() as i64,
        "committed changes are waiting, the sent batch among them"
    );

    drill.signal(libc::SIGKILL);
    // Killed by a signal: no exit code; reaped here.
    drill.wait(Duration::from_secs(10));
    let first: HashMap<Uuid, String> = stream(&env)
        .await
        .into_iter()
        .map(|(_, raw, event)| (event.id, raw))
        .collect();

    let worker = env.spawn_worker_process(&[]);
    wait_published(&env).await;
    let after = stream(&env).await;
    let mut count: HashMap<Uuid, usize> = HashMap::new();
    for (_, raw, event) in &after {
        *count.entry(event.id).or_default() += 1;
        if let Some(earlier) = first.get(&event.id) {
            let earlier: Value = serde_json::from_str(earlier).unwrap();
            let again: Value = serde_json::from_str(raw).unwrap();
            assert_eq!(earlier, again, "event {} changed when sent again", event.id);
        }
    }
    for id in transitions.keys() {
        let expected = if sent.contains(id) { 2 } else { 1 };
        assert_eq!(
            count.get(id).copied().unwrap_or_default(),
            expected,
            "event {id} on the stream"
        );
    }
    assert_eq!(after.len(), transitions.len() + sent.len());
    drop(worker);
    let _ = std::fs::remove_file(&marker);
}

/// The stream keeps about `--events-maxlen` entries; the database keeps the history.
#[tokio::test]
async fn the_stream_is_capped() {
    let env = TestEnv::new().await;
    let ids = enqueue_many(&env, JobKind::Noop, json!({}), 200).await;
    let mut config = env.worker_config();
    config.events.events_maxlen = 20;
    config.events.events_batch = 50;
    let worker = env.spawn_worker(config);
    env.wait_terminal(&ids, Duration::from_secs(60)).await;
    wait_published(&env).await;
    let kept = stream(&env).await.len();
    // `MAXLEN ~` trims whole nodes (100 entries by default), never below the cap.
    assert!(
        (20..=150).contains(&kept),
        "the stream kept {kept} of 600 events"
    );
    worker.stop().await;
}

/// A Standard Webhooks receiver: `tests/webhook/receiver.py` on a loopback port, which
/// checks each request with the reference library (`standardwebhooks` from PyPI).
struct Receiver {
    child: Child,
    port: u16,
    record: PathBuf,
}

impl Receiver {
    fn start(secret: &str, fail_first: usize) -> Receiver {
        let python = std::env::var("LC_TEST_PYTHON").unwrap_or_else(|_| {
            let home = std::env::var("LC_HOME")
                .unwrap_or_else(|_| format!("{}/../.lc", env!("CARGO_MANIFEST_DIR")));
            format!("{home}/venv/bin/python3")
        });
        let record = std::env::temp_dir().join(format!("lc-webhooks-{}.jsonl", Uuid::new_v4()));
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("webhook/receiver.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .arg(&record)
            .env("RECEIVER_SECRET", secret)
            .env("RECEIVER_FAIL_FIRST", fail_first.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "cannot run {python} (the Python with standardwebhooks that scripts/test.sh \
                     installs; set LC_TEST_PYTHON): {err}"
                )
            });
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let port = first.trim().parse().unwrap_or_else(|_| {
            panic!("the receiver did not start (is standardwebhooks installed for {python}?)")
        });
        Receiver {
            child,
            port,
            record,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/lc", self.port)
    }

    /// Every request so far, in the order they came.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.record);
    }
}

fn new_secret() -> String {
    let bytes: Vec<u8> = [Uuid::new_v4(), Uuid::new_v4()]
        .iter()
        .flat_map(|id| id.as_bytes().to_vec())
        .collect();
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The name of the secret's variable in these tests.
const SECRET_ENV: &str = "EVENTS_TEST_WEBHOOK_SECRET";

fn spec(name: &str, nodes: usize, webhook: &str) -> String {
    let image = std::env::var("LC_IMAGE").unwrap_or_else(|_| "lc-busybox:latest".to_owned());
    format!(
        "name: {name}\nowner: tests\nnodes: {nodes}\nprovider: {{kind: local}}\n\
         payload:\n  image: {image}\n  command: [sleep, '3600']\n  network_mode: none\n  pull: never\n\
         timeouts: {{stop: 1s}}\n{webhook}"
    )
}

/// `lc` with this env's settings plus `extra` variables, off the test's runtime.
async fn lc(env: &TestEnv, args: &[&str], extra: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = tokio::process::Command::new(bin("lc"));
    command
        .env("DATABASE_URL", &env.database_url)
        .env("REDIS_URL", &env.redis_url)
        .env("LC_REDIS_PREFIX", &env.prefix)
        .env_remove(SECRET_ENV)
        .args(args);
    for (name, value) in extra {
        command.env(name, value);
    }
    let output = command.output().await.unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn write_spec(env: &TestEnv, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "lc-spec-{}-{}.yaml",
        env.prefix,
        Uuid::new_v4().simple()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

/// Removes the deployment's containers when the test ends, however it ends.
struct Containers(Uuid);

impl Drop for Containers {
    fn drop(&mut self) {
        let listed = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=lc.deployment={}", self.0),
            ])
            .output();
        if let Ok(listed) = listed {
            for id in String::from_utf8_lossy(&listed.stdout).split_whitespace() {
                let _ = Command::new("docker")
                    .args(["rm", "-f", id])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

/// A 3-node deployment's whole life (create, provision, deploy, teardown) on the stream
/// and at its webhook: every change once per id on the stream; at the receiver every
/// request verified by the reference library, each change accepted once, in the order
/// of the stream (the first delivery refused twice and retried with the same
/// `webhook-id`); the secret nowhere but in the environment; `lc events tail` shows the
/// same changes.
#[tokio::test]
async fn a_deployment_life_reaches_the_stream_and_its_signed_webhook_in_order() {
    let env = TestEnv::new().await;
    let name = format!("ev-{}", &env.prefix[1..9]);
    let secret = new_secret();
    let receiver = Receiver::start(&secret, 2);
    let webhook = format!(
        "webhook: {{url: '{}', secret_env: {SECRET_ENV}}}\n",
        receiver.url()
    );
    let worker = env.spawn_worker_process_with_env(&[], &[(SECRET_ENV, &secret)]);
    let path = write_spec(&env, &spec(&name, 3, &webhook));
    let with_secret = [(SECRET_ENV, secret.as_str())];
    let (code, out, err) = lc(
        &env,
        &[
            "deploy",
            "create",
            path.to_str().unwrap(),
            "--wait",
            "--json",
            "--timeout",
            "120s",
        ],
        &with_secret,
    )
    .await;
    assert_eq!(code, 0, "lc deploy create failed: {err}\n{out}");
    let id: Uuid = env
        .deployment_store()
        .deployment_id(&name)
        .await
        .unwrap()
        .expect("the deployment");
    let _containers = Containers(id);
    let (code, _, err) = lc(
        &env,
        &["deploy", "teardown", &name, "--wait", "--timeout", "120s"],
        &[],
    )
    .await;
    assert_eq!(code, 0, "teardown failed: {err}");

    // Every change in the history, in the order it was made.
    let history: Vec<(Uuid, String, Option<String>, String)> = env
        .sql()
        .await
        .query(
            "SELECT id, subject, from_state, to_state FROM deployment_events
             WHERE deployment_id = $1 AND to_state IS NOT NULL ORDER BY at",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2), row.get(3)))
        .collect();
    let path_of = |subject: &str| -> Vec<String> {
        history
            .iter()
            .filter(|(_, s, _, _)| s == subject)
            .map(|(_, _, _, to)| to.clone())
            .collect()
    };
    assert_eq!(
        path_of("deployment"),
        [
            "provisioning",
            "provisioned",
            "deploying",
            "deployed",
            "tearing_down",
            "torn_down"
        ]
    );
    // Each machine pending, creating, ready, removed; each container creating,
    // running, removed (more only if a step was retried).
    assert!(history.len() >= 6 + 3 * 4 + 3 * 3, "{history:#?}");

    wait_published(&env).await;
    let accepted = |requests: &[Value]| -> Vec<String> {
        requests
            .iter()
            .filter(|request| request["status"] == 204)
            .map(|request| request["webhook_id"].as_str().unwrap().to_owned())
            .collect()
    };
    wait_for(
        "every change at the webhook",
        Duration::from_secs(90),
        || async { (accepted(&receiver.requests()).len() >= history.len()).then_some(()) },
    )
    .await;
    // The deliveries' own jobs are done (their last events on the stream too).
    wait_for("the webhook jobs to end", Duration::from_secs(30), || async {
        let live: i64 = env
            .sql()
            .await
            .query_one(
                "SELECT count(*) FROM jobs WHERE kind = 'webhook' AND state IN ('queued', 'running')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (live == 0).then_some(())
    })
    .await;
    wait_published(&env).await;

    // The stream: each change of the deployment once, with its facts, chains in order.
    let stream = stream(&env).await;
    let mine: Vec<&Event> = stream
        .iter()
        .map(|(_, _, event)| event)
        .filter(|event| event.group_id == Some(id) && event.kind.starts_with("deployment."))
        .collect();
    let stream_ids: Vec<Uuid> = mine.iter().map(|event| event.id).collect();
    assert_eq!(
        stream_ids.iter().collect::<HashSet<_>>().len(),
        stream_ids.len(),
        "a change twice on the stream"
    );
    assert_eq!(
        stream_ids.iter().collect::<HashSet<_>>(),
        history.iter().map(|(id, ..)| id).collect::<HashSet<_>>()
    );
    for event in &mine {
        let (_, subject, from, to) = history.iter().find(|(i, ..)| *i == event.id).unwrap();
        assert_eq!((&event.from, &event.to), (from, to));
        assert_eq!(event.detail["deployment"], json!({"id": id, "name": name}));
        let expected_subject = match subject.split_once(' ') {
            Some((kind, subject_name)) => json!([kind, subject_name]),
            None => json!(["deployment", name]),
        };
        assert_eq!(
            json!([
                event.detail["subject"]["kind"],
                event.detail["subject"]["name"]
            ]),
            expected_subject
        );
        assert!(event.detail["subject"]["id"].is_string(), "{event:?}");
    }
    assert_chains(&mine, |event| {
        format!("{}", event.detail["subject"]["name"])
    });
    // The deployment's jobs are on the stream too, in its group.
    assert!(stream.iter().any(|(_, _, event)| {
        event.group_id == Some(id)
            && event
                .job()
                .is_some_and(|job| job.kind.as_deref() == Some("webhook"))
    }));

    // The webhook: every request verified; each change accepted once, in stream order.
    let requests = receiver.requests();
    for request in &requests {
        assert_eq!(request["verified"], true, "refused: {request}");
    }
    let accepted = accepted(&requests);
    let stream_order: Vec<String> = stream_ids.iter().map(Uuid::to_string).collect();
    assert_eq!(
        accepted, stream_order,
        "webhook order differs from the stream's"
    );
    // The first delivery was refused twice, then accepted: three tries, one id.
    let first_three: Vec<(&str, i64)> = requests[..3]
        .iter()
        .map(|r| {
            (
                r["webhook_id"].as_str().unwrap(),
                r["status"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        first_three,
        [
            (stream_order[0].as_str(), 503),
            (stream_order[0].as_str(), 503),
            (stream_order[0].as_str(), 204)
        ]
    );
    assert_eq!(requests.len(), history.len() + 2);
    // Each body is the event as on the stream.
    for request in requests.iter().filter(|r| r["status"] == 204) {
        let body: Value = serde_json::from_str(request["body"].as_str().unwrap()).unwrap();
        let on_stream = stream
            .iter()
            .find(|(_, _, event)| event.id.to_string() == request["webhook_id"])
            .unwrap();
        assert_eq!(body, serde_json::from_str::<Value>(&on_stream.1).unwrap());
    }
    // Deliveries are ordinary jobs: one per change, visible to `lc jobs`.
    let (code, out, err) = lc(&env, &["jobs", "ls", "--kind", "webhook", "--json"], &[]).await;
    assert_eq!(code, 0, "{err}");
    let jobs: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(jobs.len(), history.len());
    assert!(jobs.iter().all(|job| job["state"] == "succeeded"), "{out}");
    assert_eq!(
        jobs.iter()
            .map(|job| job["attempt"].as_i64().unwrap())
            .max(),
        Some(3)
    );

    // The secret is nowhere but in the environment.
    let key = secret.trim_start_matches("whsec_");
    let client = env.sql().await;
    for (table, column) in [
        ("jobs", "payload::TEXT"),
        ("jobs", "COALESCE(last_error, '')"),
        ("job_events", "COALESCE(message, '')"),
        ("deployments", "spec::TEXT"),
        ("deployment_events", "COALESCE(message, '')"),
        ("webhook_deliveries", "event::TEXT"),
    ] {
        let found: i64 = client
            .query_one(
                &format!("SELECT count(*) FROM {table} WHERE strpos({column}, $1) > 0"),
                &[&key],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(found, 0, "the secret is in {table}.{column}");
    }
    assert!(stream.iter().all(|(_, raw, _)| !raw.contains(key)));
    assert!(
        !worker.log_text().contains(key),
        "the secret is in the worker's log"
    );

    // `lc events tail` shows the deployment's changes and its jobs', as the stream has them.
    let group: Vec<&str> = stream
        .iter()
        .filter(|(_, _, event)| event.group_id == Some(id))
        .map(|(_, raw, _)| raw.as_str())
        .collect();
    let count = group.len().to_string();
    let (code, out, err) = lc(
        &env,
        &[
            "events",
            "tail",
            "--deployment",
            &name,
            "--json",
            "--from-start",
            "--count",
            &count,
        ],
        &[],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let tailed: Vec<Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let expected: Vec<Value> = group
        .iter()
        .map(|raw| serde_json::from_str(raw).unwrap())
        .collect();
    assert_eq!(tailed, expected);
    let (code, out, _) = lc(
        &env,
        &[
            "events",
            "tail",
            "--deployment",
            &name,
            "--from-start",
            "--count",
            &count,
        ],
        &[],
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), group.len());
    let created = format!("deployment.state_changed  deployment {name}  -> provisioning");
    assert!(out.contains(&created), "no {created:?} in:\n{out}");
    drop(worker);
}

/// Environment variables given to `lc`.
type Environment<'a> = Vec<(&'a str, &'a str)>;

/// Webhook URLs that are not http(s), and secrets named but not set (or not usable)
/// where the deployment is created, are refused with the field named; nothing is
/// written.
#[tokio::test]
async fn bad_webhooks_are_refused_and_nothing_is_written() {
    let env = TestEnv::new().await;
    let name = format!("bad-{}", &env.prefix[1..9]);
    let secret = new_secret();
    let hook = |url: &str| format!("webhook: {{url: '{url}', secret_env: {SECRET_ENV}}}\n");
    let cases: Vec<(String, Environment, &str)> = vec![
        (
            spec(&name, 3, &hook("ftp://127.0.0.1/hook")),
            vec![(SECRET_ENV, secret.as_str())],
            "webhook.url",
        ),
        (
            spec(&name, 3, &hook("127.0.0.1:9/hook")),
            vec![(SECRET_ENV, secret.as_str())],
            "webhook.url",
        ),
        (
            spec(&name, 3, &hook("http://127.0.0.1:9/hook")),
            vec![],
            "webhook.secret_env",
        ),
        (
            spec(&name, 3, &hook("http://127.0.0.1:9/hook")),
            vec![(SECRET_ENV, "hunter2")],
            "webhook.secret_env",
        ),
        (
            spec(
                &name,
                3,
                "webhook: {url: 'http://127.0.0.1:9/', secret_env: 'not a name'}\n",
            ),
            vec![],
            "webhook.secret_env",
        ),
    ];
    for (text, extra, field) in cases {
        let path = write_spec(&env, &text);
        let (code, out, err) =
            lc(&env, &["deploy", "create", path.to_str().unwrap()], &extra).await;
        assert_eq!(code, 1, "accepted: {text}\n{out}");
        assert!(err.contains(field), "{field} not named: {err}");
        assert!(
            !err.contains("hunter2"),
            "the secret's value is in the error: {err}"
        );
        if extra.is_empty() && field == "webhook.secret_env" && text.contains(SECRET_ENV) {
            assert!(err.contains(SECRET_ENV) && err.contains("not set"), "{err}");
        }
    }
    let client = env.sql().await;
    for table in [
        "deployments",
        "deployment_events",
        "jobs",
        "webhook_deliveries",
    ] {
        let rows: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 0, "{table} has rows");
    }
}

/// A change whose transaction commits late (its `at` is older than changes published
/// meanwhile) still reaches the stream promptly, and before the job's later changes:
/// a claim must not skip rows older than those it has already sent. (A claim bounded
/// below by the relay's `now()` less a second never sent it within the 10 s.)
#[tokio::test]
async fn a_change_committed_late_still_goes_out_first() {
    let env = TestEnv::new().await;
    let worker = env.spawn_worker_process(&[]);
    let mut client = env.store.client().await.unwrap();
    let tx = env
        .store
        .begin(&mut client, Isolation::ReadCommitted)
        .await
        .unwrap();
    let late = enqueue_in_transaction(&tx, &[NewJob::new(JobKind::Noop, json!({}))])
        .await
        .unwrap()[0]
        .id;
    // Meanwhile other jobs run and every change that is visible goes out; the last
    // of them are made over 2 s after the late job's change, so the relay has sent
    // changes much newer than it before it commits.
    let others = enqueue_many(&env, JobKind::Noop, json!({}), 50).await;
    env.wait_terminal(&others, Duration::from_secs(60)).await;
    wait_published(&env).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let newer = enqueue_many(&env, JobKind::Noop, json!({}), 10).await;
    env.wait_terminal(&newer, Duration::from_secs(60)).await;
    wait_published(&env).await;
    tx.commit().await.unwrap();
    drop(client);

    env.wait_terminal(&[late], Duration::from_secs(60)).await;
    let changes = wait_for(
        "the late job's three changes on the stream",
        Duration::from_secs(10),
        || async {
            let changes: Vec<String> = stream(&env)
                .await
                .into_iter()
                .filter(|(_, _, event)| event.detail["job"]["id"] == json!(late))
                .map(|(_, _, event)| event.to)
                .collect();
            (changes.len() >= 3).then_some(changes)
        },
    )
    .await;
    assert_eq!(changes, ["queued", "running", "succeeded"]);
    drop(worker);
}

/// Event relays take turns per source: while one relay transaction holds a source's
/// turn, another gets no turn of that source (it would only read the same oldest rows
/// and wait on their marks), but does get another source's; a turn ends with its
/// transaction. (Sessions start at read committed, the relay's level.)
#[tokio::test]
async fn relays_take_turns_per_source() {
    let env = TestEnv::new().await;
    let mut first_client = env.store.client().await.unwrap();
    let mut second_client = env.store.client().await.unwrap();
    let first = first_client.transaction().await.unwrap();
    let second = second_client.transaction().await.unwrap();
    assert!(relay_turn(&env.store, &first, "jobs").await.unwrap());
    assert!(
        !relay_turn(&env.store, &second, "jobs").await.unwrap(),
        "a second relay got the jobs' turn while the first held it"
    );
    assert!(
        relay_turn(&env.store, &second, "deployments")
            .await
            .unwrap(),
        "the jobs' turn kept another source from its own"
    );
    assert!(
        !relay_turn(&env.store, &first, "deployments").await.unwrap(),
        "the first relay got the deployments' turn while the second held it"
    );
    first.rollback().await.unwrap();
    assert!(
        relay_turn(&env.store, &second, "jobs").await.unwrap(),
        "the jobs' turn outlived the transaction that took it"
    );
    second.commit().await.unwrap();
    let mut third_client = env.store.client().await.unwrap();
    let third = third_client.transaction().await.unwrap();
    assert!(relay_turn(&env.store, &third, "jobs").await.unwrap());
    assert!(relay_turn(&env.store, &third, "deployments").await.unwrap());
    third.commit().await.unwrap();
}

/// Two relays claim the same oldest changes at once (as they may on CockroachDB, which
/// has no turns): the second one's marks wait for the first's. When the first commits,
/// the second gets none of its rows; when the first rolls back, the second gets them
/// all. So no change goes out from two relays that both commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_waits_for_another_relays_marks_and_skips_what_it_committed() {
    use lc_shared::events::{EventSource, JobEvents};
    let env = TestEnv::new().await;
    // Ten `queued` changes and no worker, so no relay but the test's.
    enqueue_many(&env, JobKind::Noop, json!({}), 10).await;
    let sql = env.sql().await;
    let dialect = lc_shared::dialect::Dialect::detect(&sql).await.unwrap();
    for first_commits in [true, false] {
        let source = JobEvents::new(env.store.clone());
        let mut first_client = env.store.client().await.unwrap();
        let first = first_client.transaction().await.unwrap();
        let first_ids = ids(&source.claim(&first, 4).await.unwrap());
        assert_eq!(first_ids.len(), 4);
        let store = env.store.clone();
        let second = tokio::spawn(async move {
            let source = JobEvents::new(store.clone());
            let mut client = store.client().await.unwrap();
            let tx = client.transaction().await.unwrap();
            let claimed = ids(&source.claim(&tx, 4).await.unwrap());
            tx.commit().await.unwrap();
            claimed
        });
        wait_for(
            "the second claim to wait for the first one's marks",
            Duration::from_secs(10),
            || async {
                let waiting: i64 = sql
                    .query_one(dialect.sessions_waiting_on_locks(), &[&env.db_name])
                    .await
                    .unwrap()
                    .get(0);
                (waiting > 0).then_some(())
            },
        )
        .await;
        if first_commits {
            first.commit().await.unwrap();
            let second_ids = second.await.unwrap();
            assert!(
                second_ids.is_empty(),
                "the second relay also claimed {} of the changes the first committed",
                second_ids.len()
            );
        } else {
            first.rollback().await.unwrap();
            assert_eq!(
                second.await.unwrap(),
                first_ids,
                "the second relay claims what the first gave back"
            );
        }
    }
    assert_eq!(
        unpublished(&env).await,
        2,
        "8 of the 10 changes claimed once"
    );
}

/// The events' ids.
fn ids(events: &[Event]) -> HashSet<Uuid> {
    events.iter().map(|event| event.id).collect()
}
