//! W3C trace context and baggage across HTTP and Kafka, with the edge cases
//! handled once.
//!
//! Start with the four carrier functions: [`extract_http`] / [`inject_http`]
//! for `http::HeaderMap` (axum requests, reqwest requests) and
//! [`extract_kafka`] / [`inject_kafka`] for rdkafka headers. They all use the
//! global propagator that `telemetry::init` installs. Before extraction the
//! incoming `traceparent` and `baggage` are checked ([`check`]): a malformed
//! `traceparent`, or a `baggage` over the W3C limits (64 members, 8192 bytes)
//! or not UTF-8, is dropped with a warning and a count in
//! `propagation_headers_rejected_total{carrier,header,reason}`; the request
//! itself always goes on. [`HttpTraceLayer`] makes a SERVER span per request
//! whose parent is the caller's context, and [`traced_client`] wraps an
//! HTTP client so every call is a CLIENT span carrying its context on;
//! [`current_context`] gives the context to inject into a Kafka record.

mod carriers;
pub mod check;
mod http_client;
mod http_layer;

use opentelemetry::Context;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::TraceContextExt;
use rdkafka::message::Headers;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use carriers::{extract_http, extract_kafka, inject_http, inject_kafka};
pub use check::{Carrier, Rejection};
pub use http_client::traced_client;
pub use http_layer::{
    HTTP_SERVER_DURATION, HttpTraceLayer, HttpTraceService, describe_http_server_metrics,
};
/// The client [`traced_client`] returns, and its error.
pub use reqwest_middleware::{ClientWithMiddleware, Error as ClientError, RequestBuilder};

/// Baggage key carrying the tenant id.
pub use protocol::TENANT_BAGGAGE_KEY;

/// The context of the current `tracing` span, baggage included: what to
/// inject into an outgoing request or record.
pub fn current_context() -> Context {
    tracing::Span::current().context()
}

/// A context whose (remote, made-up) parent is not sampled: work started
/// under it records no spans with the SDK's parent-based sampler, and what
/// it calls is told so in `traceparent`, so the callee records none
/// either. For routine background calls that would otherwise each be a
/// trace of their own.
pub fn unsampled_context() -> Context {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
    use std::sync::atomic::{AtomicU64, Ordering};
    // Ids only need to be valid and distinct; nothing records them.
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let parent = SpanContext::new(
        TraceId::from(((nanos as u128) << 64) | u128::from(n)),
        SpanId::from(n | 1 << 63),
        TraceFlags::default(),
        true,
        TraceState::default(),
    );
    Context::new().with_remote_span_context(parent)
}

/// The tenant in `cx`'s baggage, if any.
pub fn tenant(cx: &Context) -> Option<String> {
    cx.baggage()
        .get(TENANT_BAGGAGE_KEY)
        .map(|value| value.to_string())
        .filter(|tenant| !tenant.is_empty())
}

/// A Kafka header's value as UTF-8 text, if present and valid.
pub fn kafka_header<'a, H: Headers>(headers: Option<&'a H>, name: &str) -> Option<&'a str> {
    protocol::headers::last_str(headers, name)
}
