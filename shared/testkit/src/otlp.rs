//! A real OTLP receiver for tests, for traces and logs: the upstream
//! protocol's generated gRPC services (`opentelemetry-proto`, tonic) and the
//! `POST /v1/traces` and `POST /v1/logs` routes of OTLP/HTTP with protobuf
//! bodies, each on a loopback port 0.
//!
//! Point a process at it with `OTEL_EXPORTER_OTLP_ENDPOINT` set to
//! [`OtlpReceiver::grpc_endpoint`] or [`OtlpReceiver::http_endpoint`] (and
//! `OTEL_EXPORTER_OTLP_PROTOCOL` to `grpc` or `http/protobuf`), then wait
//! for what it sent with [`OtlpReceiver::wait_for`]. Nothing of the
//! project's own telemetry code is used to decode: a span arrives here only
//! if the exporter really sent it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio_util::sync::{CancellationToken, DropGuard};

/// One span as received, with where it came from.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `service.name` of the resource that sent it.
    pub service_name: String,
    /// `grpc` or `http/protobuf`.
    pub protocol: &'static str,
    /// The schema URL its scope declared (the semantic conventions version).
    pub schema_url: String,
    /// The span, as the protocol defines it.
    pub span: Span,
}

impl ReceivedSpan {
    /// The trace id in lowercase hex.
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    /// A string rendering of attribute `key`, if the span has it.
    pub fn attribute(&self, key: &str) -> Option<String> {
        attribute(&self.span.attributes, key)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    let value = attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    Some(match value.value.as_ref()? {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::DoubleValue(d) => d.to_string(),
        any_value::Value::BoolValue(b) => b.to_string(),
        other => format!("{other:?}"),
    })
}

/// One log record as received, with the service that sent it.
#[derive(Debug, Clone)]
pub struct ReceivedLog {
    /// `service.name` of the resource that sent it.
    pub service_name: String,
    /// The record, as the protocol defines it.
    pub record: LogRecord,
}

impl ReceivedLog {
    /// The body, when it is a string.
    pub fn body(&self) -> Option<&str> {
        match self.record.body.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s),
            _ => None,
        }
    }

    /// The trace id in lowercase hex; empty when the record has none.
    pub fn trace_id(&self) -> String {
        hex(&self.record.trace_id)
    }
}

#[derive(Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    logs: Arc<Mutex<Vec<ReceivedLog>>>,
    arrived: Arc<tokio::sync::Notify>,
}

impl Received {
    fn add_logs(&self, request: ExportLogsServiceRequest) {
        let mut logs = self.logs.lock().expect("receiver lock");
        for resource_logs in request.resource_logs {
            let service_name = resource_logs
                .resource
                .as_ref()
                .and_then(|r| attribute(&r.attributes, "service.name"))
                .unwrap_or_default();
            for scope_logs in resource_logs.scope_logs {
                for record in scope_logs.log_records {
                    logs.push(ReceivedLog {
                        service_name: service_name.clone(),
                        record,
                    });
                }
            }
        }
        drop(logs);
        self.arrived.notify_waiters();
    }
}

#[tonic::async_trait]
impl LogsService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.add_logs(request.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

impl Received {
    fn add(&self, request: ExportTraceServiceRequest, protocol: &'static str) {
        let mut spans = self.spans.lock().expect("receiver lock");
        for resource_spans in request.resource_spans {
            let service_name = resource_spans
                .resource
                .as_ref()
                .and_then(|r| attribute(&r.attributes, "service.name"))
                .unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    spans.push(ReceivedSpan {
                        service_name: service_name.clone(),
                        protocol,
                        schema_url: scope_spans.schema_url.clone(),
                        span,
                    });
                }
            }
        }
        drop(spans);
        self.arrived.notify_waiters();
    }
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.add(request.into_inner(), "grpc");
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// A running receiver; dropping it stops both listeners.
pub struct OtlpReceiver {
    grpc_port: u16,
    http_port: u16,
    received: Received,
    _stop: DropGuard,
}

impl OtlpReceiver {
    /// Starts the gRPC and HTTP listeners on loopback ports chosen by the kernel.
    pub async fn start() -> std::io::Result<Self> {
        let received = Received::default();
        let stop = CancellationToken::new();

        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let grpc_port = grpc.local_addr()?.port();
        let service = TraceServiceServer::new(received.clone());
        let logs_service = LogsServiceServer::new(received.clone());
        let grpc_stop = stop.clone();
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .add_service(logs_service)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(grpc),
                    grpc_stop.cancelled_owned(),
                )
                .await;
        });

        let http = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http_port = http.local_addr()?.port();
        let sink = received.clone();
        let logs_sink = received.clone();
        let app = axum::Router::new()
            .route(
                "/v1/traces",
                axum::routing::post(move |body: Bytes| {
                    let sink = sink.clone();
                    async move {
                        match ExportTraceServiceRequest::decode(body) {
                            Ok(request) => {
                                sink.add(request, "http/protobuf");
                                (
                                    StatusCode::OK,
                                    ExportTraceServiceResponse::default().encode_to_vec(),
                                )
                            }
                            Err(_) => (StatusCode::BAD_REQUEST, Vec::new()),
                        }
                    }
                }),
            )
            .route(
                "/v1/logs",
                axum::routing::post(move |body: Bytes| {
                    let sink = logs_sink.clone();
                    async move {
                        match ExportLogsServiceRequest::decode(body) {
                            Ok(request) => {
                                sink.add_logs(request);
                                (
                                    StatusCode::OK,
                                    ExportLogsServiceResponse::default().encode_to_vec(),
                                )
                            }
                            Err(_) => (StatusCode::BAD_REQUEST, Vec::new()),
                        }
                    }
                }),
            );
        let http_stop = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(http, app)
                .with_graceful_shutdown(http_stop.cancelled_owned())
                .await;
        });
        Ok(Self {
            grpc_port,
            http_port,
            received,
            _stop: stop.drop_guard(),
        })
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for `http/protobuf` (the exporter
    /// appends `/v1/traces`).
    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// The endpoint for `protocol` (`grpc` or `http/protobuf`).
    pub fn endpoint(&self, protocol: &str) -> String {
        match protocol {
            "grpc" => self.grpc_endpoint(),
            _ => self.http_endpoint(),
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.received.spans.lock().expect("receiver lock").clone()
    }

    /// Every log record received so far.
    pub fn logs(&self) -> Vec<ReceivedLog> {
        self.received.logs.lock().expect("receiver lock").clone()
    }

    /// Waits until the spans received satisfy `condition`, or fails after
    /// `timeout`; returns every span received.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        condition: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Result<Vec<ReceivedSpan>, crate::Timeout> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let arrived = self.received.arrived.notified();
            let spans = self.spans();
            if condition(&spans) {
                return Ok(spans);
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return Err(crate::Timeout {
                    what: what.to_string(),
                    timeout,
                });
            }
        }
    }
}

/// Attribute values of a received span's `AnyValue`, for assertions that
/// care about the type (an int must arrive as an int).
pub fn attribute_value<'a>(span: &'a Span, key: &str) -> Option<&'a AnyValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}
