//! `POST /api/send`: N requests at R per second through the gateway, as
//! any tenant or none, answered with what became of them.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use serde::{Deserialize, Serialize};
use service_kit::ApiError;

/// Longest a burst may take to send.
const MAX_BURST_SECONDS: f64 = 30.0;

/// What the page asks for.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurstRequest {
    /// Sent as `baggage: tenant=…`; none for a baseline request.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Each request's wait.
    pub wait_ms: u64,
    /// How many (1 for a single request).
    #[serde(default = "one")]
    pub count: u32,
    /// Requests per second.
    #[serde(default = "ten")]
    pub rate: f64,
}

fn one() -> u32 {
    1
}

fn ten() -> f64 {
    10.0
}

/// What became of a burst.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct BurstSummary {
    /// Requests sent.
    pub sent: u32,
    /// Answered with the waiter's reply.
    pub answered: u32,
    /// Answered 504: no reply in time.
    pub timed_out: u32,
    /// Refused or failed otherwise.
    pub failed: u32,
    /// Answered requests by the variants that handled them, e.g.
    /// `gateway=baseline dispatch=sbx-123 waiter=sbx-123`.
    pub by_variant: BTreeMap<String, u32>,
    /// The answered requests' traces, to find them in the flow view.
    pub trace_ids: Vec<String>,
    /// The first failure's message, if any.
    pub first_error: Option<String>,
}

/// How one request ended.
enum Outcome {
    Answered { hops: String, trace_id: String },
    TimedOut,
    Failed(String),
}

/// The gateway's answer, as much of it as a summary needs.
#[derive(Deserialize)]
struct Answer {
    trace_id: String,
    hops: protocol::Hops,
}

pub(crate) async fn send(
    State(state): State<crate::AppState>,
    body: Result<Json<BurstRequest>, JsonRejection>,
) -> Result<Json<BurstSummary>, ApiError> {
    let Json(burst) = body?;
    let max = state.settings.max_burst;
    if burst.count == 0 || burst.count > max {
        return Err(ApiError::bad_request(format!("`count` must be 1 to {max}")));
    }
    if !(burst.rate.is_finite() && burst.rate > 0.0 && burst.rate <= 1000.0) {
        return Err(ApiError::bad_request(
            "`rate` must be above 0 and at most 1000 per second",
        ));
    }
    // The page's call must end before the server's request timeout.
    if f64::from(burst.count) / burst.rate > MAX_BURST_SECONDS {
        return Err(ApiError::bad_request(format!(
            "{} requests at {} per second take longer than {MAX_BURST_SECONDS} s; send fewer or faster",
            burst.count, burst.rate
        )));
    }
    let tenant = burst
        .tenant
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    if let Some(tenant) = tenant
        && !tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(ApiError::bad_request(
            "`tenant` may hold letters, digits, `-`, `_` and `.` only",
        ));
    }
    let url = format!("{}/wait", state.settings.gateway_url.trim_end_matches('/'));
    let interval = Duration::from_secs_f64(1.0 / burst.rate);
    let mut ticks = tokio::time::interval(interval);
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..burst.count {
        ticks.tick().await;
        let mut request = state.traced.post(&url).json(&serde_json::json!({
            "name": format!("console-{}", i + 1),
            "wait_ms": burst.wait_ms,
        }));
        if let Some(tenant) = tenant {
            request = request.header(protocol::headers::BAGGAGE, format!("tenant={tenant}"));
        }
        calls.spawn(async move { outcome(request.send().await).await });
    }
    let mut summary = BurstSummary {
        sent: burst.count,
        ..BurstSummary::default()
    };
    while let Some(ended) = calls.join_next().await {
        match ended.unwrap_or_else(|e| Outcome::Failed(e.to_string())) {
            Outcome::Answered { hops, trace_id } => {
                summary.answered += 1;
                *summary.by_variant.entry(hops).or_default() += 1;
                summary.trace_ids.push(trace_id);
            }
            Outcome::TimedOut => summary.timed_out += 1,
            Outcome::Failed(error) => {
                summary.failed += 1;
                summary.first_error.get_or_insert(error);
            }
        }
    }
    Ok(Json(summary))
}

async fn outcome(sent: Result<reqwest::Response, propagation::ClientError>) -> Outcome {
    let response = match sent {
        Ok(response) => response,
        Err(e) if e.is_timeout() => return Outcome::TimedOut,
        Err(e) => return Outcome::Failed(format!("gateway unreachable: {e}")),
    };
    let status = response.status();
    if status == reqwest::StatusCode::GATEWAY_TIMEOUT {
        return Outcome::TimedOut;
    }
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Outcome::Failed(format!("gateway answered {status}: {body}"));
    }
    match response.json::<Answer>().await {
        Ok(answer) => Outcome::Answered {
            hops: answer
                .hops
                .iter()
                .map(|hop| format!("{}={}", hop.service, hop.variant))
                .collect::<Vec<_>>()
                .join(" "),
            trace_id: answer.trace_id,
        },
        Err(e) => Outcome::Failed(format!("not a gateway answer: {e}")),
    }
}
