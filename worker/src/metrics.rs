//! Prometheus metrics: counters and a duration histogram kept by `prometheus-client`,
//! served on `--metrics-addr` (`GET /metrics`, text format 0.0.4) by axum. Queue depth and
//! oldest-job age are read from the database at scrape time, so every worker reports the
//! same truth.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lc_shared::state::Transition;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, prometheus_text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the job duration histogram.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0,
];

/// The content type of the Prometheus text format that `prometheus_text` writes.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    system: String,
    operation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DepthLabels {
    queue: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

/// Every metric of a worker process. Counters are registered without their `_total`
/// suffix: the encoder appends it, so the exported names are `lc_..._total`.
pub struct Metrics {
    registry: Registry,
    started: Family<KindLabels, Counter>,
    succeeded: Family<KindLabels, Counter>,
    retried: Family<KindLabels, Counter>,
    dead: Family<KindLabels, Counter>,
    durations: Family<KindLabels, Histogram, fn() -> Histogram>,
    completions_refused: Counter,
    claims_handed_back: Counter,
    lease_recoveries: Counter,
    external_calls: Family<CallLabels, Counter>,
    external_call_errors: Family<CallLabels, Counter>,
    external_call_milliseconds: Family<CallLabels, Counter>,
    events_published: Family<SourceLabels, Counter>,
    /// The scrape-time readings the registry's collector encodes. Locked while one
    /// scrape stores its readings and encodes, so two scrapes do not mix their rows;
    /// never held across an `.await`.
    readings: Arc<Mutex<Readings>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let started = Family::<KindLabels, Counter>::default();
        let succeeded = Family::<KindLabels, Counter>::default();
        let retried = Family::<KindLabels, Counter>::default();
        let dead = Family::<KindLabels, Counter>::default();
        let durations = Family::new_with_constructor(duration_histogram as fn() -> Histogram);
        let completions_refused = Counter::default();
        let claims_handed_back = Counter::default();
        let lease_recoveries = Counter::default();
        let external_calls = Family::<CallLabels, Counter>::default();
        let external_call_errors = Family::<CallLabels, Counter>::default();
        let external_call_milliseconds = Family::<CallLabels, Counter>::default();
        let events_published = Family::<SourceLabels, Counter>::default();
        let readings = Arc::new(Mutex::new(Readings::default()));
        registry.register(
            "lc_jobs_started",
            "Jobs this worker started",
            started.clone(),
        );
        registry.register(
            "lc_jobs_succeeded",
            "Jobs this worker finished as succeeded",
            succeeded.clone(),
        );
        registry.register(
            "lc_jobs_retried",
            "Jobs this worker finished with a retry",
            retried.clone(),
        );
        registry.register(
            "lc_jobs_dead",
            "Jobs this worker finished as dead",
            dead.clone(),
        );
        registry.register(
            "lc_job_duration_seconds",
            "How long jobs ran on this worker",
            durations.clone(),
        );
        registry.register(
            "lc_completions_refused",
            "Completions the database refused (the lease was lost)",
            completions_refused.clone(),
        );
        registry.register(
            "lc_claims_handed_back",
            "Claims of jobs this worker still ran from a claim the database lost in a crash, handed back",
            claims_handed_back.clone(),
        );
        registry.register(
            "lc_lease_recoveries",
            "Expired leases this worker's sweeper recovered",
            lease_recoveries.clone(),
        );
        registry.register(
            "lc_external_calls",
            "Calls to docker-machine and the Docker API",
            external_calls.clone(),
        );
        registry.register(
            "lc_external_call_errors",
            "Calls to docker-machine and the Docker API that failed",
            external_call_errors.clone(),
        );
        registry.register(
            "lc_external_call_milliseconds",
            "Time spent in calls to docker-machine and the Docker API",
            external_call_milliseconds.clone(),
        );
        registry.register(
            "lc_events_published",
            "Events this worker's relay added to the event stream (a batch sent again after a crash counts again)",
            events_published.clone(),
        );
        registry.register_collector(Box::new(ScrapeGauges(readings.clone())));
        Metrics {
            registry,
            started,
            succeeded,
            retried,
            dead,
            durations,
            completions_refused,
            claims_handed_back,
            lease_recoveries,
            external_calls,
            external_call_errors,
            external_call_milliseconds,
            events_published,
            readings,
        }
    }
}

impl Metrics {
    pub fn job_started(&self, kind: &str) {
        self.started.get_or_create(&kind_labels(kind)).inc();
    }

    pub fn job_finished(&self, kind: &str, transition: Transition, took: Duration) {
        let labels = kind_labels(kind);
        let counter = match transition {
            Transition::Succeed => &self.succeeded,
            Transition::Retry => &self.retried,
            _ => &self.dead,
        };
        counter.get_or_create(&labels).inc();
        self.durations
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn completion_refused(&self) {
        self.completions_refused.inc();
    }

    pub fn claim_handed_back(&self) {
        self.claims_handed_back.inc();
    }

    pub fn leases_recovered(&self, count: usize) {
        if count > 0 {
            self.lease_recoveries.inc_by(count as u64);
        }
    }

    /// A call to docker-machine or the Docker API: how long, and whether it failed.
    pub fn external_call(&self, system: &str, operation: &str, took: Duration, failed: bool) {
        let labels = CallLabels {
            system: system.to_owned(),
            operation: operation.to_owned(),
        };
        self.external_calls.get_or_create(&labels).inc();
        if failed {
            self.external_call_errors.get_or_create(&labels).inc();
        }
        self.external_call_milliseconds
            .get_or_create(&labels)
            .inc_by(took.as_millis() as u64);
    }

    /// Events of a source that the relay added to the stream and marked.
    pub fn events_published(&self, source: &str, count: usize) {
        if count > 0 {
            self.events_published
                .get_or_create(&SourceLabels {
                    source: source.to_owned(),
                })
                .inc_by(count as u64);
        }
    }

    /// The Prometheus text of what this process counted, with the scrape-time readings.
    pub(crate) fn render(&self, readings: Readings) -> String {
        let mut stored = self
            .readings
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *stored = readings;
        // The collector locks `readings` itself: release it while encoding.
        drop(stored);
        let mut out = String::new();
        if let Err(err) = prometheus_text::encode(&mut out, &self.registry) {
            // Writing into a String cannot fail; an encoder error would be a bug.
            tracing::warn!(error = %err, "could not encode the metrics");
        }
        out
    }
}

fn kind_labels(kind: &str) -> KindLabels {
    KindLabels {
        kind: kind.to_owned(),
    }
}

/// What only the database (and the slot table) knows, read before anything is locked.
/// A reading that failed is `None`: its metric is left out of that scrape.
#[derive(Debug, Default)]
pub(crate) struct Readings {
    pub depths: Option<Vec<lc_shared::store::QueueDepth>>,
    pub ages: Option<Vec<(String, f64)>>,
    pub running: usize,
}

/// Encodes the scrape-time gauges: `lc_queue_jobs`, `lc_queue_oldest_due_seconds` (each
/// with its `# TYPE` line even when no queue has rows, as long as the database answered)
/// and `lc_worker_running_jobs`.
#[derive(Debug)]
struct ScrapeGauges(Arc<Mutex<Readings>>);

impl Collector for ScrapeGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let readings = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(depths) = &readings.depths {
            let mut family = encoder.encode_descriptor(
                "lc_queue_jobs",
                "Jobs per queue and state (from the database at scrape time)",
                None,
                MetricType::Gauge,
            )?;
            for depth in depths {
                let labels = DepthLabels {
                    queue: depth.queue.clone(),
                    state: depth.state.to_string(),
                };
                ConstGauge::new(depth.count).encode(family.encode_family(&labels)?)?;
            }
        }
        if let Some(ages) = &readings.ages {
            let mut family = encoder.encode_descriptor(
                "lc_queue_oldest_due_seconds",
                "Age of the oldest due queued job per queue (from the database at scrape time)",
                None,
                MetricType::Gauge,
            )?;
            for (queue, age) in ages {
                let labels = QueueLabels {
                    queue: queue.clone(),
                };
                ConstGauge::new(*age).encode(family.encode_family(&labels)?)?;
            }
        }
        let running = encoder.encode_descriptor(
            "lc_worker_running_jobs",
            "Jobs running on this worker now",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(readings.running as i64).encode(running)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{Metrics, Readings};
    use lc_shared::state::Transition;
    use lc_shared::store::QueueDepth;
    use std::time::Duration;

    #[test]
    fn exports_the_documented_names() {
        let metrics = Metrics::default();
        metrics.job_started("noop");
        metrics.job_finished("noop", Transition::Succeed, Duration::from_millis(2));
        metrics.job_finished("sleep", Transition::Retry, Duration::from_secs(2));
        metrics.job_finished("sleep", Transition::Die, Duration::from_secs(2));
        metrics.completion_refused();
        metrics.leases_recovered(3);
        metrics.external_call("docker", "inspect_image", Duration::from_millis(7), true);
        metrics.events_published("jobs", 4);
        let text = metrics.render(Readings {
            depths: Some(vec![QueueDepth {
                queue: "default".to_owned(),
                state: lc_shared::JobState::Succeeded,
                count: 5,
            }]),
            ages: Some(vec![("default".to_owned(), 1.5)]),
            running: 2,
        });
        for line in [
            "# TYPE lc_jobs_started_total counter",
            "lc_jobs_started_total{kind=\"noop\"} 1",
            "lc_jobs_succeeded_total{kind=\"noop\"} 1",
            "lc_jobs_retried_total{kind=\"sleep\"} 1",
            "lc_jobs_dead_total{kind=\"sleep\"} 1",
            "# TYPE lc_job_duration_seconds histogram",
            "lc_job_duration_seconds_bucket{kind=\"noop\",le=\"0.005\"} 1",
            "lc_job_duration_seconds_bucket{kind=\"noop\",le=\"+Inf\"} 1",
            "lc_job_duration_seconds_count{kind=\"noop\"} 1",
            "lc_job_duration_seconds_sum{kind=\"sleep\"} 4",
            "lc_completions_refused_total 1",
            "lc_lease_recoveries_total 3",
            "lc_external_calls_total{system=\"docker\",operation=\"inspect_image\"} 1",
            "lc_external_call_errors_total{system=\"docker\",operation=\"inspect_image\"} 1",
            "lc_external_call_milliseconds_total{system=\"docker\",operation=\"inspect_image\"} 7",
            "lc_events_published_total{source=\"jobs\"} 4",
            "# TYPE lc_queue_jobs gauge",
            "lc_queue_jobs{queue=\"default\",state=\"succeeded\"} 5",
            "# TYPE lc_queue_oldest_due_seconds gauge",
            "lc_queue_oldest_due_seconds{queue=\"default\"} 1.5",
            "# TYPE lc_worker_running_jobs gauge",
            "lc_worker_running_jobs 2",
        ] {
            assert!(
                text.lines().any(|have| have.starts_with(line)),
                "metrics lack {line:?}:\n{text}"
            );
        }
        assert!(!text.contains("_total_total"), "{text}");
        let quiet = metrics.render(Readings {
            depths: Some(Vec::new()),
            ages: Some(Vec::new()),
            running: 0,
        });
        assert!(
            quiet.contains("# TYPE lc_queue_oldest_due_seconds gauge"),
            "{quiet}"
        );
        let unreadable = metrics.render(Readings::default());
        assert!(!unreadable.contains("lc_queue_jobs"), "{unreadable}");
        assert!(!text.contains("# EOF"), "{text}");
    }
}
