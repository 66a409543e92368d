//! `bench`: the performance figures of waiter-bus, each a ratio taken in one
//! run on this machine with the embedded broker:
//!
//! 1. concurrency efficiency: waiter throughput ÷ (W / wait) at W = 10,000, wait = 1 s;
//! 2. pipeline overhead: waiter throughput at wait 0 ÷ a bare rdkafka echo's;
//! 3. added latency: p99 (and p99.9) at 1,000 and 5,000 req/s, waiter − echo;
//! 4. tracing cost: throughput with spans exported over OTLP ÷ without;
//! 5. memory under overload: waiter RSS at 10× capacity − RSS at steady state;
//! 6. generator accuracy: p99 of (actual − intended send time) at 5,000 req/s;
//! 7. goodput under 10× overload: replies within the callers' 2 s per second
//!    ÷ capacity (W = 100, wait 100 ms: 1,000 req/s), callers sending deadlines;
//! 8. CPU per reply: the responder's user + system time over its replies,
//!    waiter ÷ echo, at 5,000 req/s with 1 % head sampling.
//!
//! `--max-rate` instead finds the highest rate that meets a p99 objective;
//! `--broker-loss`, `--cluster-loss`, `--ledger-stall` and `--reply-stall`
//! measure failures under load instead.
//! Waiters run as `waiter` processes (built beside this binary), so tracing
//! and memory are measured per process. Build both first:
//! `cargo build --release -p waiter -p load`, then `target/release/bench`.
//! With `KAFKA_BOOTSTRAP_SERVERS` set, the figures are taken on that broker
//! instead; the topics each measurement creates are deleted at the end.

// The services' allocator (see `service_kit::global_allocator!`): the
// generator allocates per request on one thread and frees on another too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use clap::Parser;
use load::LoadModel;
use serde::Serialize;

mod args;
mod broker;
mod broker_loss;
mod cluster_loss;
mod ledger_stall;
mod low_latency;
mod max_rate;
mod measure;
mod reply_stall;
mod responder;

use args::Args;
use broker::*;
use broker_loss::*;
use cluster_loss::*;
use ledger_stall::*;
use low_latency::*;
use max_rate::*;
use measure::*;
use reply_stall::*;
use responder::*;

#[derive(Debug, Default, Serialize)]
struct Figures {
    echo_max_per_s: f64,
    waiter_max_per_s: f64,
    pipeline_overhead_ratio: f64,
    waiter_sampled_max_per_s: f64,
    pipeline_overhead_sampled_ratio: f64,
    added_latency: Vec<AddedLatency>,
    cpu_rate_per_s: f64,
    echo_cpu_us_per_reply: f64,
    waiter_cpu_us_per_reply: f64,
    cpu_per_reply_ratio: f64,
    concurrency_throughput_per_s: f64,
    concurrency_efficiency: f64,
    concurrency_efficiency_vs_pipeline_limit: f64,
    traced_max_per_s: f64,
    tracing_cost_ratio: f64,
    steady_rss_mb: f64,
    overload_max_rss_mb: f64,
    overload_rss_growth_mb: f64,
    generator_send_delay_p99_ms: f64,
    overload_goodput_per_s: f64,
    overload_goodput_ratio: f64,
    overload_served_p99_ms: f64,
}

/// Figure 3 at one rate: end-to-end percentiles of the echo and the waiter.
#[derive(Debug, Default, Serialize)]
struct AddedLatency {
    rate_per_s: f64,
    echo_p99_ms: f64,
    echo_p999_ms: f64,
    waiter_p99_ms: f64,
    waiter_p999_ms: f64,
    added_p99_ms: f64,
}

/// The rates figure 3 is taken at: below both maxima, as a caller offers.
const LATENCY_RATES: [f64; 2] = [1000.0, 5000.0];
/// The rate and sampling figure 8 is taken at.
const CPU_RATE: f64 = 5000.0;
const CPU_SAMPLING: f64 = 0.01;

/// Accepts OTLP/HTTP exports and discards them: the exporter's full cost, no collector.
async fn otlp_sink() -> anyhow::Result<String> {
    // Logs too: with an endpoint set the waiter exports its log events,
    // and a sink that refused them would add failed exports to the cost.
    let router = axum::Router::new()
        .route("/v1/traces", axum::routing::post(|| async { "" }))
        .route("/v1/logs", axum::routing::post(|| async { "" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(url)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(config) = &args.echo {
        return echo(config).await;
    }
    let phase = Duration::from_secs(args.seconds);
    let brokers = match (args.cluster_loss, args.reply_stall) {
        (true, _) => 3,
        (_, true) => 2,
        _ => 1,
    };
    let broker = Broker::start(
        args.apache || args.broker_loss || args.cluster_loss,
        brokers,
    )?;
    let bootstrap = broker.bootstrap_servers().to_string();
    eprintln!("broker: {}", broker.describe());
    if args.reply_stall {
        let result = reply_stall(&broker, &args).await;
        broker.clean_up().await;
        return result;
    }
    if args.ledger_stall {
        let result = ledger_stall(&broker, &args).await;
        broker.clean_up().await;
        return result;
    }
    if args.cluster_loss {
        let result = cluster_loss(&broker, &args).await;
        broker.clean_up().await;
        return result;
    }
    if args.broker_loss {
        let result = broker_loss(&broker, &args).await;
        broker.clean_up().await;
        return result;
    }
    if args.max_rate {
        let result = max_rate(&broker, &args).await;
        broker.clean_up().await;
        return result;
    }
    if args.low_latency {
        let result = low_latency(&broker, &args).await;
        broker.clean_up().await;
        return result;
    }
    let mut f = Figures::default();
    let waiter = Responder::Waiter {
        waiters: 10_000,
        env: &[],
    };
    eprintln!(
        "2. pipeline overhead (wait 0, best of {:?} users, {} s each)",
        args.users, args.seconds
    );
    f.echo_max_per_s = max_throughput(
        "bare echo",
        &broker,
        Responder::Echo,
        &args.users,
        phase,
        1.0,
    )
    .await?;
    f.waiter_max_per_s = max_throughput("waiter", &broker, waiter, &args.users, phase, 1.0).await?;
    f.pipeline_overhead_ratio = f.waiter_max_per_s / f.echo_max_per_s;
    // Head sampling at 1 %: the generator marks 99 % of traceparents
    // unsampled, and the waiter (parent-based) builds no spans for them.
    let sampled = Responder::Waiter {
        waiters: 10_000,
        env: &[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
        ],
    };
    f.waiter_sampled_max_per_s =
        max_throughput("sampled waiter", &broker, sampled, &args.users, phase, 0.01).await?;
    f.pipeline_overhead_sampled_ratio = f.waiter_sampled_max_per_s / f.echo_max_per_s;

    eprintln!(
        "3. added latency (open loop at {LATENCY_RATES:?} req/s, wait 0, every request traced)"
    );
    let open = |t: &Topics, rate: f64| config(&bootstrap, t, LoadModel::Open { rate }, phase, 0);
    for rate in LATENCY_RATES {
        let echo = Responder::Echo.start(&broker, "echo").await?;
        let echo_latency = measure("bare echo", open(&echo.topics, rate))
            .await?
            .latency;
        drop(echo);
        let running = waiter.start(&broker, "waiter").await?;
        let waiter_latency = measure("waiter", open(&running.topics, rate))
            .await?
            .latency;
        drop(running);
        f.added_latency.push(AddedLatency {
            rate_per_s: rate,
            echo_p99_ms: echo_latency.p99_ms,
            echo_p999_ms: echo_latency.p999_ms,
            waiter_p99_ms: waiter_latency.p99_ms,
            waiter_p999_ms: waiter_latency.p999_ms,
            added_p99_ms: waiter_latency.p99_ms - echo_latency.p99_ms,
        });
    }

    eprintln!(
        "8. CPU per reply (open loop at {CPU_RATE:.0} req/s, wait 0, {:.0} % head sampling)",
        CPU_SAMPLING * 100.0
    );
    f.cpu_rate_per_s = CPU_RATE;
    let mut cpu_per_reply = Vec::new();
    for (label, responder) in [("bare echo", Responder::Echo), ("waiter", waiter)] {
        let running = responder.start(&broker, "cpu").await?;
        let mut load = open(&running.topics, CPU_RATE);
        load.sample_ratio = CPU_SAMPLING;
        let before = running.process.cpu_seconds();
        let report = measure(label, load).await?;
        let used = running.process.cpu_seconds() - before;
        cpu_per_reply.push(used * 1e6 / report.counts.received.max(1) as f64);
        drop(running);
    }
    f.echo_cpu_us_per_reply = cpu_per_reply[0];
    f.waiter_cpu_us_per_reply = cpu_per_reply[1];
    f.cpu_per_reply_ratio =
        f.waiter_cpu_us_per_reply / f.echo_cpu_us_per_reply.max(f64::MIN_POSITIVE);

    eprintln!("6. generator accuracy (open loop at 5000 req/s against a fresh echo)");
    let echo = Responder::Echo.start(&broker, "accuracy").await?;
    f.generator_send_delay_p99_ms = measure("generator", open(&echo.topics, 5000.0))
        .await?
        .send_delay
        .p99_ms;
    drop(echo);

    // Offered 10 % above W / wait, so the waits, not the generator, set the
    // pace: a closed loop would add each reply's round trip to every
    // user's cycle and never reach W / wait however good the pipeline.
    let concurrency_phase = phase.max(Duration::from_secs(10));
    let offered = 11_000.0;
    eprintln!(
        "1. concurrency efficiency (W = 10,000, wait 1 s, open loop at {offered:.0} req/s for {} s; replies/s over seconds 3..{})",
        concurrency_phase.as_secs(),
        concurrency_phase.as_secs()
    );
    let running = waiter.start(&broker, "concurrency").await?;
    let mut concurrency = config(
        &bootstrap,
        &running.topics,
        LoadModel::Open { rate: offered },
        concurrency_phase,
        1000,
    );
    concurrency.timeout = Duration::from_secs(30);
    // The first second has no replies and the second carries the first
    // second's burst; from the third on, every permit is busy.
    f.concurrency_throughput_per_s = steady_throughput(
        &measure("waiter", concurrency).await?,
        3,
        concurrency_phase.as_secs(),
    );
    f.concurrency_efficiency = f.concurrency_throughput_per_s / 10_000.0;
    f.concurrency_efficiency_vs_pipeline_limit =
        f.concurrency_throughput_per_s / (10_000f64).min(f.waiter_max_per_s);
    drop(running);

    eprintln!("4. tracing cost (wait 0, spans exported over OTLP/HTTP to a local sink)");
    let sink = otlp_sink().await?;
    let traced = Responder::Waiter {
        waiters: 10_000,
        env: &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", sink.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ],
    };
    f.traced_max_per_s =
        max_throughput("traced waiter", &broker, traced, &args.users, phase, 1.0).await?;
    f.tracing_cost_ratio = f.traced_max_per_s / f.waiter_max_per_s;

    eprintln!(
        "5 and 7. memory and goodput under overload (W = 100, wait 100 ms: capacity 1,000 req/s)"
    );
    let small = Responder::Waiter {
        waiters: 100,
        env: &[],
    }
    .start(&broker, "memory")
    .await?;
    measure(
        "steady, 500 req/s",
        config(
            &bootstrap,
            &small.topics,
            LoadModel::Open { rate: 500.0 },
            phase,
            100,
        ),
    )
    .await?;
    f.steady_rss_mb = small.process.rss_mb();
    let mut overload = config(
        &bootstrap,
        &small.topics,
        LoadModel::Open { rate: 10_000.0 },
        Duration::from_secs(args.overload_seconds),
        100,
    );
    overload.timeout = Duration::from_secs(2);
    let sampler = {
        let pid = small.process.child.id();
        tokio::spawn(async move {
            let mut max: f64 = 0.0;
            let end = Instant::now() + Duration::from_secs(args.overload_seconds);
            while Instant::now() < end {
                max = max.max(rss_mb(pid));
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            max
        })
    };
    let overloaded = measure("overload, 10,000 req/s", overload).await?;
    f.overload_max_rss_mb = sampler.await?;
    // Replies within the callers' timeout: what anyone was still waiting for.
    f.overload_goodput_per_s = overloaded.counts.received as f64 / args.overload_seconds as f64;
    f.overload_goodput_ratio = f.overload_goodput_per_s / 1000.0;
    f.overload_served_p99_ms = overloaded.latency.p99_ms;
    f.overload_rss_growth_mb = f.overload_max_rss_mb - f.steady_rss_mb;
    drop(small);

    println!("figure                                   value        target");
    println!(
        "1. concurrency efficiency (W=10k, 1 s)   {:>8.3}      ≥ 0.95 up to the pipeline limit ({:.3} of min(W/wait, pipeline max))",
        f.concurrency_efficiency, f.concurrency_efficiency_vs_pipeline_limit
    );
    println!(
        "2. pipeline overhead (waiter ÷ echo)     {:>8.3}      ≥ 0.6   ({:.0} vs {:.0} replies/s)",
        f.pipeline_overhead_ratio, f.waiter_max_per_s, f.echo_max_per_s
    );
    println!(
        "2. … at 1 % head sampling                {:>8.3}      ≥ 0.9   ({:.0} replies/s)",
        f.pipeline_overhead_sampled_ratio, f.waiter_sampled_max_per_s
    );
    for added in &f.added_latency {
        println!(
            "3. added p99 at {:>5.0} req/s (waiter − echo) {:>6.2} ms ≤ 1 ms  (p99 {:.2} vs {:.2} ms; p99.9 {:.2} vs {:.2} ms)",
            added.rate_per_s,
            added.added_p99_ms,
            added.waiter_p99_ms,
            added.echo_p99_ms,
            added.waiter_p999_ms,
            added.echo_p999_ms
        );
    }
    println!(
        "4. tracing cost (OTLP ÷ none)            {:>8.3}      ≥ 0.9   ({:.0} replies/s traced)",
        f.tracing_cost_ratio, f.traced_max_per_s
    );
    println!(
        "5. RSS growth under 10× overload         {:>8.1} MB   ≤ 50 MB ({:.1} → {:.1} MB)",
        f.overload_rss_growth_mb, f.steady_rss_mb, f.overload_max_rss_mb
    );
    println!(
        "6. generator send delay p99 @ 5k/s       {:>8.3} ms   < 1 ms",
        f.generator_send_delay_p99_ms
    );
    println!(
        "7. goodput under 10× overload            {:>8.3}      ≥ 0.9   ({:.0} replies/s within 2 s of 1,000 possible; served p99 {:.0} ms)",
        f.overload_goodput_ratio, f.overload_goodput_per_s, f.overload_served_p99_ms
    );
    println!(
        "8. CPU per reply (waiter ÷ echo)         {:>8.3}      ≤ 1.25  ({:.1} vs {:.1} µs a reply at {:.0} req/s, 1 % sampling)",
        f.cpu_per_reply_ratio, f.waiter_cpu_us_per_reply, f.echo_cpu_us_per_reply, f.cpu_rate_per_s
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&f)?)?;
    }
    broker.clean_up().await;
    drop(broker);
    Ok(())
}
