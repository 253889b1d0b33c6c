//! Deployments through the library, as jobs are: create, update, tear down, look at and
//! list them, and acknowledge leftovers. Each change is one transaction in the store
//! (the deployment row and the jobs it implies together), and the hints of the jobs it
//! made are sent after the commit, here; callers (`lc deploy`, later the HTTP API) do
//! not reach into the store or dispatch themselves.
//!
//! ```no_run
//! # async fn example(producer: &lc_producer::Producer) -> Result<(), lc_producer::ProducerError> {
//! use lc_shared::deployment::Spec;
//! let spec = Spec::from_file(std::path::Path::new("examples/demo.yaml"))?;
//! let created = producer.create_deployment(&spec, &Default::default()).await?;
//! # Ok(()) }
//! ```

use lc_shared::deployment::redact_secrets;
use lc_shared::deployment::{
    AckOutcome, ContainerRow, CreateOutcome, DeploymentEventRow, DeploymentRow, DeploymentSummary,
    MachineRow, Origin, Spec, TeardownRequest, UpdateOutcome,
};
use lc_shared::job::{DEFAULT_QUEUE, Priority, validate_queue_name};
use lc_shared::store::{JobFilter, JobRow};
use uuid::Uuid;

use crate::{Producer, ProducerError, Result};

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

impl Producer {
    /// Records a new deployment and enqueues its provisioning (then, with `deploy`, its
    /// deploy). The spec must be valid ([`Spec::from_file`] and [`Spec::from_json`]
    /// check it); credentials are the names of variables, read by the workers.
    pub async fn create_deployment(
        &self,
        spec: &Spec,
        options: &DeploymentOptions,
    ) -> Result<CreateOutcome> {
        spec.validate()?;
        let outcome = self
            .store()
            .create_deployment(spec, options.deploy, &options.origin()?)
            .await?;
        if let CreateOutcome::Created { provision, .. } = &outcome {
            self.notify(std::slice::from_ref(provision)).await;
        }
        Ok(outcome)
    }

    /// Stores a changed spec (same name, nodes and provider) as the next generation and
    /// enqueues its deploy, which replaces the containers one machine at a time.
    pub async fn update_deployment(
        &self,
        spec: &Spec,
        options: &DeploymentOptions,
    ) -> Result<UpdateOutcome> {
        spec.validate()?;
        let outcome = self
            .store()
            .update_deployment(spec, &options.origin()?)
            .await?;
        if let UpdateOutcome::Updated { deploy, .. } = &outcome {
            self.notify(std::slice::from_ref(deploy)).await;
        }
        Ok(outcome)
    }

    /// Asks for a deployment's teardown (by name or id): it becomes `tearing_down` at
    /// once, which stops provisioning and deploying, and a teardown job is enqueued
    /// unless one is under way.
    pub async fn teardown_deployment(
        &self,
        name_or_id: &str,
        reason: &str,
        options: &DeploymentOptions,
    ) -> Result<TeardownRequest> {
        let origin = options.origin()?;
        let Some(id) = self.deployment_id(name_or_id).await? else {
            return Ok(TeardownRequest::NotFound);
        };
        let request = self.store().request_teardown(id, reason, &origin).await?;
        if let TeardownRequest::Requested { job, .. } = &request {
            self.notify(std::slice::from_ref(job)).await;
        }
        Ok(request)
    }

    /// Closes a `leftovers` deployment once an operator checked the provider.
    pub async fn acknowledge_leftovers(&self, name_or_id: &str, note: &str) -> Result<AckOutcome> {
        let Some(id) = self.deployment_id(name_or_id).await? else {
            return Ok(AckOutcome::NotFound);
        };
        let note = lc_shared::deployment::truncate_text(note, 500);
        Ok(self.store().acknowledge_leftovers(id, &note).await?)
    }

    /// The id of a deployment given by id or name (the live one, else the newest).
    pub async fn deployment_id(&self, name_or_id: &str) -> Result<Option<Uuid>> {
        if let Ok(id) = name_or_id.parse() {
            return Ok(Some(id));
        }
        Ok(self.store().deployment_id(name_or_id).await?)
    }

    /// A deployment with its machines, containers, jobs and latest `events`.
    pub async fn deployment(
        &self,
        name_or_id: &str,
        events: i64,
    ) -> Result<Option<DeploymentView>> {
        let Some(id) = self.deployment_id(name_or_id).await? else {
            return Ok(None);
        };
        let store = self.store();
        let Some(mut deployment) = store.deployment(id).await? else {
            return Ok(None);
        };
        redact_secrets(&mut deployment.spec);
        let mut jobs = store
            .list_jobs(&JobFilter {
                deployment_id: Some(id),
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
    pub async fn deployments(&self, all: bool, limit: i64) -> Result<Vec<DeploymentSummary>> {
        Ok(self.store().list_deployments(all, limit).await?)
    }
}

impl From<lc_shared::deployment::SpecError> for ProducerError {
    fn from(err: lc_shared::deployment::SpecError) -> Self {
        ProducerError::Spec(err)
    }
}
