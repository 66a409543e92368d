//! One measurement: a load configuration, run and reported.

use std::time::Duration;

use load::{Config, LoadModel, Report, WaitSpec};

use crate::broker::Topics;

/// The client settings the waiter and the echo share.
pub(crate) const CLIENT_YAML: &str = r#"
kafka:
  consumer:
    heartbeat.interval.ms: "500"
    # The waiter's default (see its config/base.yaml).
    session.timeout.ms: "15000"
    fetch.wait.max.ms: "5"
  producer:
    linger.ms: "1"
"#;

pub(crate) fn config(
    bootstrap: &str,
    topics: &Topics,
    model: LoadModel,
    duration: Duration,
    wait_ms: u64,
) -> Config {
    let mut config = Config::new(bootstrap);
    config.request_topic = topics.requests.clone();
    config.response_topic = topics.replies.clone();
    config.model = model;
    config.duration = duration;
    config.wait = WaitSpec::Fixed(wait_ms);
    config.timeout = Duration::from_secs(10);
    // Every request traced unless a figure says otherwise.
    config.sample_ratio = 1.0;
    config
}

/// The load of the outage measurements (broker loss, cluster loss): open
/// loop at `rate` with 10 ms waits, each request waiting up to a minute, so
/// a reply that never comes is a lost request, not a slow one.
pub(crate) fn outage_load(
    bootstrap: &str,
    topics: &Topics,
    rate: f64,
    duration: Duration,
) -> Config {
    let mut load = config(bootstrap, topics, LoadModel::Open { rate }, duration, 10);
    load.timeout = Duration::from_secs(60);
    load
}

pub(crate) async fn measure(label: &str, config: Config) -> anyhow::Result<Report> {
    let report = load::run(config).await?;
    let c = &report.counts;
    eprintln!(
        "  {label}: {:.0} replies/s, p50 {:.2} ms, p99 {:.2} ms, send delay p99 {:.2} ms, timed out {}, counts add up: {}",
        report.throughput_per_s,
        report.latency.p50_ms,
        report.latency.p99_ms,
        report.send_delay.p99_ms,
        c.timed_out,
        c.add_up()
    );
    Ok(report)
}

/// Mean replies per second over whole seconds `from..to` of the run.
pub(crate) fn steady_throughput(report: &Report, from: u64, to: u64) -> f64 {
    let seconds = to.saturating_sub(from).max(1);
    let received: u64 = report
        .timeline
        .iter()
        .filter(|s| (from..to).contains(&s.second))
        .map(|s| s.received)
        .sum();
    received as f64 / seconds as f64
}
