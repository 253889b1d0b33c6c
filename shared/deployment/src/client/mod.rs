//! Deployments through the library, as jobs are: create, update, tear down, extend
//! their expiry, plan a create or an update (reading and writing nothing), acknowledge
//! leftovers (here), and read them (`read`: one with its machines, containers, jobs and
//! history, the list, waiting for a state, what needs an operator). Each change is one
//! transaction in the store (the deployment row and the jobs it implies together), and
//! the hints of the jobs it made are sent after the commit, here; callers (`lc deploy`,
//! later the HTTP API) do not reach into the store or dispatch themselves. A deployment
//! is named by name or id once, with [`Deployments::resolve`]; everything after takes
//! its id.
//!
//! ```no_run
//! # async fn example(producer: lc_producer::Producer) -> Result<(), lc_deployment::DeploymentError> {
//! use lc_deployment::{Deployments, Spec};
//! let deployments = Deployments::new(producer);
//! let spec = Spec::from_file(std::path::Path::new("examples/demo.yaml"))?;
//! let created = deployments.create(&spec, &Default::default()).await?;
//! let id = deployments.resolve("demo").await?;
//! let view = deployments.get(id, 20).await?;
//! # Ok(()) }
//! ```

mod read;

use std::time::Duration;

use lc_producer::{ErrorKind, InspectError, Inspector, Producer, ProducerError};
use lc_shared::job::{DEFAULT_QUEUE, InvalidJob, Priority, validate_queue_name};
use lc_shared::store::StoreError;
use uuid::Uuid;

use crate::{
    AckOutcome, CheckRequest, CreateOutcome, DeploymentStore, ExtendOutcome, MAX_TTL, Origin, Plan,
    Spec, SpecError, TeardownRequest, UpdateOutcome, redact_secrets,
};

pub use read::{Attention, DeploymentView, DeploymentWait, WaitOutcome};

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
    #[error(transparent)]
    Inspect(#[from] InspectError),
    /// No deployment has this name or id.
    #[error("no deployment {0}")]
    NotFound(String),
    /// An argument that is not a spec field was refused (nothing was written).
    #[error("{field}: {reason}")]
    Refused { field: String, reason: String },
}

impl DeploymentError {
    /// Which kind of failure this is: what an HTTP handler turns into a status.
    pub fn kind(&self) -> ErrorKind {
        match self {
            DeploymentError::Spec(_)
            | DeploymentError::Invalid(_)
            | DeploymentError::Refused { .. } => ErrorKind::Invalid,
            DeploymentError::Store(err) => ErrorKind::of_store(err),
            DeploymentError::Producer(err) => err.kind(),
            DeploymentError::Inspect(err) => err.kind(),
            DeploymentError::NotFound(_) => ErrorKind::NotFound,
        }
    }
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
    /// When set, only this owner's deployments exist for this client (see
    /// [`Deployments::for_owner`]).
    owner: Option<String>,
}

impl Deployments {
    pub fn new(producer: Producer) -> Deployments {
        let store = DeploymentStore::new(producer.store().clone());
        Deployments {
            producer,
            store,
            owner: None,
        }
    }

    /// A client that sees only `owner`'s deployments: [`Deployments::resolve`] (the one
    /// way from a name to an id) and [`Deployments::list`] find no other, and a spec
    /// with another owner is refused by create and update.
    pub fn for_owner(mut self, owner: impl Into<String>) -> Deployments {
        self.owner = Some(owner.into());
        self
    }

    /// Refuses a spec of an owner this client is not scoped to.
    fn check_owner(&self, spec: &Spec) -> Result {
        match &self.owner {
            Some(owner) if &spec.owner != owner => Err(DeploymentError::Refused {
                field: "owner".into(),
                reason: format!(
                    "this caller acts for owner {owner:?} and cannot act for {:?}",
                    spec.owner
                ),
            }),
            _ => Ok(()),
        }
    }

    /// The producer underneath (for jobs of other kinds).
    pub fn producer(&self) -> &Producer {
        &self.producer
    }

    /// The producer's read API over jobs, queues and workers, with secret-looking
    /// payload values redacted by this domain's rule ([`redact_secrets`]).
    pub fn inspector(&self) -> Inspector {
        self.producer.inspector().with_redaction(redact_secrets)
    }

    /// Records a new deployment and enqueues its provisioning (then, with `deploy`, its
    /// deploy). The spec must be valid ([`Spec::from_file`] and [`Spec::from_json`]
    /// check it); credentials are the names of variables, read by the workers. A
    /// webhook's secret variable must be set in this process too (and on the workers).
    ///
    /// A spec with a `ttl` (or `expires_at`) is torn down at its expiry by a delayed
    /// teardown job written with the deployment; an `expires_at` that has passed is
    /// refused before anything is written.
    ///
    /// In a trace this is the deployment's root span (`deployment.create`): its jobs, and
    /// the jobs they enqueue, run under it.
    #[tracing::instrument(name = "deployment.create", skip_all, fields(
        deployment.name = %spec.name,
        deployment.nodes = spec.node_count(),
        deployment.id = tracing::field::Empty,
    ))]
    pub async fn create(&self, spec: &Spec, options: &DeploymentOptions) -> Result<CreateOutcome> {
        spec.validate()?;
        self.check_owner(spec)?;
        check_webhook_secret(spec)?;
        if let Some(expiry) = spec.expiry()? {
            expiry.deadline(chrono::Utc::now())?;
        }
        let outcome = self
            .store
            .create_deployment(spec, options.deploy, &options.origin()?)
            .await?;
        if let CreateOutcome::Created { id, provision, .. } = &outcome {
            tracing::Span::current().record("deployment.id", tracing::field::display(id));
            self.producer.notify(std::slice::from_ref(provision)).await;
        }
        Ok(outcome)
    }

    /// What [`Deployments::create`] would do with `spec` and `options`, writing nothing:
    /// its machines, containers, docker-machine calls (credentials masked), concurrency
    /// keys, jobs and expiry. Invalid input is the same error as for the create; a
    /// taken name is a plan with `refused` set.
    pub async fn plan_create(&self, spec: &Spec, options: &DeploymentOptions) -> Result<Plan> {
        spec.validate()?;
        self.check_owner(spec)?;
        options.origin()?;
        let expires_at = match spec.expiry()? {
            Some(expiry) => Some(expiry.deadline(self.store.database_now().await?)?),
            None => None,
        };
        let refused = self
            .store
            .live_deployment(&spec.name)
            .await?
            .map(|(id, state)| {
                format!(
                    "deployment {:?} already exists ({id}, {state}); tear it down first, or change its payload with `lc deploy update`",
                    spec.name
                )
            });
        Ok(Plan::create(
            spec,
            options.deploy,
            &options.queue,
            expires_at,
            refused,
        ))
    }

    /// What [`Deployments::update`] would do with `spec`, writing nothing: the
    /// containers it replaces on which machines, the new generation, the spec fields
    /// it changes, or why it would be refused (`refused`, with the same checks).
    pub async fn plan_update(&self, spec: &Spec, options: &DeploymentOptions) -> Result<Plan> {
        spec.validate()?;
        self.check_owner(spec)?;
        if self.owner.is_some() {
            self.resolve(&spec.name).await?;
        }
        options.origin()?;
        let base = self.store.update_base(spec).await?;
        Ok(Plan::update(spec, base.as_ref(), &options.queue))
    }

    /// Stores a changed spec (same name, nodes and provider) as the next generation and
    /// enqueues its deploy, which replaces the containers one machine at a time.
    #[tracing::instrument(name = "deployment.update", skip_all, fields(deployment.name = %spec.name))]
    pub async fn update(&self, spec: &Spec, options: &DeploymentOptions) -> Result<UpdateOutcome> {
        spec.validate()?;
        self.check_owner(spec)?;
        if self.owner.is_some() {
            // The deployment updated is the live one of the spec's name: it must be
            // this owner's too.
            self.resolve(&spec.name).await?;
        }
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

    /// Asks for a deployment's teardown: it becomes `tearing_down` at once, which
    /// stops provisioning and deploying, and a teardown job is enqueued unless one is
    /// under way.
    #[tracing::instrument(name = "deployment.teardown", skip_all, fields(deployment.id = %id))]
    pub async fn teardown(
        &self,
        id: Uuid,
        reason: &str,
        options: &DeploymentOptions,
    ) -> Result<TeardownRequest> {
        let origin = options.origin()?;
        let request = self.store.request_teardown(id, reason, &origin).await?;
        if let TeardownRequest::Requested { job, .. } = &request {
            self.producer.notify(std::slice::from_ref(job)).await;
        }
        Ok(request)
    }

    /// Moves a deployment's expiry `by` later: its `expires_at` and its delayed
    /// teardown together. A deployment without an expiry keeps living forever
    /// (`ExtendOutcome::NotExpiring`); one being torn down cannot be extended.
    pub async fn extend(&self, id: Uuid, by: Duration) -> Result<ExtendOutcome> {
        if by.is_zero() || by > MAX_TTL {
            return Err(DeploymentError::Refused {
                field: "duration".into(),
                reason: "an extension must be more than 0s and at most 3650d".into(),
            });
        }
        let origin = DeploymentOptions::default().origin()?;
        Ok(self.store.extend_expiry(id, by, &origin).await?)
    }

    /// Runs a health check of the deployment now (`lc deploy check`): it records what
    /// it finds and repairs as the spec says, as the periodic ones do, and restarts the
    /// periodic checks if their chain was lost. One asked for earlier that has not
    /// started yet is returned instead of a second; it never runs beside another check
    /// of the same deployment (they share a concurrency key of limit 1).
    pub async fn check(&self, id: Uuid) -> Result<CheckRequest> {
        let options = DeploymentOptions {
            queue: self.queue_of(id).await?,
            ..Default::default()
        };
        let origin = options.origin()?;
        let request = self.store.request_health_check(id, &origin).await?;
        if let CheckRequest::Enqueued(job) = &request
            && job.created
        {
            self.producer.notify(std::slice::from_ref(job)).await;
        }
        Ok(request)
    }

    /// The queue the deployment was made on, where its workers are: the default for
    /// the jobs an operator's command adds to it (a teardown, an update, a check) when
    /// the command names none. `default` for an id without jobs.
    pub async fn queue_of(&self, id: Uuid) -> Result<String> {
        Ok(self
            .store
            .creation_queue(id)
            .await?
            .unwrap_or_else(|| DEFAULT_QUEUE.to_owned()))
    }

    /// Closes a `leftovers` deployment once an operator checked the provider.
    pub async fn acknowledge_leftovers(&self, id: Uuid, note: &str) -> Result<AckOutcome> {
        if note.contains('\0') {
            return Err(DeploymentError::Refused {
                field: "note".into(),
                reason: "holds a NUL character, which the database cannot store".into(),
            });
        }
        let note = crate::truncate_text(note, 500);
        Ok(self.store.acknowledge_leftovers(id, &note).await?)
    }
}
