//! The process's one span processor: copies the tenant from W3C baggage
//! onto every span as it starts, and hands finished spans to the in-memory
//! sink and the OTLP exporter.

use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::Span as _;
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchSpanProcessor, Span, SpanData, SpanProcessor};

use crate::SpanSink;

/// Baggage key carrying the tenant id; absent means the production tenancy
/// (defined by the `protocol` crate).
pub use protocol::TENANT_BAGGAGE_KEY;
/// Span attribute the tenant is copied to.
pub const TENANT_ATTRIBUTE: &str = "tenant";

/// Span processor that sets [`TENANT_ATTRIBUTE`] from the baggage in the
/// span's parent context, so every span of a tenant's request is findable by
/// tenant without each call site remembering to add it.
#[derive(Debug, Default, Clone, Copy)]
pub struct BaggageAttributes;

impl SpanProcessor for BaggageAttributes {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        if let Some(tenant) = cx.baggage().get(TENANT_BAGGAGE_KEY) {
            span.set_attribute(KeyValue::new(TENANT_ATTRIBUTE, tenant.to_string()));
        }
    }

    fn on_end(&self, _span: SpanData) {}

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: std::time::Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Everything done with spans, as one processor. The SDK hands each
/// finished span to every registered processor and clones it for each one
/// but the last; with a tenant copier, a sink and an exporter registered
/// separately that was two deep copies of every span's attributes and
/// events, the largest single cost of a traced record. As one processor a
/// span is copied only when both the sink and the exporter keep it.
#[derive(Debug)]
pub(crate) struct SpanPipeline {
    /// Kept for tests and the demo; `None` when the sink keeps nothing.
    pub(crate) sink: Option<SpanSink>,
    /// Batches spans for OTLP; `None` when no endpoint is configured.
    pub(crate) exporter: Option<BatchSpanProcessor>,
}

impl SpanProcessor for SpanPipeline {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        BaggageAttributes.on_start(span, cx);
        if let Some(exporter) = &self.exporter {
            exporter.on_start(span, cx);
        }
    }

    fn on_end(&self, span: SpanData) {
        match (&self.sink, &self.exporter) {
            (Some(sink), Some(exporter)) => {
                sink.on_end(span.clone());
                exporter.on_end(span);
            }
            (Some(sink), None) => sink.on_end(span),
            (None, Some(exporter)) => exporter.on_end(span),
            (None, None) => {}
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        match &self.exporter {
            Some(exporter) => exporter.force_flush(),
            None => Ok(()),
        }
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        match &self.exporter {
            Some(exporter) => exporter.shutdown_with_timeout(timeout),
            None => Ok(()),
        }
    }

    fn set_resource(&mut self, resource: &Resource) {
        if let Some(exporter) = &mut self.exporter {
            exporter.set_resource(resource);
        }
    }
}
