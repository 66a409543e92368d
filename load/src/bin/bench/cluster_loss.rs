//! `--cluster-loss`: one broker of a 3-node cluster killed under load.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use load::Report;

use crate::args::Args;
use crate::broker::*;
use crate::measure::*;
use crate::responder::*;

/// Which broker a run kills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Victim {
    /// The broker leading most request partitions.
    Leader,
    /// The broker leading most reply partitions.
    ReplyLeader,
    /// The broker coordinating the waiter's consumer group.
    Coordinator,
    /// The request partitions' leader and the waiter together; the waiter
    /// is restarted 2 s later, as a pod would be.
    WithWaiter,
}

impl Victim {
    pub(crate) const ALL: [Victim; 4] = [
        Victim::Leader,
        Victim::ReplyLeader,
        Victim::Coordinator,
        Victim::WithWaiter,
    ];

    fn describe(self) -> &'static str {
        match self {
            Victim::Leader => "leader of most request partitions",
            Victim::ReplyLeader => "leader of most reply partitions",
            Victim::Coordinator => "coordinator of the waiter's group",
            Victim::WithWaiter => "request leader and the waiter together",
        }
    }
}

/// What a run is judged by (the targets the README states).
const TARGET_GAP: Duration = Duration::from_secs(12);
const TARGET_RECOVERED: Duration = Duration::from_secs(13);
const TARGET_MAX: Duration = Duration::from_secs(15);
/// How long after the kill the waiter is restarted, in the with-waiter case.
const WAITER_RESTART_AFTER: Duration = Duration::from_secs(2);

/// One run's figures.
#[derive(Debug, serde::Serialize)]
struct Outcome {
    case: String,
    victim: i32,
    sent: u64,
    answered: u64,
    lost: u64,
    duplicates: u64,
    longest_gap_s: f64,
    recovered_after_kill_s: Option<f64>,
    max_latency_s: f64,
    normal_p99_ms: f64,
}

impl Outcome {
    fn meets_targets(&self) -> bool {
        self.lost == 0
            && self.longest_gap_s <= TARGET_GAP.as_secs_f64()
            && self
                .recovered_after_kill_s
                .is_some_and(|r| r <= TARGET_RECOVERED.as_secs_f64())
            && self.max_latency_s <= TARGET_MAX.as_secs_f64()
    }
}

/// Every case in `--cases`, `--runs` times each, on the cluster `broker`.
pub(crate) async fn cluster_loss(broker: &Broker, args: &Args) -> anyhow::Result<()> {
    if broker.broker.broker_ids().len() < 3 {
        bail!("--cluster-loss needs the 3-node cluster it starts itself");
    }
    warm_up(broker, args).await?;
    let mut outcomes = Vec::new();
    for &case in &args.cases {
        for run in 1..=args.runs {
            eprintln!(
                "cluster loss: {} (run {run} of {})",
                case.describe(),
                args.runs
            );
            let outcome = one_run(broker, args, case).await?;
            print_outcome(&outcome);
            outcomes.push(outcome);
        }
    }
    println!(
        "cluster loss (Apache Kafka {}, 3 nodes, replication factor 3, min.insync.replicas 2; {:.0} req/s for {} s; targets: 0 lost, gap <= {} s, recovered <= {} s after the kill, max <= {} s)",
        embedded_kafka::apache::version(),
        args.loss_rate,
        args.run_seconds,
        TARGET_GAP.as_secs(),
        TARGET_RECOVERED.as_secs(),
        TARGET_MAX.as_secs()
    );
    println!(
        "  {:<13} {:>6} {:>8} {:>5} {:>5} {:>7} {:>10} {:>7}  meets targets",
        "case", "sent", "answered", "lost", "dups", "gap s", "recover s", "max s"
    );
    for o in &outcomes {
        println!(
            "  {:<13} {:>6} {:>8} {:>5} {:>5} {:>7.1} {:>10} {:>7.1}  {}",
            o.case,
            o.sent,
            o.answered,
            o.lost,
            o.duplicates,
            o.longest_gap_s,
            o.recovered_after_kill_s
                .map_or("never".to_string(), |r| format!("{r:.1}")),
            o.max_latency_s,
            if o.meets_targets() { "yes" } else { "NO" }
        );
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&outcomes)?)?;
    }
    Ok(())
}

fn print_outcome(o: &Outcome) {
    eprintln!(
        "  killed broker {}: sent {} answered {} lost {} duplicates {}; longest gap {:.1} s; recovered {}; max latency {:.1} s",
        o.victim,
        o.sent,
        o.answered,
        o.lost,
        o.duplicates,
        o.longest_gap_s,
        o.recovered_after_kill_s
            .map_or("never".into(), |r| format!("{r:.1} s after the kill")),
        o.max_latency_s
    );
}

async fn one_run(broker: &Broker, args: &Args, case: Victim) -> anyhow::Result<Outcome> {
    let bootstrap = broker.bootstrap_servers().to_string();
    let run_for = Duration::from_secs(args.run_seconds);
    let kill_at = run_for / 4;
    let restart_at = run_for / 2;
    let responder = Responder::Waiter {
        waiters: 1_000,
        env: &[],
    };
    let mut waiter = responder.start(broker, "cluster-loss").await?;
    let load = outage_load(&bootstrap, &waiter.topics, args.loss_rate, run_for);
    let started = Instant::now();
    let generator = tokio::spawn(load::run(load));
    tokio::time::sleep(kill_at).await;

    let victim = choose(broker, case, &waiter).await?;
    let killed = broker.broker.clone();
    tokio::task::spawn_blocking(move || killed.take_down_broker(victim)).await??;
    let killed_at = started.elapsed();
    eprintln!(
        "  broker {victim} killed at {:.1} s",
        killed_at.as_secs_f64()
    );
    if case == Victim::WithWaiter {
        let group = waiter.process.group.clone();
        drop(waiter.process);
        tokio::time::sleep(WAITER_RESTART_AFTER).await;
        waiter.process =
            ResponderProcess::start_in_group(responder, &bootstrap, &waiter.topics, &group)?;
        eprintln!(
            "  waiter killed with it, restarted at {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    tokio::time::sleep(restart_at.saturating_sub(started.elapsed())).await;
    let restarted = broker.broker.clone();
    tokio::task::spawn_blocking(move || restarted.bring_back_broker(victim)).await??;
    eprintln!(
        "  broker {victim} serving again at {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let report = generator.await??;
    drop(waiter);
    // The run second by second (replies received, their p99 in ms): where
    // a pause or a slow tail came from.
    let timeline: Vec<String> = report
        .timeline
        .iter()
        .map(|s| format!("{}:{}/{:.0}", s.second, s.received, s.p99_ms))
        .collect();
    eprintln!("  per second (s:replies/p99 ms): {}", timeline.join(" "));
    Ok(judge(case, victim, &report, killed_at))
}

/// Load through a waiter at the run's rate for a while, unmeasured: a
/// cluster's JVMs just started serve a few hundred records a second with
/// seconds of latency until their code is compiled, and the first case
/// would measure that instead of the loss.
async fn warm_up(broker: &Broker, args: &Args) -> anyhow::Result<()> {
    const WARM_UP: Duration = Duration::from_secs(30);
    eprintln!(
        "cluster loss: warming the cluster up ({:.0} req/s for {} s, not measured)",
        args.loss_rate,
        WARM_UP.as_secs()
    );
    let waiter = Responder::Waiter {
        waiters: 1_000,
        env: &[],
    }
    .start(broker, "cluster-warm-up")
    .await?;
    let load = outage_load(
        broker.bootstrap_servers(),
        &waiter.topics,
        args.loss_rate,
        WARM_UP,
    );
    let report = load::run(load).await?;
    eprintln!(
        "  warm: p99 {:.0} ms over the last seconds",
        report
            .timeline
            .iter()
            .rev()
            .take(5)
            .map(|s| s.p99_ms)
            .fold(0.0, f64::max)
    );
    Ok(())
}

/// The broker to kill for `case`, by the cluster's metadata now.
async fn choose(broker: &Broker, case: Victim, waiter: &Running) -> anyhow::Result<i32> {
    let cluster = broker.broker.clone();
    let requests = waiter.topics.requests.clone();
    let replies = waiter.topics.replies.clone();
    let group = waiter.process.group.clone();
    tokio::task::spawn_blocking(move || {
        let most_led = |topic: &str| -> anyhow::Result<i32> {
            let mut led = std::collections::BTreeMap::<i32, usize>::new();
            for partition in 0..TOPIC_PARTITIONS {
                *led.entry(cluster.leader_of(topic, partition)?).or_default() += 1;
            }
            led.into_iter()
                .max_by_key(|&(id, count)| (count, std::cmp::Reverse(id)))
                .map(|(id, _)| id)
                .context("the topic has no partitions")
        };
        match case {
            Victim::Leader | Victim::WithWaiter => most_led(&requests),
            Victim::ReplyLeader => most_led(&replies),
            Victim::Coordinator => Ok(cluster.coordinator_of(&group)?),
        }
    })
    .await?
}

/// The run's figures from its report.
fn judge(case: Victim, victim: i32, report: &Report, killed_at: Duration) -> Outcome {
    let c = &report.counts;
    let kill_second = killed_at.as_secs();
    // The normal per-second p99: the second half of the time before the
    // kill, past the start-up seconds.
    let normal_p99 = report
        .timeline
        .iter()
        .filter(|s| s.second >= kill_second / 2 && s.second < kill_second)
        .map(|s| s.p99_ms)
        .fold(0.0, f64::max);
    let threshold = (2.0 * normal_p99).max(normal_p99 + 50.0);
    // Recovered: the first whole second after the pause in replies whose
    // p99 is back at its level before the kill (the backlog answered).
    let gap = &report.longest_reply_gap;
    let gap_end = gap.from_s + gap.ms / 1000.0;
    let recovered = report
        .timeline
        .iter()
        .filter(|s| s.second as f64 >= gap_end.max(killed_at.as_secs_f64()))
        .find(|s| s.received > 0 && s.p99_ms <= threshold)
        .map(|s| s.second as f64 - killed_at.as_secs_f64());
    Outcome {
        case: format!("{case:?}"),
        victim,
        sent: c.sent,
        answered: c.received,
        lost: c.timed_out + c.in_flight,
        duplicates: c.duplicates,
        longest_gap_s: gap.ms / 1000.0,
        recovered_after_kill_s: recovered,
        max_latency_s: report.latency.max_ms / 1000.0,
        normal_p99_ms: normal_p99,
    }
}
