//! Schema migrations: the files of `migrations/`, compiled in, applied in order, each
//! statement once and in its own transaction (CockroachDB runs DDL best that way).
//!
//! Several processes may migrate at once (every worker replica starting together):
//! there are no advisory locks on CockroachDB, so instead every statement is written
//! idempotent (`IF NOT EXISTS`), a concurrent creation's duplicate-object error is
//! retried (the statement then finds the object there), and applied statements are
//! recorded in `schema_migrations` so later runs skip them.

use tokio_postgres::error::SqlState;

use crate::store::{Replay, Result, Store, StoreError, retry};

/// Every migration, in order. Add new files at the end; never edit an applied one.
pub const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_jobs", include_str!("../../migrations/0001_jobs.sql")),
    (
        "0002_deployments",
        include_str!("../../migrations/0002_deployments.sql"),
    ),
    (
        "0003_machine_state",
        include_str!("../../migrations/0003_machine_state.sql"),
    ),
    (
        "0004_job_timeouts",
        include_str!("../../migrations/0004_job_timeouts.sql"),
    ),
    (
        "0005_job_groups",
        include_str!("../../migrations/0005_job_groups.sql"),
    ),
    (
        "0006_concurrency",
        include_str!("../../migrations/0006_concurrency.sql"),
    ),
    (
        "0007_deployment_expiry",
        include_str!("../../migrations/0007_deployment_expiry.sql"),
    ),
    (
        "0008_events",
        include_str!("../../migrations/0008_events.sql"),
    ),
    (
        "0009_webhook_deliveries",
        include_str!("../../migrations/0009_webhook_deliveries.sql"),
    ),
    (
        "0010_api_tokens",
        include_str!("../../migrations/0010_api_tokens.sql"),
    ),
    (
        "0011_health",
        include_str!("../../migrations/0011_health.sql"),
    ),
    (
        "0012_traceparent",
        include_str!("../../migrations/0012_traceparent.sql"),
    ),
    (
        "0013_idempotency_expiry",
        include_str!("../../migrations/0013_idempotency_expiry.sql"),
    ),
];

/// Splits a migration file into statements: `;` at the end of a line ends one, and
/// `--` comment lines are dropped.
pub fn statements(sql: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            statements.push(current.trim().trim_end_matches(';').to_owned());
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        statements.push(current.trim().to_owned());
    }
    statements
}

/// What a migration run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub applied: Vec<String>,
    pub skipped: usize,
}

/// Applies every statement not yet recorded.
pub async fn run(store: &Store) -> Result<MigrationReport> {
    apply(
        store,
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version TEXT PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await?;
    let done: std::collections::HashSet<String> = retry(Replay::Safe, || async {
        let client = store.client().await?;
        let rows = client
            .query("SELECT version FROM schema_migrations", &[])
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    })
    .await?;

    let mut report = MigrationReport::default();
    for (name, sql) in MIGRATIONS {
        for (index, statement) in statements(sql).iter().enumerate() {
            let version = format!("{name}#{}", index + 1);
            if done.contains(&version) {
                report.skipped += 1;
                continue;
            }
            apply(store, statement).await?;
            retry(Replay::Safe, || async {
                let client = store.client().await?;
                client
                    .execute(
                        "INSERT INTO schema_migrations (version) VALUES ($1) ON CONFLICT (version) DO NOTHING",
                        &[&version],
                    )
                    .await?;
                Ok(())
            })
            .await?;
            tracing::info!(migration = %version, "applied");
            report.applied.push(version);
        }
    }
    Ok(report)
}

/// Runs one idempotent DDL statement in its own transaction, retrying the errors that a
/// concurrent run of the same statement causes.
async fn apply(store: &Store, statement: &str) -> Result {
    let mut tries = 0;
    loop {
        let outcome = retry(Replay::Safe, || async {
            let client = store.client().await?;
            client.batch_execute(statement).await?;
            Ok(())
        })
        .await;
        match outcome {
            // `ADD CONSTRAINT` has no IF NOT EXISTS: a concurrent run that added it first
            // leaves exactly what this statement wanted.
            Err(StoreError::Db(err))
                if is_add_constraint(statement) && is_duplicate_object(&err) =>
            {
                return Ok(());
            }
            // `RENAME COLUMN` has no IF EXISTS: a concurrent run that renamed it first
            // leaves exactly what this statement wanted.
            Err(StoreError::Db(err))
                if is_rename_column(statement)
                    && err.code() == Some(&SqlState::UNDEFINED_COLUMN) =>
            {
                return Ok(());
            }
            Err(StoreError::Db(err)) if tries < 5 && is_concurrent_ddl(&err) => tries += 1,
            other => return other,
        }
    }
}

fn is_add_constraint(statement: &str) -> bool {
    statement.to_ascii_uppercase().contains("ADD CONSTRAINT")
}

fn is_rename_column(statement: &str) -> bool {
    statement.to_ascii_uppercase().contains("RENAME COLUMN")
}

fn is_duplicate_object(err: &tokio_postgres::Error) -> bool {
    err.code() == Some(&SqlState::DUPLICATE_OBJECT)
}

fn is_concurrent_ddl(err: &tokio_postgres::Error) -> bool {
    err.code().is_some_and(|code| {
        [
            SqlState::UNIQUE_VIOLATION,
            SqlState::DUPLICATE_TABLE,
            SqlState::DUPLICATE_OBJECT,
        ]
        .contains(code)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_and_drops_comments() {
        let sql = "-- a comment\nCREATE TABLE a (x INT8);\n\nCREATE INDEX i\n  ON a (x);\n";
        assert_eq!(
            statements(sql),
            vec!["CREATE TABLE a (x INT8)", "CREATE INDEX i\n  ON a (x)"]
        );
    }

    #[test]
    fn every_migration_has_statements() {
        for (name, sql) in MIGRATIONS {
            assert!(!statements(sql).is_empty(), "{name} is empty");
        }
    }
}
