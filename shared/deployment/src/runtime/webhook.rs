//! Webhook requests: a deployment's event POSTed as JSON to its webhook URL, signed per
//! the Standard Webhooks 1.0 specification:
//!
//! - `webhook-id`: the event's id, the same on every attempt;
//! - `webhook-timestamp`: the attempt's time, in seconds since the Unix epoch (receivers
//!   refuse times more than five minutes off, so each attempt signs anew);
//! - `webhook-signature`: `v1,` and the base64 HMAC-SHA256 of `id.timestamp.body`,
//!   keyed with the base64-decoded part of the secret after `whsec_`.
//!
//! Only a 2xx answer delivers; anything else (a redirect too: they are not followed),
//! a refused connection or no answer within [`REQUEST_TIMEOUT`] is a failure that the
//! job retries. `https://` URLs are checked against the worker's system CA certificates.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request, Uri};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::Sha256;

/// How long one request may take, from connecting to the end of the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Most of an answer's body that is read (and thrown away).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The `webhook-signature` value of a request: `v1,<base64 HMAC-SHA256 of
/// "id.timestamp.body">`.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length: new_from_slice cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

/// The URL as errors and logs show it: scheme, host, port and path. User info, query
/// and fragment are left out: they may carry tokens.
pub fn display_url(url: &str) -> String {
    match url.parse::<Uri>() {
        Ok(uri) => {
            let port = uri
                .port_u16()
                .map(|port| format!(":{port}"))
                .unwrap_or_default();
            format!(
                "{}://{}{port}{}",
                uri.scheme_str().unwrap_or("?"),
                uri.host().unwrap_or("?"),
                uri.path()
            )
        }
        Err(_) => "(an invalid URL)".to_owned(),
    }
}

/// Why a request did not deliver.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("{url} is not a URL this worker can send to")]
    BadUrl { url: String },
    #[error("{url} answered {status}")]
    Status { url: String, status: u16 },
    #[error("could not send to {url}")]
    Unreachable {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("cannot send to https URLs: {0}")]
    NoTls(String),
}

impl DeliveryError {
    /// Whether trying again cannot help (the URL itself is unusable).
    pub fn is_permanent(&self) -> bool {
        matches!(self, DeliveryError::BadUrl { .. })
    }
}

type Body = Full<Bytes>;

/// The HTTP client of a worker's webhook deliveries: connections are kept and reused.
/// Cheap to clone.
#[derive(Clone)]
pub struct WebhookClient {
    http: Client<HttpConnector, Body>,
    /// `Err` when the worker has no CA certificates to check servers with.
    https: Result<Client<HttpsConnector<HttpConnector>, Body>, String>,
}

impl Default for WebhookClient {
    fn default() -> Self {
        WebhookClient::new()
    }
}

impl WebhookClient {
    pub fn new() -> WebhookClient {
        let builder = || Client::builder(TokioExecutor::new());
        let https = HttpsConnectorBuilder::new()
            .with_native_roots()
            .map(|connector| builder().build(connector.https_or_http().enable_http1().build()))
            .map_err(|err| format!("no CA certificates found on this worker ({err})"));
        WebhookClient {
            http: builder().build_http(),
            https,
        }
    }

    /// POSTs `body` (JSON) to `url`, signed with `key` as the message `id`, stamped now.
    /// `Ok` with the status when it was 2xx.
    pub async fn post(
        &self,
        url: &str,
        id: &str,
        key: &[u8],
        body: Vec<u8>,
    ) -> Result<u16, DeliveryError> {
        let shown = display_url(url);
        let bad_url = || DeliveryError::BadUrl { url: shown.clone() };
        let uri: Uri = url.parse().map_err(|_| bad_url())?;
        if uri.host().is_none() {
            return Err(bad_url());
        }
        let timestamp = chrono::Utc::now().timestamp();
        let request = Request::builder()
            .method(Method::POST)
            .uri(uri.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(
                USER_AGENT,
                concat!("LaunchControl/", env!("CARGO_PKG_VERSION")),
            )
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature(key, id, timestamp, &body))
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| bad_url())?;
        let unreachable =
            |source: Box<dyn std::error::Error + Send + Sync>| DeliveryError::Unreachable {
                url: shown.clone(),
                source,
            };
        let exchange = async {
            let response = match uri.scheme_str() {
                Some("http") => self.http.request(request).await,
                Some("https") => match &self.https {
                    Ok(client) => client.request(request).await,
                    Err(reason) => return Err(DeliveryError::NoTls(reason.clone())),
                },
                _ => return Err(bad_url()),
            }
            .map_err(|err| unreachable(err.into()))?;
            let status = response.status();
            // Read the answer so the connection can be reused; its content is not used.
            let _ = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await;
            Ok(status)
        };
        let status = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| DeliveryError::Timeout {
                url: shown.clone(),
                timeout: REQUEST_TIMEOUT,
            })??;
        if status.is_success() {
            Ok(status.as_u16())
        } else {
            Err(DeliveryError::Status {
                url: shown,
                status: status.as_u16(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification (and of its reference
    /// libraries' tests): this secret, id, time and body give this signature.
    #[test]
    fn signs_as_the_specification_does() {
        let key = crate::spec::webhook::webhook_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .expect("the example secret");
        assert_eq!(
            signature(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn urls_are_shown_without_secrets() {
        assert_eq!(
            display_url("https://user:pw@hooks.example.com:8443/lc?token=abc#x"),
            "https://hooks.example.com:8443/lc"
        );
        assert_eq!(display_url("http://127.0.0.1/"), "http://127.0.0.1/");
        assert_eq!(display_url("not a url"), "(an invalid URL)");
    }

    #[tokio::test]
    async fn urls_it_cannot_send_to_are_permanent_errors() {
        let client = WebhookClient::new();
        for url in ["ftp://127.0.0.1/x", "/relative", "http://"] {
            let err = client
                .post(url, "id", b"key", b"{}".to_vec())
                .await
                .expect_err(url);
            assert!(err.is_permanent(), "{url}: {err}");
        }
    }
}
