//! The one "PostgreSQL only" switch: statements that tests, drills and the benchmark
//! need (never the product's own path) and that PostgreSQL and CockroachDB spell
//! differently, each with its CockroachDB equivalent beside it. The dialect is read
//! off `SELECT version()`.

use tokio_postgres::GenericClient;

/// Which database answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    PostgreSql,
    CockroachDb,
}

impl Dialect {
    /// Asks the database.
    pub async fn detect<C: GenericClient>(client: &C) -> Result<Dialect, tokio_postgres::Error> {
        let version: String = client.query_one("SELECT version()", &[]).await?.get(0);
        Ok(Dialect::from_version(&version))
    }

    pub fn from_version(version: &str) -> Dialect {
        if version.contains("CockroachDB") {
            Dialect::CockroachDb
        } else {
            Dialect::PostgreSql
        }
    }

    /// Ends every other session on database `$1` (a connection cut, for drills); the
    /// rows returned count the sessions.
    pub fn terminate_other_sessions(self) -> &'static str {
        match self {
            Dialect::PostgreSql => {
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = $1 AND pid <> pg_backend_pid()"
            }
            // CANCEL SESSION takes one id; the subquery form ends all at once.
            Dialect::CockroachDb => {
                "CANCEL SESSIONS IF EXISTS (SELECT session_id FROM [SHOW CLUSTER SESSIONS]
                 WHERE database = $1 AND session_id <> (SELECT session_id FROM [SHOW session_id]))"
            }
        }
    }

    /// How many sessions of database `$1` wait for a row lock another holds, as one
    /// `INT8` (a test waits for a statement to reach a locked row).
    pub fn sessions_waiting_on_locks(self) -> &'static str {
        match self {
            Dialect::PostgreSql => {
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'"
            }
            Dialect::CockroachDb => {
                "SELECT count(*) FROM crdb_internal.cluster_locks WHERE database_name = $1 AND NOT granted"
            }
        }
    }

    /// Drops database `name` even while sessions are still connected to it.
    pub fn drop_database(self, name: &str) -> String {
        match self {
            Dialect::PostgreSql => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            Dialect::CockroachDb => format!("DROP DATABASE IF EXISTS {name} CASCADE"),
        }
    }

    /// Writes every dirty page out now (the benchmark, before a latency run). None on
    /// CockroachDB: it has no checkpoint a client can ask for.
    pub fn checkpoint(self) -> Option<&'static str> {
        match self {
            Dialect::PostgreSql => Some("CHECKPOINT"),
            Dialect::CockroachDb => None,
        }
    }

    /// Committed and rolled-back transactions so far, as one row `(commits,
    /// rollbacks)`: of the current database on PostgreSQL, of the node on CockroachDB
    /// (which counts per node, not per database).
    pub fn transaction_counters(self) -> &'static str {
        match self {
            Dialect::PostgreSql => {
                "SELECT xact_commit, xact_rollback FROM pg_stat_database
                 WHERE datname = current_database()"
            }
            Dialect::CockroachDb => {
                "SELECT (SELECT value::INT8 FROM crdb_internal.node_metrics
                          WHERE name = 'sql.txn.commit.count'),
                        (SELECT value::INT8 FROM crdb_internal.node_metrics
                          WHERE name = 'sql.txn.rollback.count')"
            }
        }
    }
}
