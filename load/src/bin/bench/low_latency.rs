//! `--low-latency`: request/reply latency at a fixed rate well below
//! saturation (1,000 req/s, wait 0), with the shipped defaults and with the
//! low-latency profile (`config/low-latency.yaml`) on both the waiter and
//! the generator: what a caller pays per request when nothing is queued,
//! which is the client settings' cost (lingers, socket options), not the
//! pipeline's.

use std::time::Duration;

use load::LoadModel;

use crate::args::Args;
use crate::broker::*;
use crate::measure::*;
use crate::responder::*;

/// The profile, as the waiter and `load --config` read it.
const PROFILE: &str = include_str!("../../../../config/low-latency.yaml");
/// The offered rate.
const RATE: f64 = 1000.0;
/// Load before the measurements, discarded.
const WARM_UP: Duration = Duration::from_secs(20);

/// One configuration and its targets (p50, and p99 where it has one).
struct Case {
    label: &'static str,
    settings: &'static str,
    p50_target_ms: f64,
    p99_target_ms: Option<f64>,
}

pub(crate) async fn low_latency(broker: &Broker, args: &Args) -> anyhow::Result<()> {
    let phase = Duration::from_secs(args.seconds.max(10));
    eprintln!(
        "low latency: open loop at {RATE:.0} req/s, wait 0, {} s per configuration",
        phase.as_secs()
    );
    let cases = [
        Case {
            label: "defaults",
            settings: "",
            p50_target_ms: 3.0,
            p99_target_ms: None,
        },
        Case {
            label: "low-latency profile",
            settings: PROFILE,
            p50_target_ms: 2.0,
            p99_target_ms: Some(6.0),
        },
    ];
    // A broker just started (a JVM, its code not yet compiled) answers the
    // first seconds of load far slower than the rest: warm it up on a
    // responder of its own first, and measure after.
    {
        let warm_up = Responder::Configured { settings: "" }
            .start(broker, "low-latency-warm-up")
            .await?;
        let load = config(
            broker.bootstrap_servers(),
            &warm_up.topics,
            LoadModel::Open { rate: RATE },
            WARM_UP,
            0,
        );
        measure("warm-up (not counted)", load).await?;
    }
    let mut rows = Vec::new();
    for case in cases {
        let running = Responder::Configured {
            settings: case.settings,
        }
        .start(broker, "low-latency")
        .await?;
        let mut load = config(
            broker.bootstrap_servers(),
            &running.topics,
            LoadModel::Open { rate: RATE },
            phase,
            0,
        );
        let properties = load::client_properties_in(case.settings)?;
        load.producer_properties = properties.producer;
        load.consumer_properties = properties.consumer;
        let report = measure(case.label, load).await?;
        rows.push((case, report));
    }
    println!("low latency at {RATE:.0} req/s, wait 0 (end to end, ms)");
    println!(
        "  {:<22} {:>7} {:>7} {:>7}   target",
        "configuration", "p50", "p99", "p99.9"
    );
    for (case, report) in &rows {
        let l = &report.latency;
        let p50_met = l.p50_ms <= case.p50_target_ms;
        let (target, met) = match case.p99_target_ms {
            Some(p99) => (
                format!("p50 ≤ {} ms, p99 ≤ {p99} ms", case.p50_target_ms),
                p50_met && l.p99_ms <= p99,
            ),
            None => (format!("p50 ≤ {} ms", case.p50_target_ms), p50_met),
        };
        println!(
            "  {:<22} {:>7.2} {:>7.2} {:>7.2}   {target}: {}  (counts add up: {})",
            case.label,
            l.p50_ms,
            l.p99_ms,
            l.p999_ms,
            if met { "met" } else { "missed" },
            report.counts.add_up()
        );
    }
    Ok(())
}
