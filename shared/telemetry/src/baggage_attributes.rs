//! Copies the tenant from W3C baggage onto every span as it starts.

use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::Span as _;
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};

/// Baggage key carrying the tenant id; absent means the production tenancy.
pub const TENANT_BAGGAGE_KEY: &str = "tenant";
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
