//! Deployments: a named set of machines, each running a payload container.
//! (Spec parsing and records arrive with the provision/deploy/teardown jobs.)

use crate::job::JobKind;

/// Checks the payload of a deployment job.
pub fn validate_job_payload(
    kind: JobKind,
    payload: &serde_json::Value,
) -> Result<(), String> {
    let _ = (kind, payload);
    Ok(())
}
