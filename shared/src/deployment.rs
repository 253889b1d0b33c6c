//! Deployments: a named set of machines, each running a payload container.
//! (Spec parsing and records arrive with the provision/deploy/teardown jobs.)

use crate::job::JobKind;
use crate::store::{Replay, Store, retry};

/// Checks the payload of a deployment job.
pub fn validate_job_payload(kind: JobKind, payload: &serde_json::Value) -> Result<(), String> {
    let _ = (kind, payload);
    Ok(())
}

/// Key names whose values are secrets: shown as `***` by `lc jobs show`.
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["token", "secret", "password", "passwd", "api_key", "apikey", "access_key", "private_key", "credential"]
        .iter()
        .any(|word| key.contains(word))
}

/// Replaces the values of secret-looking keys, at any depth.
pub fn redact_secrets(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                if is_secret_key(key) && (inner.is_string() || inner.is_number()) {
                    *inner = serde_json::Value::String("***".into());
                } else {
                    redact_secrets(inner);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_secrets),
        _ => {}
    }
}

impl Store {
    /// The id of the deployment with this name.
    pub async fn deployment_id(&self, name: &str) -> crate::store::Result<Option<uuid::Uuid>> {
        retry(Replay::Safe, || async {
            let client = self.client().await?;
            let row = client
                .query_opt("SELECT id FROM deployments WHERE name = $1", &[&name])
                .await?;
            Ok(row.map(|row| row.get(0)))
        })
        .await
    }
}
