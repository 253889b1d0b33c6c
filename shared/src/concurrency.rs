//! Concurrency keys: a name that jobs share so that at most N of them run at once,
//! across every worker, whatever the number of workers (a provider account's API calls,
//! a tenant's share of the fleet). A job names its key ([`crate::NewJob::with_concurrency_key`]);
//! a key may have a limit, kept per key in the database and changed at run time. This
//! module holds the checks of keys and limits; the claims that obey them are in
//! `store::claim`, the `concurrency_keys` table in `store::concurrency`.

/// Longest accepted concurrency key.
pub const MAX_KEY_LEN: usize = 200;

/// Why a key or a limit was refused. Nothing is written when one of these is returned.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidConcurrency {
    #[error(
        "invalid concurrency key {0:?}: use 1 to {MAX_KEY_LEN} characters, none of them a control character"
    )]
    Key(String),
    #[error("invalid concurrency limit for key {key:?}: limit must be at least 1, got {limit}")]
    Limit { key: String, limit: i64 },
}

/// Whether `key` can be a concurrency key: it goes into rows, logs and CLI arguments.
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LEN && !key.chars().any(char::is_control)
}

/// Checks a key.
pub fn check_key(key: &str) -> Result<(), InvalidConcurrency> {
    if is_valid_key(key) {
        Ok(())
    } else {
        Err(InvalidConcurrency::Key(key.to_owned()))
    }
}

/// Checks a key and the limit asked for it: at least one job must be able to run (a
/// key whose jobs must not run is a paused queue's job, or a cancelled one).
pub fn check_limit(key: &str, limit: i64) -> Result<(), InvalidConcurrency> {
    check_key(key)?;
    if limit < 1 {
        return Err(InvalidConcurrency::Limit {
            key: key.to_owned(),
            limit,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_limits_are_checked() {
        assert!(is_valid_key(
            "machine:digitalocean:DIGITALOCEAN_ACCESS_TOKEN"
        ));
        assert!(!is_valid_key(""));
        assert!(!is_valid_key(&"k".repeat(MAX_KEY_LEN + 1)));
        assert!(!is_valid_key("tab\there"));
        assert_eq!(check_limit("k", 1), Ok(()));
        let err = check_limit("k", 0).expect_err("zero");
        assert_eq!(
            err.to_string(),
            r#"invalid concurrency limit for key "k": limit must be at least 1, got 0"#
        );
        assert!(matches!(
            check_limit("k", -3),
            Err(InvalidConcurrency::Limit { limit: -3, .. })
        ));
        assert!(matches!(
            check_limit("", 3),
            Err(InvalidConcurrency::Key(_))
        ));
    }
}
