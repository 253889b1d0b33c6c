//! The dashboard (`/` of `lc serve`) in a real headless browser: Debian's Chromium
//! and chromedriver, driven by tests/browser/dashboard.py (Selenium from PyPI, run
//! with `$LC_TEST_PYTHON`). Real `lc serve`, real `lc-worker` processes, a real
//! deployment on the local engine. The browser logs in with an admin token, sees a
//! job stuck under a frozen worker, requeues it through the confirmation dialog,
//! watches it succeed once a healthy worker runs, retries a dead job, and watches the
//! deployment's grid turn green. Screenshots are kept under `target/tmp/dashboard/` (paths printed);
//! with `LC_UPDATE_SCREENSHOT=1` the deployment page's is copied to docs/dashboard.png.
//!
//! Also without a browser: the page and its assets carry a Content-Security-Policy
//! of this origin only, and the throughput series and chart answer as documented.

use crate::deploy::{Containers, image};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use lc_shared::{JobKind, JobState, NewJob};
use lc_tests::{TestEnv, wait_for};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::http::{Server, expect_json, expect_problem, token};

/// The whole browser run, bounded (the script bounds itself a little earlier).
const BROWSER_LIMIT: Duration = Duration::from_secs(90);

fn python() -> String {
    std::env::var("LC_TEST_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("LC_HOME")
            .unwrap_or_else(|_| format!("{}/../.lc", env!("CARGO_MANIFEST_DIR")));
        format!("{home}/venv/bin/python3")
    })
}

/// Kills the browser script's process group when dropped while the script runs (the
/// test failed before it ended): chromedriver and Chromium go with it. Disarmed once
/// the script has ended (it quits its browser itself), before its group id can be
/// anybody else's.
struct Group(Option<i32>);

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(group) = self.0 {
            lc_tests::unsafe_free_kill(-group, libc::SIGKILL);
        }
    }
}

#[tokio::test]
async fn dashboard_in_a_browser_requeues_a_stuck_job_and_shows_a_green_deployment() {
    let env = TestEnv::new().await;
    let server = Server::start(&env, &[]).await;
    let admin = token(&env, "ops", true);
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("dashboard")
        .join(&env.prefix);
    std::fs::create_dir_all(&artifacts).unwrap();

    // A worker takes the job, then freezes: its lease runs out, nobody sweeps.
    let frozen = env.spawn_worker_process(&["--queues", "dash"]);
    let job = env
        .producer()
        .enqueue(NewJob::new(JobKind::Sleep, json!({"ms": 500})).with_queue("dash"))
        .await
        .unwrap()
        .id;
    wait_for("the job to run", Duration::from_secs(20), || async {
        (env.states(&[job]).await[&job] == JobState::Running).then_some(())
    })
    .await;
    frozen.signal(libc::SIGSTOP);
    // A job that dies at its first attempt (once a healthy worker runs) and succeeds
    // at its second: retried from the page.
    let doomed = env
        .producer()
        .enqueue(
            NewJob::new(JobKind::Sleep, json!({"fail_times": 1, "fatal": true}))
                .with_queue("dash")
                .with_max_attempts(1),
        )
        .await
        .unwrap()
        .id;

    let name = format!("dash-{}", &env.prefix[1..9]);
    let _containers = Containers(vec![name.clone()]);
    let mut browser = tokio::process::Command::new(python())
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser/dashboard.py"))
        .env("LC_DASHBOARD_URL", &server.url)
        .env("LC_DASHBOARD_TOKEN", &admin)
        .env("LC_DASHBOARD_JOB", job.to_string())
        .env("LC_DASHBOARD_DEAD_JOB", doomed.to_string())
        .env("LC_DASHBOARD_DEPLOYMENT", &name)
        .env("LC_DASHBOARD_ARTIFACTS", &artifacts)
        .stdin(Stdio::null())
        // Its own process group: the browser and its driver end with it (see Group).
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|err| {
            panic!("cannot run {} (the Python with selenium that scripts/test.sh installs; set LC_TEST_PYTHON): {err}", python())
        });
    let mut group = Group(browser.id().map(|pid| pid as i32));
    let started = std::time::Instant::now();

    // Only the page's requeue puts the job back in its queue (no worker sweeps).
    let requeued = async {
        loop {
            if env.states(&[job]).await[&job] == JobState::Queued {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        () = requeued => {}
        status = browser.wait() => panic!(
            "tests/browser/dashboard.py ended ({:?}) before the job was requeued; screenshots in {}; lc serve's log:\n{}",
            status, artifacts.display(), server.log_text()),
        () = tokio::time::sleep(Duration::from_secs(60)) => panic!(
            "the browser did not requeue the job within 60s; lc serve's log:\n{}", server.log_text()),
    }
    let healthy = env.spawn_worker_process(&["--queues", "default,dash"]);
    let spec = format!(
        "name: {name}\nowner: ops\nnodes: 2\nprovider: {{kind: local}}\nttl: 1h\n\
         payload:\n  image: {}\n  command: [sleep, '3600']\n  network_mode: none\n  pull: never\n\
         timeouts: {{stop: 1s}}\n",
        image()
    );
    let created = server
        .request(Method::POST, "/v1/deployments", Some(&admin))
        .header("content-type", "application/yaml")
        .body(spec)
        .send()
        .await
        .unwrap();
    expect_json(created, StatusCode::CREATED).await;

    let left = BROWSER_LIMIT.saturating_sub(started.elapsed());
    let status = tokio::time::timeout(left, browser.wait())
        .await
        .unwrap_or_else(|_| panic!("the browser run took over {BROWSER_LIMIT:?}"))
        .unwrap();
    group.0 = None;
    assert!(
        status.success(),
        "tests/browser/dashboard.py failed ({status}); screenshots in {}; lc serve's log:\n{}",
        artifacts.display(),
        server.log_text()
    );

    // What the page showed is what happened.
    let (code, out, _) = env.lc(&["jobs", "show", &job.to_string(), "--json"]);
    assert_eq!(code, 0);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["job"]["state"], "succeeded");
    let requeued = shown["events"].as_array().unwrap().iter().any(|event| {
        event["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("requeued by operator")
    });
    assert!(requeued, "{shown}");
    let (code, out, _) = env.lc(&["jobs", "show", &doomed.to_string(), "--json"]);
    assert_eq!(code, 0);
    let shown: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["job"]["state"], "succeeded", "{shown}");
    let retried = shown["events"].as_array().unwrap().iter().any(|event| {
        event["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("retried by operator")
    });
    assert!(retried, "{shown}");
    let mut shots: Vec<PathBuf> = std::fs::read_dir(&artifacts)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "png"))
        .collect();
    shots.sort();
    assert!(shots.len() >= 7, "{shots:?}");
    for shot in &shots {
        assert!(
            std::fs::metadata(shot).unwrap().len() > 5_000,
            "{} is empty",
            shot.display()
        );
        println!("screenshot: {}", shot.display());
    }
    if std::env::var("LC_UPDATE_SCREENSHOT").is_ok_and(|value| value == "1") {
        let deployment = shots
            .iter()
            .find(|path| path.to_string_lossy().ends_with("-deployment.png"))
            .unwrap();
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.png");
        std::fs::copy(deployment, &docs).unwrap();
        println!("copied {} to {}", deployment.display(), docs.display());
    }
    drop(healthy);
    drop(frozen);
}

/// The page and its assets: served by `lc serve` itself, with a Content-Security-Policy
/// that allows this origin only; unknown assets are 404 problems.
#[tokio::test]
async fn dashboard_assets_are_served_with_a_policy_of_this_origin_only() {
    let env = TestEnv::new().await;
    let server = Server::start(&env, &[]).await;
    for path in [
        "/",
        "/assets/app.js",
        "/assets/style.css",
        "/assets/queues.js",
        "/assets/icon.svg",
    ] {
        let response = server
            .request(Method::GET, path, None)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
            "{csp}"
        );
        assert!(
            !csp.contains("http") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        let body = response.text().await.unwrap();
        assert!(!body.contains("https://"), "{path} names a remote origin");
    }
    let page = server
        .request(Method::GET, "/", None)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains(r#"<script type="module" src="/assets/app.js">"#),
        "{page}"
    );
    assert!(
        page.contains("<noscript>"),
        "a message for a browser without scripts"
    );
    let missing = server
        .request(Method::GET, "/assets/nope.js", None)
        .send()
        .await
        .unwrap();
    expect_problem(missing, StatusCode::NOT_FOUND).await;
}

/// `/v1/queues/throughput` counts the jobs that succeeded and died per minute of the
/// last hour, and `/v1/queues/{queue}/throughput.svg` draws them; both need a token.
#[tokio::test]
async fn dashboard_throughput_series_and_chart() {
    let env = TestEnv::new().await;
    let server = Server::start(&env, &[]).await;
    let admin = token(&env, "ops", true);
    let alice = token(&env, "alice", false);
    let producer = env.producer();
    let ok = producer
        .enqueue(NewJob::new(JobKind::Noop, json!({})).with_queue("charted"))
        .await
        .unwrap()
        .id;
    let fail = producer
        .enqueue(
            NewJob::new(
                JobKind::Sleep,
                json!({"ms": 1, "fail_times": 1, "fatal": true}),
            )
            .with_queue("charted")
            .with_max_attempts(1),
        )
        .await
        .unwrap()
        .id;
    let mut config = env.worker_config();
    config.worker.queues = vec!["charted".to_owned()];
    let worker = env.spawn_worker(config);
    let states = env
        .wait_terminal(&[ok, fail], Duration::from_secs(30))
        .await;
    worker.stop().await;
    assert_eq!(
        (states[&ok], states[&fail]),
        (JobState::Succeeded, JobState::Dead)
    );

    let series = expect_json(
        server.get("/v1/queues/throughput", &alice).await,
        StatusCode::OK,
    )
    .await;
    let charted = series
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["queue"] == "charted")
        .unwrap_or_else(|| panic!("{series}"));
    assert_eq!(charted["bucket_secs"], 60);
    let succeeded = charted["succeeded"].as_array().unwrap();
    let dead = charted["dead"].as_array().unwrap();
    assert_eq!((succeeded.len(), dead.len()), (60, 60));
    // Both finished within the last minute or two: the newest buckets.
    let total =
        |values: &[serde_json::Value]| values.iter().map(|v| v.as_i64().unwrap()).sum::<i64>();
    assert_eq!((total(succeeded), total(dead)), (1, 1), "{charted}");
    assert_eq!(total(&succeeded[58..]) + total(&dead[58..]), 2, "{charted}");

    let five = expect_json(
        server
            .get("/v1/queues/throughput?window=10m&bucket=5m", &admin)
            .await,
        StatusCode::OK,
    )
    .await;
    let row = five
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["queue"] == "charted")
        .unwrap();
    assert_eq!(row["succeeded"], json!([0, 1]));

    let chart = server
        .get("/v1/queues/charted/throughput.svg", &admin)
        .await;
    assert_eq!(chart.status(), StatusCode::OK);
    assert_eq!(chart.headers()["content-type"], "image/svg+xml");
    let svg = chart.text().await.unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("1 succeeded, 1 dead in the last 1 hour"),
        "{svg}"
    );
    assert_eq!(svg.matches("<rect").count(), 2, "{svg}");

    for bad in [
        "/v1/queues/throughput?window=1h&bucket=7m",
        "/v1/queues/throughput?bucket=1s&window=1d",
        "/v1/queues/throughput?window=soon",
        "/v1/queues/Bad%20Name/throughput.svg",
    ] {
        expect_problem(
            server.get(bad, &admin).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    let anonymous = server
        .request(Method::GET, "/v1/queues/charted/throughput.svg", None)
        .send()
        .await
        .unwrap();
    expect_problem(anonymous, StatusCode::UNAUTHORIZED).await;
}
