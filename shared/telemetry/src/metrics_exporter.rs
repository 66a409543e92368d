//! The process-wide Prometheus recorder and its `/metrics` handler.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::TelemetryError;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets in seconds: 100 µs to 60 s, dense where a waiter lives.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

pub(crate) fn install() -> Result<(), TelemetryError> {
    if HANDLE.get().is_some() {
        return Ok(());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .map_err(|e| TelemetryError::Metrics(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    if HANDLE.set(handle.clone()).is_ok() {
        metrics::set_global_recorder(recorder)
            .map_err(|e| TelemetryError::Metrics(e.to_string()))?;
        // The recorder keeps every histogram sample until something folds
        // them into the buckets; a scrape does, but nothing may scrape. Left
        // alone, memory grows with every request and each sample costs an
        // allocation that is never reused.
        std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_INTERVAL);
                    handle.run_upkeep();
                }
            })
            .map_err(|e| TelemetryError::Metrics(format!("starting metrics upkeep: {e}")))?;
    }
    Ok(())
}

/// How often pending histogram samples are folded into their buckets.
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The Prometheus text exposition of every metric recorded in this process.
pub fn render_metrics() -> String {
    HANDLE.get().map(|h| h.render()).unwrap_or_default()
}

/// axum handler for `GET /metrics`.
pub async fn metrics_handler() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render_metrics(),
    )
}

/// Describes counter `name` (its HELP text) and registers one series per
/// label set at zero, so a dashboard's query finds every series from the
/// first scrape instead of after the first event of its kind.
pub fn counter_at_zero(
    name: &'static str,
    help: &'static str,
    label_sets: &[&[(&'static str, &'static str)]],
) {
    metrics::describe_counter!(name, help);
    for labels in label_sets {
        let labels: Vec<metrics::Label> = labels
            .iter()
            .map(|(key, value)| metrics::Label::new(*key, *value))
            .collect();
        metrics::counter!(name, labels).increment(0);
    }
}
