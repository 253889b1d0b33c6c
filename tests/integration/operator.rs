//! Operator commands against real services: `lc stuck`, `lc jobs ...`, `lc workers`,
//! `lc queues`, and the worker's metrics endpoint. `--json` output is parsed.

use std::time::Duration;

use lc_shared::{JobKind, JobState, NewJob};
use lc_tests::{TestEnv, enqueue_many, wait_for};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

fn parse(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|err| panic!("not JSON ({err}): {out}"))
}

#[tokio::test]
async fn a_frozen_worker_s_job_is_listed_as_stuck_and_requeued_by_hand() {
    let env = TestEnv::new().await;
    let frozen = env.spawn_worker_process(&["--lease", "2s", "--heartbeat", "500ms"]);
    let id = enqueue_many(&env, JobKind::Sleep, json!({"ms": 500, "record": true}), 1).await[0];
    wait_for("the job to run", Duration::from_secs(20), || async {
        (env.states(&[id]).await[&id] == JobState::Running).then_some(())
    })
    .await;
    frozen.signal(libc::SIGSTOP);
    // No other worker sweeps, so the expired lease stays: `lc stuck` must say so.
    let finding = wait_for(
        "lc stuck to list the job",
        Duration::from_secs(20),
        || async {
            let (code, out, _) = env.lc(&["stuck", "--json", "--dead-after", "1s"]);
            let findings = parse(&out);
            let found = findings
                .as_array()?
                .iter()
                .find(|f| f["job_id"] == json!(id.to_string()))?
                .clone();
            (code == 3 && found["reason"].as_str()?.contains("lease expired")).then_some(found)
        },
    )
    .await;
    assert_eq!(finding["fix"], json!(format!("lc jobs requeue {id}")));
    assert_eq!(finding["state"], json!("running"));
    let (code, table, _) = env.lc(&["stuck", "--dead-after", "1s"]);
    assert_eq!(code, 3);
    assert!(
        table.contains("WHY") && table.contains(&id.to_string()),
        "{table}"
    );

    // `lc workers` sees the silent worker as gone.
    let (code, out, _) = env.lc(&["workers", "--json", "--dead-after", "1s"]);
    assert_eq!(code, 0);
    let workers = parse(&out);
    assert_eq!(workers[0]["pid"], json!(frozen.pid()));
    assert_eq!(workers[0]["running_jobs"], json!(1));
    let (_, table, _) = env.lc(&["workers", "--dead-after", "1s"]);
    assert!(table.contains("gone"), "{table}");

    // The fix, then a healthy worker finishes the job.
    let (code, out, err) = env.lc(&["jobs", "requeue", &id.to_string(), "--dead-after", "1s"]);
    assert_eq!(code, 0, "{out}{err}");
    let worker = env.spawn_worker(env.worker_config());
    env.wait_terminal(&[id], Duration::from_secs(20)).await;
    frozen.signal(libc::SIGCONT);
    worker.stop().await;
    env.assert_exactly_once(&[id]).await;
    let (code, out, _) = env.lc(&["stuck", "--json", "--dead-after", "1s"]);
    assert_eq!(
        (code, parse(&out)),
        (0, json!([])),
        "nothing stuck any more"
    );

    // `lc jobs show --json` tells the whole story.
    let (code, out, _) = env.lc(&["jobs", "show", &id.to_string(), "--json"]);
    assert_eq!(code, 0);
    let shown = parse(&out);
    assert_eq!(shown["job"]["state"], json!("succeeded"));
    let messages: Vec<String> = shown["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["message"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("requeued by operator")),
        "{messages:?}"
    );
}

#[tokio::test]
async fn queued_jobs_nobody_serves_are_stuck_with_the_reason() {
    let env = TestEnv::new().await;
    let producer = env.producer();
    let id = producer
        .enqueue(NewJob::new(JobKind::Noop, json!({})).with_queue("orphans"))
        .await
        .unwrap()
        .id;
    producer.flush_hints().await;
    let (code, out, _) = env.lc(&["stuck", "--json", "--older-than", "0s"]);
    assert_eq!(code, 3);
    let findings = parse(&out);
    let job = findings
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["job_id"] == json!(id.to_string()))
        .unwrap();
    assert!(
        job["reason"]
            .as_str()
            .unwrap()
            .contains("no live worker serves queue orphans")
    );
    assert_eq!(job["fix"], json!("lc-worker --queues orphans"));
    let hint = findings
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["state"] == json!("hint"))
        .unwrap();
    assert!(
        hint["reason"]
            .as_str()
            .unwrap()
            .contains("1 hint(s) wait in Redis")
    );

    // Paused queues say so.
    env.store.set_queue_paused("orphans", true).await.unwrap();
    let (_, out, _) = env.lc(&["stuck", "--json", "--older-than", "0s"]);
    assert!(out.contains("lc queues resume orphans"), "{out}");
}

#[tokio::test]
async fn retry_purge_and_listing() {
    let env = TestEnv::new().await;
    let worker = env.spawn_worker(env.worker_config());
    let producer = env.producer();
    let dead = producer
        .enqueue(
            NewJob::new(JobKind::Sleep, json!({"fail_times": 1, "fatal": true}))
                .with_max_attempts(2),
        )
        .await
        .unwrap()
        .id;
    let ok = enqueue_many(&env, JobKind::Noop, json!({}), 3).await;
    env.wait_terminal(&[dead], Duration::from_secs(20)).await;
    env.wait_terminal(&ok, Duration::from_secs(20)).await;

    let (code, out, _) = env.lc(&["jobs", "ls", "--state", "dead", "--json"]);
    assert_eq!(code, 0);
    let listed = parse(&out);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], json!(dead.to_string()));
    assert!(
        listed[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("induced failure")
    );

    // Retry every dead job: it gets fresh attempts and, failing only once, succeeds.
    let (code, out, err) = env.lc(&["jobs", "retry", "--state", "dead"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("retried 1 job"));
    wait_for(
        "the retried job to succeed",
        Duration::from_secs(20),
        || async { (env.states(&[dead]).await[&dead] == JobState::Succeeded).then_some(()) },
    )
    .await;
    // Retrying a job that is not dead is refused with a clear message.
    let (code, _, err) = env.lc(&["jobs", "retry", &ok[0].to_string()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("only dead or cancelled jobs can be retried"),
        "{err}"
    );

    // Purge succeeded jobs: rows and their history go, live jobs stay.
    let live = producer
        .enqueue(
            NewJob::new(JobKind::Noop, json!({}))
                .with_run_at(chrono::Utc::now() + chrono::Duration::hours(1)),
        )
        .await
        .unwrap()
        .id;
    let (code, out, _) = env.lc(&[
        "jobs",
        "purge",
        "--state",
        "succeeded",
        "--older-than",
        "0s",
        "--batch",
        "2",
    ]);
    assert_eq!(code, 0);
    assert!(out.contains("purged 4 succeeded jobs"), "{out}");
    assert_eq!(env.job_count().await, 1);
    assert!(env.store.job(live).await.unwrap().is_some());
    assert!(env.store.events(ok[0]).await.unwrap().is_empty());
    let (code, _, err) = env.lc(&["jobs", "purge", "--state", "queued", "--older-than", "0s"]);
    assert_eq!(code, 1);
    assert!(err.contains("purge never deletes live jobs"));
    worker.stop().await;
}

#[tokio::test]
async fn queues_show_depth_and_pause() {
    let env = TestEnv::new().await;
    enqueue_many(&env, JobKind::Noop, json!({}), 7).await;
    let (code, out, _) = env.lc(&["queues", "pause", "default"]);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = env.lc(&["queues", "--json"]);
    assert_eq!(code, 0);
    let queues = parse(&out);
    let default = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == json!("default"))
        .unwrap();
    assert_eq!(default["queued"], json!(7));
    assert_eq!(default["paused"], json!(true));
    assert_eq!(default["hints_in_redis"], json!(7));
    assert!(default["oldest_due_secs"].as_f64().unwrap() >= 0.0);
    let (_, table, _) = env.lc(&["queues"]);
    assert!(table.contains("paused"), "{table}");
    env.lc(&["queues", "resume", "default"]);
    let (_, out, _) = env.lc(&["queues", "--json"]);
    assert!(out.contains("\"paused\": false"), "{out}");
}

#[tokio::test]
async fn exit_codes_follow_the_convention() {
    let env = TestEnv::new().await;
    let (code, _, _) = env.lc(&["jobs", "show", &Uuid::new_v4().to_string()]);
    assert_eq!(code, 1, "not found is an error");
    let (code, _, err) = env.lc(&["jobs", "frobnicate"]);
    assert_eq!(code, 2, "usage errors exit 2: {err}");
    let (code, out, _) = env.lc(&["stuck"]);
    assert_eq!((code, out.trim()), (0, "nothing stuck"));
    let (code, out, _) = env.lc(&["--help"]);
    assert_eq!(code, 0);
    for command in ["enqueue", "jobs", "stuck", "workers", "queues", "migrate"] {
        assert!(out.contains(command), "--help lists {command}");
    }
}

#[tokio::test]
async fn workers_serve_prometheus_metrics() {
    let env = TestEnv::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = env.worker_config();
    config.metrics_addr = Some(format!("127.0.0.1:{port}").parse().unwrap());
    let worker = env.spawn_worker(config);
    let ids = enqueue_many(&env, JobKind::Noop, json!({}), 5).await;
    let failing = env
        .producer()
        .enqueue(NewJob::new(
            JobKind::Sleep,
            json!({"fail_times": 9, "fatal": true}),
        ))
        .await
        .unwrap()
        .id;
    env.wait_terminal(&ids, Duration::from_secs(20)).await;
    env.wait_terminal(&[failing], Duration::from_secs(20)).await;
    let body = wait_for("metrics to answer", Duration::from_secs(10), || async {
        // tokio's socket: a blocking read would stall the worker on this test's thread.
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
            .await
            .ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).await.ok()?;
        body.contains("lc_jobs_succeeded_total{kind=\"noop\"} 5")
            .then_some(body)
    })
    .await;
    assert!(body.starts_with("HTTP/1.0 200 OK"));
    for line in [
        "lc_jobs_started_total{kind=\"noop\"} 5",
        "lc_jobs_dead_total{kind=\"sleep\"} 1",
        "lc_job_duration_seconds_count{kind=\"noop\"} 5",
        "lc_queue_jobs{queue=\"default\",state=\"succeeded\"} 5",
        "# TYPE lc_queue_oldest_due_seconds gauge",
    ] {
        assert!(body.contains(line), "metrics lack {line:?}:\n{body}");
    }
    worker.stop().await;
}
