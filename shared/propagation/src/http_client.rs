//! Outgoing HTTP calls, each in a CLIENT span: reqwest-tracing's middleware
//! opens and closes the span and records the outcome; inside it, the
//! project's carrier injects that span's context, so the callee's SERVER
//! span is the CLIENT span's child, as Jaeger expects a hop to look.

use std::sync::Arc;

use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Extension, Middleware, Next};
use reqwest_tracing::{ReqwestOtelSpanBackend, TracingMiddleware};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// `client` with every call in a CLIENT span of `service` running as
/// `variant`, carrying its trace context (and the caller's baggage).
pub fn traced_client(
    client: reqwest::Client,
    service: &str,
    variant: &str,
) -> ClientWithMiddleware {
    ClientBuilder::new(client)
        .with_init(Extension(Caller {
            service: service.into(),
            variant: variant.into(),
        }))
        .with(TracingMiddleware::<ClientSpan>::new())
        .with(InjectTraceContext)
        .build()
}

/// Who makes a call: named on its CLIENT span, so the span is exported
/// under the caller's `service.name`.
#[derive(Debug, Clone)]
struct Caller {
    service: Arc<str>,
    variant: Arc<str>,
}

/// The CLIENT span's shape: the HTTP client conventions' attributes, typed
/// (`server.port` and the status code as integers), named by the method
/// alone (a path could be unbounded; `url.full` has it).
struct ClientSpan;

impl ReqwestOtelSpanBackend for ClientSpan {
    fn on_request_start(
        request: &reqwest::Request,
        extensions: &mut http::Extensions,
    ) -> tracing::Span {
        let caller = extensions.get::<Caller>();
        let url = request.url();
        let method = request.method().as_str();
        tracing::info_span!(
            "http.client",
            otel.name = method,
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            http.request.method = method,
            http.response.status_code = tracing::field::Empty,
            url.full = %url,
            url.scheme = url.scheme(),
            server.address = url.host_str().unwrap_or_default(),
            server.port = url.port_or_known_default().map(i64::from).unwrap_or_default(),
            error.message = tracing::field::Empty,
            error.cause_chain = tracing::field::Empty,
            service = caller.map(|c| &*c.service).unwrap_or_default(),
            variant = caller.map(|c| &*c.variant).unwrap_or_default(),
        )
    }

    fn on_request_end(
        span: &tracing::Span,
        outcome: &reqwest_middleware::Result<reqwest::Response>,
        _: &mut http::Extensions,
    ) {
        // Not reqwest-tracing's default: it records the status as a `u16`,
        // which `tracing` hands on as text, and a second record would add
        // the attribute twice rather than replace it.
        let status = match outcome {
            Ok(response) => Some(response.status()),
            Err(e) => e.status(),
        };
        if let Some(status) = status {
            span.record("http.response.status_code", i64::from(status.as_u16()));
        }
        // A client sees any 4xx or 5xx as its call failing.
        if status.is_none_or(|s| s.is_client_error() || s.is_server_error()) {
            span.record("otel.status_code", "ERROR");
        }
        if let Err(e) = outcome {
            span.record("error.message", e.to_string());
            span.record("error.cause_chain", format!("{e:?}"));
        }
    }
}

/// Injects the current (CLIENT) span's trace context. Baggage goes on only
/// as the caller put it on the request (by [`crate::inject_http`]): the
/// span's context holds whatever baggage arrived, which the gateway, for
/// one, may have decided not to pass on.
struct InjectTraceContext;

#[async_trait::async_trait]
impl Middleware for InjectTraceContext {
    async fn handle(
        &self,
        mut request: reqwest::Request,
        extensions: &mut http::Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let headers = request.headers_mut();
        let callers_baggage = headers.remove(protocol::headers::BAGGAGE);
        crate::inject_http(&tracing::Span::current().context(), headers);
        headers.remove(protocol::headers::BAGGAGE);
        if let Some(baggage) = callers_baggage {
            headers.insert(protocol::headers::BAGGAGE, baggage);
        }
        next.run(request, extensions).await
    }
}
