//! A deployment's webhook: the URL that receives each of the deployment's state changes
//! (its own, its machines' and its containers') as a JSON POST signed per the Standard
//! Webhooks 1.0 specification, and the *name* of the environment variable that holds
//! the signing secret. The secret's value lives only in the environment of the process
//! that creates the deployment (checked there) and of the workers (read at each
//! delivery): never in the spec, a row, a job, an event or a log line.
//!
//! ```yaml
//! webhook:
//!   url: https://hooks.example.com/launchcontrol
//!   secret_env: LC_WEBHOOK_SECRET     # holds whsec_ + base64 of 24 to 64 random bytes
//!   max_attempts: 10                  # per delivery, with backoff; then the next one
//! ```

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::check::check_env_var_name;
use super::{SpecError, invalid};
use lc_shared::job::MAX_MAX_ATTEMPTS;

/// Attempts of each delivery when the spec does not say: with the workers' default
/// backoff (1 s doubling, at most 10 min) the last one comes about 8 minutes after the
/// first.
pub const DEFAULT_WEBHOOK_ATTEMPTS: i64 = 10;

/// The prefix of a Standard Webhooks secret; the base64 after it is the HMAC key.
pub const SECRET_PREFIX: &str = "whsec_";

/// Longest webhook URL accepted.
const MAX_URL_BYTES: usize = 2048;

/// Where a deployment's state changes are sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// An `http://` or `https://` URL.
    pub url: String,
    /// The name of the environment variable that holds the secret (`whsec_...`).
    pub secret_env: String,
    /// Attempts of each delivery before it is given up (its job dead); the deployment's
    /// later changes follow.
    #[serde(default = "default_attempts")]
    pub max_attempts: i64,
}

fn default_attempts() -> i64 {
    DEFAULT_WEBHOOK_ATTEMPTS
}

impl WebhookSpec {
    /// What can be checked without the environment: the URL, the variable's name, the
    /// attempts.
    pub(crate) fn validate(&self) -> Result<(), SpecError> {
        check_url(&self.url)?;
        check_env_var_name("webhook.secret_env", &self.secret_env)?;
        if !(1..=MAX_MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(invalid(
                "webhook.max_attempts",
                format!("must be between 1 and {MAX_MAX_ATTEMPTS}"),
            ));
        }
        Ok(())
    }

    /// Checks that this process's environment holds a usable secret under
    /// `secret_env`: where a deployment is created or updated, so that a secret named
    /// but not set is refused before anything is written. Never says what the value is.
    pub fn check_secret_in_env(&self) -> Result<(), SpecError> {
        let field = "webhook.secret_env";
        let value = std::env::var(&self.secret_env).map_err(|_| {
            invalid(
                field,
                format!(
                    "the environment variable {} is not set here; set it (to whsec_ followed by base64 of 24 to 64 random bytes) where you create the deployment and on every worker",
                    self.secret_env
                ),
            )
        })?;
        webhook_key(&value)
            .map(|_| ())
            .map_err(|reason| invalid(field, format!("{}: {reason}", self.secret_env)))
    }
}

/// The HMAC key of a Standard Webhooks secret: the base64 after `whsec_` (padding
/// optional), 24 to 64 bytes. The error says what is wrong, never what the value is.
pub fn webhook_key(secret: &str) -> Result<Vec<u8>, String> {
    let expected = "expected whsec_ followed by base64 of 24 to 64 random bytes, e.g. `echo whsec_$(head -c 32 /dev/urandom | base64)`";
    let Some(encoded) = secret.trim().strip_prefix(SECRET_PREFIX) else {
        return Err(format!("does not start with {SECRET_PREFIX} ({expected})"));
    };
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim_end_matches('='))
        .or_else(|_| {
            base64::engine::general_purpose::STANDARD_NO_PAD.decode(encoded.trim_end_matches('='))
        })
        .map_err(|_| format!("is not valid base64 after {SECRET_PREFIX} ({expected})"))?;
    if !(24..=64).contains(&key.len()) {
        return Err(format!("holds a key of {} bytes ({expected})", key.len()));
    }
    Ok(key)
}

/// `http://` or `https://`, a host, no spaces or control characters.
fn check_url(url: &str) -> Result<(), SpecError> {
    let field = "webhook.url";
    let lower = url.to_ascii_lowercase();
    let Some(rest) = ["https://", "http://"]
        .iter()
        .find_map(|scheme| lower.strip_prefix(scheme))
    else {
        return Err(invalid(
            field,
            format!("{url:?} is not an http:// or https:// URL"),
        ));
    };
    if url.len() > MAX_URL_BYTES {
        return Err(invalid(
            field,
            format!("must be at most {MAX_URL_BYTES} bytes"),
        ));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            field,
            "must not contain spaces or control characters",
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        return Err(invalid(field, format!("{url:?} names no host")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str) -> WebhookSpec {
        WebhookSpec {
            url: url.to_owned(),
            secret_env: "LC_WEBHOOK_SECRET".to_owned(),
            max_attempts: DEFAULT_WEBHOOK_ATTEMPTS,
        }
    }

    #[test]
    fn urls_must_be_http_with_a_host() {
        for good in [
            "http://127.0.0.1:8080/hook",
            "https://hooks.example.com",
            "HTTPS://hooks.example.com/a?b=c",
        ] {
            assert_eq!(spec(good).validate(), Ok(()), "{good}");
        }
        for bad in [
            "ftp://example.com/x",
            "file:///etc/passwd",
            "example.com/hook",
            "http://",
            "http:///path",
            "http://:80/x",
            "http://exa mple.com/",
            "javascript:alert(1)",
        ] {
            let err = spec(bad).validate().expect_err(bad).to_string();
            assert!(err.contains("webhook.url"), "{bad}: {err}");
        }
        let mut named_badly = spec("http://127.0.0.1/");
        named_badly.secret_env = "not a name".into();
        assert!(
            named_badly
                .validate()
                .expect_err("bad name")
                .to_string()
                .contains("webhook.secret_env")
        );
        named_badly.secret_env = "OK".into();
        named_badly.max_attempts = 0;
        assert!(
            named_badly
                .validate()
                .expect_err("no attempts")
                .to_string()
                .contains("webhook.max_attempts")
        );
    }

    #[test]
    fn secrets_are_whsec_base64_of_24_to_64_bytes() {
        // The Standard Webhooks specification's example secret.
        let key = webhook_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").expect("valid");
        assert_eq!(key.len(), 24);
        assert!(webhook_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw==").is_ok());
        let thirty_two = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(
            webhook_key(&format!("whsec_{thirty_two}")).expect("valid"),
            vec![7u8; 32]
        );
        for bad in [
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_",
            "whsec_not base64!",
            "whsec_c2hvcnQ=",
        ] {
            assert!(webhook_key(bad).is_err(), "{bad}");
        }
        // The error says what is wrong, not what the value is.
        let err = webhook_key("whsec_not base64!").expect_err("invalid");
        assert!(!err.contains("not base64!"), "{err}");
    }
}
