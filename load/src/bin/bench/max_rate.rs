//! `--max-rate`: the highest open-loop rate a waiter sustains within an
//! objective, found the way OpenMessaging Benchmark's rate discovery does:
//! raise the rate (doubling) while a step meets the objective, then narrow
//! the gap between the last rate that met it and the first that did not.
//! Each step runs against a fresh waiter, so no step inherits another's
//! backlog.

use std::time::Duration;

use load::LoadModel;

use crate::args::Args;
use crate::broker::*;
use crate::measure::*;
use crate::responder::*;

/// One step's outcome.
struct Step {
    rate: f64,
    replies_per_s: f64,
    p99_ms: f64,
    errors: f64,
    met: bool,
}

pub(crate) async fn max_rate(broker: &Broker, args: &Args) -> anyhow::Result<()> {
    let objective_p99_ms = args.objective_p99_ms;
    let max_errors = args.objective_errors;
    eprintln!(
        "max sustainable rate: waiter of {} waits at wait {} ms; objective p99 ≤ {objective_p99_ms} ms and errors ≤ {:.2} %, {} s per step",
        args.rate_waiters,
        args.rate_wait_ms,
        max_errors * 100.0,
        args.seconds
    );
    let mut steps: Vec<Step> = Vec::new();
    let mut rate = args.start_rate;
    let (mut met, mut missed): (Option<f64>, Option<f64>) = (None, None);
    for _ in 0..args.rate_steps {
        let step = run_step(broker, args, rate).await?;
        eprintln!(
            "  {:>8.0} req/s → {:>8.0} replies/s, p99 {:>8.2} ms, errors {:>6.2} %: {}",
            step.rate,
            step.replies_per_s,
            step.p99_ms,
            step.errors * 100.0,
            if step.met { "met" } else { "missed" }
        );
        match step.met {
            true => met = Some(met.map_or(rate, |m: f64| m.max(rate))),
            false => missed = Some(missed.map_or(rate, |m: f64| m.min(rate))),
        }
        steps.push(step);
        rate = match (met, missed) {
            (Some(low), None) => low * 2.0,
            (None, Some(high)) => high / 2.0,
            (Some(low), Some(high)) if high - low > low * 0.05 => (low + high) / 2.0,
            _ => break,
        };
        rate = rate.round();
    }
    match met {
        Some(rate) => println!(
            "max sustainable rate at p99 ≤ {objective_p99_ms} ms and errors ≤ {:.2} %: {rate:.0} req/s (wait {} ms, {} waits){}",
            max_errors * 100.0,
            args.rate_wait_ms,
            args.rate_waiters,
            missed.map_or(String::new(), |m| format!("; {m:.0} req/s missed"))
        ),
        None => println!(
            "no rate tried met p99 ≤ {objective_p99_ms} ms (lowest tried: {:.0} req/s)",
            steps.iter().map(|s| s.rate).fold(f64::INFINITY, f64::min)
        ),
    }
    Ok(())
}

async fn run_step(broker: &Broker, args: &Args, rate: f64) -> anyhow::Result<Step> {
    let running = Responder::Waiter {
        waiters: args.rate_waiters,
        env: &[],
    }
    .start(broker, "max-rate")
    .await?;
    let mut load = config(
        broker.bootstrap_servers(),
        &running.topics,
        LoadModel::Open { rate },
        Duration::from_secs(args.seconds),
        args.rate_wait_ms,
    );
    load.timeout = Duration::from_secs(5);
    let report = load::run(load).await?;
    let c = &report.counts;
    let errors = match c.sent {
        0 => 1.0,
        sent => (c.timed_out + c.send_failed + c.error_replies) as f64 / sent as f64,
    };
    let p99_ms = report.latency.p99_ms;
    Ok(Step {
        rate,
        replies_per_s: report.throughput_per_s,
        p99_ms,
        errors,
        met: p99_ms <= args.objective_p99_ms && errors <= args.objective_errors,
    })
}
