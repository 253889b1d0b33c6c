//! Tokens of the HTTP API: made here (32 random bytes, written `lc_` and URL-safe
//! base64), shown to the operator once, stored only as their SHA-256 (see
//! `migrations/0010_api_tokens.sql`). A token speaks for one owner, or for everyone
//! when it is an admin token. Also the HTTP API's idempotency keys, which are kept by
//! owner with the hash of the request they came with.
//!
//! The hash of 32 random bytes cannot be searched backwards, so a fast hash is the
//! right one (a password hash such as argon2 protects guessable secrets); the token is
//! found by its hash, and the stored hash is compared with the presented one in
//! constant time as well.
//!
//! A checked token is trusted for [`TOKEN_CHECK_TTL`] by the process that checked it,
//! so that a busy client costs one lookup a second instead of one per request (the
//! lookup was half of an enqueue's statements). The price: a token revoked by another
//! process (`lc tokens revoke`) stops working within that second, not at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lc_shared::store::{KeyClaim, Store, StoreError, TokenRow};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::ErrorKind;

/// What every token starts with, so that scanners and people recognise one.
pub const TOKEN_PREFIX: &str = "lc_";
/// How long a process trusts a token it has found usable before looking it up again.
pub const TOKEN_CHECK_TTL: Duration = Duration::from_secs(1);
/// Most tokens a process keeps checked; past it, the cache starts again (only usable
/// tokens are kept, so this is reached only by a deployment with that many in use).
const MAX_CHECKED_TOKENS: usize = 10_000;
/// Characters of a token `lc tokens ls` shows (the `lc_` and 8 more).
const SHOWN_PREFIX: usize = TOKEN_PREFIX.len() + 8;
/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;
/// Longest owner name: it goes into rows, logs and idempotency keys.
pub const MAX_OWNER_LEN: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "invalid owner {0:?}: use 1 to {MAX_OWNER_LEN} characters from a-z, A-Z, 0-9, '-', '_', '.' and '@'"
    )]
    Owner(String),
    #[error("no token {0}")]
    NotFound(Uuid),
    #[error("an expiry must be more than 0s and at most 3650d")]
    Expiry,
    #[error("the system's random number generator failed: {0}")]
    Random(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TokenError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            TokenError::Owner(_) | TokenError::Expiry => ErrorKind::Invalid,
            TokenError::NotFound(_) => ErrorKind::NotFound,
            TokenError::Random(_) => ErrorKind::Internal,
            TokenError::Store(err) => ErrorKind::of_store(err),
        }
    }
}

pub type Result<T = ()> = std::result::Result<T, TokenError>;

/// A token just made: its row, and the token itself, which exists nowhere else.
#[derive(Debug)]
pub struct NewToken {
    pub row: TokenRow,
    pub secret: String,
}

/// Who a presented token speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub token_id: Uuid,
    pub owner: String,
    pub admin: bool,
}

/// Whether `owner` is usable as an owner's name.
pub fn is_valid_owner(owner: &str) -> bool {
    !owner.is_empty()
        && owner.len() <= MAX_OWNER_LEN
        && owner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A token found usable, and until when that answer may be reused.
struct Checked {
    caller: Caller,
    until: Instant,
}

/// The tokens and idempotency keys of one database.
#[derive(Clone)]
pub struct Tokens {
    store: Store,
    /// Usable tokens by hash, checked less than [`TOKEN_CHECK_TTL`] ago. A map lookup
    /// by hash reveals no more through its timing than the database's index does.
    checked: Arc<DashMap<[u8; 32], Checked>>,
}

impl Tokens {
    pub fn new(store: Store) -> Tokens {
        Tokens {
            store,
            checked: Arc::default(),
        }
    }

    /// Makes a token for `owner` (for everyone with `admin`), valid for `expires_in`
    /// if given, forever otherwise (until revoked).
    pub async fn create(
        &self,
        owner: &str,
        admin: bool,
        expires_in: Option<Duration>,
    ) -> Result<NewToken> {
        if !is_valid_owner(owner) {
            return Err(TokenError::Owner(owner.to_owned()));
        }
        let expires_in_secs = match expires_in {
            Some(age) if age.is_zero() || age > Duration::from_secs(3650 * 86_400) => {
                return Err(TokenError::Expiry);
            }
            Some(age) => Some(i64::try_from(age.as_secs()).map_err(|_| TokenError::Expiry)?),
            None => None,
        };
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(|err| TokenError::Random(err.to_string()))?;
        let secret = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
        let row = self
            .store
            .insert_token(
                Uuid::new_v4(),
                owner,
                admin,
                &sha256(secret.as_bytes()),
                &secret[..SHOWN_PREFIX],
                expires_in_secs,
            )
            .await?;
        Ok(NewToken { row, secret })
    }

    /// Every token (no secrets: they are not stored), newest first.
    pub async fn list(&self) -> Result<Vec<TokenRow>> {
        Ok(self.store.tokens().await?)
    }

    /// Revokes a token: it stops working at once in this process, and within
    /// [`TOKEN_CHECK_TTL`] in others.
    pub async fn revoke(&self, id: Uuid) -> Result<TokenRow> {
        let row = self
            .store
            .revoke_token(id)
            .await?
            .ok_or(TokenError::NotFound(id))?;
        self.checked
            .retain(|_, checked| checked.caller.token_id != id);
        Ok(row)
    }

    /// Who `presented` speaks for; `None` for anything that is not a usable token
    /// (unknown, revoked, expired, malformed), without saying which.
    pub async fn authenticate(&self, presented: &str) -> Result<Option<Caller>> {
        if !presented.starts_with(TOKEN_PREFIX) || presented.len() > 128 {
            return Ok(None);
        }
        let hash = sha256(presented.as_bytes());
        if let Some(checked) = self.checked.get(&hash)
            && checked.until > Instant::now()
        {
            return Ok(Some(checked.caller.clone()));
        }
        let Some(found) = self.store.token_by_hash(&hash).await? else {
            return Ok(None);
        };
        let same: bool = found.hash.ct_eq(&hash).into();
        if !same || !found.usable {
            return Ok(None);
        }
        // `last_used_at` moves at most once a minute: most requests write nothing.
        let stale = found
            .row
            .last_used_at
            .is_none_or(|at| chrono::Utc::now() - at > chrono::Duration::minutes(1));
        if stale && let Err(err) = self.store.touch_token(found.row.id).await {
            tracing::warn!(token.id = %found.row.id, error = %lc_shared::store::error_chain(&err),
                           "could not note a token's last use");
        }
        let caller = Caller {
            token_id: found.row.id,
            owner: found.row.owner,
            admin: found.row.admin,
        };
        // Never trusted past its expiry (by this machine's clock, which may differ
        // from the database's by a little: the next lookup decides then).
        let mut until = Instant::now() + TOKEN_CHECK_TTL;
        if let Some(expires_at) = found.row.expires_at {
            let left = (expires_at - chrono::Utc::now())
                .to_std()
                .unwrap_or_default();
            until = until.min(Instant::now() + left);
        }
        if self.checked.len() >= MAX_CHECKED_TOKENS {
            self.checked.clear();
        }
        self.checked.insert(
            hash,
            Checked {
                caller: caller.clone(),
                until,
            },
        );
        Ok(Some(caller))
    }

    /// Records `owner`'s idempotency key with (the hash of) the request it came with,
    /// or says whether the request it was first used with was the same.
    pub async fn claim_idempotency_key(
        &self,
        owner: &str,
        key: &str,
        request: &[u8],
    ) -> Result<KeyClaim> {
        Ok(self
            .store
            .claim_idempotency_key(owner, key, &sha256(request))
            .await?)
    }

    /// Forgets every idempotency key recorded more than `older_than` ago; returns how
    /// many. A key used again after that makes a new job or deployment.
    pub async fn prune_idempotency_keys(&self, older_than: Duration) -> Result<u64> {
        const BATCH: i64 = 1_000;
        let secs = i64::try_from(older_than.as_secs()).unwrap_or(i64::MAX);
        let mut pruned = 0;
        loop {
            let deleted = self.store.prune_idempotency_keys(secs, BATCH).await?;
            pruned += deleted;
            if deleted < BATCH as u64 {
                return Ok(pruned);
            }
        }
    }

    /// Records what the first request of `owner`'s key made (a deployment's id).
    pub async fn record_idempotency_result(&self, owner: &str, key: &str, result: Uuid) -> Result {
        Ok(self
            .store
            .record_idempotency_result(owner, key, result)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_plain_names() {
        for good in ["alice", "team-a", "ci_bot", "a.b@example.com"] {
            assert!(is_valid_owner(good), "{good}");
        }
        for bad in ["", "has space", "semi;colon", "é", &"x".repeat(65)] {
            assert!(!is_valid_owner(bad), "{bad}");
        }
    }
}
