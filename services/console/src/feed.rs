//! Finished spans as the page sees them: one [`SpanEvent`] per span, from
//! the process's own span sink or from OTLP/HTTP, kept briefly and
//! broadcast to every open page.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue as ProtoKeyValue, any_value};
use prost::Message;
use serde::Serialize;
use tokio::sync::broadcast;

/// `console_spans_received_total{source}`.
const SPANS_RECEIVED: &str = "console_spans_received_total";

/// One finished span, with what the page draws from it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SpanEvent {
    /// Lowercase hex.
    pub trace_id: String,
    /// Lowercase hex.
    pub span_id: String,
    /// Empty for a root.
    pub parent_span_id: String,
    /// The span's name, e.g. `process Waiter-Requests`.
    pub name: String,
    /// `server`, `client`, `producer`, `consumer` or `internal`.
    pub kind: &'static str,
    /// The `service` attribute (the hop), or the exporting `service.name`.
    pub service: String,
    /// The `variant` attribute: `baseline` or a label.
    pub variant: String,
    /// The tenant from baggage, if any.
    pub tenant: Option<String>,
    /// Start, Unix microseconds.
    pub start_us: u64,
    /// Duration, microseconds.
    pub duration_us: u64,
    /// Why a consumer left the record to another (a `skip` span).
    pub skip_reason: Option<String>,
    /// The span's status is an error.
    pub error: bool,
    /// A reply that arrived after its caller gave up.
    pub late: bool,
    /// Partition and offset of a produced or consumed record, the HTTP
    /// status of a call: what the page shows on hover.
    pub detail: Option<String>,
}

/// The spans the console has seen: the most recent `capacity` for a page
/// that opens late, and a broadcast for the pages open now.
#[derive(Clone)]
pub struct Feed {
    recent: Arc<Mutex<VecDeque<Arc<SpanEvent>>>>,
    capacity: usize,
    live: broadcast::Sender<Arc<SpanEvent>>,
}

impl Feed {
    /// A feed keeping `capacity` recent spans.
    pub fn new(capacity: usize) -> Self {
        telemetry::counter_at_zero(
            SPANS_RECEIVED,
            "Finished spans the console received, by source (otlp or this process).",
            &[&[("source", "otlp")], &[("source", "process")]],
        );
        telemetry::counter_at_zero(
            OTLP_REJECTED,
            "OTLP/HTTP exports the console could not decode (answered 400).",
            &[&[]],
        );
        Self {
            recent: Arc::default(),
            capacity,
            live: broadcast::channel(4096).0,
        }
    }

    /// Adds one span: kept, and sent to every open page.
    pub fn publish(&self, span: SpanEvent) {
        let span = Arc::new(span);
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() >= self.capacity {
                recent.pop_front();
            }
            recent.push_back(span.clone());
        }
        // No page open: nothing to do.
        let _ = self.live.send(span);
    }

    /// The recent spans and a receiver for those to come, taken together
    /// so none falls between them.
    pub fn subscribe(&self) -> (Vec<Arc<SpanEvent>>, broadcast::Receiver<Arc<SpanEvent>>) {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let live = self.live.subscribe();
        (recent.iter().cloned().collect(), live)
    }

    /// Publishes the spans `sink` holds, then every one it receives from
    /// now on (subscribed first, so none falls in between; a page drops
    /// the few it may see twice by span id).
    pub fn follow(&self, sink: &telemetry::SpanSink) {
        let mut spans = sink.subscribe();
        let mut held = sink.snapshot();
        held.sort_by_key(|s| s.end_time);
        let skip = held.len().saturating_sub(self.capacity);
        for span in &held[skip..] {
            self.publish(from_sdk(span));
        }
        let feed = self.clone();
        tokio::spawn(async move {
            loop {
                match spans.recv().await {
                    Ok(span) => {
                        metrics::counter!(SPANS_RECEIVED, "source" => "process").increment(1);
                        feed.publish(from_sdk(&span));
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "the console fell behind the span sink");
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
    }
}

/// A span of this process's SDK as the page sees it.
pub fn from_sdk(span: &telemetry::SpanData) -> SpanEvent {
    use opentelemetry::trace::{SpanKind, Status};
    let attribute = |key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    };
    let micros = |t: std::time::SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64)
    };
    let parent = span.parent_span_id;
    SpanEvent {
        trace_id: span.span_context.trace_id().to_string(),
        span_id: span.span_context.span_id().to_string(),
        parent_span_id: match parent == opentelemetry::trace::SpanId::INVALID {
            true => String::new(),
            false => parent.to_string(),
        },
        name: span.name.to_string(),
        kind: match span.span_kind {
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
            SpanKind::Internal => "internal",
        },
        service: attribute("service").unwrap_or_default(),
        variant: attribute("variant").unwrap_or_default(),
        tenant: attribute("tenant"),
        start_us: micros(span.start_time),
        duration_us: span
            .end_time
            .duration_since(span.start_time)
            .map_or(0, |d| d.as_micros() as u64),
        skip_reason: attribute("waiter_bus.skip_reason"),
        error: matches!(span.status, Status::Error { .. }),
        late: attribute("waiter_bus.reply.late").as_deref() == Some("true"),
        detail: detail(|key| attribute(key)),
    }
}

/// `partition 0 @ 12` for a record, `200` for an HTTP call.
fn detail(attribute: impl Fn(&str) -> Option<String>) -> Option<String> {
    match (
        attribute("messaging.destination.partition.id"),
        attribute("messaging.kafka.offset"),
        attribute("http.response.status_code"),
    ) {
        (Some(partition), Some(offset), _) => Some(format!("partition {partition} @ {offset}")),
        (_, _, Some(status)) => Some(format!("HTTP {status}")),
        _ => None,
    }
}

/// `POST /v1/traces`: OTLP/HTTP as a collector or a service exporting
/// straight to the console sends it: protobuf (`application/x-protobuf`)
/// or JSON (`application/json`), gzip-compressed or not (the route's
/// decompression layer undoes the encoding first). Answered as the OTLP
/// specification says: 200 with an `ExportTraceServiceResponse` in the
/// request's encoding (every span is taken, so no partial success), 400
/// with a `Status` naming what could not be decoded, 415 for any other
/// content type.
pub(crate) async fn ingest_otlp(
    State(state): State<crate::AppState>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    let encoding = match content_type.as_deref() {
        None | Some("application/x-protobuf") | Some("application/protobuf") => {
            OtlpEncoding::Protobuf
        }
        Some("application/json") => OtlpEncoding::Json,
        Some(other) => {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("unsupported content type `{other}`: OTLP/HTTP is application/x-protobuf or application/json"),
            )
                .into_response();
        }
    };
    let request = match encoding.decode(&body) {
        Ok(request) => request,
        Err(reason) => {
            metrics::counter!(OTLP_REJECTED).increment(1);
            return encoding.answer(StatusCode::BAD_REQUEST, &OtlpStatus::invalid(reason));
        }
    };
    for resource_spans in request.resource_spans {
        let service_name = resource_spans
            .resource
            .as_ref()
            .and_then(|r| string(&r.attributes, "service.name"))
            .unwrap_or_default();
        for scope_spans in resource_spans.scope_spans {
            for span in scope_spans.spans {
                metrics::counter!(SPANS_RECEIVED, "source" => "otlp").increment(1);
                state.feed.publish(from_otlp(&span, &service_name));
            }
        }
    }
    encoding.answer(StatusCode::OK, &ExportTraceServiceResponse::default())
}

/// Exports the console could not decode (answered 400).
pub const OTLP_REJECTED: &str = "console_otlp_exports_rejected_total";

/// How an OTLP/HTTP body is encoded, and so how its answer must be.
#[derive(Debug, Clone, Copy)]
enum OtlpEncoding {
    Protobuf,
    Json,
}

impl OtlpEncoding {
    fn decode(self, body: &[u8]) -> Result<ExportTraceServiceRequest, String> {
        match self {
            OtlpEncoding::Protobuf => {
                ExportTraceServiceRequest::decode(body).map_err(|e| format!("protobuf: {e}"))
            }
            OtlpEncoding::Json => serde_json::from_slice(body).map_err(|e| format!("JSON: {e}")),
        }
    }

    fn answer<T: Message + Serialize>(
        self,
        status: StatusCode,
        body: &T,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        match self {
            OtlpEncoding::Protobuf => (
                status,
                [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                body.encode_to_vec(),
            )
                .into_response(),
            OtlpEncoding::Json => (
                status,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                serde_json::to_vec(body).unwrap_or_default(),
            )
                .into_response(),
        }
    }
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error answer.
#[derive(Clone, PartialEq, prost::Message, Serialize)]
struct OtlpStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

impl OtlpStatus {
    /// `INVALID_ARGUMENT` (3), with what was wrong.
    fn invalid(message: String) -> Self {
        Self { code: 3, message }
    }
}

fn string(attributes: &[ProtoKeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    Some(match value.value.as_ref()? {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::BoolValue(b) => b.to_string(),
        any_value::Value::DoubleValue(d) => d.to_string(),
        _ => return None,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP span as the page sees it.
pub fn from_otlp(
    span: &opentelemetry_proto::tonic::trace::v1::Span,
    service_name: &str,
) -> SpanEvent {
    let attribute = |key: &str| string(&span.attributes, key);
    SpanEvent {
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        parent_span_id: hex(&span.parent_span_id),
        name: span.name.clone(),
        kind: match span.kind {
            2 => "server",
            3 => "client",
            4 => "producer",
            5 => "consumer",
            _ => "internal",
        },
        service: attribute("service").unwrap_or_else(|| service_name.to_string()),
        variant: attribute("variant").unwrap_or_default(),
        tenant: attribute("tenant"),
        start_us: span.start_time_unix_nano / 1_000,
        duration_us: span
            .end_time_unix_nano
            .saturating_sub(span.start_time_unix_nano)
            / 1_000,
        skip_reason: attribute("waiter_bus.skip_reason"),
        // STATUS_CODE_ERROR
        error: span.status.as_ref().is_some_and(|s| s.code == 2),
        late: attribute("waiter_bus.reply.late").as_deref() == Some("true"),
        detail: detail(|key| attribute(key)),
    }
}
