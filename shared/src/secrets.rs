//! Secrets at rest: what LaunchControl must keep in the database but never in clear
//! (a deployment's CA and client keys, docker-machine store entries, which hold driver
//! tokens and SSH keys) is sealed with XChaCha20-Poly1305 under a key that every worker
//! reads from its environment (`LC_SECRET_KEY`, 32 bytes in base64).
//!
//! A sealed value is `version (1 byte) || nonce (24 bytes) || ciphertext+tag`, and is
//! bound to what it belongs to (the associated data, e.g. `machine:<id>`), so a value
//! copied into another row does not open there. Keys never appear in `Debug` output.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// The environment variable that holds the key.
pub const SECRET_KEY_ENV: &str = "LC_SECRET_KEY";

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error(
        "{SECRET_KEY_ENV} is not set: docker-machine state is stored encrypted and every worker needs the same key (32 random bytes in base64, e.g. `head -c 32 /dev/urandom | base64`)"
    )]
    Missing,
    #[error("{SECRET_KEY_ENV} is not 32 bytes in base64 ({0})")]
    Malformed(String),
    #[error(
        "a sealed value could not be opened: it was sealed with another {SECRET_KEY_ENV}, or belongs to another record"
    )]
    Open,
    #[error("a sealed value has an unknown format")]
    Format,
}

/// The key that seals and opens secrets.
#[derive(Clone)]
pub struct SecretKey(XChaCha20Poly1305);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

impl SecretKey {
    /// Parses 32 bytes given in standard base64 (padding optional).
    pub fn parse(text: &str) -> Result<SecretKey, SecretError> {
        let text = text.trim();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .map_err(|err| SecretError::Malformed(err.to_string()))?;
        if bytes.len() != 32 {
            return Err(SecretError::Malformed(format!(
                "{} bytes after decoding",
                bytes.len()
            )));
        }
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes)
            .map_err(|err| SecretError::Malformed(err.to_string()))?;
        Ok(SecretKey(cipher))
    }

    /// The key named by [`SECRET_KEY_ENV`]: `None` when it is not set (a worker without
    /// docker-machine deployments needs none).
    pub fn from_env() -> Result<Option<SecretKey>, SecretError> {
        match std::env::var(SECRET_KEY_ENV) {
            Ok(text) if !text.trim().is_empty() => SecretKey::parse(&text).map(Some),
            _ => Ok(None),
        }
    }

    /// A fresh random key, base64: what `scripts/services.sh` writes for local set-ups.
    pub fn generate_base64() -> String {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        base64::engine::general_purpose::STANDARD.encode(key)
    }

    /// Seals `plain` for the record `context` (e.g. `machine:<id>`).
    pub fn seal(&self, plain: &[u8], context: &str) -> Vec<u8> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .0
            .encrypt(
                &nonce,
                Payload {
                    msg: plain,
                    aad: context.as_bytes(),
                },
            )
            // Encryption fails only for inputs beyond 256 GiB, far over what is stored.
            .unwrap_or_default();
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens what [`SecretKey::seal`] sealed for the same `context`.
    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>, SecretError> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != VERSION {
            return Err(SecretError::Format);
        }
        let nonce = XNonce::from_slice(&sealed[1..1 + NONCE_LEN]);
        self.0
            .decrypt(
                nonce,
                Payload {
                    msg: &sealed[1 + NONCE_LEN..],
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_bound_to_their_record() {
        let key = SecretKey::parse(&SecretKey::generate_base64()).expect("a generated key parses");
        let sealed = key.seal(b"AccessToken=s3cr3t", "machine:1");
        assert!(!sealed.windows(6).any(|w| w == b"s3cr3t"));
        assert_eq!(
            key.open(&sealed, "machine:1").expect("opens"),
            b"AccessToken=s3cr3t"
        );
        assert_eq!(key.open(&sealed, "machine:2"), Err(SecretError::Open));
        let other = SecretKey::parse(&SecretKey::generate_base64()).expect("parses");
        assert_eq!(other.open(&sealed, "machine:1"), Err(SecretError::Open));
        assert_eq!(key.open(b"\x02junk", "machine:1"), Err(SecretError::Format));
        // Two seals of the same text differ (fresh nonce).
        assert_ne!(key.seal(b"x", "c"), key.seal(b"x", "c"));
    }

    #[test]
    fn rejects_malformed_keys_without_echoing_them() {
        assert!(matches!(
            SecretKey::parse("c2hvcnQ="),
            Err(SecretError::Malformed(_))
        ));
        let err = SecretKey::parse("not base64 at all!").expect_err("refused");
        assert!(!err.to_string().contains("not base64 at all"));
        assert_eq!(
            format!(
                "{:?}",
                SecretKey::parse(&SecretKey::generate_base64()).expect("a generated key parses")
            ),
            "SecretKey(***)"
        );
    }
}
