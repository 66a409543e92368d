//! A three-hop relay built only from the shared crates: an HTTP "edge" that
//! publishes to Kafka, a consumer that calls an HTTP "far end", and the far
//! end reporting what context arrived. No service code is involved, so a
//! failure here is a failure of telemetry or propagation.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use futures_lite::StreamExt;
use opentelemetry::trace::TraceContextExt;
use propagation::HttpTraceLayer;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use testkit::TestKafka;
use tokio::sync::mpsc;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// What the far end saw for one call.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub trace_id: opentelemetry::trace::TraceId,
    pub tenant: Option<String>,
    pub body: String,
}

/// A running relay; dropping it stops the consumer task.
pub struct Relay {
    pub edge: SocketAddr,
    pub arrivals: mpsc::UnboundedReceiver<Arrival>,
    _consumer: tokio::task::JoinHandle<()>,
}

pub async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

pub async fn start_relay(kafka: &TestKafka) -> Relay {
    let topic = testkit::unique_name("relay");
    kafka.create_topic(&topic, 1).await.unwrap();

    // Far end: reports the context its SERVER span runs in.
    let (arrivals_tx, arrivals) = mpsc::unbounded_channel();
    let far = Router::new()
        .route("/record", post(record))
        .with_state(arrivals_tx)
        .layer(HttpTraceLayer::new("far-end", "baseline"));
    let far_addr = serve(far).await;

    // Middle: consume, continue the producer's trace, call the far end.
    let consumer = kafka.consumer(&testkit::unique_name("relay-group"));
    consumer.subscribe(&[&topic]).unwrap();
    let client = reqwest::Client::new();
    let consumer_task = tokio::spawn(relay_records(consumer, client, far_addr));

    // Edge: publish each request body to Kafka inside a PRODUCER span.
    let edge = Router::new()
        .route("/send", post(send))
        .route("/metrics", get(telemetry::metrics_handler))
        .with_state((kafka.producer(), topic))
        .layer(HttpTraceLayer::new("edge", "baseline"));
    let edge = serve(edge).await;
    Relay {
        edge,
        arrivals,
        _consumer: consumer_task,
    }
}

async fn send(
    State((producer, topic)): State<(FutureProducer, String)>,
    body: String,
) -> StatusCode {
    let span = tracing::info_span!("publish", otel.kind = "producer", service = "edge");
    async {
        let headers =
            propagation::inject_kafka(&propagation::current_context(), OwnedHeaders::new());
        let record = FutureRecord::to(&topic)
            .payload(&body)
            .key("k")
            .headers(headers);
        match producer.send(record, Duration::from_secs(5)).await {
            Ok(_) => StatusCode::ACCEPTED,
            Err(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
    .instrument(span)
    .await
}

async fn relay_records(consumer: StreamConsumer, client: reqwest::Client, far: SocketAddr) {
    let mut stream = consumer.stream();
    while let Some(Ok(message)) = stream.next().await {
        let parent = propagation::extract_kafka(message.headers());
        let span = tracing::info_span!("process", otel.kind = "consumer", service = "middle");
        let _ = span.set_parent(parent);
        let body = message
            .payload()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        async {
            let mut headers = HeaderMap::new();
            propagation::inject_http(&propagation::current_context(), &mut headers);
            let response = client
                .post(format!("http://{far}/record"))
                .headers(headers)
                .body(body)
                .send()
                .await
                .expect("far end reachable");
            assert!(response.status().is_success());
        }
        .instrument(span)
        .await;
    }
}

async fn record(
    State(arrivals): State<mpsc::UnboundedSender<Arrival>>,
    body: String,
) -> StatusCode {
    let cx = propagation::current_context();
    let _ = arrivals.send(Arrival {
        trace_id: cx.span().span_context().trace_id(),
        tenant: propagation::tenant(&cx),
        body,
    });
    StatusCode::NO_CONTENT
}
