//! `--broker-loss`: a real broker killed and restarted under load.

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::args::Args;
use crate::broker::*;
use crate::measure::*;
use crate::responder::*;

/// Broker loss on a real Apache Kafka this run owns: open-loop load through
/// a waiter; after `--seconds` the broker is killed with SIGKILL,
/// stays down for `--outage-seconds`, and is restarted on its data
/// directory. Requests wait up to a minute for their reply, so a reply that
/// never comes is a lost request, not a slow one.
pub(crate) async fn broker_loss(broker: &Broker, args: &Args) -> anyhow::Result<()> {
    if !matches!(&*broker.broker, embedded_kafka::Broker::Apache(_)) {
        bail!("--broker-loss needs a broker this run can kill: it starts its own Apache Kafka");
    }
    let bootstrap = broker.bootstrap_servers().to_string();
    // Load before the kill, the outage, the restart (a broker killed
    // uncleanly recovers its log and waits out its old registration, about
    // 10 s), then long enough to see the backlog answered and the rate back.
    let kill_at = Duration::from_secs(args.seconds.max(5));
    let run_for = kill_at * 6;
    let outage = Duration::from_secs(args.outage_seconds);
    let waiter = Responder::Waiter {
        waiters: 1_000,
        env: &[],
    }
    .start(broker, "broker-loss")
    .await?;
    let load = outage_load(&bootstrap, &waiter.topics, args.loss_rate, run_for);
    eprintln!(
        "broker loss: {:.0} req/s for {} s through a waiter; SIGKILL the broker at {} s, restart it after {} s",
        args.loss_rate,
        run_for.as_secs(),
        kill_at.as_secs(),
        outage.as_secs()
    );
    let started = Instant::now();
    let generator = tokio::spawn(load::run(load));
    tokio::time::sleep(kill_at).await;
    let killed_at = started.elapsed();
    broker.broker.take_down()?;
    eprintln!("  broker killed at {:.1} s", killed_at.as_secs_f64());
    tokio::time::sleep(outage).await;
    let restarting = Instant::now();
    let restarted = broker.broker.clone();
    tokio::task::spawn_blocking(move || restarted.bring_back()).await??;
    let back_at = started.elapsed();
    eprintln!(
        "  broker answering again at {:.1} s (restart took {:.1} s)",
        back_at.as_secs_f64(),
        restarting.elapsed().as_secs_f64()
    );
    let report = generator.await??;
    let c = &report.counts;
    // The normal p99 per second: the second half of the time before the
    // kill, past the start-up seconds.
    let before: Vec<f64> = report
        .timeline
        .iter()
        .filter(|s| s.second >= killed_at.as_secs() / 2 && s.second < killed_at.as_secs())
        .map(|s| s.p99_ms)
        .collect();
    let normal_p99 = before.iter().copied().fold(0.0, f64::max);
    // Recovered: the first second after the broker is back in which replies
    // flow at the offered rate with a normal p99 (the backlog answered).
    let recovered = report.timeline.iter().find(|s| {
        s.second > back_at.as_secs()
            && s.received as f64 >= 0.9 * args.loss_rate
            && s.p99_ms <= (2.0 * normal_p99).max(normal_p99 + 50.0)
    });
    println!(
        "broker loss (Apache Kafka {}, SIGKILL + restart on the same data)",
        embedded_kafka::apache::version()
    );
    println!(
        "  sent {}  answered {}  lost (no reply in 60 s) {}  duplicates {}  send failed {}  counts add up: {}",
        c.sent,
        c.received,
        c.timed_out,
        c.duplicates,
        c.send_failed,
        c.add_up()
    );
    println!(
        "  broker down {:.1} s; p99 before {:.1} ms; recovered (rate and p99 back) {}",
        (back_at - killed_at).as_secs_f64(),
        normal_p99,
        match recovered {
            Some(s) => format!(
                "{:.1} s after the broker was back",
                s.second as f64 - back_at.as_secs_f64()
            ),
            None => "not within the run".into(),
        }
    );
    println!("  per second (received, p99 ms):");
    for second in &report.timeline {
        println!(
            "    {:>3} s  {:>6}  {:>9.1}",
            second.second, second.received, second.p99_ms
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    drop(waiter);
    Ok(())
}
