//! Deployments through the library, as jobs are: create, update, tear down, look at and
//! list them, and acknowledge leftovers. Each change is one transaction in the store
//! (the deployment row and the jobs it implies together), and the hints of the jobs it
//! made are sent after the commit, here; callers (`lc deploy`, later the HTTP API) do
//! not reach into the store or dispatch themselves.
//!
//! ```no_run
//! # async fn example(producer: lc_producer::Producer) -> Result<(), lc_deployment::DeploymentError> {
//! use lc_deployment::{Deployments, Spec};
//! let deployments = Deployments::new(producer);
//! let spec = Spec::from_file(std::path::Path::new("examples/demo.yaml"))?;
//! let created = deployments.create(&spec, &Default::default()).await?;
//! # Ok(()) }
//! ```

use lc_producer::{Producer, ProducerError};
use lc_shared::job::{DEFAULT_QUEUE, InvalidJob, Priority, validate_queue_name};
use lc_shared::store::{JobFilter, JobRow, StoreError};
use uuid::Uuid;

use crate::{
    AckOutcome, ContainerRow, CreateOutcome, DeploymentEventRow, DeploymentRow, DeploymentStore,
    DeploymentSummary, MachineRow, Origin, Spec, SpecError, TeardownRequest, UpdateOutcome,
    redact_secrets,
};

/// Why a deployment request failed. Nothing was written when it is `Spec` or `Invalid`.
#[derive(Debug, thiserror::Error)]
pub enum DeploymentError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("invalid job: {0}")]
    Invalid(#[from] InvalidJob),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Producer(#[from] ProducerError),
}

pub type Result<T = ()> = std::result::Result<T, DeploymentError>;

/// Where a deployment's jobs go.
#[derive(Clone, Debug)]
pub struct DeploymentOptions {
    /// Queue of the deployment's jobs (its workers must serve it).
    pub queue: String,
    /// With `false`, only provision the machines; deploy later with an update.
    pub deploy: bool,
}

impl Default for DeploymentOptions {
    fn default() -> Self {
        DeploymentOptions {
            queue: DEFAULT_QUEUE.to_owned(),
            deploy: true,
        }
    }
}

impl DeploymentOptions {
    fn origin(&self) -> Result<Origin> {
        validate_queue_name(&self.queue)?;
        Ok(Origin::new(None, self.queue.clone(), Priority::Normal))
    }
}

/// A deployment with everything an operator looks at; secret-looking values in its
/// spec and its jobs' payloads are redacted.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeploymentView {
    pub deployment: DeploymentRow,
    pub machines: Vec<MachineRow>,
    pub containers: Vec<ContainerRow>,
    pub jobs: Vec<JobRow>,
    /// The latest events, newest last.
    pub events: Vec<DeploymentEventRow>,
}

/// A webhook's secret must be set where the deployment is made (and hold a usable
/// key): a spec that names an unset variable is refused before anything is written.
fn check_webhook_secret(spec: &Spec) -> Result {
    match &spec.webhook {
        Some(webhook) => Ok(webhook.check_secret_in_env()?),
        None => Ok(()),
    }
}

/// Deployments on top of a [`Producer`]: its database, its hints.
#[derive(Clone)]
pub struct Deployments {
    producer: Producer,
    store: DeploymentStore,
}

impl Deployments {
    pub fn new(producer: Producer) -> Deployments {
        let store = DeploymentStore::new(producer.store().clone());
        Deployments { producer, store }
    }

    /// The producer underneath (for jobs of other kinds, and the inspection API).
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// Records a new deployment and enqueues its provisioning (then, with `deploy`, its
    /// deploy). The spec must be valid ([`Spec::from_file`] and [`Spec::from_json`]
    /// check it); credentials are the names of variables, read by the workers. A
    /// webhook's secret variable must be set in this process too (and on the workers).
    pub async fn create(&self, spec: &Spec, options: &DeploymentOptions) -> Result<CreateOutcome> {
        spec.validate()?;
        check_webhook_secret(spec)?;
        let outcome = self
            .store
            .create_deployment(spec, options.deploy, &options.origin()?)
            .await?;
        if let CreateOutcome::Created { provision, .. } = &outcome {
            self.producer.notify(std::slice::from_ref(provision)).await;
        }
        Ok(outcome)
    }

    /// Stores a changed spec (same name, nodes and provider) as the next generation and
    /// enqueues its deploy, which replaces the containers one machine at a time.
    pub async fn update(&self, spec: &Spec, options: &DeploymentOptions) -> Result<UpdateOutcome> {
        spec.validate()?;
        check_webhook_secret(spec)?;
        let outcome = self
            .store
            .update_deployment(spec, &options.origin()?)
            .await?;
        if let UpdateOutcome::Updated { deploy, .. } = &outcome {
            self.producer.notify(std::slice::from_ref(deploy)).await;
        }
        Ok(outcome)
    }

    /// Asks for a deployment's teardown (by name or id): it becomes `tearing_down` at
    /// once, which stops provisioning and deploying, and a teardown job is enqueued
    /// unless one is under way.
    pub async fn teardown(
        &self,
        name_or_id: &str,
        reason: &str,
        options: &DeploymentOptions,
    ) -> Result<TeardownRequest> {
        let origin = options.origin()?;
        let Some(id) = self.id(name_or_id).await? else {
            return Ok(TeardownRequest::NotFound);
        };
        let request = self.store.request_teardown(id, reason, &origin).await?;
        if let TeardownRequest::Requested { job, .. } = &request {
            self.producer.notify(std::slice::from_ref(job)).await;
        }
        Ok(request)
    }

    /// Closes a `leftovers` deployment once an operator checked the provider.
    pub async fn acknowledge_leftovers(&self, name_or_id: &str, note: &str) -> Result<AckOutcome> {
        let Some(id) = self.id(name_or_id).await? else {
            return Ok(AckOutcome::NotFound);
        };
        let note = crate::truncate_text(note, 500);
        Ok(self.store.acknowledge_leftovers(id, &note).await?)
    }

    /// The id of a deployment given by id or name (the live one, else the newest).
    pub async fn id(&self, name_or_id: &str) -> Result<Option<Uuid>> {
        if let Ok(id) = name_or_id.parse() {
            return Ok(Some(id));
        }
        Ok(self.store.deployment_id(name_or_id).await?)
    }

    /// A deployment with its machines, containers, jobs and latest `events`.
    pub async fn get(&self, name_or_id: &str, events: i64) -> Result<Option<DeploymentView>> {
        let Some(id) = self.id(name_or_id).await? else {
            return Ok(None);
        };
        let store = &self.store;
        let Some(mut deployment) = store.deployment(id).await? else {
            return Ok(None);
        };
        redact_secrets(&mut deployment.spec);
        let mut jobs = self
            .producer
            .inspector()
            .jobs(&JobFilter {
                group_id: Some(id),
                limit: 200,
                ..Default::default()
            })
            .await?;
        for job in &mut jobs {
            redact_secrets(&mut job.payload);
        }
        Ok(Some(DeploymentView {
            deployment,
            machines: store.machines(id).await?,
            containers: store.containers(id).await?,
            jobs,
            events: store.deployment_events(id, events.clamp(1, 10_000)).await?,
        }))
    }

    /// Deployments, newest first (torn down ones only with `all`).
    pub async fn list(&self, all: bool, limit: i64) -> Result<Vec<DeploymentSummary>> {
        Ok(self.store.list_deployments(all, limit).await?)
    }
}
