//! The Docker Engine API client (bollard) against one machine's engine: plain for
//! `unix://`, TLS with the machine's certificates for `tcp://`, the API version
//! negotiated with the engine (Docker 20.10 speaks 1.41). Every call is timed into the
//! worker's metrics. Errors say whether a retry can help: a missing image that cannot
//! be pulled, a bad container setting or a name taken by someone else are fatal;
//! connection trouble and daemon hiccups are not.
//!
//! Every call is also a span (`docker <operation>`) of the job's trace: its attributes
//! are the operation and the engine's URL, never a request body (container env values,
//! registry credentials).

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::{
    Endpoint, FileSpec, LABEL_DEPLOYMENT, LABEL_GENERATION, LABEL_MACHINE, PullPolicy,
    RestartPolicy,
};
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, HostConfig, RestartPolicy as DockerRestart, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, RemoveContainerOptions,
    StopContainerOptions, UploadToContainerOptions,
};
use bollard::{API_DEFAULT_VERSION, Docker};
use futures_util::StreamExt;
use tracing::Instrument;
use uuid::Uuid;

use lc_worker::Metrics;

/// Seconds bollard waits for one request.
const REQUEST_TIMEOUT_SECS: u64 = 120;
/// The socket of a local engine when DOCKER_HOST is not set.
pub const DEFAULT_LOCAL_ENGINE: &str = "unix:///var/run/docker.sock";

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("cannot reach the Docker engine at {url}")]
    Connect {
        url: String,
        #[source]
        source: BollardError,
    },
    #[error("TLS with the engine at {url} failed: {reason}")]
    Tls { url: String, reason: String },
    #[error("engine URL {0:?} is neither unix:// nor tcp://")]
    Scheme(String),
    #[error("engine {url} is tcp:// but no TLS certificates are recorded for it")]
    NoCerts { url: String },
    #[error("docker {op} failed on {url}")]
    Api {
        op: &'static str,
        url: String,
        #[source]
        source: BollardError,
    },
    #[error("image {image} is not on the engine at {url} and could not be pulled: {reason}")]
    ImageMissing {
        image: String,
        url: String,
        reason: String,
    },
    #[error(
        "container {name} is not running after start (status {status}, exit code {exit_code}){error}"
    )]
    NotRunning {
        name: String,
        status: String,
        exit_code: i64,
        error: String,
    },
    #[error("container name {name} is taken on {url} by a container that is not this deployment's")]
    NameTaken { name: String, url: String },
}

impl DockerError {
    /// Whether the same call will fail again.
    pub fn is_permanent(&self) -> bool {
        match self {
            DockerError::Scheme(_)
            | DockerError::Tls { .. }
            | DockerError::NoCerts { .. }
            | DockerError::ImageMissing { .. }
            | DockerError::NotRunning { .. }
            | DockerError::NameTaken { .. } => true,
            // 400: the engine refused the settings (bad command, bad network mode...).
            DockerError::Api { source, .. } => status_code(source) == Some(400),
            DockerError::Connect { .. } => false,
        }
    }
}

fn status_code(err: &BollardError) -> Option<u16> {
    match err {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Says why a TLS handshake failed when the cause is the certificates (no retry helps:
/// the engine's certificate is not signed by the deployment's CA, has expired, or the
/// engine refused our client certificate); `None` for other failures.
fn tls_failure(err: &BollardError) -> Option<String> {
    let mut chain = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = current {
        chain.push(cause.to_string());
        current = cause.source();
    }
    let text = chain.join(": ");
    let lower = text.to_ascii_lowercase();
    let reason = if lower.contains("expired") || lower.contains("notvalidyet") {
        "the engine's certificate has expired or is not valid yet"
    } else if lower.contains("unknownissuer")
        || lower.contains("unknown issuer")
        || lower.contains("certificate verify failed")
        || lower.contains("badsignature")
    {
        "the engine's certificate is not signed by the deployment's CA"
    } else if lower.contains("notvalidforname") || lower.contains("not valid for name") {
        "the engine's certificate is not valid for its address"
    } else if lower.contains("alert")
        && (lower.contains("certificate") || lower.contains("unknownca"))
    {
        "the engine refused the client certificate (it does not trust the deployment's CA)"
    } else if lower.contains("invalid peer certificate") {
        "the engine's certificate was refused"
    } else {
        return None;
    };
    Some(format!("{reason} ({text})"))
}

/// A LaunchControl container found on an engine.
#[derive(Clone, Debug)]
pub struct Found {
    pub id: String,
    pub name: String,
    pub generation: Option<i64>,
    /// created, running, exited, ...
    pub state: String,
    /// The image as the container was created with it (or its id, when the name has
    /// since moved to another image).
    pub image: Option<String>,
    /// `Exited (137) 3 seconds ago`, ...
    pub status: Option<String>,
}

/// What a container is to run.
#[derive(Clone, Debug)]
pub struct ContainerPlan {
    pub name: String,
    pub image: String,
    pub command: Option<Vec<String>>,
    pub env: Vec<String>,
    pub labels: HashMap<String, String>,
    pub network_mode: &'static str,
    pub restart_policy: RestartPolicy,
    pub files: Vec<FileSpec>,
}

/// The span of one Engine API call. `op` is a fixed name and the URL names the
/// engine's host or socket: neither can hold a secret.
fn call_span(op: &'static str, url: &str) -> tracing::Span {
    tracing::info_span!(
        "docker",
        otel.name = %format_args!("docker {op}"),
        otel.kind = "client",
        docker.operation = op,
        docker.engine = %url,
        otel.status_code = tracing::field::Empty,
    )
}

/// Marks a call's span failed (the error itself goes to the job's history, redacted).
fn mark_failed(span: &tracing::Span, failed: bool) {
    if failed {
        span.record("otel.status_code", "error");
    }
}

/// A connection to one engine.
pub struct Engine<'a> {
    docker: Docker,
    url: String,
    metrics: &'a Metrics,
}

impl<'a> Engine<'a> {
    /// Connects and negotiates the API version (which also checks the engine answers).
    pub async fn connect(
        endpoint: &Endpoint,
        metrics: &'a Metrics,
    ) -> Result<Engine<'a>, DockerError> {
        let url = endpoint.url.clone();
        let connect_error = |source| DockerError::Connect {
            url: url.clone(),
            source,
        };
        let docker = if url.starts_with("unix://") {
            Docker::connect_with_socket(&url, REQUEST_TIMEOUT_SECS, API_DEFAULT_VERSION)
                .map_err(connect_error)?
        } else if url.starts_with("tcp://") {
            let (Some(ca), Some(cert), Some(key)) = (
                &endpoint.ca_cert_path,
                &endpoint.client_cert_path,
                &endpoint.client_key_path,
            ) else {
                return Err(DockerError::NoCerts { url });
            };
            Docker::connect_with_ssl(
                &url,
                Path::new(key),
                Path::new(cert),
                Path::new(ca),
                REQUEST_TIMEOUT_SECS,
                API_DEFAULT_VERSION,
            )
            .map_err(connect_error)?
        } else {
            return Err(DockerError::Scheme(url));
        };
        let started = Instant::now();
        let span = call_span("version", &url);
        let negotiated = docker.negotiate_version().instrument(span.clone()).await;
        mark_failed(&span, negotiated.is_err());
        metrics.external_call("docker", "version", started.elapsed(), negotiated.is_err());
        let docker = negotiated.map_err(|source| match tls_failure(&source) {
            Some(reason) => DockerError::Tls {
                url: url.clone(),
                reason,
            },
            None => connect_error(source),
        })?;
        Ok(Engine {
            docker,
            url,
            metrics,
        })
    }

    async fn call<T, F>(&self, op: &'static str, future: F) -> Result<T, DockerError>
    where
        F: Future<Output = Result<T, BollardError>>,
    {
        let started = Instant::now();
        let span = call_span(op, &self.url);
        let result = future.instrument(span.clone()).await;
        mark_failed(&span, result.is_err());
        self.metrics
            .external_call("docker", op, started.elapsed(), result.is_err());
        result.map_err(|source| DockerError::Api {
            op,
            url: self.url.clone(),
            source,
        })
    }

    /// Makes sure the image is on the engine, pulling it when allowed. Returns whether
    /// it was pulled.
    pub async fn ensure_image(
        &self,
        image: &str,
        pull: PullPolicy,
        credentials: Option<bollard::auth::DockerCredentials>,
        progress: &mut Vec<String>,
    ) -> Result<bool, DockerError> {
        match self
            .call("inspect_image", self.docker.inspect_image(image))
            .await
        {
            Ok(_) => return Ok(false),
            Err(DockerError::Api { source, .. }) if status_code(&source) == Some(404) => {}
            Err(err) => return Err(err),
        }
        let missing = |reason: String| DockerError::ImageMissing {
            image: image.to_owned(),
            url: self.url.clone(),
            reason,
        };
        if pull == PullPolicy::Never {
            return Err(missing("the spec says pull: never".into()));
        }
        let options = CreateImageOptions {
            from_image: Some(image.to_owned()),
            ..Default::default()
        };
        let started = Instant::now();
        let mut stream = self.docker.create_image(Some(options), None, credentials);
        let mut failure = None;
        // The engine streams a line per layer and per progress tick: keep the statuses
        // that say something (one per layer and step), not the ticks.
        let mut seen = std::collections::HashSet::new();
        let span = call_span("pull", &self.url);
        async {
            while let Some(item) = stream.next().await {
                match item {
                    Ok(info) => {
                        if let Some(detail) = info.error_detail.and_then(|detail| detail.message) {
                            failure = Some(detail);
                        }
                        if let Some(status) = info.status
                            && !matches!(status.as_str(), "Downloading" | "Extracting" | "Waiting")
                        {
                            let line = match info.id {
                                Some(id) => format!("{id}: {status}"),
                                None => status,
                            };
                            if progress.len() < 20 && seen.insert(line.clone()) {
                                progress.push(line);
                            }
                        }
                    }
                    Err(err) => {
                        failure = Some(err.to_string());
                        break;
                    }
                }
            }
        }
        .instrument(span.clone())
        .await;
        mark_failed(&span, failure.is_some());
        self.metrics
            .external_call("docker", "pull", started.elapsed(), failure.is_some());
        if let Some(reason) = failure {
            return Err(missing(reason));
        }
        match self
            .call("inspect_image", self.docker.inspect_image(image))
            .await
        {
            Ok(_) => Ok(true),
            Err(err) => Err(missing(err.to_string())),
        }
    }

    /// The containers of a deployment on this engine (of one machine, if named),
    /// running or not.
    pub async fn containers(
        &self,
        deployment_id: Uuid,
        machine: Option<&str>,
    ) -> Result<Vec<Found>, DockerError> {
        let mut labels = vec![format!("{LABEL_DEPLOYMENT}={deployment_id}")];
        if let Some(machine) = machine {
            labels.push(format!("{LABEL_MACHINE}={machine}"));
        }
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_owned(), labels)])),
            ..Default::default()
        };
        let summaries = self
            .call(
                "list_containers",
                self.docker.list_containers(Some(options)),
            )
            .await?;
        Ok(summaries
            .into_iter()
            .filter_map(|summary| {
                let id = summary.id?;
                let labels = summary.labels.unwrap_or_default();
                let name = summary
                    .names
                    .and_then(|names| names.into_iter().next())
                    .map(|name| name.trim_start_matches('/').to_owned())
                    .unwrap_or_default();
                Some(Found {
                    id,
                    name,
                    generation: labels
                        .get(LABEL_GENERATION)
                        .and_then(|value| value.parse().ok()),
                    state: summary
                        .state
                        .map(|state| state.to_string())
                        .unwrap_or_default(),
                    image: summary.image,
                    status: summary.status,
                })
            })
            .collect())
    }

    /// The `lc.deployment` label of the container with this name, if one exists.
    pub async fn owner_of(&self, name: &str) -> Result<Option<Option<String>>, DockerError> {
        match self
            .call(
                "inspect_container",
                self.docker.inspect_container(name, None),
            )
            .await
        {
            Ok(inspect) => Ok(Some(
                inspect
                    .config
                    .and_then(|config| config.labels)
                    .and_then(|labels| labels.get(LABEL_DEPLOYMENT).cloned()),
            )),
            Err(DockerError::Api { source, .. }) if status_code(&source) == Some(404) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Creates the container (not started) and copies its files in. A 409 means the
    /// name exists: [`DockerError::NameTaken`] when it is not ours, else an error to
    /// retry (the retry adopts it).
    pub async fn create(
        &self,
        plan: &ContainerPlan,
        deployment_id: Uuid,
    ) -> Result<String, DockerError> {
        let body = ContainerCreateBody {
            image: Some(plan.image.clone()),
            cmd: plan.command.clone(),
            env: Some(plan.env.clone()),
            labels: Some(plan.labels.clone()),
            host_config: Some(HostConfig {
                network_mode: Some(plan.network_mode.to_owned()),
                // A real PID 1 (the engine's docker-init) forwards SIGTERM, so services
                // that ignore it as PID 1 (busybox httpd) stop at once, not after the grace.
                init: Some(true),
                restart_policy: Some(DockerRestart {
                    name: Some(match plan.restart_policy {
                        RestartPolicy::No => RestartPolicyNameEnum::NO,
                        RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
                        RestartPolicy::UnlessStopped => RestartPolicyNameEnum::UNLESS_STOPPED,
                        RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
                    }),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(plan.name.clone()),
            ..Default::default()
        };
        let created = match self
            .call(
                "create_container",
                self.docker.create_container(Some(options), body),
            )
            .await
        {
            Ok(created) => created,
            Err(DockerError::Api { source, .. }) if status_code(&source) == Some(409) => {
                let ours = deployment_id.to_string();
                return match self.owner_of(&plan.name).await? {
                    Some(Some(owner)) if owner == ours => Err(DockerError::Api {
                        op: "create_container",
                        url: self.url.clone(),
                        source,
                    }),
                    _ => Err(DockerError::NameTaken {
                        name: plan.name.clone(),
                        url: self.url.clone(),
                    }),
                };
            }
            Err(err) => return Err(err),
        };
        self.upload_files(&created.id, &plan.files).await?;
        Ok(created.id)
    }

    /// Copies files into a (created) container; writing them again is harmless.
    pub async fn upload_files(&self, id: &str, files: &[FileSpec]) -> Result<(), DockerError> {
        if files.is_empty() {
            return Ok(());
        }
        let archive = tar_archive(files);
        let options = UploadToContainerOptions {
            path: "/".to_owned(),
            ..Default::default()
        };
        self.call(
            "upload_to_container",
            self.docker
                .upload_to_container(id, Some(options), bollard::body_full(archive.into())),
        )
        .await
    }

    /// Starts a container; one that already runs is fine.
    pub async fn start(&self, id: &str) -> Result<(), DockerError> {
        match self
            .call("start_container", self.docker.start_container(id, None))
            .await
        {
            Err(DockerError::Api { source, .. }) if status_code(&source) == Some(304) => Ok(()),
            other => other,
        }
    }

    /// Checks that a container runs; when it does not, says why (exit code, error).
    pub async fn check_running(&self, id: &str, name: &str) -> Result<(), DockerError> {
        let inspect = self
            .call("inspect_container", self.docker.inspect_container(id, None))
            .await?;
        let state = inspect.state.unwrap_or_default();
        if state.running == Some(true) {
            return Ok(());
        }
        Err(DockerError::NotRunning {
            name: name.to_owned(),
            status: state
                .status
                .map(|status| status.to_string())
                .unwrap_or_else(|| "unknown".into()),
            exit_code: state.exit_code.unwrap_or(-1),
            error: state
                .error
                .filter(|error| !error.is_empty())
                .map(|error| format!(": {error}"))
                .unwrap_or_default(),
        })
    }

    /// Stops (SIGTERM, then SIGKILL after `grace`) and removes a container; one that
    /// is already gone counts as removed.
    pub async fn stop_and_remove(&self, id: &str, grace: Duration) -> Result<(), DockerError> {
        let options = StopContainerOptions {
            t: Some(i32::try_from(grace.as_secs()).unwrap_or(i32::MAX)),
            ..Default::default()
        };
        match self
            .call(
                "stop_container",
                self.docker.stop_container(id, Some(options)),
            )
            .await
        {
            Ok(()) => {}
            Err(DockerError::Api { source, .. })
                if matches!(status_code(&source), Some(304 | 404)) => {}
            Err(err) => return Err(err),
        }
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self
            .call(
                "remove_container",
                self.docker.remove_container(id, Some(options)),
            )
            .await
        {
            Err(DockerError::Api { source, .. }) if status_code(&source) == Some(404) => Ok(()),
            other => other,
        }
    }
}

/// A tar archive (ustar) of the files, paths relative to `/`. Parent directories are
/// created by the engine when it unpacks.
pub fn tar_archive(files: &[FileSpec]) -> Vec<u8> {
    let mut out = Vec::new();
    for file in files {
        let name = file.path.trim_start_matches('/');
        let content = file.content.as_bytes();
        let mut header = [0u8; 512];
        put(&mut header[0..100], name.as_bytes());
        put(
            &mut header[100..108],
            format!("{:07o}\0", file.mode_bits()).as_bytes(),
        );
        put(&mut header[108..116], b"0000000\0");
        put(&mut header[116..124], b"0000000\0");
        put(
            &mut header[124..136],
            format!("{:011o}\0", content.len()).as_bytes(),
        );
        let mtime = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|since| since.as_secs())
            .unwrap_or(0);
        put(&mut header[136..148], format!("{mtime:011o}\0").as_bytes());
        header[156] = b'0';
        put(&mut header[257..263], b"ustar\0");
        put(&mut header[263..265], b"00");
        // The checksum is computed with its own field as spaces.
        header[148..156].copy_from_slice(b"        ");
        let sum: u32 = header.iter().map(|byte| u32::from(*byte)).sum();
        put(&mut header[148..156], format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(content);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn put(field: &mut [u8], bytes: &[u8]) {
    let len = bytes.len().min(field.len());
    field[..len].copy_from_slice(&bytes[..len]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_layout() {
        let archive = tar_archive(&[FileSpec {
            path: "/www/index.html".into(),
            content: "hello\n".into(),
            mode: Some("0600".into()),
        }]);
        assert_eq!(archive.len(), 512 + 512 + 1024);
        assert_eq!(&archive[0..14], b"www/index.html");
        assert_eq!(&archive[100..107], b"0000600");
        assert_eq!(&archive[257..262], b"ustar");
        assert_eq!(&archive[512..518], b"hello\n");
        let sum: u32 = archive[..512]
            .iter()
            .enumerate()
            .map(|(index, byte)| {
                if (148..156).contains(&index) {
                    32
                } else {
                    u32::from(*byte)
                }
            })
            .sum();
        let recorded =
            u32::from_str_radix(std::str::from_utf8(&archive[148..154]).unwrap_or("0"), 8)
                .unwrap_or(0);
        assert_eq!(sum, recorded);
    }
}
