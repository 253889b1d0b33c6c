//! What operators and handlers read: a deployment, the list, its machines, containers
//! and events.

use super::*;

impl DeploymentStore {
    pub async fn deployment(&self, id: Uuid) -> Result<Option<DeploymentRow>> {
        let sql = format!("SELECT {DEPLOYMENT_COLUMNS} FROM deployments WHERE id = $1");
        self.query_row(&sql, &[&id], deployment_row).await
    }

    /// Deployments, newest first; torn down ones only with `all`.
    pub async fn list_deployments(&self, all: bool, limit: i64) -> Result<Vec<DeploymentSummary>> {
        let columns: Vec<String> = DEPLOYMENT_COLUMNS
            .split(", ")
            .map(|column| format!("d.{column}"))
            .collect();
        let sql = format!(
            "SELECT {},
                    (SELECT count(*) FROM machines m WHERE m.deployment_id = d.id AND m.state = $3),
                    (SELECT count(*) FROM containers c WHERE c.deployment_id = d.id AND c.state = $4),
                    EXTRACT(EPOCH FROM (d.expires_at - now()))::FLOAT8
             FROM deployments d WHERE ($1 OR d.state <> $5)
             ORDER BY d.created_at DESC LIMIT $2",
            columns.join(", ")
        );
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] = [
            &all,
            &limit,
            &MachineState::Ready.as_str(),
            &ContainerState::Running.as_str(),
            &DeploymentState::TornDown.as_str(),
        ];
        self.query_rows(&sql, &params, |row| DeploymentSummary {
            deployment: deployment_row(row),
            machines_ready: row.get(13),
            containers_running: row.get(14),
            expires_in_secs: row.get(15),
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
