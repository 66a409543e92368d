//! The web console: watch each request take its variants, send requests,
//! manage tenants, and see the waiter's pipeline, from a page the stack
//! serves itself.
//!
//! Start with [`Application`]: [`Application::build`] binds the port and
//! [`Application::run_until_stopped`] serves the page (`assets/`, compiled
//! in: no build step, no CDN) and its API. Spans reach the console's
//! [`feed::Feed`] two ways, so the page works wherever the stack runs: over
//! OTLP/HTTP at `POST /v1/traces` (the compose stack's collector sends them
//! there) or, in the demo, straight from the process's span sink
//! ([`Application::follow`]). The page reads them as server-sent events
//! (`GET /events`) and draws one row per request with a lane per hop. The
//! rest of the API: `POST /api/send` ([`burst`]: N requests at R/s through
//! the gateway, summarised), `/api/registry/…` (the tenants registry,
//! passed through with the token the user typed: the console holds none),
//! `GET /api/pipeline` ([`pipeline`]: the waiter's stages from its own
//! `/metrics`), and `GET /api/config`.

pub mod burst;
pub mod feed;
pub mod pipeline;
mod registry;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use service_kit::{HttpListener, HttpSettings, ServiceApp};
use tokio_util::sync::CancellationToken;

pub use feed::{Feed, SpanEvent};

/// Checked-in defaults.
pub const DEFAULTS: &str = include_str!("../config/base.yaml");

/// The console's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where the page is served.
    pub http: HttpSettings,
    /// What it watches and talks to.
    pub console: ConsoleSettings,
}

/// What the console watches and talks to.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSettings {
    /// The gateway (A), where sent requests go.
    pub gateway_url: String,
    /// The tenants registry.
    pub registry_url: String,
    /// The waiters' `/metrics`, for the pipeline view: a list in a file,
    /// comma-separated in `WAITER_BUS__CONSOLE__WAITER_METRICS_URLS`.
    #[serde(deserialize_with = "list_or_commas")]
    pub waiter_metrics_urls: Vec<String>,
    /// A Jaeger UI to link traces to.
    pub jaeger_url: Option<String>,
    /// Finished spans kept for a page that opens late.
    pub recent_spans: usize,
    /// The most requests one burst may send.
    pub max_burst: u32,
}

/// A list, or (from an environment variable) one comma-separated string.
fn list_or_commas<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCommas {
        List(Vec<String>),
        Commas(String),
    }
    Ok(match ListOrCommas::deserialize(d)? {
        ListOrCommas::List(list) => list,
        ListOrCommas::Commas(text) => text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
    })
}

impl Settings {
    /// The defaults with these URLs, HTTP on an ephemeral loopback port.
    pub fn in_process(gateway: &str, registry: &str, waiter_metrics: Vec<String>) -> Self {
        let mut settings: Self =
            settings::load_service(DEFAULTS, None).expect("the checked-in defaults load");
        settings.http.host = "127.0.0.1".into();
        settings.http.port = 0;
        settings.console.gateway_url = gateway.into();
        settings.console.registry_url = registry.into();
        settings.console.waiter_metrics_urls = waiter_metrics;
        settings
    }
}

/// Why the console could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// The port could not be bound or served.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

#[derive(Clone)]
struct AppState {
    feed: Feed,
    settings: Arc<ConsoleSettings>,
    /// For the registry and the waiters' `/metrics`: the console's own
    /// polling, which is no one's trace.
    http: reqwest::Client,
    /// For the requests a user sends: each a CLIENT span of the console,
    /// the root of that request's trace.
    traced: propagation::ClientWithMiddleware,
}

/// A built, not yet running, console.
pub struct Application {
    listener: HttpListener,
    port: u16,
    state: AppState,
}

impl Application {
    /// Its span feed: what `POST /v1/traces` and [`Self::follow`] fill.
    pub fn feed(&self) -> Feed {
        self.state.feed.clone()
    }

    /// Feeds the console every span this process finishes (the demo: the
    /// stack runs in the same process, so no exporter is needed).
    pub fn follow(&self, sink: &telemetry::SpanSink) {
        self.state.feed.follow(sink);
    }
}

impl ServiceApp for Application {
    const SERVICE: protocol::Service = protocol::Service::Console;
    const ABOUT: &'static str = "The web console: live flow, requests, tenants and the pipeline.";
    const DEFAULTS: &'static str = DEFAULTS;
    type Settings = Settings;
    type Error = ConsoleError;

    async fn build(settings: Settings) -> Result<Self, ConsoleError> {
        let listener = service_kit::bind(&settings.http).await?;
        let port = listener.port();
        Ok(Self {
            listener,
            port,
            state: AppState {
                feed: Feed::new(settings.console.recent_spans),
                http: client(),
                traced: propagation::traced_client(
                    client(),
                    protocol::Service::Console.as_str(),
                    protocol::BASELINE,
                ),
                settings: Arc::new(settings.console),
            },
        })
    }

    fn port(&self) -> u16 {
        self.port
    }

    async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), ConsoleError> {
        let app = router(self.state, shutdown.clone());
        tracing::info!(port = self.port, "console running");
        service_kit::serve(self.listener, app, shutdown).await?;
        Ok(())
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("a TLS-free reqwest client always builds")
}

/// The page and its API. No SERVER spans here, unlike the services: the
/// page polls, and a burst's requests must each be a trace of their own,
/// rooted in the console's CLIENT span, not children of one `/api/send`.
fn router(state: AppState, shutdown: CancellationToken) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/console.js", get(script))
        .route("/console.css", get(style))
        .route(
            "/events",
            get(move |state: State<AppState>| events(state, shutdown.clone())),
        )
        // Collectors compress their exports (gzip is the OTLP/HTTP
        // exporters' default); an encoding the layer cannot undo is a 415.
        .route(
            "/v1/traces",
            post(feed::ingest_otlp)
                .layer(tower_http::decompression::RequestDecompressionLayer::new()),
        )
        .route("/api/config", get(config))
        .route("/api/send", post(burst::send))
        .route("/api/pipeline", get(pipeline::pipeline))
        .route(
            "/api/registry/{*path}",
            axum::routing::any(registry::pass_through),
        )
        .with_state(state)
        .merge(service_kit::operational_routes(
            protocol::Service::Console,
            Arc::new(service_kit::AlwaysReady),
        ))
}

async fn page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("../assets/index.html"),
    )
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("../assets/console.js"),
    )
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("../assets/console.css"),
    )
}

/// What the page needs to know about where it runs.
#[derive(Debug, Serialize)]
struct PageConfig {
    jaeger_url: Option<String>,
    max_burst: u32,
}

async fn config(State(state): State<AppState>) -> axum::Json<PageConfig> {
    axum::Json(PageConfig {
        jaeger_url: state.settings.jaeger_url.clone(),
        max_burst: state.settings.max_burst,
    })
}

/// Every span as a server-sent event `span`: the recent ones first, then
/// each as it finishes. A page that falls behind skips what it missed
/// (an event `lagged` says how many) rather than holding the feed back.
async fn events(
    State(state): State<AppState>,
    shutdown: CancellationToken,
) -> Sse<impl futures_lite::Stream<Item = Result<Event, std::convert::Infallible>>> {
    use futures_lite::StreamExt;
    use tokio::sync::broadcast::error::RecvError;
    let (recent, live) = state.feed.subscribe();
    let recent = futures_lite::stream::iter(recent).map(|span| Ok(span_event(&span)));
    // Ends at shutdown, so a page left open never holds the server's drain.
    let live = futures_lite::stream::unfold((live, shutdown), |(mut live, shutdown)| async move {
        let event = tokio::select! {
            () = shutdown.cancelled() => return None,
            item = live.recv() => match item {
                Ok(span) => span_event(&span),
                Err(RecvError::Lagged(missed)) => {
                    Event::default().event("lagged").data(missed.to_string())
                }
                Err(RecvError::Closed) => return None,
            },
        };
        Some((Ok(event), (live, shutdown)))
    });
    Sse::new(recent.chain(live)).keep_alive(KeepAlive::default())
}

fn span_event(span: &SpanEvent) -> Event {
    Event::default()
        .event("span")
        .data(serde_json::to_string(span).expect("a span event serialises"))
}
