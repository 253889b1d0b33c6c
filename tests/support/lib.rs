//! Test support for LaunchControl's integration tests: every test gets its own
//! database and its own Redis key prefix on the services that `scripts/services.sh`
//! started (URLs from `DATABASE_URL`/`PG_ADMIN_URL`/`REDIS_URL`, loopback defaults),
//! and tests that restart Redis start a private instance on a free loopback port.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lc_deployment::runtime::{DeploymentWorker, MachineConfig};
use lc_shared::JobState;
use lc_shared::config::ConnectOpts;
use lc_shared::queue::Hints;
use lc_shared::store::{IsolationSetting, Store};
use lc_worker::WorkerConfig;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub mod ha;

pub fn admin_url() -> String {
    std::env::var("PG_ADMIN_URL")
        .unwrap_or_else(|_| "postgres://lc@127.0.0.1:55432/postgres".to_owned())
}

/// `url` (`postgres://USER@HOSTS/DATABASE?PARAMS`) naming `database` instead, its
/// parameters kept (a multi-host URL's `target_session_attrs=read-write` above all).
pub fn url_with_database(url: &str, database: &str) -> String {
    let (path, query) = match url.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (url, None),
    };
    let Some((base, _)) = path.rsplit_once('/') else {
        panic!("{url} must end in /DATABASE");
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

pub fn shared_redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:56379".to_owned())
}

/// Directory holding the workspace's binaries (`lc`, `lc-worker`): next to the test
/// executable's `deps/` folder, or `LC_BIN_DIR`.
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("LC_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} not built; run the tests with `cargo nextest run --workspace` (or scripts/test.sh)",
        path.display()
    );
    path
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One test's world: a fresh, migrated database and a Redis key prefix of its own.
pub struct TestEnv {
    pub db_name: String,
    pub database_url: String,
    pub redis_url: String,
    pub prefix: String,
    pub store: Store,
    pub queue: Hints,
    /// The `--isolation` of this env's store, workers and `lc` runs.
    pub isolation: IsolationSetting,
}

impl TestEnv {
    pub async fn new() -> TestEnv {
        TestEnv::with_redis(&shared_redis_url()).await
    }

    /// A test env whose Redis is `redis_url` (a private instance, usually).
    pub async fn with_redis(redis_url: &str) -> TestEnv {
        TestEnv::with_services(&admin_url(), redis_url).await
    }

    /// A test env on the PostgreSQL server of `admin` (a URL ending in /DATABASE, for
    /// example a [`PrivatePostgres`]) and the Redis at `redis_url`.
    pub async fn with_services(admin: &str, redis_url: &str) -> TestEnv {
        // Worker logs land in the test's captured output, shown when a test fails.
        // (Traces go from the child processes a test starts, never from the test.)
        let _logs =
            lc_shared::telemetry::init(lc_shared::telemetry::LogFormat::Pretty, "warn", "lc-tests");
        let tag = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let db_name = format!("lc_test_{tag}");
        let admin = admin.to_owned();
        let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|err| {
                panic!("cannot reach PostgreSQL at {admin}: {err}; run scripts/services.sh up")
            });
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {db_name}"))
            .await
            .unwrap();
        let database_url = url_with_database(&admin, &db_name);
        let store = Store::connect(&database_url, 16).unwrap();
        lc_shared::migrate::run(&store).await.unwrap();
        install_effect_witness(&database_url).await;
        let prefix = format!("t{tag}");
        let queue = Hints::connect(redis_url, &prefix)
            .await
            .unwrap_or_else(|err| panic!("cannot reach Redis at {redis_url}: {err}"));
        TestEnv {
            db_name,
            database_url,
            redis_url: redis_url.to_owned(),
            prefix,
            store,
            queue,
            isolation: IsolationSetting::default(),
        }
    }

    /// This env with its store, in-process and child workers and `lc` runs at
    /// `--isolation isolation`: the crash drills run under both settings.
    pub fn with_isolation(mut self, isolation: IsolationSetting) -> TestEnv {
        self.store = self.store.clone().with_isolation(isolation);
        self.isolation = isolation;
        self
    }

    /// `--isolation` as its command-line value.
    pub fn isolation_arg(&self) -> &'static str {
        self.isolation.as_arg()
    }

    pub fn connect_opts(&self) -> ConnectOpts {
        ConnectOpts {
            database_url: self.database_url.clone(),
            redis_url: self.redis_url.clone(),
            redis_prefix: self.prefix.clone(),
            db_pool_size: 8,
            isolation: self.isolation,
        }
    }

    /// A producer of every built-in kind.
    pub fn producer(&self) -> lc_producer::Producer {
        lc_producer::Producer::from_parts(self.store.clone(), Some(self.queue.clone()))
            .expect("core kinds register")
            .with_kinds(lc_deployment::kinds::kinds().expect("built-in kinds register"))
    }

    /// The deployment tables of this env's database.
    pub fn deployment_store(&self) -> lc_deployment::DeploymentStore {
        lc_deployment::DeploymentStore::new(self.store.clone())
    }

    /// The deployments API on [`TestEnv::producer`].
    pub fn deployments(&self) -> lc_deployment::Deployments {
        lc_deployment::Deployments::new(self.producer())
    }

    /// Worker settings shrunk so that crash drills take seconds.
    pub fn worker_config(&self) -> TestWorkerConfig {
        TestWorkerConfig {
            worker: self.queue_worker_config(),
            machines: self.machine_config(),
        }
    }

    fn queue_worker_config(&self) -> WorkerConfig {
        WorkerConfig {
            concurrency: 20,
            queues: vec!["default".to_owned()],
            lease: Duration::from_secs(2),
            heartbeat: Duration::from_millis(300),
            sweep_interval: Duration::from_millis(200),
            db_poll_interval: Duration::from_secs(1),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            grace: Duration::from_secs(5),
            fetch_batch: 100,
            no_inbox: false,
            metrics_addr: None,
            metrics_addr_file: None,
            drain: false,
            kind_timeouts: Vec::new(),
            events: lc_worker::config::EventsConfig::default(),
        }
    }

    /// The deployment handlers' settings: the stand-in, short call limits.
    fn machine_config(&self) -> MachineConfig {
        MachineConfig {
            docker_machine: std::env::var("LC_DOCKER_MACHINE_STANDIN")
                .map(PathBuf::from)
                .unwrap_or_else(|_| {
                    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docker-machine/docker-machine")
                }),
            machines_dir: std::env::temp_dir().join(format!("lc-machines-{}", self.prefix)),
            machine_timeout: Duration::from_secs(30),
            // The stand-in keeps its records (calls, counters, its simulated cloud) here:
            // the product's docker-machine stores are scratch directories per step.
            machine_env: vec![format!(
                "STANDIN_STATE_DIR={}",
                self.standin_dir().display()
            )],
            docker_host: std::env::var("DOCKER_HOST").ok(),
        }
    }

    /// Where the docker-machine stand-in of this test keeps its records.
    pub fn standin_dir(&self) -> PathBuf {
        std::env::temp_dir().join(format!("lc-standin-{}", self.prefix))
    }

    /// Starts a worker inside the test process.
    ///
    /// It runs on a runtime of its own, on threads with the stacks `lc-worker` gives
    /// its own (a deployment handler polled on the test's thread, in a debug build,
    /// overflows the default 2 MiB).
    pub fn spawn_worker(&self, config: TestWorkerConfig) -> InProcessWorker {
        let shutdown = CancellationToken::new();
        let (done, finished) = tokio::sync::oneshot::channel();
        let opts = self.connect_opts();
        let token = shutdown.clone();
        let TestWorkerConfig { worker, machines } = config;
        let state = DeploymentWorker::new(self.store.clone(), machines)
            .expect("LC_SECRET_KEY, when set, is a valid key");
        let registry = lc_deployment::kinds::registry(state).expect("built-in kinds register");
        std::thread::Builder::new()
            .name("in-process-worker".into())
            .stack_size(lc_worker::THREAD_STACK_BYTES)
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_stack_size(lc_worker::THREAD_STACK_BYTES)
                    .enable_all()
                    .build()
                    .expect("a runtime for the worker");
                let result = runtime.block_on(lc_worker::run_with(opts, worker, registry, token));
                let _ = done.send(result);
            })
            .expect("a thread for the worker");
        let handle = tokio::spawn(async move {
            finished
                .await
                .unwrap_or_else(|_| panic!("the in-process worker's thread died"))
        });
        InProcessWorker { shutdown, handle }
    }

    /// The `lc-worker` binary as a child process, with this env's settings plus `args`.
    pub fn spawn_worker_process(&self, args: &[&str]) -> WorkerProcess {
        self.spawn_worker_process_with_env(args, &[])
    }

    /// [`TestEnv::spawn_worker_process`] with extra environment variables.
    pub fn spawn_worker_process_with_env(
        &self,
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> WorkerProcess {
        self.spawn_worker_binary(&bin("lc-worker"), args, extra)
    }

    /// [`TestEnv::spawn_worker_process_with_env`] of another binary that takes
    /// `lc-worker`'s flags (a drill's `lc-worker` with a hook).
    pub fn spawn_worker_binary(
        &self,
        binary: &std::path::Path,
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> WorkerProcess {
        let config = self.worker_config();
        let log = std::env::temp_dir().join(format!(
            "lc-worker-{}-{}.log",
            self.prefix,
            Uuid::new_v4().simple()
        ));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new(binary);
        command
            .env("DATABASE_URL", &self.database_url)
            .env("REDIS_URL", &self.redis_url)
            .env("LC_REDIS_PREFIX", &self.prefix)
            .env("LC_ISOLATION", self.isolation_arg())
            .env("LC_LEASE", "2s")
            .env("LC_HEARTBEAT", "300ms")
            .env("LC_SWEEP_INTERVAL", "200ms")
            .env("LC_DB_POLL_INTERVAL", "1s")
            .env("LC_BACKOFF_BASE", "100ms")
            .env("LC_BACKOFF_MAX", "1s")
            .env("LC_GRACE", "5s")
            .env("LC_DOCKER_MACHINE", &config.machines.docker_machine)
            // Each process its own scratch directory, as on hosts of their own: nothing
            // a worker needs may live on another worker's disk.
            .env(
                "LC_MACHINES_DIR",
                config
                    .machines
                    .machines_dir
                    .join(format!("process-{}", Uuid::new_v4().simple())),
            )
            .env("LC_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .envs(extra.iter().copied())
            .arg("--machine-env")
            .arg(format!(
                "STANDIN_STATE_DIR={}",
                self.standin_dir().display()
            ))
            .args(args)
            .stdout(Stdio::null())
            .stderr(log_file);
        let child = command.spawn().unwrap();
        WorkerProcess { child, log }
    }

    /// Runs the `lc` binary against this env; returns (exit code, stdout, stderr).
    pub fn lc(&self, args: &[&str]) -> (i32, String, String) {
        let output = Command::new(bin("lc"))
            .env("DATABASE_URL", &self.database_url)
            .env("REDIS_URL", &self.redis_url)
            .env("LC_REDIS_PREFIX", &self.prefix)
            .env("LC_ISOLATION", self.isolation_arg())
            .args(args)
            .output()
            .unwrap();
        (
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// A raw connection to this test's database, for assertions.
    pub async fn sql(&self) -> deadpool_like::Client {
        deadpool_like::connect(&self.database_url).await
    }

    pub async fn job_count(&self) -> i64 {
        let client = self.sql().await;
        client
            .query_one("SELECT count(*) FROM jobs", &[])
            .await
            .unwrap()
            .get(0)
    }

    pub async fn states(&self, ids: &[Uuid]) -> HashMap<Uuid, JobState> {
        self.store
            .job_states(ids)
            .await
            .unwrap()
            .into_iter()
            .collect()
    }

    /// Waits until every job is terminal; returns their states.
    pub async fn wait_terminal(&self, ids: &[Uuid], timeout: Duration) -> HashMap<Uuid, JobState> {
        wait_for("jobs to reach a terminal state", timeout, || async {
            let states = self.states(ids).await;
            (states.len() == ids.len() && states.values().all(|state| state.is_terminal()))
                .then_some(states)
        })
        .await
    }

    /// The no-loss, no-duplicate check every crash test ends with: each job is in one
    /// terminal state, entered exactly once in its history, and no attempt's effect was
    /// recorded twice; succeeded `record` jobs have their final attempt's effect.
    pub async fn assert_exactly_once(&self, ids: &[Uuid]) {
        let client = self.sql().await;
        let rows = client
            .query(
                "SELECT j.id, j.state, j.attempt,
                        (SELECT count(*) FROM job_events e WHERE e.job_id = j.id
                           AND e.to_state IN ('succeeded', 'dead', 'cancelled')),
                        (SELECT count(*) FROM job_effects f WHERE f.job_id = j.id AND f.attempt = j.attempt),
                        (SELECT count(*) FROM (SELECT attempt FROM job_effects f WHERE f.job_id = j.id
                           GROUP BY attempt HAVING count(*) > 1) AS twice),
                        j.payload->>'record'
                 FROM jobs j WHERE j.id = ANY($1)",
                &[&ids],
            )
            .await
            .unwrap();
        assert_eq!(
            rows.len(),
            ids.len(),
            "some jobs are missing from the database"
        );
        let stale_effects: HashMap<Uuid, i64> = client
            .query(
                "SELECT job_id, count(*) FROM effect_witness WHERE job_id = ANY($1) GROUP BY job_id",
                &[&ids],
            )
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        for row in rows {
            let id: Uuid = row.get(0);
            let state: String = row.get(1);
            let terminal_events: i64 = row.get(3);
            let final_effects: i64 = row.get(4);
            let doubled: i64 = row.get(5);
            let record: Option<String> = row.get(6);
            let state: JobState = state.parse().unwrap();
            assert!(state.is_terminal(), "job {id} is still {state}");
            assert_eq!(
                terminal_events, 1,
                "job {id} entered a terminal state {terminal_events} times"
            );
            assert_eq!(doubled, 0, "job {id} recorded an attempt's effect twice");
            let stale = stale_effects.get(&id).copied().unwrap_or_default();
            assert_eq!(
                stale, 0,
                "job {id} has {stale} effects written by an attempt that was not its live one"
            );
            if state == JobState::Succeeded && record.as_deref() == Some("true") {
                assert_eq!(
                    final_effects, 1,
                    "job {id} succeeded without its final attempt's effect"
                );
            }
        }
    }

    /// Every job's history is a chain of legal transitions: its events, in order, start
    /// with the enqueue (no source state, to `queued`), each leaves the state the one
    /// before entered by a transition of [`lc_shared::state::Transition`], and the last
    /// enters the job's current state. A transition lost with its event (a commit that a
    /// failover dropped) leaves the chain intact; one lost without it, or applied twice,
    /// or from the wrong state, does not.
    pub async fn assert_legal_histories(&self, ids: &[Uuid]) {
        use lc_shared::state::Transition;
        // `Enqueue` starts from no state: the `(None, "queued")` pair below.
        let legal: Vec<(Option<&str>, &str)> = Transition::ALL
            .into_iter()
            .flat_map(|transition| {
                transition
                    .from()
                    .iter()
                    .map(move |from| (Some(from.as_str()), transition.to().as_str()))
            })
            // A lease that expires on the last attempt ends the job (see
            // `lc_shared::state::after_lease_expiry`).
            .chain([(Some("running"), "dead"), (None, "queued")])
            .collect();
        let client = self.sql().await;
        let jobs: HashMap<Uuid, String> = client
            .query("SELECT id, state FROM jobs WHERE id = ANY($1)", &[&ids])
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        let events = client
            .query(
                "SELECT job_id, from_state, to_state FROM job_events
                 WHERE job_id = ANY($1) AND to_state IS NOT NULL ORDER BY job_id, at, attempt",
                &[&ids],
            )
            .await
            .unwrap();
        let mut last: HashMap<Uuid, Option<String>> = HashMap::new();
        for row in &events {
            let id: Uuid = row.get(0);
            let from: Option<String> = row.get(1);
            let to: String = row.get(2);
            let before = last.entry(id).or_insert(None);
            assert_eq!(
                &from, before,
                "job {id}: a transition from {from:?} follows one into {before:?}"
            );
            assert!(
                legal.contains(&(from.as_deref(), to.as_str())),
                "job {id}: illegal transition {from:?} -> {to}"
            );
            *before = Some(to);
        }
        for (id, state) in &jobs {
            assert_eq!(
                last.get(id).cloned().flatten().as_deref(),
                Some(state.as_str()),
                "job {id}: its history does not end in its state {state}"
            );
        }
    }

    /// Terminates every connection to this test's database except the caller's.
    pub async fn terminate_db_connections(&self) -> i64 {
        let admin = url_with_database(&self.database_url, "postgres");
        let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let dialect = lc_shared::dialect::Dialect::detect(&client).await.unwrap();
        let rows = client
            .query(dialect.terminate_other_sessions(), &[&self.db_name])
            .await
            .unwrap();
        rows.len() as i64
    }
}

/// Test-only witness (PostgreSQL; the product itself uses no triggers): every row
/// written to `job_effects` is checked, under a lock on its job's row held until the
/// write commits, against the job's live attempt (running, same attempt, same lease
/// owner). A write from any other attempt is noted in `effect_witness`, which
/// [`TestEnv::assert_exactly_once`] requires to be empty.
async fn install_effect_witness(database_url: &str) {
    let client = deadpool_like::connect(database_url).await;
    client
        .batch_execute(
            "CREATE TABLE effect_witness (
                 job_id UUID NOT NULL, attempt BIGINT NOT NULL, worker_id UUID,
                 job_state TEXT, job_attempt BIGINT, lease_owner UUID,
                 at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp());
             CREATE FUNCTION effect_witness_check() RETURNS trigger LANGUAGE plpgsql AS $$
             DECLARE live RECORD;
             BEGIN
                 SELECT state, attempt, lease_owner INTO live FROM jobs WHERE id = NEW.job_id FOR SHARE;
                 IF live.state IS DISTINCT FROM 'running' OR live.attempt IS DISTINCT FROM NEW.attempt
                    OR live.lease_owner IS DISTINCT FROM NEW.worker_id THEN
                     INSERT INTO effect_witness (job_id, attempt, worker_id, job_state, job_attempt, lease_owner)
                     VALUES (NEW.job_id, NEW.attempt, NEW.worker_id, live.state, live.attempt, live.lease_owner);
                 END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER effect_witness AFTER INSERT ON job_effects
                 FOR EACH ROW EXECUTE FUNCTION effect_witness_check();",
        )
        .await
        .unwrap();
}

/// A plain tokio-postgres connection for assertions.
pub mod deadpool_like {
    pub type Client = tokio_postgres::Client;

    /// Assertions read at READ COMMITTED: as serializable readers they could be chosen
    /// as the victim of the workers' conflicts and fail the test spuriously.
    pub async fn connect(url: &str) -> Client {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute("SET default_transaction_isolation = 'read committed'")
            .await
            .unwrap();
        client
    }
}

/// A worker running inside the test process.
pub struct InProcessWorker {
    pub shutdown: CancellationToken,
    pub handle: tokio::task::JoinHandle<Result<(), lc_worker::WorkerError>>,
}

impl InProcessWorker {
    /// Graceful stop; waits for it to finish.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }
}

/// An `lc-worker` child process; killed when dropped.
pub struct WorkerProcess {
    pub child: Child,
    pub log: PathBuf,
}

impl WorkerProcess {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: i32) {
        let result = unsafe_free_kill(self.pid(), signal);
        assert!(result, "could not send signal {signal} to {}", self.pid());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit; returns its exit code.
    pub fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        unsafe_free_kill(self.pid(), libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal with the `kill` command, keeping the tests free of `unsafe`.
pub fn unsafe_free_kill(pid: i32, signal: i32) -> bool {
    Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .map(|status| status.success())
        .unwrap_or(false)
}

/// A Redis server of the test's own on a free loopback port, so that restarting or
/// flushing it disturbs no other test.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub async fn start() -> PrivateRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = PrivateRedis { port, child: None };
        redis.launch().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server not found; run scripts/services.sh up");
        self.child = Some(child);
        wait_for_redis(&self.url()).await;
    }

    /// Stops the server (its data is gone: no persistence).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server and starts an empty one on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        self.launch().await;
    }

    pub async fn flushall(&self) {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("FLUSHALL")
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `n` jobs of one kind and payload, enqueued in one batch; returns their ids.
pub async fn enqueue_many(
    env: &TestEnv,
    kind: lc_shared::JobKind,
    payload: serde_json::Value,
    n: usize,
) -> Vec<Uuid> {
    let jobs = vec![lc_shared::NewJob::new(kind, payload); n];
    env.producer()
        .enqueue_batch(&jobs)
        .await
        .unwrap()
        .into_iter()
        .map(|job| job.id)
        .collect()
}

/// Waits until the Redis server at `url` answers PING.
async fn wait_for_redis(url: &str) {
    wait_for("redis to answer", Duration::from_secs(10), || async {
        let client = redis::Client::open(url).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .ok()
    })
    .await;
}

/// A private 3-node Redis Cluster (no replicas) on free loopback ports, built the way
/// operators build one: `redis-server --cluster-enabled yes` ×3, then
/// `redis-cli --cluster create`.
pub struct PrivateRedisCluster {
    pub ports: Vec<u16>,
    dir: PathBuf,
    children: Vec<Child>,
}

impl PrivateRedisCluster {
    pub async fn start() -> PrivateRedisCluster {
        let dir = std::env::temp_dir().join(format!("lc-cluster-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ports = Vec::new();
        // Cluster nodes also listen on port+10000; pick ports whose bus port is free too.
        while ports.len() < 3 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            if port < 55000 && std::net::TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
                ports.push(port);
            }
        }
        let mut children = Vec::new();
        for port in &ports {
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &format!("nodes-{port}.conf"),
                    "--dir",
                    &dir.display().to_string(),
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            children.push(child);
        }
        let cluster = PrivateRedisCluster {
            ports,
            dir,
            children,
        };
        for port in &cluster.ports {
            wait_for_redis(&format!("redis://127.0.0.1:{port}")).await;
        }
        let nodes: Vec<String> = cluster
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&nodes)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "redis-cli --cluster create failed");
        for port in &cluster.ports {
            let url = format!("redis://127.0.0.1:{port}");
            wait_for("cluster state ok", Duration::from_secs(20), || {
                let url = url.clone();
                async move {
                    let client = redis::Client::open(url).ok()?;
                    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
                    let info: String = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async(&mut conn)
                        .await
                        .ok()?;
                    info.contains("cluster_state:ok").then_some(())
                }
            })
            .await;
        }
        cluster
    }

    /// The URL that selects cluster mode: `redis+cluster://host:port,host:port,...`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        format!("{}{}", lc_shared::queue::CLUSTER_SCHEME, nodes.join(","))
    }

    /// Empties every node, as a cluster-wide data loss would.
    pub async fn flushall(&self) {
        for port in &self.ports {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            redis::cmd("FLUSHALL")
                .query_async::<()>(&mut conn)
                .await
                .unwrap();
        }
    }
}

impl Drop for PrivateRedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PostgreSQL server of the test's own (own data directory and port, serializable by
/// default like the shared one), so that crashing and restarting it disturbs no other
/// test. Runs as the `postgres` user when the tests run as root (PostgreSQL refuses
/// root).
pub struct PrivatePostgres {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl PrivatePostgres {
    pub async fn start() -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries not found; run scripts/services.sh up")
            .filter_map(|entry| entry.ok().map(|entry| entry.path().join("bin")))
            .filter(|dir| dir.join("initdb").exists())
            .max()
            .expect("no initdb under /usr/lib/postgresql");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("lc-pg-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let pg = PrivatePostgres { port, dir, bin };
        if is_root() {
            assert!(
                Command::new("chown")
                    .args(["postgres:postgres", &pg.dir.display().to_string()])
                    .status()
                    .unwrap()
                    .success(),
                "chown of the private PostgreSQL directory failed"
            );
        }
        let data = pg.data().display().to_string();
        let initdb = pg.bin.join("initdb").display().to_string();
        let output = pg
            .as_postgres(&[
                &initdb,
                "-D",
                &data,
                "-U",
                "lc",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        // The shared server's settings that matter to the drills: serializable by
        // default (so the retry helper is exercised) and row-level predicate locks.
        let conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             default_transaction_isolation = 'serializable'\nmax_connections = 200\n\
             max_pred_locks_per_transaction = 1024\nmax_pred_locks_per_relation = 8192\n\
             max_pred_locks_per_page = 64\nfsync = off\n",
            pg.dir.display()
        );
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(pg.data().join("postgresql.conf"))
            .unwrap();
        std::io::Write::write_all(&mut file, conf.as_bytes()).unwrap();
        pg.start_server().await;
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn as_postgres(&self, argv: &[&str]) -> Command {
        let mut command = if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).args(argv);
            command
        } else {
            let mut command = Command::new(argv[0]);
            command.args(&argv[1..]);
            command
        };
        command.current_dir("/").stdin(Stdio::null());
        command
    }

    fn pg_ctl(&self, args: &[&str]) -> bool {
        let pg_ctl = self.bin.join("pg_ctl").display().to_string();
        let data = self.data().display().to_string();
        let log = self.dir.join("postgres.log").display().to_string();
        let mut argv = vec![pg_ctl.as_str(), "-D", data.as_str(), "-l", log.as_str()];
        argv.extend_from_slice(args);
        self.as_postgres(&argv)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|status| status.success())
            .unwrap_or(false)
    }

    /// The admin URL ([`TestEnv::with_services`] makes each test's database beside it).
    pub fn admin_url(&self) -> String {
        format!("postgres://lc@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again) and waits until it answers queries.
    pub async fn start_server(&self) {
        assert!(
            self.pg_ctl(&["-w", "-t", "60", "start"]),
            "pg_ctl start failed"
        );
        let url = self.admin_url();
        wait_for("postgres to answer", Duration::from_secs(30), || async {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .ok()?;
            tokio::spawn(connection);
            client.simple_query("SELECT 1").await.ok()
        })
        .await;
    }

    /// A crash: `pg_ctl stop -m immediate` (no shutdown checkpoint; recovery replays
    /// the WAL at the next start).
    pub fn crash(&self) {
        assert!(
            self.pg_ctl(&["-w", "-m", "immediate", "stop"]),
            "pg_ctl stop -m immediate failed"
        );
    }
}

impl PrivatePostgres {
    /// The server and its backends, stopped (SIGSTOP): connections stay open and every
    /// query waits for an answer that does not come, as with a database host that hangs.
    pub fn freeze(&self) {
        self.signal_all(libc::SIGSTOP);
    }

    /// Undoes [`PrivatePostgres::freeze`].
    pub fn thaw(&self) {
        self.signal_all(libc::SIGCONT);
    }

    /// Sends `signal` to the postmaster (`postmaster.pid`) and to its children.
    fn signal_all(&self, signal: i32) {
        let Some(postmaster) = std::fs::read_to_string(self.data().join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<i32>().ok())
        else {
            return;
        };
        let children = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                // /proc/PID/stat: "pid (comm) state ppid ...", comm may hold spaces
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|stat| {
                        let after = stat.rsplit_once(')')?.1;
                        after.split_whitespace().nth(1)?.parse::<i32>().ok()
                    })
                    == Some(postmaster)
            });
        for pid in std::iter::once(postmaster).chain(children) {
            unsafe_free_kill(pid, signal);
        }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.thaw();
        self.pg_ctl(&["-w", "-m", "immediate", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .map(|line| line.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Each drill runs twice: at the default `--isolation read-committed` and at
/// `--isolation serializable` (every transaction serializable). A drill is an `async
/// fn(IsolationSetting)` of the calling module.
#[macro_export]
macro_rules! in_both_isolations {
    ($($drill:ident),* $(,)?) => {
        $(
            mod $drill {
                use lc_shared::store::IsolationSetting;

                #[tokio::test]
                async fn read_committed() {
                    super::$drill(IsolationSetting::ReadCommitted).await
                }

                #[tokio::test]
                async fn serializable() {
                    super::$drill(IsolationSetting::Serializable).await
                }
            }
        )*
    };
}

/// A worker's settings in a test: the queue core's and the deployment handlers'.
/// Dereferences to the queue core's [`WorkerConfig`].
#[derive(Clone, Debug)]
pub struct TestWorkerConfig {
    pub worker: WorkerConfig,
    pub machines: MachineConfig,
}

impl std::ops::Deref for TestWorkerConfig {
    type Target = WorkerConfig;
    fn deref(&self) -> &WorkerConfig {
        &self.worker
    }
}

impl std::ops::DerefMut for TestWorkerConfig {
    fn deref_mut(&mut self) -> &mut WorkerConfig {
        &mut self.worker
    }
}
