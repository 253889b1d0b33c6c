//! Jobs of one group (see `NewJob::group_id`): cancelling the queued ones of some
//! kinds, and finding the running ones, for a domain that stops what works on one of
//! its entities (a deployment's teardown stops its provisioning).

use uuid::Uuid;

use super::{Result, Store};
use crate::job::JobKind;
use crate::state::{JobState, Transition};

impl Store {
    /// Cancels the queued jobs of these kinds in a group (a running one is left to
    /// finish: its handler decides). One conditional statement with its event rows,
    /// following the job state machine's `cancel` transition.
    pub async fn cancel_queued_in_group(
        &self,
        group_id: Uuid,
        kinds: &[JobKind],
        reason: &str,
    ) -> Result<Vec<Uuid>> {
        const SQL: &str = "
WITH cancelled AS (
    UPDATE jobs SET state = $3, finished_at = now(), updated_at = now(),
        last_error = COALESCE(last_error, $4)
    WHERE group_id = $1 AND kind = ANY($2) AND state = $5
    RETURNING id, attempt
), events AS (
    INSERT INTO job_events (job_id, from_state, to_state, attempt, message)
    SELECT id, $5, $3, attempt, $6 FROM cancelled
)
SELECT id FROM cancelled";
        debug_assert!(Transition::Cancel.from().contains(&JobState::Queued));
        let kinds: Vec<&str> = kinds.iter().map(|kind| kind.as_str()).collect();
        let to = Transition::Cancel.to().as_str();
        let queued = JobState::Queued.as_str();
        let label = format!("{}: {reason}", Transition::Cancel.label());
        self.query_rows(
            SQL,
            &[&group_id, &kinds, &to, &reason, &queued, &label],
            |row| row.get(0),
        )
        .await
    }

    /// Running jobs of these kinds in a group, other than `except`: (id, kind).
    pub async fn running_in_group(
        &self,
        group_id: Uuid,
        kinds: &[JobKind],
        except: Uuid,
    ) -> Result<Vec<(Uuid, String)>> {
        let kinds: Vec<&str> = kinds.iter().map(|kind| kind.as_str()).collect();
        self.query_rows(
            "SELECT id, kind FROM jobs WHERE group_id = $1 AND kind = ANY($2) AND state = $3 AND id <> $4",
            &[&group_id, &kinds, &JobState::Running.as_str(), &except],
            |row| (row.get(0), row.get(1)),
        )
        .await
    }

    /// How many jobs of `kinds` in the group have not ended (queued or running): a job
    /// that fans work out waits for this to reach zero.
    pub async fn unfinished_in_group(&self, group_id: Uuid, kinds: &[JobKind]) -> Result<i64> {
        let kinds: Vec<&str> = kinds.iter().map(|kind| kind.as_str()).collect();
        let rows = self
            .query_rows(
                "SELECT count(*) FROM jobs WHERE group_id = $1 AND kind = ANY($2) AND state IN ($3, $4)",
                &[
                    &group_id,
                    &kinds,
                    &JobState::Queued.as_str(),
                    &JobState::Running.as_str(),
                ],
                |row| row.get::<_, i64>(0),
            )
            .await?;
        Ok(rows.first().copied().unwrap_or(0))
    }
}
