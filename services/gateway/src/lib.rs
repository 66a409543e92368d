//! The gateway (service A): the edge of the flow.
//!
//! Start with [`Application`]. `POST /wait` takes the waiter's JSON body,
//! reads the tenant from the caller's W3C baggage (when
//! `trust_incoming_baggage` is on), looks the tenant up in the local
//! [`tenancy::RouteTable`], and forwards to the dispatch variant the tenant
//! maps `dispatch` to, or to the baseline dispatch. The answer is a
//! [`GatewayResponse`]: the waiter's reply, the trace id, and each hop with
//! the variant that handled it.

use service_kit::ServiceApp;
use service_kit::auth::BearerToken;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{State, rejection::JsonRejection};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use kafka_kit::KafkaSettings;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::trace::TraceContextExt;
use protocol::wire::{DispatchResponse, WaitReply, WaitRequestBody};
use protocol::{Hops, Service};
use serde::{Deserialize, Serialize};
use service_kit::HttpListener;
use service_kit::{ApiError, HttpSettings, ServiceSettings};
use tenancy::RouteTable;
use tokio_util::sync::CancellationToken;

/// Checked-in defaults.
pub const DEFAULTS: &str = include_str!("../config/base.yaml");

/// The gateway's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Routing.
    pub gateway: GatewaySettings,
    /// Identity.
    pub service: ServiceSettings,
    /// The HTTP listener.
    pub http: HttpSettings,
    /// The broker (for the route table).
    pub kafka: KafkaSettings,
    /// The route table.
    pub routes: tenancy::RouteTableSettings,
}

/// Routing settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// The baseline dispatch.
    pub dispatch_url: String,
    /// Honour every caller's `tenant` baggage (an edge behind a trusted
    /// proxy). When false, only callers presenting `baggage_token` are
    /// believed; everyone else goes to the baseline.
    pub trust_incoming_baggage: bool,
    /// A caller with `Authorization: Bearer <baggage_token>` may name its
    /// tenant even when `trust_incoming_baggage` is false.
    pub baggage_token: Option<settings::Secret>,
    /// How long to wait for dispatch.
    #[serde(with = "settings::duration")]
    pub timeout: Duration,
}

impl Settings {
    /// The defaults pointed at `kafka` and `dispatch_url`, HTTP on an
    /// ephemeral loopback port.
    pub fn defaults_with(kafka: &KafkaSettings, dispatch_url: &str) -> Self {
        let mut settings: Settings = settings::in_process(DEFAULTS, &kafka.bootstrap_servers);
        settings.gateway.dispatch_url = dispatch_url.to_string();
        settings
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The port could not be bound.
    #[error(transparent)]
    Bind(#[from] std::io::Error),
    /// The route table could not start or catch up.
    #[error(transparent)]
    Routes(#[from] tenancy::RouteTableError),
}

/// What `POST /wait` answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayResponse {
    /// The trace every hop of this request belongs to.
    pub trace_id: String,
    /// The tenant the request was routed for, if any.
    pub tenant: Option<String>,
    /// The `tenant-routes` version every hop of this request was routed at.
    pub routes_version: u64,
    /// Each hop, in order, with the variant that handled it.
    pub hops: Hops,
    /// The waiter's reply.
    pub reply: WaitReply,
}

#[derive(Clone)]
struct AppState {
    routes: RouteTable,
    http: propagation::ClientWithMiddleware,
    variant: Arc<str>,
    baseline_dispatch: Arc<str>,
    trust_incoming_baggage: bool,
    baggage_token: Option<BearerToken>,
    timeout: Duration,
}

impl AppState {
    /// Whether this request's baggage may name a tenant.
    fn believes(&self, headers: &HeaderMap) -> bool {
        if self.trust_incoming_baggage {
            return true;
        }
        self.baggage_token
            .as_ref()
            .is_some_and(|token| token.admits(headers))
    }
}

/// A built, not yet running, gateway.
pub struct Application {
    listener: HttpListener,
    port: u16,
    state: AppState,
    catch_up: Duration,
}

impl Application {
    /// The gateway's route table.
    pub fn route_table(&self) -> RouteTable {
        self.state.routes.clone()
    }
}

async fn wait(
    State(state): State<AppState>,
    request_headers: HeaderMap,
    body: Result<Json<WaitRequestBody>, JsonRejection>,
) -> Result<Json<GatewayResponse>, ApiError> {
    let Json(body) = body?;
    // The caller's deadline, if earlier than ours, travels on.
    let deadline = protocol::Deadline::after(state.timeout)
        .earliest(service_kit::caller_deadline(&request_headers)?);
    let incoming = propagation::current_context();
    let trace_id = incoming.span().span_context().trace_id().to_string();
    // One routes version decides every hop of this request: it is sent on
    // to dispatch, which stamps it into the Kafka record for the waiters.
    let routes = state.routes.snapshot();
    let version = routes.version();
    let at = routes.at(version);
    // Only a believed caller naming a known tenant (or matching a mapping's
    // selectors) keeps its baggage: an unknown tenant string would
    // otherwise reach every span (and the metrics made from them) as a
    // label value of its own.
    let tenant = state
        .believes(&request_headers)
        .then(|| {
            let facts = tenancy::HttpFacts {
                headers: &request_headers,
                baggage: incoming.baggage(),
            };
            tenancy::resolve_tenant(at, &facts)
        })
        .flatten();
    let outgoing = match &tenant {
        Some(tenant) => incoming.with_baggage([opentelemetry::KeyValue::new(
            propagation::TENANT_BAGGAGE_KEY,
            tenant.clone(),
        )]),
        // Keep the trace, drop the caller's baggage: an untrusted caller
        // cannot name a tenant, so everything goes to the baseline.
        None => {
            let span_context = incoming.span().span_context().clone();
            opentelemetry::Context::new().with_remote_span_context(span_context)
        }
    };
    let dispatch = protocol::Service::Dispatch.as_str();
    let route = tenant
        .as_deref()
        .map_or(tenancy::Route::Baseline, |t| at.route(t, dispatch));
    let live = match route {
        tenancy::Route::Variant(label) => at.endpoint(dispatch, label),
        _ => None,
    };
    let (target, dispatch_label) = match (live, route) {
        (Some(endpoint), _) => (endpoint.endpoint.clone(), endpoint.label.clone()),
        (None, tenancy::Route::VariantDown(label) | tenancy::Route::Variant(label)) => {
            tracing::warn!(%label, "the tenant maps dispatch to a variant that is not live; using the baseline");
            metrics::counter!("gateway_unregistered_variant_total").increment(1);
            (
                state.baseline_dispatch.to_string(),
                tenancy::BASELINE.to_string(),
            )
        }
        (None, tenancy::Route::Baseline) => (
            state.baseline_dispatch.to_string(),
            tenancy::BASELINE.to_string(),
        ),
    };

    let mut outgoing_headers = HeaderMap::new();
    propagation::inject_http(&outgoing, &mut outgoing_headers);
    outgoing_headers.insert(protocol::headers::ROUTES_VERSION, version.into());
    outgoing_headers.insert(protocol::headers::DEADLINE, deadline.unix_ms().into());
    let url = format!("{}/wait", target.trim_end_matches('/'));
    let response = state
        .http
        .post(&url)
        .timeout(deadline.remaining())
        .headers(outgoing_headers)
        .json(&body)
        .send()
        .await
        .map_err(|e| {
            let cause = format!("dispatch at {url}: {e}");
            if e.is_timeout() {
                ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "dispatch `{dispatch_label}` did not answer within {}",
                        humantime::format_duration(state.timeout)
                    ),
                )
                .caused_by(cause)
            } else {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    format!("dispatch `{dispatch_label}` is unreachable"),
                )
                .caused_by(cause)
            }
        })?;
    let status = response.status();
    if !status.is_success() {
        // Pass dispatch's own status and message on: a 504 stays a 504.
        let message = response
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("dispatch answered {status}"));
        return Err(ApiError::new(
            StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
            message,
        ));
    }
    let answer: DispatchResponse = response.json().await.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "dispatch answered something unreadable",
        )
        .caused_by(e)
    })?;
    if answer.dispatch_variant != dispatch_label {
        tracing::warn!(routed = %dispatch_label, answered = %answer.dispatch_variant, "dispatch answered as another variant than the route named");
    }
    Ok(Json(GatewayResponse {
        trace_id,
        tenant,
        routes_version: version,
        hops: Hops::new()
            .then(Service::Gateway, &state.variant)
            .then(Service::Dispatch, &answer.dispatch_variant)
            .then(Service::Waiter, &answer.reply.variant),
        reply: answer.reply,
    }))
}

impl ServiceApp for Application {
    const SERVICE: protocol::Service = protocol::Service::Gateway;
    const ABOUT: &'static str = "Route wait requests to the dispatch variant their tenant maps to.";
    const DEFAULTS: &'static str = DEFAULTS;
    type Settings = Settings;
    type Error = GatewayError;

    fn variant(settings: &Settings) -> &str {
        settings.service.variant.as_str()
    }

    /// Binds and starts the route table.
    async fn build(settings: Settings) -> Result<Self, GatewayError> {
        telemetry::counter_at_zero(
            "gateway_unregistered_variant_total",
            "Tenant requests sent to the baseline because their dispatch variant was not live.",
            &[&[]],
        );
        let listener = service_kit::bind(&settings.http).await?;
        let port = listener.port();
        let routes = RouteTable::start(&settings.kafka, &settings.routes.topic).await?;
        let timeout = settings.gateway.timeout;
        Ok(Self {
            listener,
            port,
            catch_up: settings.routes.catch_up_timeout,
            state: AppState {
                routes,
                http: propagation::traced_client(
                    reqwest::Client::builder()
                        .timeout(timeout)
                        .build()
                        .expect("a TLS-free reqwest client always builds"),
                    Service::Gateway.as_str(),
                    &settings.service.variant,
                ),
                variant: settings.service.variant.into(),
                baseline_dispatch: settings.gateway.dispatch_url.trim_end_matches('/').into(),
                trust_incoming_baggage: settings.gateway.trust_incoming_baggage,
                baggage_token: settings
                    .gateway
                    .baggage_token
                    .as_ref()
                    .map(|token| BearerToken::new(token, Service::Gateway)),
                timeout,
            },
        })
    }

    fn api_open(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (table, patience) = (self.state.routes.clone(), self.catch_up);
        async move {
            // Running, the service reports a table that never catches up.
            let _ = table.caught_up(patience).await;
        }
    }

    /// The bound port.
    fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown` is cancelled. `/readyz` and `/healthz`
    /// answer from the start; `/wait` answers 503 until the route table has
    /// caught up (the gateway would route by half the mappings otherwise),
    /// and the gateway exits if that takes longer than
    /// `routes.catch_up_timeout`.
    async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), GatewayError> {
        let variant = self.state.variant.to_string();
        let routes = self.state.routes.clone();
        let ready = Arc::new(service_kit::ReadyWhen(move || routes.ready()));
        let api = Router::new()
            .route("/wait", post(wait))
            .with_state(self.state.clone());
        let app = service_kit::with_operations(
            service_kit::unavailable_until(api, ready.clone()),
            Service::Gateway,
            &variant,
            ready,
        );
        tracing::info!(port = self.port, "gateway running");
        let stop_serving = shutdown.child_token();
        let serving = tokio::spawn(service_kit::serve(self.listener, app, stop_serving.clone()));
        let caught_up = tokio::select! {
            caught_up = self.state.routes.caught_up(self.catch_up) => caught_up,
            () = shutdown.cancelled() => Ok(()),
        };
        if let Err(e) = caught_up {
            stop_serving.cancel();
            let _ = serving.await;
            return Err(e.into());
        }
        Ok(serving.await.expect("the HTTP server does not panic")?)
    }
}
