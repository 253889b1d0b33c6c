//! SQL for `concurrency_keys`: the limits of keys, set and cleared at run time, read
//! with their running and waiting counts, and the waiting jobs whose hints a freed slot
//! sends. The claims that obey the limits are in [`super::claim`].

use deadpool_postgres::GenericClient;

use super::rows::{ConcurrencyKeyRow, HintTarget, hint_target};
use super::{Isolation, Replay, Result, Store, StoreError};
use crate::concurrency::{check_key, check_limit};
use crate::state::JobState;

/// Most hints sent for one key at once when its slots free or its limit rises: each
/// hint's claim takes as many of the key's jobs as that worker has room for.
const MAX_HINTS_PER_KEY: i64 = 1000;

/// Sets `key`'s limit to `limit` unless it has one already, inside the caller's
/// transaction (a domain sets the default of a key it uses, as a deployment does for
/// its provider account). Read committed or serializable alike: one upsert whose update
/// applies only while no limit is set, decided on the newest version of the row.
pub async fn limit_unless_set<C: GenericClient>(client: &C, key: &str, limit: i64) -> Result {
    check_limit(key, limit).map_err(|err| StoreError::Invalid(err.to_string()))?;
    client
        .execute(
            "INSERT INTO concurrency_keys (concurrency_key, max_running) VALUES ($1, $2)
             ON CONFLICT (concurrency_key) DO UPDATE SET max_running = excluded.max_running, updated_at = now()
             WHERE concurrency_keys.max_running IS NULL",
            &[&key, &limit],
        )
        .await?;
    Ok(())
}

impl Store {
    /// Sets (`Some`) or clears (`None`: no limit) the limit of `key`, making its row if
    /// needed. A limit below 1 is refused and nothing is written. A lower limit stops
    /// new claims until the key's running jobs are fewer; it stops none that runs. Read
    /// committed: one upsert of one row; claims of the key that hold its row wait for
    /// it and count against the new limit.
    pub async fn set_concurrency_limit(&self, key: &str, limit: Option<i64>) -> Result {
        match limit {
            Some(limit) => check_limit(key, limit),
            None => check_key(key),
        }
        .map_err(|err| StoreError::Invalid(err.to_string()))?;
        self.statement(
            Isolation::ReadCommitted,
            Replay::Safe,
            "INSERT INTO concurrency_keys (concurrency_key, max_running, updated_at) VALUES ($1, $2, now())
             ON CONFLICT (concurrency_key) DO UPDATE SET max_running = excluded.max_running, updated_at = now()",
            &[&key, &limit],
        )
        .await?;
        Ok(())
    }

    /// Every key (or the one named) with its limit and how many of its jobs run and
    /// wait now, by key.
    pub async fn concurrency_keys(&self, key: Option<&str>) -> Result<Vec<ConcurrencyKeyRow>> {
        const SQL: &str = "
SELECT k.concurrency_key, k.max_running, k.updated_at,
       (SELECT count(*) FROM jobs r WHERE r.concurrency_key = k.concurrency_key
          AND r.concurrency_key IS NOT NULL AND r.state = $2),
       (SELECT count(*) FROM jobs w WHERE w.concurrency_key = k.concurrency_key
          AND w.concurrency_key IS NOT NULL AND w.state = $3)
FROM concurrency_keys k
WHERE ($1::TEXT IS NULL OR k.concurrency_key = $1)
ORDER BY k.concurrency_key";
        let running = JobState::Running.as_str();
        let queued = JobState::Queued.as_str();
        self.query_rows(SQL, &[&key, &running, &queued], |row| ConcurrencyKeyRow {
            key: row.get(0),
            limit: row.get(1),
            updated_at: row.get(2),
            running: row.get(3),
            waiting: row.get(4),
        })
        .await
    }

    /// Where the hints go that start a key's waiting jobs: for each `(key, count)`, up
    /// to `count` (at most `MAX_HINTS_PER_KEY`, 1000) of its due queued jobs. Called by
    /// whoever freed slots of the key (a completion, an expired lease, a cancel, a
    /// higher limit), after its commit. The hint of any of them does: a claim of a
    /// keyed job takes the key's next jobs of the hint's queue (see
    /// [`Store::claim_keyed`]). A read, nothing is marked.
    pub async fn waiting_heads(&self, freed: &[(String, i64)]) -> Result<Vec<HintTarget>> {
        const SQL: &str = "
SELECT id, queue, priority FROM jobs
WHERE concurrency_key = $1 AND concurrency_key IS NOT NULL AND state = $2 AND run_at <= now()
ORDER BY concurrency_key, queue, priority, run_at LIMIT $3";
        let queued = JobState::Queued.as_str();
        let mut targets = Vec::new();
        for (key, count) in freed {
            let count = (*count).clamp(0, MAX_HINTS_PER_KEY);
            if count == 0 {
                continue;
            }
            let rows = self
                .query_rows(SQL, &[key, &queued, &count], hint_target)
                .await?;
            for target in rows {
                targets.push(target?);
            }
        }
        Ok(targets)
    }

    /// How many more of a key's jobs may start now, for the hints a new or cleared
    /// limit sends: the limit less the running jobs, or all the waiting ones without a
    /// limit (at most `MAX_HINTS_PER_KEY`, 1000).
    pub async fn room_of(&self, key: &str) -> Result<i64> {
        let Some(row) = self.concurrency_keys(Some(key)).await?.pop() else {
            return Ok(0);
        };
        let room = match row.limit {
            Some(limit) => (limit - row.running).min(row.waiting),
            None => row.waiting,
        };
        Ok(room.clamp(0, MAX_HINTS_PER_KEY))
    }
}
