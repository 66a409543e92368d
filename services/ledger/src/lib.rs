//! The ledger (service D): records every completed wait (request id, tenant,
//! the variant that handled each hop, trace id, waited time) and serves them
//! back, filtered by tenant, for the demo and the tests.
//!
//! Start with [`Application`]; [`router`] is the HTTP API:
//! `POST /records` takes a [`LedgerEntry`], `GET /records?tenant=ID` lists
//! them (oldest first; `tenant=` with no value lists production traffic).
//! Entries live in memory, bounded by `ledger.capacity`.

use service_kit::ServiceApp;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State, rejection::JsonRejection};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use service_kit::HttpListener;
use service_kit::{ApiError, HttpSettings};
use tokio_util::sync::CancellationToken;

/// Checked-in defaults.
pub const DEFAULTS: &str = include_str!("../config/base.yaml");

/// The ledger's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The HTTP listener.
    pub http: HttpSettings,
    /// Storage.
    pub ledger: LedgerSettings,
}

/// Storage settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSettings {
    /// Entries kept; the oldest are dropped first.
    pub capacity: usize,
}

impl Settings {
    /// The defaults alone, with HTTP on an ephemeral loopback port.
    pub fn for_tests() -> Self {
        settings::in_process(DEFAULTS, "")
    }
}

pub use protocol::wire::LedgerEntry;

/// The in-memory store.
#[derive(Clone)]
struct Store {
    // One lock around a bounded deque: appends and scans are both short.
    entries: Arc<Mutex<VecDeque<LedgerEntry>>>,
    capacity: usize,
}

/// `GET /records` filter.
#[derive(Debug, Deserialize)]
struct Filter {
    tenant: Option<String>,
}

/// The HTTP API.
pub fn router(capacity: usize) -> Router {
    let store = Store {
        entries: Arc::new(Mutex::new(VecDeque::new())),
        capacity: capacity.max(1),
    };
    Router::new()
        .route("/records", post(record).get(list))
        .with_state(store)
}

async fn record(
    State(store): State<Store>,
    entry: Result<Json<LedgerEntry>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let Json(entry) = entry?;
    if entry.request_id.trim().is_empty() {
        return Err(ApiError::bad_request("`request_id` must not be empty"));
    }
    let mut entries = store.entries.lock().unwrap_or_else(|e| e.into_inner());
    if entries.len() == store.capacity {
        entries.pop_front();
        metrics::counter!("ledger_entries_dropped_total").increment(1);
    }
    entries.push_back(entry);
    metrics::counter!("ledger_entries_recorded_total").increment(1);
    Ok(StatusCode::CREATED)
}

async fn list(State(store): State<Store>, Query(filter): Query<Filter>) -> Json<Vec<LedgerEntry>> {
    let entries = store.entries.lock().unwrap_or_else(|e| e.into_inner());
    let wanted = filter.tenant.map(|t| Some(t).filter(|t| !t.is_empty()));
    Json(
        entries
            .iter()
            .filter(|e| wanted.as_ref().is_none_or(|w| &e.tenant == w))
            .cloned()
            .collect(),
    )
}

/// A built, not yet running, ledger.
pub struct Application {
    listener: HttpListener,
    port: u16,
    settings: Settings,
}

impl ServiceApp for Application {
    const SERVICE: protocol::Service = protocol::Service::Ledger;
    const ABOUT: &'static str = "Record completed waits and serve them back.";
    const DEFAULTS: &'static str = DEFAULTS;
    type Settings = Settings;
    type Error = std::io::Error;

    /// Binds the port.
    async fn build(settings: Settings) -> std::io::Result<Self> {
        let listener = service_kit::bind(&settings.http).await?;
        let port = listener.port();
        Ok(Self {
            listener,
            port,
            settings,
        })
    }

    /// The bound port.
    fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown` is cancelled.
    async fn run_until_stopped(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let app = service_kit::with_operations(
            router(self.settings.ledger.capacity),
            protocol::Service::Ledger,
            protocol::BASELINE,
            Arc::new(service_kit::AlwaysReady),
        );
        tracing::info!(port = self.port, "ledger running");
        service_kit::serve(self.listener, app, shutdown).await
    }
}
