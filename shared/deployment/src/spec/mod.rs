//! The deployment spec: what `lc deploy create spec.yaml` reads (JSON or YAML), what the
//! `deployments` row stores, and what the worker's handlers act on.
//!
//! ```yaml
//! name: demo                      # ^[a-z][a-z0-9-]{0,40}$
//! owner: alice
//! nodes: 3                        # or a list of per-node overrides of payload fields
//! provider:
//!   kind: local                   # or: docker-machine (see below)
//! payload:
//!   image: lc-busybox:latest
//!   command: ["httpd", "-f", "-p", "127.0.0.1:8080"]
//!   env: {GREETING: hello}
//!   ports: [8080]
//!   files: [{path: /www/index.html, content: "hello\n"}]
//!   network_mode: host            # host or none
//!   restart_policy: unless-stopped
//!   labels: {team: platform}
//! timeouts: {machine: 10m, stop: 10s}
//! ```
//!
//! A docker-machine provider names its driver, the driver's flags, and the names (never
//! the values) of the environment variables that hold its credentials:
//!
//! ```yaml
//! provider:
//!   kind: docker-machine
//!   driver: digitalocean
//!   driver_flags: {digitalocean-region: fra1, digitalocean-size: s-1vcpu-1gb}
//!   credentials_env: [DIGITALOCEAN_ACCESS_TOKEN]
//!   max_parallel_calls: 5         # optional, see Provider::concurrency_key
//! ```
//!
//! The docker-machine creates and removals of one provider account (a driver and the
//! names of its credential variables) share a concurrency key, so that at most so many
//! run at once across every worker and every deployment of that account: a 200-node
//! create fired at once is a storm of 429s from the provider's API.
//!
//! Health checks and repair (see [`health`]): `health_interval: 60s`, `repair:
//! restart` (or `reprovision`, `report`), `max_unhealthy: 1` (or `"34%"`).
//!
//! A deployment may name a webhook that receives each of its state changes (see
//! [`webhook`]):
//!
//! ```yaml
//! webhook: {url: "https://hooks.example.com/lc", secret_env: LC_WEBHOOK_SECRET}
//! ```
//!
//! Everything that ends up as a command-line argument or a container setting is
//! checked here, before anything is written.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use super::MAX_NODES;

/// Why a spec was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("cannot read spec file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("invalid spec: {0}")]
    Parse(String),
    #[error("invalid spec: {field}: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Largest spec file accepted.
pub const MAX_SPEC_BYTES: usize = 128 * 1024;
/// Largest total size of the files a payload copies into its container.
pub const MAX_FILES_BYTES: usize = 64 * 1024;
/// Attempts of `provision_machine` and `deploy` jobs when the spec does not say.
pub const DEFAULT_SPEC_ATTEMPTS: i64 = 5;

/// A whole deployment spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    pub name: String,
    pub owner: String,
    pub nodes: Nodes,
    pub provider: Provider,
    pub payload: Payload,
    #[serde(default, skip_serializing_if = "Timeouts::is_empty")]
    pub timeouts: Timeouts,
    /// Attempts of each `provision_machine` and `deploy` job.
    #[serde(default = "default_attempts")]
    pub max_attempts: i64,
    /// Login for pulling the payload image from a private registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_credentials_env: Option<RegistryCredentialsEnv>,
    /// How long the deployment lives: it is torn down this long after it is created
    /// (`24h`, `90m`, `1h 30m`). Not together with `expires_at`. Kept as written;
    /// [`Spec::expiry`] reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    /// When the deployment is torn down, in RFC 3339 (`2030-01-31T18:00:00Z`). Not
    /// together with `ttl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Where each of the deployment's state changes is POSTed, signed (see [`webhook`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
    /// How often the machines and containers are checked (`60s` when not given); see
    /// [`health`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_interval: Option<String>,
    /// What a check does about what it finds: `restart` (the default), `reprovision`
    /// or `report`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<String>,
    /// How many unhealthy nodes are repaired at once (`1`, or `"34%"` of the nodes);
    /// past it the deployment is `degraded` and nothing is touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unhealthy: Option<MaxUnhealthyValue>,
}

/// When a deployment ends, as its spec says: a time to live from its creation, or a
/// moment. The deployment row holds the moment it resolved to (`expires_at`), and a
/// delayed teardown job waits for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    After(Duration),
    At(DateTime<Utc>),
}

/// Longest time to live (and extension) accepted: ten years.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

impl Expiry {
    /// The moment of expiry for a deployment created at `now` (database time);
    /// refused when it is not after `now`.
    pub fn deadline(self, now: DateTime<Utc>) -> Result<DateTime<Utc>, SpecError> {
        match self {
            Expiry::After(ttl) => Ok(now + chrono_duration(ttl)),
            Expiry::At(at) if at > now => Ok(at),
            Expiry::At(at) => Err(invalid(
                "expires_at",
                format!(
                    "{} is in the past (it is {} now)",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            )),
        }
    }
}

/// A duration of at most [`MAX_TTL`] as chrono's.
pub fn chrono_duration(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration.min(MAX_TTL)).unwrap_or(chrono::Duration::MAX)
}

fn default_attempts() -> i64 {
    DEFAULT_SPEC_ATTEMPTS
}

/// How many nodes, or one entry of overrides per node.
#[derive(Clone, Debug, PartialEq)]
pub enum Nodes {
    Count(i64),
    List(Vec<NodeOverride>),
}

impl Serialize for Nodes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Nodes::Count(count) => serializer.serialize_i64(*count),
            Nodes::List(list) => list.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for Nodes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NodesVisitor;
        impl<'de> Visitor<'de> for NodesVisitor {
            type Value = Nodes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a node count or a list of per-node overrides")
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Nodes, E> {
                i64::try_from(value)
                    .map(Nodes::Count)
                    .map_err(|_| E::custom("node count is too large"))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Nodes, E> {
                Ok(Nodes::Count(value))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Nodes, A::Error> {
                Vec::<NodeOverride>::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(Nodes::List)
            }
        }
        deserializer.deserialize_any(NodesVisitor)
    }
}

/// Where the machines come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Provider {
    /// Every machine is the worker's local Docker engine; no docker-machine involved.
    Local {},
    /// Machines made by `docker-machine create --driver DRIVER`.
    DockerMachine {
        driver: String,
        #[serde(default)]
        driver_flags: BTreeMap<String, FlagValue>,
        /// Names of the worker's environment variables that hold the driver's
        /// credentials; their values are passed to docker-machine as environment only.
        #[serde(default)]
        credentials_env: Vec<String>,
        /// The CA that existing engines (the `none` driver) trust, as the names of two
        /// environment variables holding its certificate and key (PEM text, or the path
        /// of a PEM file). Without it, each deployment gets a CA of its own.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca_env: Option<CaEnv>,
        /// The limit of the provider account's concurrency key (see
        /// [`Provider::concurrency_key`]) when it has none yet: at most this many
        /// docker-machine creates and removals of the account run at once, across every
        /// worker. Without it, the driver's default ([`default_parallel_calls`]). A key's
        /// limit, once set, is changed by an operator (`lc queues limit KEY N`), not by
        /// a later spec.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_parallel_calls: Option<i64>,
    },
}

/// The most docker-machine calls of one provider account that may run at once when
/// neither the spec nor an operator says: Terraform's default `-parallelism` (10),
/// lower where the provider's API is known to be tight. DigitalOcean allows 250
/// requests a minute per token and one create polls the droplet for its address many
/// times; Linode limits instance creation to 20 per 15 s.
pub fn default_parallel_calls(driver: &str) -> i64 {
    match driver {
        "digitalocean" => 5,
        "linode" => 4,
        _ => 10,
    }
}

/// Largest `provider.max_parallel_calls`.
pub const MAX_PARALLEL_CALLS: i64 = 1000;

/// Names of the environment variables that hold an operator's CA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaEnv {
    pub cert: String,
    pub key: String,
}

/// Names of the environment variables that hold a private registry's login; the
/// workers read the values when they pull, so they never reach the database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryCredentialsEnv {
    pub username: String,
    pub password: String,
}

impl Provider {
    pub fn kind(&self) -> &'static str {
        match self {
            Provider::Local {} => "local",
            Provider::DockerMachine { .. } => "docker-machine",
        }
    }

    pub fn credentials_env(&self) -> &[String] {
        match self {
            Provider::Local {} => &[],
            Provider::DockerMachine {
                credentials_env, ..
            } => credentials_env,
        }
    }

    /// The concurrency key of the provider account, which every docker-machine create
    /// and removal of it carries: `machine:<driver>`, then `:` and the names of its
    /// credential variables (sorted, joined by `+`) when it has any, e.g.
    /// `machine:digitalocean:DIGITALOCEAN_ACCESS_TOKEN`. Workers read a name's value
    /// from their environment, so one name is one account. `None` for the `local`
    /// provider, which calls no provider.
    pub fn concurrency_key(&self) -> Option<String> {
        let Provider::DockerMachine {
            driver,
            credentials_env,
            ..
        } = self
        else {
            return None;
        };
        if credentials_env.is_empty() {
            return Some(format!("machine:{driver}"));
        }
        let mut names: Vec<&str> = credentials_env.iter().map(String::as_str).collect();
        names.sort_unstable();
        names.dedup();
        Some(format!("machine:{driver}:{}", names.join("+")))
    }

    /// The limit the account's key gets when it has none: the spec's
    /// `max_parallel_calls`, else the driver's default. `None` for `local`.
    pub fn parallel_calls(&self) -> Option<i64> {
        match self {
            Provider::Local {} => None,
            Provider::DockerMachine {
                driver,
                max_parallel_calls,
                ..
            } => Some(max_parallel_calls.unwrap_or_else(|| default_parallel_calls(driver))),
        }
    }
}

/// The value of one driver flag: `--name=value`, or one `--name=value` per item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FlagValue {
    Bool(bool),
    Int(i64),
    Text(String),
    List(Vec<FlagScalar>),
}

/// One item of a list-valued driver flag.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FlagScalar {
    Bool(bool),
    Int(i64),
    Text(String),
}

impl FlagScalar {
    fn render(&self) -> String {
        match self {
            FlagScalar::Bool(value) => value.to_string(),
            FlagScalar::Int(value) => value.to_string(),
            FlagScalar::Text(value) => value.clone(),
        }
    }
}

impl FlagValue {
    fn values(&self) -> Vec<String> {
        match self {
            FlagValue::Bool(value) => vec![value.to_string()],
            FlagValue::Int(value) => vec![value.to_string()],
            FlagValue::Text(value) => vec![value.clone()],
            FlagValue::List(items) => items.iter().map(FlagScalar::render).collect(),
        }
    }
}

/// What runs on every machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    pub image: String,
    /// Replaces the image's command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Ports the service listens on (informational with `host` networking).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Files copied into the container before it starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileSpec>,
    #[serde(default)]
    pub network_mode: NetworkMode,
    #[serde(default)]
    pub restart_policy: RestartPolicy,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub pull: PullPolicy,
}

/// Per-node overrides: each field given replaces the payload's, except `env` and
/// `labels`, which are merged key by key (the node's value wins).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<u16>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<Vec<FileSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<NetworkMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A file to copy into the container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Absolute path inside the container, at most 100 bytes.
    pub path: String,
    pub content: String,
    /// Octal permissions, as a string ("0644" when not given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

impl FileSpec {
    /// The permission bits (validated by [`Spec::validate`]).
    pub fn mode_bits(&self) -> u32 {
        self.mode
            .as_deref()
            .and_then(|mode| u32::from_str_radix(mode, 8).ok())
            .unwrap_or(0o644)
    }
}

/// Container networking: the Docker engines here run without a bridge, so only the
/// host's network or none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    Host,
    #[default]
    None,
}

impl NetworkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkMode::Host => "host",
            NetworkMode::None => "none",
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    No,
    Always,
    UnlessStopped,
    OnFailure,
}

/// Whether a missing image is pulled (from a registry the machine can reach).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PullPolicy {
    #[default]
    IfMissing,
    Never,
}

/// Time limits; the worker's settings apply where these are not given.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Each docker-machine call (create, rm, inspect, ...).
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub machine: Option<Duration>,
    /// How long a container gets to stop before it is killed.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub stop: Option<Duration>,
}

impl Timeouts {
    fn is_empty(&self) -> bool {
        self.machine.is_none() && self.stop.is_none()
    }
}

/// Durations as `"500ms"`, `"10s"`, `"5m"` (a bare number is milliseconds).
mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => serializer.serialize_str(&format!("{}ms", duration.as_millis())),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Millis(u64),
            Text(String),
        }
        match Option::<Raw>::deserialize(deserializer)? {
            None => Ok(None),
            Some(Raw::Millis(ms)) => Ok(Some(Duration::from_millis(ms))),
            Some(Raw::Text(text)) => lc_shared::config::parse_duration(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

impl Spec {
    /// Reads a spec file: JSON when the name ends in `.json`, YAML otherwise.
    pub fn from_file(path: &Path) -> Result<Spec, SpecError> {
        let read_error = |reason: String| SpecError::Read {
            path: path.display().to_string(),
            reason,
        };
        let metadata = std::fs::metadata(path).map_err(|err| read_error(err.to_string()))?;
        if metadata.len() > MAX_SPEC_BYTES as u64 {
            return Err(read_error(format!("larger than {MAX_SPEC_BYTES} bytes")));
        }
        let text = std::fs::read_to_string(path).map_err(|err| read_error(err.to_string()))?;
        let json = path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
        Spec::parse(&text, json)
    }

    /// Parses and validates a spec.
    pub fn parse(text: &str, json: bool) -> Result<Spec, SpecError> {
        let spec: Spec = if json {
            serde_json::from_str(text).map_err(|err| SpecError::Parse(err.to_string()))?
        } else {
            yaml_serde::from_str(text).map_err(|err| SpecError::Parse(err.to_string()))?
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Reads a spec back from its `deployments.spec` column.
    pub fn from_json(value: &serde_json::Value) -> Result<Spec, SpecError> {
        let spec: Spec = serde_json::from_value(value.clone())
            .map_err(|err| SpecError::Parse(err.to_string()))?;
        spec.validate()?;
        Ok(spec)
    }

    pub fn to_json(&self) -> serde_json::Value {
        // Serializing plain data (strings, numbers, maps with string keys) cannot fail.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    pub fn node_count(&self) -> i64 {
        match &self.nodes {
            Nodes::Count(count) => *count,
            Nodes::List(list) => list.len() as i64,
        }
    }

    /// The payload of node `node` (1-based): the spec's payload with that node's
    /// overrides applied.
    pub fn node_payload(&self, node: i64) -> Payload {
        let mut payload = self.payload.clone();
        let Nodes::List(list) = &self.nodes else {
            return payload;
        };
        let Some(node) = usize::try_from(node - 1)
            .ok()
            .and_then(|index| list.get(index))
        else {
            return payload;
        };
        if let Some(image) = &node.image {
            payload.image = image.clone();
        }
        if let Some(command) = &node.command {
            payload.command = Some(command.clone());
        }
        payload.env.extend(node.env.clone());
        if let Some(ports) = &node.ports {
            payload.ports = ports.clone();
        }
        if let Some(files) = &node.files {
            payload.files = files.clone();
        }
        if let Some(mode) = node.network_mode {
            payload.network_mode = mode;
        }
        if let Some(policy) = node.restart_policy {
            payload.restart_policy = policy;
        }
        payload.labels.extend(node.labels.clone());
        payload
    }

    /// When the deployment ends, if its spec says so. Refuses an unparsable `ttl` or
    /// `expires_at`, a `ttl` of zero or over [`MAX_TTL`], and both at once; whether
    /// `expires_at` is still ahead is [`Expiry::deadline`]'s question (a stored spec
    /// stays valid after its moment passed).
    pub fn expiry(&self) -> Result<Option<Expiry>, SpecError> {
        match (&self.ttl, &self.expires_at) {
            (None, None) => Ok(None),
            (Some(_), Some(_)) => Err(invalid(
                "ttl",
                "ttl and expires_at are both set: give one of them",
            )),
            (Some(ttl), None) => {
                let parsed = lc_shared::config::parse_duration(ttl)
                    .map_err(|reason| invalid("ttl", reason))?;
                if parsed.is_zero() {
                    return Err(invalid("ttl", "must be more than 0s"));
                }
                if parsed > MAX_TTL {
                    return Err(invalid("ttl", "must be at most 3650d (ten years)"));
                }
                Ok(Some(Expiry::After(parsed)))
            }
            (None, Some(at)) => DateTime::parse_from_rfc3339(at.trim())
                .map(|at| Some(Expiry::At(at.with_timezone(&Utc))))
                .map_err(|err| {
                    invalid(
                        "expires_at",
                        format!("{at:?} is not an RFC 3339 time like 2030-01-31T18:00:00Z: {err}"),
                    )
                }),
        }
    }

    /// Sets the time to live (`lc deploy create --ttl`), replacing the spec's own;
    /// refused when the spec gives `expires_at`, or when `ttl` is not a valid one.
    pub fn set_ttl(&mut self, ttl: &str) -> Result<(), SpecError> {
        if self.expires_at.is_some() {
            return Err(invalid(
                "ttl",
                "--ttl given for a spec with expires_at: give one of them",
            ));
        }
        let before = self.ttl.replace(ttl.to_owned());
        if let Err(err) = self.expiry() {
            self.ttl = before;
            return Err(err);
        }
        Ok(())
    }

    /// The docker-machine flags of this spec's driver, as `--name=value` arguments.
    pub fn driver_args(&self) -> Vec<String> {
        match &self.provider {
            Provider::Local {} => Vec::new(),
            Provider::DockerMachine { driver_flags, .. } => driver_flags
                .iter()
                .flat_map(|(flag, value)| {
                    value
                        .values()
                        .into_iter()
                        .map(move |item| format!("--{flag}={item}"))
                })
                .collect(),
        }
    }
}

mod check;
pub mod health;
#[cfg(test)]
mod tests;
pub mod webhook;

pub use check::is_env_var_name;
pub use health::{HealthPolicy, MaxUnhealthy, MaxUnhealthyValue, RepairPolicy};
pub use webhook::WebhookSpec;
