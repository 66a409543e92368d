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
//! whose parent is the caller's context, and [`current_context`] gives the
//! context to inject on the way out.

pub mod check;
mod http_layer;

use std::collections::HashMap;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::propagation::{Extractor, Injector};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub use check::{Carrier, Rejection};
pub use http_layer::{HttpTraceLayer, HttpTraceService};

/// Baggage key carrying the tenant id.
pub use protocol::TENANT_BAGGAGE_KEY;

/// The propagation headers this crate reads; everything else is ignored.
const PROPAGATION_HEADERS: [&str; 3] = ["traceparent", "tracestate", "baggage"];

/// The checked propagation headers of one incoming message.
#[derive(Debug, Default)]
struct Checked {
    fields: HashMap<&'static str, String>,
}

impl Extractor for Checked {
    fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.fields.keys().copied().collect()
    }
}

impl Checked {
    fn from_raw(carrier: Carrier, mut raw: impl FnMut(&'static str) -> Option<Vec<u8>>) -> Self {
        let mut fields = HashMap::new();
        for name in PROPAGATION_HEADERS {
            let Some(bytes) = raw(name) else { continue };
            match check::check_header(name, &bytes) {
                Ok(value) => {
                    fields.insert(name, value);
                }
                Err(rejection) => rejection.record(carrier, name),
            }
        }
        Self { fields }
    }

    fn extract(&self) -> Context {
        opentelemetry::global::get_text_map_propagator(|p| p.extract(self))
    }
}

/// The caller's context from HTTP headers (empty when absent or rejected).
pub fn extract_http(headers: &HeaderMap) -> Context {
    Checked::from_raw(Carrier::Http, |name| {
        // Several `baggage` headers are one list (RFC 9110 field combination).
        let values: Vec<&[u8]> = headers.get_all(name).iter().map(|v| v.as_bytes()).collect();
        (!values.is_empty()).then(|| values.join(&b","[..]))
    })
    .extract()
}

/// Writes `cx`'s trace context and baggage into HTTP headers.
pub fn inject_http(cx: &Context, headers: &mut HeaderMap) {
    struct HttpInjector<'a>(&'a mut HeaderMap);
    impl Injector for HttpInjector<'_> {
        fn set(&mut self, key: &str, value: String) {
            if value.is_empty() {
                return;
            }
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(key.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                self.0.insert(name, value);
            }
        }
    }
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(cx, &mut HttpInjector(headers))
    });
}

/// The producer's context from Kafka record headers (empty when absent or rejected).
pub fn extract_kafka<H: Headers>(headers: Option<&H>) -> Context {
    Checked::from_raw(Carrier::Kafka, |name| {
        protocol::headers::last(headers, name).map(<[u8]>::to_vec)
    })
    .extract()
}

/// Appends `cx`'s trace context and baggage to Kafka record headers.
pub fn inject_kafka(cx: &Context, headers: OwnedHeaders) -> OwnedHeaders {
    struct Collect(Vec<(String, String)>);
    impl Injector for Collect {
        fn set(&mut self, key: &str, value: String) {
            // An empty `tracestate` says nothing; leave the header out.
            if !value.is_empty() {
                self.0.push((key.to_string(), value));
            }
        }
    }
    let mut collected = Collect(Vec::new());
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(cx, &mut collected));
    collected
        .0
        .into_iter()
        .fold(headers, |headers, (key, value)| {
            headers.insert(Header {
                key: &key,
                value: Some(value.as_bytes()),
            })
        })
}

/// The context of the current `tracing` span, baggage included: what to
/// inject into an outgoing request or record.
pub fn current_context() -> Context {
    tracing::Span::current().context()
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
