//! A tower layer that gives every HTTP request a SERVER span parented on the
//! caller's trace context.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use axum::extract::MatchedPath;
use http::{Request, Response};
use tower::{Layer, Service};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Paths scraped or probed often enough that a span each would drown the
/// traces that matter.
const UNTRACED_PATHS: [&str; 3] = ["/metrics", "/healthz", "/readyz"];

/// Wraps a service so each request runs inside a SERVER span named
/// `METHOD route`, with `service` and `variant` attributes, the caller's
/// context as parent and its baggage in scope for everything downstream.
#[derive(Debug, Clone)]
pub struct HttpTraceLayer {
    service: Arc<str>,
    variant: Arc<str>,
}

impl HttpTraceLayer {
    /// A layer for `service` running as `variant`.
    pub fn new(service: &str, variant: &str) -> Self {
        Self {
            service: service.into(),
            variant: variant.into(),
        }
    }
}

impl<S> Layer<S> for HttpTraceLayer {
    type Service = HttpTraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpTraceService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`HttpTraceLayer`] produces.
#[derive(Debug, Clone)]
pub struct HttpTraceService<S> {
    inner: S,
    layer: HttpTraceLayer,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for HttpTraceService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let path = request.uri().path();
        if UNTRACED_PATHS.contains(&path) {
            return Box::pin(self.inner.call(request));
        }
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map(|m| m.as_str().to_string())
            .unwrap_or_else(|| path.to_string());
        let method = request.method().to_string();
        let span = tracing::info_span!(
            "http.server",
            otel.name = format!("{method} {route}"),
            otel.kind = "server",
            http.request.method = %method,
            http.route = %route,
            url.path = %path,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            service = %self.layer.service,
            variant = %self.layer.variant,
        );
        // The parent must be set before the span is first entered.
        let _ = span.set_parent(crate::carriers::extract_http(request.headers()));
        let future = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let result = future.await;
                if let Ok(response) = &result {
                    let status = response.status();
                    let current = tracing::Span::current();
                    current.record("http.response.status_code", status.as_u16());
                    if status.is_server_error() {
                        current.record("otel.status_code", "ERROR");
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}
