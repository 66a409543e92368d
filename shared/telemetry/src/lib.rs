//! Telemetry for every waiter-bus process: traces, logs and metrics set up in
//! one call, flushed by one guard.
//!
//! Start with [`init`]. It installs, once per process:
//!
//! - the global propagator: W3C trace context + W3C baggage, the only format
//!   spoken over HTTP and Kafka alike;
//! - a tracer provider whose resource names the service, version, instance and
//!   variant, with one span processor that copies the tenant from baggage
//!   onto every span ([`BaggageAttributes`]) and passes finished spans to a
//!   [`SpanSink`] keeping recent spans in memory (for tests and the demo's
//!   terminal waterfall) and to an OTLP exporter when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-specific variable) is set;
//! - the `tracing` subscriber: a fmt layer filtered by `RUST_LOG` plus
//!   tracing-opentelemetry, so `tracing` spans are OpenTelemetry spans
//!   whatever the log level;
//! - the Prometheus recorder behind [`metrics_handler`] (`GET /metrics`).
//!
//! Later calls in the same process (several services in one test binary or in
//! the demo) return the same [`Telemetry`]; the first caller's identity names
//! the process resource, so spans also carry `service` and `variant`
//! attributes set by the code that starts them.

mod baggage_attributes;
mod log_lines;
mod log_pipeline;
mod metrics_exporter;
mod per_service;
mod sink;

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::propagation::TextMapCompositePropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::{BatchLogProcessor, SdkLoggerProvider};
use opentelemetry_sdk::propagation::{BaggagePropagator, TraceContextPropagator};
use opentelemetry_sdk::trace::{BatchSpanProcessor, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use baggage_attributes::SpanPipeline;
pub use baggage_attributes::{BaggageAttributes, TENANT_ATTRIBUTE, TENANT_BAGGAGE_KEY};
use log_lines::WithTraceIds;
use log_pipeline::LogPipeline;
pub use metrics_exporter::{
    counter_at_zero, metrics_handler, render_metrics, render_metrics_of, service_metrics_handler,
};
use per_service::PerService;
pub use sink::{SpanSink, SpanSinkTimeout};
use std::io::IsTerminal;

/// Re-exported so callers inspect spans without naming the SDK themselves.
pub use opentelemetry_sdk::trace::SpanData;

/// The semantic conventions every span follows: 1.42.0 (the version the
/// `opentelemetry-semantic-conventions` crate in use is generated from).
pub const SEMCONV_SCHEMA_URL: &str = opentelemetry_semantic_conventions::SCHEMA_URL;

/// Span attribute naming the service that made the span.
pub const SERVICE_ATTRIBUTE: &str = "service";
/// Span attribute naming the variant (`baseline` or a label such as `sbx-123`).
pub const VARIANT_ATTRIBUTE: &str = "variant";
/// The variant label of the shared baseline.
pub const BASELINE_VARIANT: &str = protocol::BASELINE;

/// Who this process is, for the resource and for logs.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `service.name`, e.g. `waiter`.
    pub service: String,
    /// `service.version`.
    pub version: String,
    /// Variant label; `baseline` for the shared baseline.
    pub variant: String,
    /// Where logs go: stdout for services, nowhere for tests unless `TEST_LOG` is set.
    pub log_output: LogOutput,
    /// How many finished spans the in-memory sink keeps (oldest dropped first);
    /// 0 keeps none, which is what a load-tested service wants.
    pub span_sink_capacity: usize,
    /// Services this process runs besides itself (the demo runs them all):
    /// spans whose `service` attribute names one are exported under that
    /// `service.name`, so one process still shows as the services it runs.
    pub hosts: Vec<String>,
}

/// Where the fmt layer writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOutput {
    /// Human-readable lines on stdout.
    Stdout,
    /// Lines on stderr (for CLIs whose stdout is data).
    Stderr,
    /// No log lines (spans and metrics still work).
    Off,
}

impl TelemetryConfig {
    /// A service's configuration: logs on stdout, no span sink.
    pub fn service(service: &str, version: &str, variant: &str) -> Self {
        Self {
            service: service.to_string(),
            version: version.to_string(),
            variant: variant.to_string(),
            log_output: LogOutput::Stdout,
            span_sink_capacity: 0,
            hosts: Vec::new(),
        }
    }

    /// A test process: logs only when `TEST_LOG` is set, a large span sink.
    pub fn for_tests() -> Self {
        Self {
            service: "test".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            variant: BASELINE_VARIANT.into(),
            log_output: if std::env::var_os("TEST_LOG").is_some() {
                LogOutput::Stderr
            } else {
                LogOutput::Off
            },
            span_sink_capacity: 200_000,
            hosts: Vec::new(),
        }
    }

    /// The same, hosting every waiter-bus service (see [`Self::hosts`]).
    pub fn hosting_every_service(mut self) -> Self {
        self.hosts = protocol::Service::ALL
            .iter()
            .map(|s| s.as_str().to_string())
            .collect();
        self
    }
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built from the `OTEL_*` variables.
    #[error("OTLP exporter: {0}")]
    Otlp(String),
    /// The Prometheus recorder could not be installed.
    #[error("Prometheus recorder: {0}")]
    Metrics(String),
}

/// The process's telemetry. Cheap to clone; [`Telemetry::shutdown`] flushes.
#[derive(Clone, Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    /// Exports log events over OTLP, when an endpoint is configured.
    logs: Option<SdkLoggerProvider>,
    spans: SpanSink,
    otlp_enabled: bool,
}

static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();

/// Installs telemetry for this process, or returns what is already installed.
pub fn init(config: TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    if let Some(existing) = TELEMETRY.get() {
        return Ok(existing.clone());
    }
    let built = build(&config)?;
    // Two threads may race to here in a test binary; the loser's provider is
    // dropped unused and both get the winner.
    let telemetry = TELEMETRY.get_or_init(|| {
        install_globals(&config, &built);
        built
    });
    Ok(telemetry.clone())
}

fn build(config: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
    metrics_exporter::install()?;
    let resource = Resource::builder()
        .with_service_name(config.service.clone())
        .with_attributes([
            KeyValue::new("service.version", config.version.clone()),
            KeyValue::new("service.instance.id", instance_id().to_string()),
            KeyValue::new("waiter_bus.variant", config.variant.clone()),
        ])
        .build();
    let spans = SpanSink::new(config.span_sink_capacity);
    let otlp_enabled = otlp_endpoint_configured(Signal::Traces);
    // The process's own name first, then each service it hosts.
    let own = std::iter::once(config.service.as_str());
    let hosted = config.hosts.iter().map(String::as_str);
    let names: Vec<&str> = own.chain(hosted.filter(|h| *h != config.service)).collect();
    let exporters = match otlp_enabled {
        true => PerService::build(&names, || {
            Ok::<_, TelemetryError>(BatchSpanProcessor::builder(otlp_exporter()?).build())
        })?,
        false => PerService::none(),
    };
    let logs = match otlp_endpoint_configured(Signal::Logs) {
        true => {
            let exporters = PerService::build(&names, || {
                Ok::<_, TelemetryError>(BatchLogProcessor::builder(otlp_log_exporter()?).build())
            })?;
            Some(
                SdkLoggerProvider::builder()
                    .with_resource(resource.clone())
                    .with_log_processor(LogPipeline { exporters })
                    .build(),
            )
        }
        false => None,
    };
    let builder = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_span_processor(SpanPipeline {
            sink: (config.span_sink_capacity > 0).then(|| spans.clone()),
            exporters,
        });
    Ok(Telemetry {
        provider: builder.build(),
        logs,
        spans,
        otlp_enabled,
    })
}

fn install_globals(config: &TelemetryConfig, telemetry: &Telemetry) {
    opentelemetry::global::set_text_map_propagator(TextMapCompositePropagator::new(vec![
        Box::new(TraceContextPropagator::new()),
        Box::new(BaggagePropagator::new()),
    ]));
    opentelemetry::global::set_tracer_provider(telemetry.provider.clone());
    // Every span follows one pinned version of the semantic conventions,
    // named by the scope's schema URL so a backend can translate.
    let tracer = telemetry.provider.tracer_with_scope(
        opentelemetry::InstrumentationScope::builder("waiter-bus")
            .with_version(config.version.clone())
            .with_schema_url(SEMCONV_SCHEMA_URL)
            .build(),
    );
    // RUST_LOG chooses which log lines are printed, never which spans exist:
    // a span disabled by the log level would break the trace it belongs to
    // (its context is what the next hop's `traceparent` carries).
    let log_filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(QUIET_DEPENDENCIES));
    // Plain lines carry the trace and span id of the span they happen in,
    // so a log line leads to its trace; colour only on a terminal.
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let writer = match config.log_output {
        LogOutput::Stdout => Some((
            BoxMakeWriter::new(std::io::stdout),
            std::io::stdout().is_terminal(),
        )),
        LogOutput::Stderr => Some((
            BoxMakeWriter::new(std::io::stderr),
            std::io::stderr().is_terminal(),
        )),
        LogOutput::Off => None,
    };
    let fmt = writer.map(|(writer, terminal)| {
        tracing_subscriber::fmt::layer()
            .with_writer(writer)
            .with_ansi(terminal)
            .event_format(WithTraceIds(tracing_subscriber::fmt::format()))
            .with_filter(log_filter)
    });
    // Log events over OTLP, with the trace context of the span they happen
    // in (the tracing layer makes it the current OpenTelemetry context).
    // Never the exporters' own clients: their logs would be exported by
    // the exporter that logged them.
    let otlp_logs = telemetry.logs.as_ref().map(|logs| {
        opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(logs).with_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new(QUIET_DEPENDENCIES))
                .add_directive("opentelemetry=off".parse().expect("a valid directive"))
                .add_directive("opentelemetry_sdk=off".parse().expect("a valid directive"))
                .add_directive("opentelemetry_otlp=off".parse().expect("a valid directive")),
        )
    });
    // Only the attributes the spans set: the layer's defaults add source
    // location (`code.*`), thread, level, target and busy/idle time to
    // every span, which costs a per-record share of the pipeline's CPU and
    // nothing a trace reader here needs.
    let spans = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_level(false)
        .with_target(false)
        .with_tracked_inactivity(false)
        .with_filter(EnvFilter::new(QUIET_DEPENDENCIES));
    // A subscriber may already be installed by the embedding program; keeping
    // theirs is the polite choice, and spans still reach the provider through
    // the global tracer.
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(spans)
        .with(otlp_logs)
        .try_init();
}

/// Our own spans and logs at `info`; the HTTP and gRPC clients' chatter only
/// when it matters.
const QUIET_DEPENDENCIES: &str = "info,rdkafka=warn,h2=warn,tonic=warn,hyper=warn,reqwest=warn";

fn otlp_endpoint_configured(signal: Signal) -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        signal.variable("ENDPOINT").as_str(),
    ]
    .iter()
    .any(|var| std::env::var(var).is_ok_and(|v| !v.trim().is_empty()))
}

/// A kind of telemetry exported over OTLP; each may have its own variables.
#[derive(Debug, Clone, Copy)]
enum Signal {
    Traces,
    Logs,
}

impl Signal {
    /// The signal-specific form of `OTEL_EXPORTER_OTLP_{what}`.
    fn variable(self, what: &str) -> String {
        let signal = match self {
            Signal::Traces => "TRACES",
            Signal::Logs => "LOGS",
        };
        format!("OTEL_EXPORTER_OTLP_{signal}_{what}")
    }

    /// Whether it goes over gRPC (`true`) or http/protobuf, as
    /// `OTEL_EXPORTER_OTLP_PROTOCOL` (or the signal's own variable) says.
    fn grpc(self) -> Result<bool, TelemetryError> {
        let protocol = std::env::var(self.variable("PROTOCOL"))
            .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .unwrap_or_else(|_| "grpc".into());
        match protocol.trim() {
            "grpc" => Ok(true),
            "http/protobuf" => Ok(false),
            other => Err(TelemetryError::Otlp(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other} is not supported; use grpc or http/protobuf"
            ))),
        }
    }
}

/// The OTLP span exporter, speaking the protocol the variables name.
/// Endpoint, headers, timeout and compression come from the standard
/// variables, read by the exporter itself.
fn otlp_exporter() -> Result<opentelemetry_otlp::SpanExporter, TelemetryError> {
    use opentelemetry_otlp::{SpanExporter, WithExportConfig};
    let built = match Signal::Traces.grpc()? {
        true => SpanExporter::builder().with_tonic().build(),
        false => SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build(),
    };
    built.map_err(|e| TelemetryError::Otlp(e.to_string()))
}

/// The OTLP log exporter, likewise.
fn otlp_log_exporter() -> Result<opentelemetry_otlp::LogExporter, TelemetryError> {
    use opentelemetry_otlp::{LogExporter, WithExportConfig};
    let built = match Signal::Logs.grpc()? {
        true => LogExporter::builder().with_tonic().build(),
        false => LogExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .build(),
    };
    built.map_err(|e| TelemetryError::Otlp(e.to_string()))
}

/// This process's `service.instance.id`: the host name (`HOSTNAME`, a pod's
/// name in Kubernetes) and a random suffix, fixed for the process's life.
/// Whatever else names the instance (a waiter's replies) uses this, so a
/// reply can be matched to the spans and metrics of whoever sent it.
pub fn instance_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
        format!("{host}-{:08x}", rand_suffix())
    })
}

// Distinct across restarts and across processes started at once.
fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish() as u32
}

impl Telemetry {
    /// Finished spans kept in memory (empty when the sink capacity is 0).
    pub fn spans(&self) -> &SpanSink {
        &self.spans
    }

    /// Whether spans are also exported over OTLP.
    pub fn otlp_enabled(&self) -> bool {
        self.otlp_enabled
    }

    /// Flushes spans to every exporter and shuts the provider down, waiting at
    /// most `timeout`. Call it last, after the service has drained.
    pub fn shutdown(&self, timeout: Duration) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!(error = %e, "flushing spans failed");
        }
        if let Err(e) = self.provider.shutdown_with_timeout(timeout) {
            tracing::warn!(error = %e, "shutting the tracer provider down failed");
        }
        if let Some(logs) = &self.logs {
            // Its own warnings would go to the provider being shut down.
            if let Err(e) = logs.shutdown_with_timeout(timeout) {
                eprintln!("shutting the logger provider down failed: {e}");
            }
        }
    }
}
