//! The docker-machine driver: runs the configured binary (`--docker-machine`, never
//! through a shell) with arguments as a list, against a [`ScratchStore`] made for the
//! step from the database (`MACHINE_STORAGE_PATH`, plus the `--tls-*` global flags that
//! name the deployment's certificates), a time limit per call, and each call in its own
//! process group. The group is killed whole on timeout, when the job is cancelled, and
//! when the call exits (a failed create leaves its driver plugin running for seconds):
//! the call is over only when its group is empty. Crash reports are switched off
//! (`MACHINE_BUGSNAG_API_TOKEN=no-report` and the store's `no-error-report` file).
//! Output is captured, redacted and truncated into the job's history.
//!
//! docker-machine sees a cleaned environment: the basics (PATH, HOME, locale, proxies),
//! its own `MACHINE_*` settings, the worker's `--machine-env` entries, and the values of
//! the credential variables the deployment's spec names. Credential values are read
//! from the worker's environment at run time and go nowhere else: not into arguments,
//! payloads, rows, events or logs (every captured line is redacted).
//!
//! The CLI contract followed here is docker-machine 0.16's (see DESIGN.md).

use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::docker_machine::{
    self, CRASH_REPORT_VAR as CRASH_REPORT_TOKEN, NO_CRASH_REPORT, STORAGE_PATH_VAR,
};
use crate::{Provider, Spec, is_secret_key, redact_values, spec::is_env_var_name, truncate_text};
use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::Instrument;

use super::config::MachineConfig;
use super::machine_store::ScratchStore;
use super::process::{group_alive, kill_group};
use lc_worker::Metrics;

/// Most output kept from one call (the rest is read and dropped).
const MAX_CAPTURE: usize = 256 * 1024;
/// Most output written into the job's history per stream and call.
const MAX_LOGGED: usize = 4 * 1024;

/// Variables passed through from the worker's environment.
const PASSTHROUGH: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error("could not run {binary} (set --docker-machine / LC_DOCKER_MACHINE)")]
    Spawn {
        binary: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "docker-machine {op} {target} did not finish within {after:?}; its process group was killed"
    )]
    Timeout {
        op: String,
        target: String,
        after: Duration,
    },
    #[error(
        "docker-machine {op} {target} stopped: the job was cancelled; its process group was killed"
    )]
    Cancelled { op: String, target: String },
    #[error("docker-machine {op} {target} failed with {status}: {stderr}")]
    Failed {
        op: String,
        target: String,
        status: String,
        stderr: String,
    },
    #[error("unexpected output from docker-machine {op} {target}: {reason}")]
    Output {
        op: String,
        target: String,
        reason: String,
    },
    #[error(
        "credential environment variable {0} is not set in this worker's environment (the spec's provider.credentials_env names it)"
    )]
    MissingCredential(String),
    #[error("invalid --machine-env entry {0:?}: expected NAME=VALUE with NAME like MACHINE_DEBUG")]
    ExtraEnv(String),
}

impl MachineError {
    /// `Docker machine "NAME" does not exist.`: for rm, inspect, url and status this
    /// means there is nothing to do.
    pub fn does_not_exist(&self) -> bool {
        matches!(self, MachineError::Failed { stderr, .. } if stderr.contains("does not exist"))
    }

    /// The store entry is broken (`config.json` missing or not JSON): docker-machine can
    /// neither use nor remove it, and says so differently from "does not exist".
    pub fn broken_entry(&self) -> bool {
        matches!(self, MachineError::Failed { stderr, .. } if
            stderr.contains("config.json: no such file or directory")
            || stderr.contains("Error getting migrated host")
            || stderr.contains("Error loading host"))
    }

    /// The provider says the machine's resource does not exist (`status` of a droplet
    /// deleted at DigitalOcean: `error getting state for host NAME: GET .../droplets/ID:
    /// 404 The resource you were accessing could not be found.`), while its store entry
    /// is still there.
    pub fn gone_at_provider(&self) -> bool {
        matches!(self, MachineError::Failed { stderr, .. } if
            stderr.contains(": 404 ") || stderr.contains("could not be found"))
    }

    /// `Docker machine "NAME" already exists` from create.
    pub fn already_exists(&self) -> bool {
        matches!(self, MachineError::Failed { stderr, .. } if stderr.contains("already exists"))
    }

    /// Failures that the same call will hit again: usage and configuration errors.
    pub fn is_permanent(&self) -> bool {
        match self {
            MachineError::Spawn { .. }
            | MachineError::ExtraEnv(_)
            | MachineError::MissingCredential(_) => true,
            MachineError::Failed { stderr, .. } => [
                "Incorrect Usage",
                "flag provided but not defined",
                "Do you have the plugin binary",
                "Error setting machine configuration from flags",
                "Invalid hostname specified",
                "is not a docker-machine command",
            ]
            .iter()
            .any(|needle| stderr.contains(needle)),
            _ => false,
        }
    }
}

/// What a docker-machine call needs from whoever makes it (a job, later a health
/// check): what stops it, where its timing is counted, and where its output is written.
pub trait CallContext: Sync {
    /// Resolves when the call must stop (its process group is then killed).
    fn cancelled(&self) -> impl Future<Output = ()> + Send;
    fn metrics(&self) -> &Metrics;
    /// Keeps a line of the call's (redacted) output.
    fn log(&self, line: &str) -> impl Future<Output = ()> + Send;
}

/// What `inspect` says about a machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineInfo {
    pub driver_name: String,
    pub ip_address: Option<String>,
    pub url: Option<String>,
    pub ca_cert_path: Option<String>,
    pub client_cert_path: Option<String>,
    pub client_key_path: Option<String>,
}

/// The captured result of a call that exited 0.
#[derive(Clone, Debug, Default)]
pub struct CallOutput {
    pub stdout: String,
}

/// docker-machine against one scratch store.
pub struct MachineCli {
    binary: PathBuf,
    storage: PathBuf,
    /// `--tls-*` flags naming the deployment's certificates, before every subcommand.
    global: Vec<String>,
    timeout: Duration,
    env: Vec<(String, String)>,
    secrets: Vec<String>,
}

impl MachineCli {
    /// Prepares calls for a deployment: its scratch store, its time limit, the
    /// environment (credentials read from this worker's environment now). A credential
    /// variable that is not set is an error when `require_credentials`; otherwise it is
    /// left out (a teardown can still remove machines: docker-machine keeps what its
    /// drivers need in the store entry).
    pub fn new(
        config: &MachineConfig,
        spec: &Spec,
        require_credentials: bool,
        store: &ScratchStore,
    ) -> Result<MachineCli, MachineError> {
        let mut env: Vec<(String, String)> = Vec::new();
        let mut secrets = Vec::new();
        for name in PASSTHROUGH {
            if let Ok(value) = std::env::var(name) {
                env.push(((*name).to_owned(), value));
            }
        }
        for (name, value) in std::env::vars() {
            if name.starts_with("MACHINE_")
                && name != STORAGE_PATH_VAR
                && name != CRASH_REPORT_TOKEN
            {
                if is_secret_key(&name) {
                    secrets.push(value.clone());
                }
                env.push((name, value));
            }
        }
        for entry in &config.machine_env {
            let Some((name, value)) = entry.split_once('=') else {
                return Err(MachineError::ExtraEnv(entry.clone()));
            };
            if !is_env_var_name(name) || name == STORAGE_PATH_VAR || name == CRASH_REPORT_TOKEN {
                return Err(MachineError::ExtraEnv(entry.clone()));
            }
            if is_secret_key(name) {
                secrets.push(value.to_owned());
            }
            env.push((name.to_owned(), value.to_owned()));
        }
        if let Provider::DockerMachine {
            credentials_env, ..
        } = &spec.provider
        {
            for name in credentials_env {
                match std::env::var(name) {
                    Ok(value) if !value.is_empty() => {
                        secrets.push(value.clone());
                        env.push((name.clone(), value));
                    }
                    _ if require_credentials => {
                        return Err(MachineError::MissingCredential(name.clone()));
                    }
                    _ => {}
                }
            }
        }
        // No crash report ever leaves the machine.
        env.push((CRASH_REPORT_TOKEN.to_owned(), NO_CRASH_REPORT.to_owned()));
        Ok(MachineCli {
            binary: config.docker_machine.clone(),
            storage: store.path().to_path_buf(),
            global: store.tls_flags(),
            timeout: spec.timeouts.machine.unwrap_or(config.machine_timeout),
            env,
            secrets,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Credential values (and other secret-looking values) removed from anything logged.
    pub fn redact(&self, text: &str) -> String {
        redact_values(text, &self.secrets)
    }

    /// Runs one call; a non-zero exit is [`MachineError::Failed`] with the (redacted)
    /// stderr. Every call is timed into the metrics and written to the job's history.
    pub async fn run(
        &self,
        ctx: &impl CallContext,
        op: &str,
        target: &str,
        args: &[String],
    ) -> Result<CallOutput, MachineError> {
        let started = Instant::now();
        // The call's span in the job's trace: the subcommand and the machine's name,
        // never the arguments or the environment (driver flags and credentials).
        let span = tracing::info_span!(
            "docker-machine",
            otel.name = %format_args!("docker-machine {op}"),
            otel.kind = "client",
            docker_machine.command = op,
            docker_machine.machine = target,
            process.exit_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let result = self
            .run_inner(ctx, op, target, args)
            .instrument(span.clone())
            .await;
        let took = started.elapsed();
        let failed = !matches!(result, Ok((ref status, _, _)) if status.success());
        if let Ok((status, _, _)) = &result
            && let Some(code) = status.code()
        {
            span.record("process.exit_code", code);
        }
        if failed {
            span.record("otel.status_code", "error");
        }
        ctx.metrics()
            .external_call("docker-machine", op, took, failed);
        let shown_args = self.redact(&args.join(" "));
        match result {
            Ok((status, stdout, stderr)) => {
                let stdout = self.redact(&String::from_utf8_lossy(&stdout));
                let stderr = self.redact(&String::from_utf8_lossy(&stderr));
                let mut line = format!(
                    "docker-machine {shown_args}: {status} after {} ms",
                    took.as_millis()
                );
                for (name, text) in [("stdout", &stdout), ("stderr", &stderr)] {
                    let text = text.trim();
                    let inspect_json = op == "inspect" && name == "stdout";
                    if !text.is_empty() && !inspect_json {
                        line.push_str(&format!("\n{name}: {}", truncate_text(text, MAX_LOGGED)));
                    }
                }
                ctx.log(&line).await;
                if status.success() {
                    Ok(CallOutput { stdout })
                } else {
                    let stderr = stderr.trim();
                    let stderr = if stderr.is_empty() {
                        stdout.trim()
                    } else {
                        stderr
                    };
                    Err(MachineError::Failed {
                        op: op.to_owned(),
                        target: target.to_owned(),
                        status: status.to_string(),
                        stderr: truncate_text(stderr, 1024),
                    })
                }
            }
            Err(err) => {
                ctx.log(&format!(
                    "docker-machine {shown_args}: {} (after {} ms)",
                    self.redact(&err.to_string()),
                    took.as_millis()
                ))
                .await;
                Err(err)
            }
        }
    }

    async fn run_inner(
        &self,
        ctx: &impl CallContext,
        op: &str,
        target: &str,
        args: &[String],
    ) -> Result<(std::process::ExitStatus, Vec<u8>, Vec<u8>), MachineError> {
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .args(&self.global)
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .env(STORAGE_PATH_VAR, &self.storage)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = command.spawn().map_err(|source| MachineError::Spawn {
            binary: self.binary.display().to_string(),
            source,
        })?;
        // The child leads its own process group: its id is the group's.
        let group = ProcessGroup(child.id());
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let (out_pipe, err_pipe) = (child.stdout.take(), child.stderr.take());
        enum End {
            Exited(std::io::Result<std::process::ExitStatus>),
            TimedOut,
            Cancelled,
        }
        let end = {
            let reading = async {
                tokio::join!(
                    read_capped(out_pipe, &mut stdout),
                    read_capped(err_pipe, &mut stderr)
                )
            };
            let waiting = async {
                let status = child.wait().await;
                // The call is over when its group is empty: what it started (a driver
                // plugin lingers for seconds after a failed create) goes with it, and
                // then the pipes it held close.
                if let Some(pgid) = group.0 {
                    empty_group(pgid).await;
                }
                status
            };
            let work = async { tokio::join!(reading, waiting).1 };
            tokio::select! {
                status = work => End::Exited(status),
                _ = tokio::time::sleep(self.timeout) => End::TimedOut,
                _ = ctx.cancelled() => End::Cancelled,
            }
        };
        match end {
            End::Exited(Ok(status)) => {
                group.disarm();
                Ok((status, stdout, stderr))
            }
            End::Exited(Err(source)) => {
                group.kill();
                Err(MachineError::Spawn {
                    binary: self.binary.display().to_string(),
                    source,
                })
            }
            End::TimedOut | End::Cancelled => {
                group.kill();
                // Reap the leader; the group got SIGKILL, so this is quick.
                let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                let partial = self.redact(&String::from_utf8_lossy(&stdout));
                if !partial.trim().is_empty() {
                    ctx.log(&format!(
                        "docker-machine {op} {target}: output before it was killed: {}",
                        truncate_text(partial.trim(), MAX_LOGGED)
                    ))
                    .await;
                }
                if matches!(end, End::TimedOut) {
                    Err(MachineError::Timeout {
                        op: op.to_owned(),
                        target: target.to_owned(),
                        after: self.timeout,
                    })
                } else {
                    Err(MachineError::Cancelled {
                        op: op.to_owned(),
                        target: target.to_owned(),
                    })
                }
            }
        }
    }

    /// `create --driver DRIVER [flags] NAME` ([`docker_machine::create_args`], which
    /// plans show too).
    pub async fn create(
        &self,
        ctx: &impl CallContext,
        name: &str,
        driver: &str,
        flags: &[String],
    ) -> Result<CallOutput, MachineError> {
        let args = docker_machine::create_args(name, driver, flags);
        self.run(ctx, "create", name, &args).await
    }

    /// `status NAME`: `None` when the machine does not exist.
    pub async fn status(
        &self,
        ctx: &impl CallContext,
        name: &str,
    ) -> Result<Option<String>, MachineError> {
        match self
            .run(
                ctx,
                "status",
                name,
                &docker_machine::query_args("status", name),
            )
            .await
        {
            Ok(output) => Ok(Some(output.stdout.trim().to_owned())),
            Err(err) if err.does_not_exist() => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// `inspect NAME`, parsed: `None` when the machine does not exist.
    pub async fn inspect(
        &self,
        ctx: &impl CallContext,
        name: &str,
    ) -> Result<Option<MachineInfo>, MachineError> {
        let output = match self
            .run(
                ctx,
                "inspect",
                name,
                &docker_machine::query_args("inspect", name),
            )
            .await
        {
            Ok(output) => output,
            Err(err) if err.does_not_exist() => return Ok(None),
            Err(err) => return Err(err),
        };
        parse_inspect(&output.stdout)
            .map(Some)
            .map_err(|reason| MachineError::Output {
                op: "inspect".into(),
                target: name.to_owned(),
                reason,
            })
    }

    /// `url NAME`: the engine's URL.
    pub async fn url(&self, ctx: &impl CallContext, name: &str) -> Result<String, MachineError> {
        let output = self
            .run(ctx, "url", name, &docker_machine::query_args("url", name))
            .await?;
        let url = output.stdout.trim().to_owned();
        if url.starts_with("unix://") || url.starts_with("tcp://") {
            Ok(url)
        } else {
            Err(MachineError::Output {
                op: "url".into(),
                target: name.to_owned(),
                reason: format!("{url:?} is not a unix:// or tcp:// URL"),
            })
        }
    }

    /// `rm -y NAME`: true when removed, false when it did not exist (which counts as done).
    pub async fn rm(&self, ctx: &impl CallContext, name: &str) -> Result<bool, MachineError> {
        match self
            .run(ctx, "rm", name, &docker_machine::rm_args(name))
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if err.does_not_exist() => Ok(false),
            Err(err) => Err(err),
        }
    }
}

/// Reads a pipe to its end, keeping the first [`MAX_CAPTURE`] bytes.
async fn read_capped<R: AsyncRead + Unpin>(pipe: Option<R>, into: &mut Vec<u8>) {
    let Some(mut pipe) = pipe else { return };
    let mut chunk = [0u8; 8192];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => {
                let room = MAX_CAPTURE.saturating_sub(into.len());
                into.extend_from_slice(&chunk[..read.min(room)]);
            }
        }
    }
}

/// A running child's process group, killed when dropped unless disarmed (the child
/// exited and was reaped): no docker-machine call, nor anything it started in its
/// group, outlives the job that made it.
struct ProcessGroup(Option<u32>);

impl ProcessGroup {
    fn kill(mut self) {
        if let Some(pgid) = self.0.take() {
            kill_group(pgid);
        }
    }

    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            kill_group(pgid);
        }
    }
}

/// Kills what is left in a finished call's group and waits (bounded) until none is.
/// The leader was reaped, but its id stays reserved while the group has members, so
/// the signal cannot reach an unrelated process.
async fn empty_group(pgid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while group_alive(pgid) && Instant::now() < deadline {
        kill_group(pgid);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn parse_inspect(text: &str) -> Result<MachineInfo, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|err| format!("not JSON: {err}"))?;
    let text_at = |pointer: &str| {
        value
            .pointer(pointer)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    Ok(MachineInfo {
        driver_name: text_at("/DriverName").ok_or("no DriverName")?,
        ip_address: text_at("/Driver/IPAddress"),
        url: text_at("/Driver/URL"),
        ca_cert_path: text_at("/HostOptions/AuthOptions/CaCertPath"),
        client_cert_path: text_at("/HostOptions/AuthOptions/ClientCertPath"),
        client_key_path: text_at("/HostOptions/AuthOptions/ClientKeyPath"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_inspect() {
        let info = parse_inspect(
            r#"{"DriverName": "none", "Driver": {"IPAddress": "127.0.0.1", "URL": "unix:///x.sock"},
                "HostOptions": {"AuthOptions": {"CaCertPath": "/s/ca.pem", "ClientCertPath": "/s/cert.pem", "ClientKeyPath": "/s/key.pem"}}}"#,
        )
        .expect("parses");
        assert_eq!(info.driver_name, "none");
        assert_eq!(info.ip_address.as_deref(), Some("127.0.0.1"));
        assert_eq!(info.client_key_path.as_deref(), Some("/s/key.pem"));
        assert!(parse_inspect("nope").is_err());
    }
}
