//! The HTTP API's tokens (`api_tokens`) and its idempotency keys
//! (`api_idempotency_keys`): the statements only. What a token is, how it is made and
//! hashed, is `lc_producer::tokens`'s; the store never sees a token, only its hash.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Replay, Result, Store, retry};

/// A token's row, without its hash.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenRow {
    pub id: Uuid,
    pub owner: String,
    pub admin: bool,
    /// The first characters of the token, enough to tell tokens apart, not to use one.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A token's row and whether it may be used now (not revoked, not expired), by the
/// database's clock.
#[derive(Clone, Debug)]
pub struct TokenLookup {
    pub row: TokenRow,
    pub hash: Vec<u8>,
    pub usable: bool,
}

/// What recording an idempotency key found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyClaim {
    /// The key is new: this request is its first.
    New,
    /// The key was used before with the same request, which made `result` (when
    /// it recorded one, see [`Store::record_idempotency_result`]).
    Same { result: Option<Uuid> },
    /// The key was used before with another request.
    Different,
}

const TOKEN_COLUMNS: &str =
    "id, owner, admin, prefix, created_at, expires_at, revoked_at, last_used_at";

fn token_row(row: &tokio_postgres::Row) -> TokenRow {
    TokenRow {
        id: row.get(0),
        owner: row.get(1),
        admin: row.get(2),
        prefix: row.get(3),
        created_at: row.get(4),
        expires_at: row.get(5),
        revoked_at: row.get(6),
        last_used_at: row.get(7),
    }
}

impl Store {
    /// Records a token by its hash; `expires_in_secs` counts from the database's now.
    pub async fn insert_token(
        &self,
        id: Uuid,
        owner: &str,
        admin: bool,
        hash: &[u8],
        prefix: &str,
        expires_in_secs: Option<i64>,
    ) -> Result<TokenRow> {
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            client
                .execute(
                    "INSERT INTO api_tokens (id, owner, admin, token_sha256, prefix, expires_at)
                     VALUES ($1, $2, $3, $4, $5, now() + $6::INT8 * INTERVAL '1 second')
                     ON CONFLICT (id) DO NOTHING",
                    &[&id, &owner, &admin, &hash, &prefix, &expires_in_secs],
                )
                .await?;
            let select = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = $1");
            let row = client.query_one(select.as_str(), &[&id]).await?;
            Ok(token_row(&row))
        })
        .await
    }

    /// Every token, newest first.
    pub async fn tokens(&self) -> Result<Vec<TokenRow>> {
        let sql = format!("SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at DESC, id");
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            Ok(client
                .query(sql.as_str(), &[])
                .await?
                .iter()
                .map(token_row)
                .collect())
        })
        .await
    }

    /// Marks a token revoked (once: a second revoke keeps the first time); `None` when
    /// no token has this id.
    pub async fn revoke_token(&self, id: Uuid) -> Result<Option<TokenRow>> {
        let sql = format!(
            "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1
             RETURNING {TOKEN_COLUMNS}"
        );
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            Ok(client
                .query_opt(sql.as_str(), &[&id])
                .await?
                .as_ref()
                .map(token_row))
        })
        .await
    }

    /// The token whose hash is `hash`, if any.
    pub async fn token_by_hash(&self, hash: &[u8]) -> Result<Option<TokenLookup>> {
        let sql = format!(
            "SELECT {TOKEN_COLUMNS}, token_sha256,
                    revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
             FROM api_tokens WHERE token_sha256 = $1"
        );
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            Ok(client
                .query_opt(sql.as_str(), &[&hash])
                .await?
                .map(|row| TokenLookup {
                    row: token_row(&row),
                    hash: row.get(8),
                    usable: row.get(9),
                }))
        })
        .await
    }

    /// Notes that a token was used, at most once a minute per token (a write per
    /// request would cost more than the request).
    pub async fn touch_token(&self, id: Uuid) -> Result {
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            client
                .execute(
                    "UPDATE api_tokens SET last_used_at = now()
                     WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - INTERVAL '1 minute')",
                    &[&id],
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// Records an idempotency key of `owner` with the hash of its request, or says
    /// whether the request it was recorded with was the same.
    pub async fn claim_idempotency_key(
        &self,
        owner: &str,
        key: &str,
        request_hash: &[u8],
    ) -> Result<KeyClaim> {
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            let inserted = client
                .execute(
                    "INSERT INTO api_idempotency_keys (owner, key, request_sha256)
                     VALUES ($1, $2, $3) ON CONFLICT (owner, key) DO NOTHING",
                    &[&owner, &key, &request_hash],
                )
                .await?;
            if inserted == 1 {
                return Ok(KeyClaim::New);
            }
            let row = client
                .query_one(
                    "SELECT request_sha256, result_id FROM api_idempotency_keys WHERE owner = $1 AND key = $2",
                    &[&owner, &key],
                )
                .await?;
            let stored: Vec<u8> = row.get(0);
            Ok(if stored == request_hash {
                KeyClaim::Same {
                    result: row.get(1),
                }
            } else {
                KeyClaim::Different
            })
        })
        .await
    }

    /// Forgets up to `batch` idempotency keys recorded more than `older_than_secs`
    /// ago, oldest first; returns how many. Small batches keep each transaction short.
    pub async fn prune_idempotency_keys(&self, older_than_secs: i64, batch: i64) -> Result<u64> {
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            Ok(client
                .execute(
                    "DELETE FROM api_idempotency_keys WHERE (owner, key) IN (
                         SELECT owner, key FROM api_idempotency_keys
                         WHERE created_at < now() - $1::INT8 * INTERVAL '1 second'
                         ORDER BY created_at LIMIT $2)",
                    &[&older_than_secs, &batch],
                )
                .await?)
        })
        .await
    }

    /// Records what the first request of an idempotency key made.
    pub async fn record_idempotency_result(&self, owner: &str, key: &str, result: Uuid) -> Result {
        retry(Replay::Safe, || async {
            let client = self.pool.get().await?;
            client
                .execute(
                    "UPDATE api_idempotency_keys SET result_id = $3 WHERE owner = $1 AND key = $2",
                    &[&owner, &key, &result],
                )
                .await?;
            Ok(())
        })
        .await
    }
}
