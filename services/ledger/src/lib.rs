//! The ledger (service D): records every completed wait (request id, tenant,
//! the variant that handled each hop, trace id, waited time) and serves them
//! back, filtered by tenant, for the demo and the tests.
//!
//! Start with [`Application`]; [`router`] is the HTTP API:
//! `POST /records` takes a [`LedgerEntry`] (with `Authorization: Bearer`
//! when `ledger.token` is set), `GET /records?tenant=ID` lists them, oldest
//! first, a page at a time (`limit`, default 1,000; `after` = the previous
//! page's `ledger-next-after` header; `tenant=` with no value lists
//! production traffic). Entries live in memory, bounded by
//! `ledger.capacity` entries and `ledger.max_bytes` bytes.

use service_kit::ServiceApp;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State, rejection::JsonRejection};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use service_kit::HttpListener;
use service_kit::auth::{BearerToken, require_bearer};
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
    /// Bytes of entries kept (their JSON size); the oldest are dropped first.
    pub max_bytes: usize,
    /// When set, `POST /records` needs `Authorization: Bearer <token>`.
    pub token: Option<settings::Secret>,
}

impl Settings {
    /// The defaults alone, with HTTP on an ephemeral loopback port.
    pub fn for_tests() -> Self {
        settings::in_process(DEFAULTS, "")
    }
}

pub use protocol::wire::LedgerEntry;

/// The in-memory store: entries in arrival order, each with its sequence
/// number (the paging cursor) and size, within a count and a byte budget.
#[derive(Clone)]
struct Store {
    // One lock around a bounded deque: appends and page scans are short.
    inner: Arc<Mutex<Entries>>,
    capacity: usize,
    max_bytes: usize,
}

#[derive(Default)]
struct Entries {
    kept: VecDeque<(u64, usize, LedgerEntry)>,
    bytes: usize,
    next_seq: u64,
}

/// The most entries one `GET /records` returns, and the default.
const PAGE_MAX: usize = 10_000;
const PAGE_DEFAULT: usize = 1_000;

/// The response header naming the cursor of the next page, when there is one.
pub const NEXT_PAGE_HEADER: &str = "ledger-next-after";

/// `GET /records` query: a tenant filter and a page.
#[derive(Debug, Deserialize)]
struct Filter {
    tenant: Option<String>,
    /// Only entries after this cursor (a previous page's `ledger-next-after`).
    after: Option<u64>,
    limit: Option<usize>,
}

/// The HTTP API: entries within `settings`' count and byte budgets, writes
/// behind `settings.token` when one is set.
pub fn router(settings: &LedgerSettings) -> Router {
    let store = Store {
        inner: Arc::default(),
        capacity: settings.capacity.max(1),
        max_bytes: settings.max_bytes.max(1),
    };
    let mut write = post(record);
    if let Some(token) = &settings.token {
        let token = BearerToken::new(token, protocol::Service::Ledger);
        write = write.route_layer(axum::middleware::from_fn_with_state(token, require_bearer));
    }
    Router::new()
        .route("/records", write.get(list))
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
    let size = serde_json::to_vec(&entry).map_or(0, |json| json.len());
    let mut entries = store.inner.lock().unwrap_or_else(|e| e.into_inner());
    while !entries.kept.is_empty()
        && (entries.kept.len() >= store.capacity || entries.bytes + size > store.max_bytes)
    {
        if let Some((_, dropped, _)) = entries.kept.pop_front() {
            entries.bytes -= dropped;
        }
        metrics::counter!("ledger_entries_dropped_total").increment(1);
    }
    let seq = entries.next_seq;
    entries.next_seq += 1;
    entries.bytes += size;
    entries.kept.push_back((seq, size, entry));
    metrics::gauge!("ledger_bytes").set(entries.bytes as f64);
    metrics::counter!("ledger_entries_recorded_total").increment(1);
    Ok(StatusCode::CREATED)
}

async fn list(State(store): State<Store>, Query(filter): Query<Filter>) -> impl IntoResponse {
    let limit = filter.limit.unwrap_or(PAGE_DEFAULT).clamp(1, PAGE_MAX);
    let wanted = filter.tenant.map(|t| Some(t).filter(|t| !t.is_empty()));
    let entries = store.inner.lock().unwrap_or_else(|e| e.into_inner());
    let mut matching = entries
        .kept
        .iter()
        .filter(|(seq, _, _)| filter.after.is_none_or(|after| *seq > after))
        .filter(|(_, _, e)| wanted.as_ref().is_none_or(|w| &e.tenant == w));
    let page: Vec<(u64, LedgerEntry)> = matching
        .by_ref()
        .take(limit)
        .map(|(seq, _, entry)| (*seq, entry.clone()))
        .collect();
    let more = matching.next().is_some();
    drop(entries);
    let mut headers = axum::http::HeaderMap::new();
    if more && let Some((last, _)) = page.last() {
        headers.insert(NEXT_PAGE_HEADER, (*last).into());
    }
    let page: Vec<LedgerEntry> = page.into_iter().map(|(_, entry)| entry).collect();
    (headers, Json(page))
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
        telemetry::counter_at_zero(
            "ledger_entries_recorded_total",
            "Completed waits recorded.",
            &[&[]],
        );
        telemetry::counter_at_zero(
            "ledger_entries_dropped_total",
            "Oldest entries dropped to stay within the ledger's entry and byte limits.",
            &[&[]],
        );
        metrics::describe_gauge!(
            "ledger_bytes",
            metrics::Unit::Bytes,
            "Bytes of entries the ledger keeps."
        );
        metrics::gauge!("ledger_bytes").set(0.0);
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
            router(&self.settings.ledger),
            protocol::Service::Ledger,
            protocol::BASELINE,
            Arc::new(service_kit::AlwaysReady),
        );
        tracing::info!(port = self.port, "ledger running");
        service_kit::serve(self.listener, app, shutdown).await
    }
}
