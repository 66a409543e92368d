//! The four carrier functions: trace context and baggage in and out of HTTP
//! headers and Kafka record headers, checked on the way in.

use std::collections::HashMap;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector};
use rdkafka::message::{Header, Headers, OwnedHeaders};

use crate::check::{self, Carrier};

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
