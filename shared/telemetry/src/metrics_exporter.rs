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

/// axum handler for `GET /metrics`: every metric of the process.
pub async fn metrics_handler() -> impl IntoResponse {
    exposition(render_metrics())
}

/// An axum handler for `GET /metrics` of one `service`: what
/// [`render_metrics_of`] gives it.
pub fn service_metrics_handler(
    service: protocol::Service,
) -> impl Fn() -> std::future::Ready<axum::response::Response> + Clone + Send + 'static {
    move || std::future::ready(exposition(render_metrics_of(service)).into_response())
}

fn exposition(text: String) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// The exposition as one `service` serves it: its own families (named
/// `<service>_…`), the shared libraries' (route table, propagation), and of
/// families labelled by `service` (HTTP server durations) only its series.
/// In a process running one service this is everything; in one running
/// several (the demo) each service's port serves its own registry, as it
/// would deployed.
pub fn render_metrics_of(service: protocol::Service) -> String {
    only_service(&render_metrics(), service.as_str())
}

fn only_service(exposition: &str, service: &str) -> String {
    let owner_of = |family: &str| {
        // The console is no hop of the flow, but its families are its own.
        let every = protocol::Service::ALL
            .iter()
            .chain([&protocol::Service::Console]);
        every.map(|s| s.as_str()).find(|s| {
            family
                .strip_prefix(s)
                .is_some_and(|rest| rest.starts_with('_'))
        })
    };
    let label = format!("service=\"{service}\"");
    let mut out = String::with_capacity(exposition.len());
    // Lines of one family (HELP, TYPE, samples), kept only if a sample is.
    let mut family: Vec<&str> = Vec::new();
    let mut kept_samples = 0;
    let flush = |family: &mut Vec<&str>, kept: &mut usize, out: &mut String| {
        if *kept > 0 {
            for line in family.iter() {
                out.push_str(line);
                out.push('\n');
            }
        }
        family.clear();
        *kept = 0;
    };
    let mut current = String::new();
    for line in exposition.lines() {
        let name = match line.strip_prefix("# ") {
            Some(comment) => comment.split_whitespace().nth(1).unwrap_or_default(),
            None => line.split(['{', ' ']).next().unwrap_or_default(),
        };
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| *base == current)
            .unwrap_or(name);
        if base != current {
            flush(&mut family, &mut kept_samples, &mut out);
            current = base.to_string();
        }
        let ours = owner_of(&current).is_none_or(|owner| owner == service);
        if line.starts_with('#') || line.is_empty() {
            family.push(line);
        } else if ours && (!line.contains("service=\"") || line.contains(&label)) {
            family.push(line);
            kept_samples += 1;
        }
    }
    flush(&mut family, &mut kept_samples, &mut out);
    out
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

#[cfg(test)]
mod tests {
    use super::only_service;

    #[test]
    fn a_service_serves_its_own_shared_and_labelled_series_only() {
        let exposition = "\
# HELP waiter_replies_total Replies.
# TYPE waiter_replies_total counter
waiter_replies_total{variant=\"baseline\"} 3
# HELP console_spans_received_total Spans.
# TYPE console_spans_received_total counter
console_spans_received_total 4
# HELP dispatch_replies_late_total Late.
# TYPE dispatch_replies_late_total counter
dispatch_replies_late_total 0
# HELP route_table_records_rejected_total Shared.
# TYPE route_table_records_rejected_total counter
route_table_records_rejected_total 0
# HELP http_server_request_duration_seconds Durations.
# TYPE http_server_request_duration_seconds histogram
http_server_request_duration_seconds_bucket{service=\"gateway\",le=\"0.1\"} 1
http_server_request_duration_seconds_sum{service=\"gateway\"} 0.01
http_server_request_duration_seconds_count{service=\"gateway\"} 1
http_server_request_duration_seconds_bucket{service=\"dispatch\",le=\"0.1\"} 2
http_server_request_duration_seconds_sum{service=\"dispatch\"} 0.02
http_server_request_duration_seconds_count{service=\"dispatch\"} 2
";
        let dispatch = only_service(exposition, "dispatch");
        assert!(!dispatch.contains("waiter_replies_total"), "{dispatch}");
        assert!(dispatch.contains("dispatch_replies_late_total 0"));
        assert!(!dispatch.contains("console_"), "{dispatch}");
        assert!(only_service(exposition, "console").contains("console_spans_received_total 4"));
        assert!(dispatch.contains("route_table_records_rejected_total 0"));
        assert!(dispatch.contains("_count{service=\"dispatch\"} 2"));
        assert!(!dispatch.contains("service=\"gateway\""), "{dispatch}");
        let waiter = only_service(exposition, "waiter");
        assert!(waiter.contains("waiter_replies_total{variant=\"baseline\"} 3"));
        assert!(
            !waiter.contains("http_server_request_duration_seconds"),
            "no HELP without samples: {waiter}"
        );
    }
}
