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
use crate::per_service::PerService;

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
///
/// Exporting, it routes each span by its `service` attribute to that
/// service's own batch processor, whose resource names the service: a
/// process hosting several services (the demo, `load --embedded`) then
/// shows as several services in Jaeger, with a dependency graph between
/// them, as it would deployed. Spans of no hosted service go out under the
/// process's own name.
#[derive(Debug)]
pub(crate) struct SpanPipeline {
    /// Kept for tests and the demo; `None` when the sink keeps nothing.
    pub(crate) sink: Option<SpanSink>,
    /// The batch processors exporting over OTLP, by the `service` span
    /// attribute; none when no OTLP endpoint is configured.
    pub(crate) exporters: PerService<BatchSpanProcessor>,
}

impl SpanPipeline {
    fn exporter_for(&self, span: &SpanData) -> Option<&BatchSpanProcessor> {
        let service = span
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == crate::SERVICE_ATTRIBUTE)
            .map(|kv| kv.value.as_str());
        self.exporters.for_service(service.as_deref())
    }
}

impl SpanProcessor for SpanPipeline {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        BaggageAttributes.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        match (&self.sink, self.exporter_for(&span)) {
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
        self.exporters.on_all(BatchSpanProcessor::force_flush)
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.exporters
            .on_all(|exporter| exporter.shutdown_with_timeout(timeout))
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.exporters
            .set_resource(resource, BatchSpanProcessor::set_resource);
    }
}
