//! Trace export over OTLP/HTTP (protobuf), configured by the standard variables:
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL, `.../v1/traces`) or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (the collector's base URL; `/v1/traces` is added),
//! `OTEL_SERVICE_NAME`, `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_TRACES_SAMPLER`, and the
//! batch processor's `OTEL_BSP_*`. Without an endpoint nothing is installed.
//!
//! The requests go out through the workspace's reqwest. The SDK's batch processor
//! exports from a thread of its own, which has no Tokio reactor: each request is
//! spawned onto the runtime that was current at [`install`] and awaited through its
//! join handle, which needs no reactor.

use std::time::Duration;

use opentelemetry::trace::TracerProvider;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::WithHttpConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

/// The OTLP exporters' default time limit for one export (`OTEL_EXPORTER_OTLP_TIMEOUT`'s
/// default): the built-in clients take it from the exporter, ours from here.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether an endpoint is set (and the SDK not disabled with `OTEL_SDK_DISABLED=true`).
pub(super) fn configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED")
        .is_ok_and(|value| value.trim().eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") || set("OTEL_EXPORTER_OTLP_ENDPOINT"))
}

/// The provider (kept to flush it at exit) and its tracer; `None` when no runtime is
/// current. `service` is the default `service.name`.
pub(super) fn install(service: &str) -> Result<Option<(SdkTracerProvider, SdkTracer)>, String> {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return Err("trace export needs a Tokio runtime when it starts".to_owned());
    };
    let client = reqwest::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|err| format!("cannot build the OTLP HTTP client: {err}"))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(ExportClient { client, runtime })
        .build()
        .map_err(|err| format!("cannot build the OTLP exporter: {err}"))?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service.to_owned());
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    let tracer = provider.tracer("launchcontrol");
    Ok(Some((provider, tracer)))
}

/// reqwest on the runtime captured at [`install`] (see the module's note).
#[derive(Debug)]
struct ExportClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let client = self.client.clone();
        self.runtime
            .spawn(async move {
                let response = client.execute(request).await?;
                let status = response.status();
                let headers = response.headers().clone();
                // A collector's answer is a small protobuf message (partial success).
                let body = response.bytes().await?;
                let mut answer = Response::builder().status(status).body(body)?;
                *answer.headers_mut() = headers;
                Ok::<_, HttpError>(answer)
            })
            .await?
    }
}
