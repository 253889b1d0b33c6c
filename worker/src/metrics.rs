//! Prometheus metrics: counters and a duration histogram kept in memory, served as
//! text on `--metrics-addr` (`GET /metrics`). Queue depth and oldest-job age are read
//! from the database at scrape time, so every worker reports the same truth.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use lc_shared::state::Transition;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::worker::Worker;

/// Upper bounds (seconds) of the job duration histogram.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Inner {
    /// (metric, label set) → value
    counters: BTreeMap<(&'static str, String), u64>,
    durations: BTreeMap<String, Histogram>,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut inner)
    }

    fn add(&self, metric: &'static str, labels: String, by: u64) {
        self.with(|inner| *inner.counters.entry((metric, labels)).or_default() += by);
    }

    pub fn job_started(&self, kind: &str) {
        self.add("lc_jobs_started_total", format!("kind=\"{kind}\""), 1);
    }

    pub fn job_finished(&self, kind: &str, transition: Transition, took: Duration) {
        let metric = match transition {
            Transition::Succeed => "lc_jobs_succeeded_total",
            Transition::Retry => "lc_jobs_retried_total",
            _ => "lc_jobs_dead_total",
        };
        self.add(metric, format!("kind=\"{kind}\""), 1);
        let seconds = took.as_secs_f64();
        self.with(|inner| {
            let histogram = inner.durations.entry(kind.to_owned()).or_default();
            for (bucket, bound) in BUCKETS.iter().enumerate() {
                if seconds <= *bound {
                    histogram.counts[bucket] += 1;
                }
            }
            histogram.count += 1;
            histogram.sum += seconds;
        });
    }

    pub fn completion_refused(&self) {
        self.add("lc_completions_refused_total", String::new(), 1);
    }

    pub fn leases_recovered(&self, count: usize) {
        if count > 0 {
            self.add("lc_lease_recoveries_total", String::new(), count as u64);
        }
    }

    /// A call to docker-machine or the Docker API: how long, and whether it failed.
    pub fn external_call(&self, system: &str, operation: &str, took: Duration, failed: bool) {
        let labels = format!("system=\"{system}\",operation=\"{operation}\"");
        self.add("lc_external_calls_total", labels.clone(), 1);
        if failed {
            self.add("lc_external_call_errors_total", labels.clone(), 1);
        }
        self.add(
            "lc_external_call_milliseconds_total",
            labels,
            took.as_millis() as u64,
        );
    }

    /// The Prometheus text of what this process counted.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.with(|inner| {
            let mut last = "";
            for ((metric, labels), value) in &inner.counters {
                if *metric != last {
                    let _ = writeln!(out, "# TYPE {metric} counter");
                    last = metric;
                }
                if labels.is_empty() {
                    let _ = writeln!(out, "{metric} {value}");
                } else {
                    let _ = writeln!(out, "{metric}{{{labels}}} {value}");
                }
            }
            if !inner.durations.is_empty() {
                let _ = writeln!(out, "# TYPE lc_job_duration_seconds histogram");
            }
            for (kind, histogram) in &inner.durations {
                for (bucket, bound) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "lc_job_duration_seconds_bucket{{kind=\"{kind}\",le=\"{bound}\"}} {}",
                        histogram.counts[bucket]
                    );
                }
                let _ = writeln!(
                    out,
                    "lc_job_duration_seconds_bucket{{kind=\"{kind}\",le=\"+Inf\"}} {}",
                    histogram.count
                );
                let _ = writeln!(
                    out,
                    "lc_job_duration_seconds_sum{{kind=\"{kind}\"}} {}",
                    histogram.sum
                );
                let _ = writeln!(
                    out,
                    "lc_job_duration_seconds_count{{kind=\"{kind}\"}} {}",
                    histogram.count
                );
            }
        });
        out
    }
}

/// Adds what only the database knows: depth per queue and state, oldest due job age.
async fn render_queue_gauges(worker: &Worker, out: &mut String) {
    if let Ok(depths) = worker.store.job_counts().await {
        let _ = writeln!(out, "# TYPE lc_queue_jobs gauge");
        for depth in depths {
            let _ = writeln!(
                out,
                "lc_queue_jobs{{queue=\"{}\",state=\"{}\"}} {}",
                depth.queue, depth.state, depth.count
            );
        }
    }
    if let Ok(ages) = worker.store.oldest_due_ages().await {
        let _ = writeln!(out, "# TYPE lc_queue_oldest_due_seconds gauge");
        for (queue, age) in ages {
            let _ = writeln!(
                out,
                "lc_queue_oldest_due_seconds{{queue=\"{queue}\"}} {age}"
            );
        }
    }
    let _ = writeln!(out, "# TYPE lc_worker_running_jobs gauge");
    let _ = writeln!(out, "lc_worker_running_jobs {}", worker.running.len());
}

/// Serves `GET /metrics` until `stop`. A deliberately tiny HTTP/1.0 responder: one
/// request per connection, no keep-alive; Prometheus needs nothing more.
pub(crate) async fn serve(worker: Arc<Worker>, listener: TcpListener, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((mut socket, _)) = accepted else {
            continue;
        };
        let worker = worker.clone();
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let read =
                tokio::time::timeout(Duration::from_secs(5), socket.read(&mut request)).await;
            let Ok(Ok(read)) = read else { return };
            let head = String::from_utf8_lossy(&request[..read]);
            let (status, body) = if head.starts_with("GET /metrics") {
                let mut body = worker.metrics.render();
                render_queue_gauges(&worker, &mut body).await;
                ("200 OK", body)
            } else {
                ("404 Not Found", "try GET /metrics\n".to_owned())
            };
            let response = format!(
                "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}

/// Appends `<job id> <unix time in microseconds>` to the file named by
/// `LC_HANDLER_START_LOG`, when set, as a handler starts: the benchmark measures
/// enqueue→start from the producer's clock to this line (same host, same clock).
pub fn handler_started(id: uuid::Uuid) {
    use std::io::Write;
    static LOG: std::sync::OnceLock<Option<Mutex<std::fs::File>>> = std::sync::OnceLock::new();
    let log = LOG.get_or_init(|| {
        let path = std::env::var_os("LC_HANDLER_START_LOG")?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .ok()
            .map(Mutex::new)
    });
    let Some(log) = log else { return };
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_micros())
        .unwrap_or(0);
    if let Ok(mut file) = log.lock() {
        let _ = writeln!(file, "{id} {micros}");
    }
}
