//! What operators and handlers read: a deployment, the list, its machines, containers
//! and events; what a plan starts from.

use super::*;

impl DeploymentStore {
    pub async fn deployment(&self, id: Uuid) -> Result<Option<DeploymentRow>> {
        let sql = format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = $1");
        self.query_row(&sql, &[&id], deployment_row).await
    }

    /// Deployments, newest first; torn down ones only with `all`.
    /// Deployments, newest first; torn down ones only with `all`; only `owner`'s when
    /// given.
    pub async fn list_deployments(
        &self,
        all: bool,
        limit: i64,
        owner: Option<&str>,
    ) -> Result<Vec<DeploymentSummary>> {
        let columns: Vec<String> = DEPLOYMENT_COLUMNS
            .split(", ")
            .map(|column| format!("d.{column}"))
            .collect();
        let sql = format!(
            "SELECT {},
                    (SELECT count(*) FROM machines m WHERE m.deployment_id = d.id AND m.state = $3),
                    (SELECT count(*) FROM containers c WHERE c.deployment_id = d.id AND c.state = $4),
                    EXTRACT(EPOCH FROM (d.expires_at - now()))::FLOAT8
             FROM deployments d WHERE ($1 OR d.state <> $5) AND ($6::TEXT IS NULL OR d.owner = $6)
             ORDER BY d.created_at DESC LIMIT $2",
            columns.join(", ")
        );
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
            &all,
            &limit,
            &MachineState::Ready.as_str(),
            &ContainerState::Running.as_str(),
            &DeploymentState::TornDown.as_str(),
            &owner,
        ];
        let at = DEPLOYMENT_COLUMN_COUNT;
        self.query_rows(&sql, &params, |row| DeploymentSummary {
            deployment: deployment_row(row),
            machines_ready: row.get(at),
            containers_running: row.get(at + 1),
            expires_in_secs: row.get(at + 2),
        })
        .await
    }

    pub async fn machines(&self, deployment_id: Uuid) -> Result<Vec<MachineRow>> {
        let sql = format!(
            "SELECT {MACHINE_COLUMNS} FROM machines WHERE deployment_id = $1 ORDER BY node_index"
        );
        self.query_rows(&sql, &[&deployment_id], machine_row).await
    }

    pub async fn containers(&self, deployment_id: Uuid) -> Result<Vec<ContainerRow>> {
        let sql = format!(
            "{CONTAINER_SELECT} WHERE c.deployment_id = $1 ORDER BY m.node_index, c.generation"
        );
        self.query_rows(&sql, &[&deployment_id], container_row)
            .await
    }

    /// The deployment's latest `limit` events, oldest first.
    pub async fn deployment_events(
        &self,
        deployment_id: Uuid,
        limit: i64,
    ) -> Result<Vec<DeploymentEventRow>> {
        self.query_rows(
            "SELECT at, subject, from_state, to_state, message, job_id FROM (
                 SELECT at, subject, from_state, to_state, message, job_id, id FROM deployment_events
                 WHERE deployment_id = $1 ORDER BY at DESC, id LIMIT $2) AS latest
             ORDER BY at, id",
            &[&deployment_id, &limit],
            |row| DeploymentEventRow {
                at: row.get(0),
                subject: row.get(1),
                from_state: row.get(2),
                to_state: row.get(3),
                message: row.get(4),
                job_id: row.get(5),
            },
        )
        .await
    }
}

/// What an update of a spec would start from, read in one snapshot with nothing locked
/// or written: the live deployment of the spec's name, its machines and containers, the
/// spec the update would store and why it would be refused, if it would.
#[derive(Clone, Debug)]
pub struct UpdateBase {
    pub deployment: DeploymentRow,
    pub machines: Vec<MachineRow>,
    pub containers: Vec<ContainerRow>,
    /// The stored spec, and the one the update would store in its place.
    pub current: Spec,
    pub next: Spec,
    pub refused: Option<String>,
}

impl DeploymentStore {
    /// The queue the deployment was made on: its first job's (the `provision` that its
    /// create wrote). `None` for an unknown id.
    pub async fn creation_queue(&self, deployment_id: Uuid) -> Result<Option<String>> {
        self.query_row(
            "SELECT queue FROM jobs WHERE group_id = $1 ORDER BY created_at, id LIMIT 1",
            &[&deployment_id],
            |row| row.get(0),
        )
        .await
    }

    /// The live (not torn down) deployment of a name: its id and state.
    pub async fn live_deployment(&self, name: &str) -> Result<Option<(Uuid, DeploymentState)>> {
        self.query_row(
            "SELECT id, state FROM deployments WHERE name = $1 AND state <> $2",
            &[&name, &DeploymentState::TornDown.as_str()],
            |row| (row.get(0), row.get(1)),
        )
        .await
    }

    /// What [`DeploymentStore::update_deployment`] would start from for `spec`, and
    /// whether it would refuse (the same checks); `None` when no live deployment has
    /// the spec's name. Writes nothing.
    pub async fn update_base(&self, spec: &Spec) -> Result<Option<UpdateBase>> {
        let deployment_sql =
            format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE name = $1 AND state <> $2");
        let machines_sql = format!(
            "SELECT {MACHINE_COLUMNS} FROM machines WHERE deployment_id = $1 ORDER BY node_index"
        );
        let containers_sql = format!(
            "{CONTAINER_SELECT} WHERE c.deployment_id = $1 ORDER BY m.node_index, c.generation"
        );
        // Serializable: the reads are one snapshot. Nothing is written.
        in_transaction!(self, Isolation::Serializable, tx => {
            let Some(row) = tx
                .query_opt(deployment_sql.as_str(), &[&spec.name, &DeploymentState::TornDown.as_str()])
                .await?
            else {
                return Ok(None);
            };
            let deployment = deployment_row(&row);
            let id = deployment.id;
            let current = Spec::from_json(&deployment.spec)
                .map_err(|err| invalid(format!("stored spec of deployment {id}: {err}")))?;
            let machines: Vec<MachineRow> =
                tx.query(machines_sql.as_str(), &[&id]).await?.iter().map(machine_row).collect();
            let containers: Vec<ContainerRow> =
                tx.query(containers_sql.as_str(), &[&id]).await?.iter().map(container_row).collect();
            let deploy_live = create::live_deploys(tx, id).await? > 0;
            let refused = create::update_refusal(&current, deployment.state, &machines, deploy_live, spec)
                .map(str::to_owned);
            let next = create::updated_spec(&current, spec);
            Ok(Some(UpdateBase { deployment, machines, containers, current, next, refused }))
        })
    }
}
