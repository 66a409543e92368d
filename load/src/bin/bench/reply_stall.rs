//! `--reply-stall`: the reply topic refusing writes under load, as a reply
//! path that stalls (its partitions' broker gone, writes failing
//! transiently and retried). The waiter must stop reading instead of
//! parking replies: its memory stays near its steady state while consumer
//! lag grows, and every request is answered once writes resume.
//!
//! On the embedded broker with two mock brokers: the request partitions and
//! the waiter's group coordinator on broker 1, the reply partitions on
//! broker 2, which is taken down for the stall. (Apache Kafka on one broker
//! cannot refuse one topic's writes.)

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::args::Args;
use crate::broker::*;
use crate::measure::*;
use crate::responder::*;

/// The broker that leads the request partitions and coordinates the group.
const STAYS: i32 = 1;
/// The broker that leads the reply partitions, taken down for the stall.
const STALLS: i32 = 2;
/// Seconds of load before the stall (steady state) and after it.
const BEFORE: Duration = Duration::from_secs(20);
const AFTER: Duration = Duration::from_secs(40);
/// Partitions of each topic: enough that the backlog fits the mock's logs.
const PARTITIONS: i32 = 32;
/// The waiter's pool (its default).
const WAITERS: usize = 50;
/// RSS growth over the steady state the stall may cost.
const RSS_TARGET_MB: f64 = 50.0;

pub(crate) async fn reply_stall(broker: &Broker, args: &Args) -> anyhow::Result<()> {
    let embedded_kafka::Broker::Embedded(embedded) = &*broker.broker else {
        bail!(
            "--reply-stall needs the embedded broker (unset KAFKA_BOOTSTRAP_SERVERS): \
             Apache Kafka on one broker cannot refuse one topic's writes"
        );
    };
    // The mock keeps at most 5 MB of each partition's log and drops the
    // oldest records past that: a minute's backlog of requests must fit,
    // or the broker itself loses it. Spread over 32 partitions it does.
    let id = uuid::Uuid::new_v4().simple().to_string();
    let topics = Topics {
        requests: format!("bench-reply-stall-{id}-requests"),
        replies: format!("bench-reply-stall-{id}-replies"),
    };
    broker.create_topic(&topics.requests, PARTITIONS).await?;
    // Replies too: the generator reading a burst of them after the stall
    // must not fall 5 MB behind on a partition.
    broker.create_topic(&topics.replies, PARTITIONS).await?;
    for partition in 0..PARTITIONS {
        embedded.set_partition_leader(&topics.requests, partition, STAYS)?;
    }
    for partition in 0..PARTITIONS {
        embedded.set_partition_leader(&topics.replies, partition, STALLS)?;
    }
    let group = format!("bench-{}", uuid::Uuid::new_v4().simple());
    embedded.set_group_coordinator(&group, STAYS)?;
    let bootstrap = broker.bootstrap_servers();
    let waiter = ResponderProcess::start_in_group(
        // The waiter's defaults (pool, producers, channels, reply slots):
        // 2,000 req/s of 10 ms waits need 20 of the 50 waiters. What a
        // stall holds in memory is bounded by the pool, the channels and
        // the reply slots (`waiter.undelivered_replies`).
        Responder::Waiter {
            waiters: WAITERS,
            env: &[
                ("WAITER_BUS__WAITER__PRODUCERS", "10"),
                ("WAITER_BUS__WAITER__REQUEST_CHANNEL_CAPACITY", "10"),
                ("WAITER_BUS__WAITER__REPLY_CHANNEL_CAPACITY", "10"),
            ],
        },
        bootstrap,
        &topics,
        &group,
    )?;
    until_answering(bootstrap, &topics).await?;

    let rate = args.stall_rate;
    let stall = Duration::from_secs(args.outage_seconds.max(1));
    let run_for = BEFORE + stall + AFTER;
    let mut load = outage_load(bootstrap, &topics, rate, run_for);
    // Every request is waited for well past the stall, so one never
    // answered is lost, not slow.
    load.timeout = Duration::from_secs(300);
    eprintln!(
        "reply stall: {rate:.0} req/s of 10 ms waits for {} s; the reply partitions' broker down from {} s for {} s",
        run_for.as_secs(),
        BEFORE.as_secs(),
        stall.as_secs()
    );
    let pid = waiter.child.id();
    let sampler = tokio::spawn(async move {
        let started = Instant::now();
        let mut samples = Vec::new();
        while started.elapsed() < run_for {
            samples.push((started.elapsed(), rss_mb(pid)));
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        samples
    });
    let generator = tokio::spawn(load::run(load));
    tokio::time::sleep(BEFORE).await;
    embedded
        .broker_down(STALLS)
        .context("taking the reply partitions' broker down")?;
    tokio::time::sleep(stall).await;
    embedded
        .broker_up(STALLS)
        .context("bringing the reply partitions' broker back")?;
    let report = generator.await??;
    let samples = sampler.await?;

    let within = |from: Duration, to: Duration| {
        samples
            .iter()
            .filter(move |(at, _)| (from..to).contains(at))
            .map(|(_, mb)| *mb)
    };
    // Steady: the second half of the time before the stall, once warm.
    let steady = within(BEFORE / 2, BEFORE).fold(0.0, f64::max);
    let stalled = within(BEFORE, BEFORE + stall + Duration::from_secs(5)).fold(0.0, f64::max);
    let growth = stalled - steady;
    let c = &report.counts;
    let lost = c.sent.saturating_sub(c.received);
    // Requests sent but not yet answered when writes resumed: the lag the
    // waiter left in Kafka instead of in memory.
    let answered_by_then: u64 = report
        .timeline
        .iter()
        .filter(|s| s.second < (BEFORE + stall).as_secs())
        .map(|s| s.received)
        .sum();
    let backlog = (((BEFORE + stall).as_secs_f64() * rate) as u64).saturating_sub(answered_by_then);
    println!(
        "reply stall ({} s of reply writes refused under load)",
        stall.as_secs()
    );
    println!(
        "  sent {}  answered {}  lost {lost} (timed out {}, still awaited {}, answered late {})  duplicates {}  counts add up: {}",
        c.sent,
        c.received,
        c.timed_out,
        c.in_flight,
        c.late,
        c.duplicates,
        c.add_up()
    );
    println!(
        "  waiter RSS: steady {steady:.1} MB, max during the stall {stalled:.1} MB, growth {growth:.1} MB (target ≤ {RSS_TARGET_MB:.0} MB: {})",
        if growth <= RSS_TARGET_MB {
            "met"
        } else {
            "missed"
        }
    );
    println!(
        "  unanswered when writes resumed: about {backlog} requests (held in Kafka as consumer lag)"
    );
    println!("  per second (received, p99 ms, RSS MB):");
    for second in &report.timeline {
        let at = Duration::from_secs(second.second);
        let rss = within(at, at + Duration::from_secs(1)).fold(0.0, f64::max);
        println!(
            "    {:>3} s  {:>6}  {:>9.1}  {:>6.1}",
            second.second, second.received, second.p99_ms, rss
        );
    }
    drop(waiter);
    Ok(())
}
