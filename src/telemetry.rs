//! Logs through `tracing` (compact for people, JSON for pipelines) and, when an OTLP endpoint
//! is configured, the same spans exported to an OpenTelemetry collector.

use anyhow::Context as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{LogConfig, LogFormat, TracingConfig};

/// Holds the span exporter, if any, until [`Telemetry::shutdown`] sends what it has batched.
#[must_use = "call shutdown() on the way out, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Installs the process's subscriber. Call it inside the Tokio runtime: the exporter's gRPC
/// channel lives on it.
pub fn init(log: &LogConfig, tracing: &TracingConfig) -> anyhow::Result<Telemetry> {
    let log_filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&log.filter));
    let provider = match &tracing.otlp_endpoint {
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .with_context(|| format!("tracing.otlp_endpoint {endpoint:?}"))?;
            let resource = Resource::builder().with_service_name(tracing.service_name.clone()).build();
            Some(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
        }
        None => None,
    };
    // Each layer has its own filter: the log's does not decide what is exported.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer().with_tracer(p.tracer("modelgate")).with_filter(EnvFilter::new(&tracing.filter))
    });
    let json = (log.format == LogFormat::Json).then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .with_filter(log_filter())
    });
    let compact = (log.format == LogFormat::Compact)
        .then(|| tracing_subscriber::fmt::layer().compact().with_writer(std::io::stderr).with_filter(log_filter()));
    // A second init (tests start several roles in one process) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(otel).with(json).with(compact).try_init();
    Ok(Telemetry { provider })
}

impl Telemetry {
    /// Exports the spans still batched and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "exporting the last spans failed");
        }
    }
}
