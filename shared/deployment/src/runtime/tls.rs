//! A deployment's TLS material: its CA and the client certificate that docker-machine
//! and the deploy step use to talk to `tcp://` engines. Made once, by the `provision`
//! fan-out, before any machine is created, and handed to every `create`
//! (`--tls-ca-cert` ...), so that parallel creates never generate competing CAs (the
//! real docker-machine's first creates race and overwrite each other's certificates).
//!
//! The CA is either made here (ECDSA P-256, 10 years) or the operator's own, named by
//! the spec (`provider.ca_env`): engines that exist already (the `none` driver) trust
//! that CA, and LaunchControl issues its client certificate from it.
//!
//! The private keys are secrets: they are stored sealed (`tls_sealed`), written only
//! into a call's private store with mode 0600, and never logged or shown.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use lc_shared::secrets::{SecretError, SecretKey};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot make the deployment's certificates")]
    Generate(#[source] rcgen::Error),
    #[error("the CA named by provider.ca_env ({which}) is not usable: {reason}")]
    Ca { which: String, reason: String },
    #[error("the deployment's certificates cannot be read")]
    Secret(#[from] SecretError),
    #[error("the deployment's sealed certificates are malformed")]
    Format(#[source] serde_json::Error),
}

/// The CA certificate (public) and the secrets that go with it.
#[derive(Clone, Serialize, Deserialize)]
pub struct DeploymentTls {
    pub ca_cert: String,
    pub ca_key: String,
    pub client_cert: String,
    pub client_key: String,
}

impl std::fmt::Debug for DeploymentTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeploymentTls")
            .field("ca_cert", &"<public certificate>")
            .field("ca_key", &"***")
            .field("client_key", &"***")
            .finish()
    }
}

/// The part that is sealed.
#[derive(Serialize, Deserialize)]
struct Sealed {
    ca_key: String,
    client_cert: String,
    client_key: String,
}

fn context(deployment_id: Uuid) -> String {
    format!("deployment-tls:{deployment_id}")
}

/// Certificates start a day back (clock skew between hosts) and last ten years.
fn validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(3650);
}

fn client_params(deployment_name: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(
        DnType::CommonName,
        format!("launchcontrol {deployment_name}"),
    );
    params
        .distinguished_name
        .push(DnType::OrganizationName, "LaunchControl");
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut params);
    Ok(params)
}

impl DeploymentTls {
    /// A fresh CA for the deployment and a client certificate signed by it.
    pub fn generate(deployment_name: &str) -> Result<DeploymentTls, TlsError> {
        let make = || -> Result<DeploymentTls, rcgen::Error> {
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(
                DnType::CommonName,
                format!("launchcontrol {deployment_name} CA"),
            );
            params
                .distinguished_name
                .push(DnType::OrganizationName, "LaunchControl");
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            validity(&mut params);
            let ca_key = KeyPair::generate()?;
            let ca_cert = params.self_signed(&ca_key)?;
            let ca_cert_pem = ca_cert.pem();
            let ca_key_pem = ca_key.serialize_pem();
            let issuer = Issuer::new(params, ca_key);
            let client_key = KeyPair::generate()?;
            let client_cert = client_params(deployment_name)?.signed_by(&client_key, &issuer)?;
            Ok(DeploymentTls {
                ca_cert: ca_cert_pem,
                ca_key: ca_key_pem,
                client_cert: client_cert.pem(),
                client_key: client_key.serialize_pem(),
            })
        };
        make().map_err(TlsError::Generate)
    }

    /// The operator's CA (PEM texts) and a client certificate issued from it.
    pub fn from_ca(
        deployment_name: &str,
        ca_cert_pem: &str,
        ca_key_pem: &str,
    ) -> Result<DeploymentTls, TlsError> {
        let ca_error = |which: &str, reason: String| TlsError::Ca {
            which: which.to_owned(),
            reason,
        };
        let ca_key = KeyPair::from_pem(ca_key_pem).map_err(|err| {
            ca_error("key", format!("not a PEM private key rcgen can use: {err}"))
        })?;
        let issuer = Issuer::from_ca_cert_pem(ca_cert_pem, ca_key)
            .map_err(|err| ca_error("certificate", format!("not a PEM CA certificate: {err}")))?;
        let client_key = KeyPair::generate().map_err(TlsError::Generate)?;
        let client_cert = client_params(deployment_name)
            .and_then(|params| params.signed_by(&client_key, &issuer))
            .map_err(|err| ca_error("key", format!("cannot sign with it: {err}")))?;
        Ok(DeploymentTls {
            ca_cert: ca_cert_pem.trim().to_owned() + "\n",
            ca_key: ca_key_pem.trim().to_owned() + "\n",
            client_cert: client_cert.pem(),
            client_key: client_key.serialize_pem(),
        })
    }

    /// The secrets, sealed for this deployment's row.
    pub fn seal(&self, key: &SecretKey, deployment_id: Uuid) -> Vec<u8> {
        let sealed = Sealed {
            ca_key: self.ca_key.clone(),
            client_cert: self.client_cert.clone(),
            client_key: self.client_key.clone(),
        };
        // Serializing three strings cannot fail.
        let plain = serde_json::to_vec(&sealed).unwrap_or_default();
        key.seal(&plain, &context(deployment_id))
    }

    /// The deployment's TLS material from its row's `ca_cert` and `tls_sealed`.
    pub fn open(
        key: &SecretKey,
        deployment_id: Uuid,
        ca_cert: &str,
        sealed: &[u8],
    ) -> Result<DeploymentTls, TlsError> {
        let plain = key.open(sealed, &context(deployment_id))?;
        let sealed: Sealed = serde_json::from_slice(&plain).map_err(TlsError::Format)?;
        Ok(DeploymentTls {
            ca_cert: ca_cert.to_owned(),
            ca_key: sealed.ca_key,
            client_cert: sealed.client_cert,
            client_key: sealed.client_key,
        })
    }
}

/// A PEM given in an environment variable: the text itself, or the path of a file
/// holding it.
pub fn pem_from_env(name: &str) -> Result<String, TlsError> {
    let missing = |reason: String| TlsError::Ca {
        which: name.to_owned(),
        reason,
    };
    let value = std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
        .ok_or_else(|| missing("not set in this worker's environment".into()))?;
    if value.trim_start().starts_with("-----BEGIN") {
        return Ok(value);
    }
    std::fs::read_to_string(value.trim())
        .map_err(|err| missing(format!("cannot read the file it names: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_material_round_trips_sealed_and_hides_keys() {
        let tls = DeploymentTls::generate("demo").expect("generates");
        assert!(tls.ca_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(tls.ca_key.contains("PRIVATE KEY"));
        let key = SecretKey::parse(&SecretKey::generate_base64()).expect("key");
        let id = Uuid::new_v4();
        let sealed = tls.seal(&key, id);
        assert!(!String::from_utf8_lossy(&sealed).contains("PRIVATE KEY"));
        let opened = DeploymentTls::open(&key, id, &tls.ca_cert, &sealed).expect("opens");
        assert_eq!(opened.client_key, tls.client_key);
        assert!(DeploymentTls::open(&key, Uuid::new_v4(), &tls.ca_cert, &sealed).is_err());
        let shown = format!("{tls:?}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    }

    #[test]
    fn an_operator_ca_issues_the_client_certificate() {
        let own = DeploymentTls::generate("fleet").expect("generates");
        let tls = DeploymentTls::from_ca("demo", &own.ca_cert, &own.ca_key).expect("uses it");
        assert_eq!(tls.ca_cert.trim(), own.ca_cert.trim());
        assert!(DeploymentTls::from_ca("demo", &own.ca_cert, "junk").is_err());
        assert!(DeploymentTls::from_ca("demo", "junk", &own.ca_key).is_err());
    }
}
