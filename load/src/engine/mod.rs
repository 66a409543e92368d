//! Sending, matching and timing: [`run`] wires the parts together.
//!
//! - `accounting`: the books (pending requests, outcomes, histograms);
//! - `transport`: Kafka or HTTP out, replies in;
//! - `pacing`: open loop on a schedule, or closed-loop users;
//! - `progress`: the spinner while it runs.

mod accounting;
mod pacing;
mod progress;
mod transport;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::report::{Hops, Percentiles, ReplyGap, Report, Second};
use crate::{Config, LoadError, LoadModel, Target};

use accounting::*;
use pacing::*;
use progress::*;
use transport::*;

/// Runs the load described by `config` and reports.
pub async fn run(config: Config) -> Result<Report, LoadError> {
    match config.model {
        LoadModel::Open { rate } if !(rate.is_finite() && rate > 0.0) => {
            return Err(LoadError::Invalid(format!("--rate {rate} must be above 0")));
        }
        LoadModel::Closed { users: 0 } => {
            return Err(LoadError::Invalid("--users must be at least 1".into()));
        }
        _ => {}
    }
    let (sender, replies) = match &config.target {
        Target::Kafka => {
            let (producer, replies) = kafka_clients(&config).await?;
            (Sender::Kafka(producer), Some(replies))
        }
        Target::Http { url } => {
            let client = reqwest::Client::builder()
                .timeout(config.timeout)
                .build()
                .map_err(|e| LoadError::Invalid(format!("HTTP client: {e}")))?;
            let url = format!("{}/wait", url.trim_end_matches('/'));
            (Sender::Http(client, url.into()), None)
        }
    };

    let started = Instant::now();
    let shared: Shared = Arc::new(Mutex::new(State::new(
        started,
        config.timeout * FINISHED_RETENTION,
    )));
    let stop = CancellationToken::new();
    let reader =
        replies.map(|replies| tokio::spawn(read_replies(replies, shared.clone(), stop.clone())));
    let sweeper = tokio::spawn(sweep_timeouts(shared.clone(), stop.clone()));
    let progress = config
        .progress
        .then(|| tokio::spawn(show_progress(shared.clone(), stop.clone())));

    let config = Arc::new(config);
    let sending = match config.model {
        LoadModel::Open { rate } => open_loop(&config, rate, &sender, &shared, started).await,
        LoadModel::Closed { users } => closed_loop(&config, users, &sender, &shared, started).await,
    };
    // Wait for the last replies: every pending request either answers or
    // reaches its deadline.
    let drain_deadline = Instant::now() + config.timeout + Duration::from_secs(1);
    while !lock(&shared).pending.is_empty() && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    if let Some(reader) = reader {
        let _ = reader.await;
    }
    let _ = sweeper.await;
    if let Some(progress) = progress {
        let _ = progress.await;
    }
    let elapsed = started.elapsed();
    let state = lock(&shared);
    let mut counts = state.counts.clone();
    counts.in_flight = state.pending.len() as u64;
    let (model, rate, users) = match config.model {
        LoadModel::Open { rate } => ("open", Some(rate), None),
        LoadModel::Closed { users } => ("closed", None, Some(users)),
    };
    let mut unsplit: Vec<String> = vec![
        "broker → consumer runs from this generator's send (the request's CreateTime) to the waiter's consumption; it includes the produce round trip, since the broker's arrival time is not on the record".to_string(),
        "hops measured on the waiter use its clock; broker → consumer and reply consume compare two machines' wall clocks".to_string(),
    ];
    if matches!(config.target, Target::Http { .. }) {
        unsplit = vec![
            "the http target measures end to end only: the hops happen behind the gateway".into(),
        ];
    } else if state.queue.is_empty() && counts.received > 0 {
        unsplit.push(
            "replies carried no waiter timing headers; queue, service and hand-off are unknown"
                .into(),
        );
    }
    Ok(Report {
        target: match &config.target {
            Target::Kafka => "kafka".into(),
            Target::Http { url } => format!("http {url}"),
        },
        model: model.into(),
        rate,
        users,
        elapsed_s: elapsed.as_secs_f64(),
        throughput_per_s: counts.received as f64 / sending.as_secs_f64().max(0.001),
        latency: Percentiles::of(&state.latency),
        send_delay: Percentiles::of(&state.send_delay),
        hops: Hops {
            producer_ack: Percentiles::of(&state.producer_ack),
            broker_to_consumer: Percentiles::of(&state.broker_to_consumer),
            queue: Percentiles::of(&state.queue),
            service: Percentiles::of(&state.service),
            reply_handoff: Percentiles::of(&state.reply_handoff),
            reply_consume: Percentiles::of(&state.reply_consume),
            timestamp_types: vec![
                "requests: CreateTime, set by this generator's producer".into(),
                format!(
                    "replies: {}",
                    state.reply_timestamp_type.unwrap_or("none received")
                ),
            ],
            unsplit,
        },
        longest_reply_gap: ReplyGap {
            ms: state.longest_gap.0.as_secs_f64() * 1000.0,
            from_s: state.longest_gap.1.as_secs_f64(),
        },
        timeline: state
            .per_second
            .iter()
            .enumerate()
            .map(|(second, h)| Second {
                second: second as u64,
                received: h.len(),
                p99_ms: if h.is_empty() {
                    0.0
                } else {
                    h.value_at_quantile(0.99) as f64 / 1000.0
                },
            })
            .collect(),
        counts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(deadline: Instant) -> Pending {
        Pending {
            intended: deadline - Duration::from_secs(1),
            deadline,
            sent_wall_us: 0,
            done: None,
            span: None,
        }
    }

    #[test]
    fn the_sweep_times_out_only_what_expired_and_skips_answered_requests() {
        let t0 = Instant::now();
        let mut state = State::new(t0, Duration::from_secs(10));
        for (name, at) in [("late", 3), ("early", 1), ("answered", 2)] {
            state.track(name, pending(t0 + Duration::from_secs(at)));
        }
        assert!(answer(&mut state, "answered", false).is_some());
        state.sweep(t0 + Duration::from_secs(2));
        assert_eq!(state.counts.timed_out, 1, "only `early` expired");
        assert!(state.pending.contains_key("late"));
        state.sweep(t0 + Duration::from_secs(3));
        assert_eq!(state.counts.timed_out, 2);
        assert!(state.pending.is_empty() && state.deadlines.is_empty());
        assert!(answer(&mut state, "early", false).is_none());
        assert_eq!(state.counts.late, 1, "a reply after its deadline is late");
    }

    #[test]
    fn old_outcomes_are_forgotten_after_the_retention_window() {
        let t0 = Instant::now();
        let mut state = State::new(t0, Duration::ZERO);
        state.track("done", pending(t0 + Duration::from_secs(60)));
        assert!(answer(&mut state, "done", false).is_some());
        state.sweep(Instant::now());
        assert!(state.finished.is_empty(), "retention 0 forgets at once");
        assert!(answer(&mut state, "done", false).is_none());
        assert_eq!(
            state.counts.unexpected, 1,
            "a reply beyond retention is unexpected"
        );
    }
}
