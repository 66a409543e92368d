//! `bench`: the performance figures of waiter-bus, each a ratio taken in one
//! run on this machine with the embedded broker:
//!
//! 1. concurrency efficiency: waiter throughput ÷ (W / wait) at W = 10,000, wait = 1 s;
//! 2. pipeline overhead: waiter throughput at wait 0 ÷ a bare rdkafka echo's;
//! 3. latency overhead: p99 at half the maximum rate, waiter − echo;
//! 4. tracing cost: throughput with spans exported over OTLP ÷ without;
//! 5. memory under overload: waiter RSS at 10× capacity − RSS at steady state;
//! 6. generator accuracy: p99 of (actual − intended send time) at 5,000 req/s.
//!
//! Waiters run as `waiter` processes (built beside this binary), so tracing
//! and memory are measured per process. Build both first:
//! `cargo build --release -p waiter -p load`, then `target/release/bench`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use embedded_kafka::{EmbeddedKafka, EmbeddedKafkaOptions};
use futures_lite::StreamExt;
use load::{Config, LoadModel, Report, WaitSpec};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// Measure the waiter's performance figures on this machine.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Seconds per throughput or latency phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of overload in the memory phase.
    #[arg(long, default_value_t = 60)]
    overload_seconds: u64,
    /// Closed-loop user counts tried for each maximum throughput; the best
    /// is the maximum (past the knee, more users only add queueing).
    #[arg(long, value_delimiter = ',', default_values_t = [100, 300, 1000])]
    users: Vec<usize>,
    /// Write the figures to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The client settings the waiter and the echo share.
const CLIENT_YAML: &str = r#"
kafka:
  consumer:
    heartbeat.interval.ms: "500"
    session.timeout.ms: "6000"
    fetch.wait.max.ms: "5"
  producer:
    linger.ms: "0"
"#;

#[derive(Debug, Default, Serialize)]
struct Figures {
    echo_max_per_s: f64,
    waiter_max_per_s: f64,
    pipeline_overhead_ratio: f64,
    half_rate_per_s: f64,
    echo_p99_ms: f64,
    waiter_p99_ms: f64,
    latency_overhead_ms: f64,
    concurrency_throughput_per_s: f64,
    concurrency_efficiency: f64,
    concurrency_efficiency_vs_pipeline_limit: f64,
    traced_max_per_s: f64,
    tracing_cost_ratio: f64,
    steady_rss_mb: f64,
    overload_max_rss_mb: f64,
    overload_rss_growth_mb: f64,
    generator_send_delay_p99_ms: f64,
}

/// A `waiter` process, killed on drop.
struct WaiterProcess {
    child: Child,
    _config: tempfile_path::TempFile,
}

mod tempfile_path {
    /// A file removed on drop.
    pub struct TempFile(pub std::path::PathBuf);
    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

impl WaiterProcess {
    fn start(
        bootstrap: &str,
        topics: &Topics,
        waiters: usize,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let binary = std::env::current_exe()?
            .parent()
            .context("the bench binary has a folder")?
            .join("waiter");
        if !binary.exists() {
            bail!(
                "{} not found: build it first with `cargo build --release -p waiter -p load`",
                binary.display()
            );
        }
        let config = std::env::temp_dir().join(format!(
            "bench-waiter-{}.yaml",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&config, CLIENT_YAML)?;
        let child = Command::new(binary)
            .arg("--config")
            .arg(&config)
            .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
            .env("RUST_LOG", "error")
            .env("WAITER_BUS__HTTP__HOST", "127.0.0.1")
            .env("WAITER_BUS__HTTP__PORT", "0")
            .env("WAITER_BUS__WAITER__REQUEST_TOPIC", &topics.requests)
            .env(
                "WAITER_BUS__WAITER__DEFAULT_RESPONSE_TOPIC",
                &topics.replies,
            )
            .env(
                "WAITER_BUS__WAITER__GROUP_ID",
                format!("bench-{}", uuid::Uuid::new_v4().simple()),
            )
            .env("WAITER_BUS__WAITER__CONSUMERS", "1")
            .env("WAITER_BUS__WAITER__PRODUCERS", "1")
            .env("WAITER_BUS__WAITER__WAITERS", waiters.to_string())
            .env("WAITER_BUS__WAITER__REQUEST_CHANNEL_CAPACITY", "1000")
            .env("WAITER_BUS__WAITER__REPLY_CHANNEL_CAPACITY", "1000")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Self {
            child,
            _config: tempfile_path::TempFile(config),
        })
    }

    fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

impl Drop for WaiterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Topics {
    requests: String,
    replies: String,
}

fn topics(broker: &EmbeddedKafka, name: &str) -> anyhow::Result<Topics> {
    let topics = Topics {
        requests: format!("bench-{name}-requests"),
        replies: format!("bench-{name}-replies"),
    };
    broker.create_topic(&topics.requests, 4)?;
    broker.create_topic(&topics.replies, 4)?;
    Ok(topics)
}

fn config(
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
    config
}

/// Sends single requests until one is answered: the responder is ready.
async fn until_answering(bootstrap: &str, topics: &Topics) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let mut probe = config(
            bootstrap,
            topics,
            LoadModel::Closed { users: 1 },
            Duration::from_millis(200),
            0,
        );
        probe.timeout = Duration::from_secs(2);
        if load::run(probe).await?.counts.received > 0 {
            return Ok(());
        }
    }
    bail!("the responder on {} never answered", topics.requests)
}

async fn measure(label: &str, config: Config) -> anyhow::Result<Report> {
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

/// The best closed-loop throughput over `users`, each at wait 0.
async fn max_throughput(
    label: &str,
    bootstrap: &str,
    topics: &Topics,
    users: &[usize],
    phase: Duration,
) -> anyhow::Result<f64> {
    let mut best: f64 = 0.0;
    for &n in users {
        let load = config(bootstrap, topics, LoadModel::Closed { users: n }, phase, 0);
        best = best.max(
            measure(&format!("{label}, {n} users"), load)
                .await?
                .throughput_per_s,
        );
    }
    Ok(best)
}

/// A bare echo: consume a request, produce a reply with its correlation, in
/// one loop, with the waiter's client settings. The floor any pipeline sits on.
fn start_echo(
    bootstrap: &str,
    topics: &Topics,
    stop: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set(
            "group.id",
            format!("echo-{}", uuid::Uuid::new_v4().simple()),
        )
        .set("auto.offset.reset", "latest")
        .set("fetch.wait.max.ms", "5")
        .create()?;
    consumer.subscribe(&[&topics.requests])?;
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("linger.ms", "0")
        .create()?;
    let replies = topics.replies.clone();
    Ok(tokio::spawn(async move {
        let mut stream = consumer.stream();
        let mut deliveries = tokio::task::JoinSet::new();
        loop {
            let message = tokio::select! {
                () = stop.cancelled() => return,
                next = stream.next() => match next { Some(Ok(m)) => m, _ => continue },
            };
            let Some(correlation) =
                propagation::kafka_header(message.headers(), "correlation").map(str::to_string)
            else {
                continue;
            };
            let producer = producer.clone();
            let replies = replies.clone();
            deliveries.spawn(async move {
                let headers = OwnedHeaders::new().insert(Header {
                    key: "correlation",
                    value: Some(&correlation),
                });
                let _ = producer
                    .send(
                        FutureRecord::<str, str>::to(&replies)
                            .key(&correlation)
                            .payload("{}")
                            .headers(headers),
                        Duration::from_secs(10),
                    )
                    .await;
            });
            while deliveries.try_join_next().is_some() {}
        }
    }))
}

/// Accepts OTLP/HTTP exports and discards them: the exporter's full cost, no collector.
async fn otlp_sink() -> anyhow::Result<String> {
    let router = axum::Router::new().route("/v1/traces", axum::routing::post(|| async { "" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(url)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let phase = Duration::from_secs(args.seconds);
    let broker = EmbeddedKafka::start(EmbeddedKafkaOptions {
        group_initial_rebalance_delay_ms: 0,
        ..EmbeddedKafkaOptions::default()
    })?;
    let bootstrap = broker.bootstrap_servers().to_string();
    let mut f = Figures::default();
    eprintln!(
        "2. pipeline overhead (wait 0, best of {:?} users, {} s each)",
        args.users, args.seconds
    );
    let echo_topics = topics(&broker, "echo")?;
    let stop_echo = CancellationToken::new();
    let echo = start_echo(&bootstrap, &echo_topics, stop_echo.clone())?;
    until_answering(&bootstrap, &echo_topics).await?;
    f.echo_max_per_s =
        max_throughput("bare echo", &bootstrap, &echo_topics, &args.users, phase).await?;
    let waiter_topics = topics(&broker, "waiter")?;
    let waiter = WaiterProcess::start(&bootstrap, &waiter_topics, 10_000, &[])?;
    until_answering(&bootstrap, &waiter_topics).await?;
    f.waiter_max_per_s =
        max_throughput("waiter", &bootstrap, &waiter_topics, &args.users, phase).await?;
    f.pipeline_overhead_ratio = f.waiter_max_per_s / f.echo_max_per_s;

    f.half_rate_per_s = (f.echo_max_per_s.min(f.waiter_max_per_s) / 2.0)
        .floor()
        .max(1.0);
    eprintln!(
        "3. latency overhead (open loop at {:.0} req/s)",
        f.half_rate_per_s
    );
    let open = |t: &Topics| {
        config(
            &bootstrap,
            t,
            LoadModel::Open {
                rate: f.half_rate_per_s,
            },
            phase,
            0,
        )
    };
    f.echo_p99_ms = measure("bare echo", open(&echo_topics))
        .await?
        .latency
        .p99_ms;
    f.waiter_p99_ms = measure("waiter", open(&waiter_topics))
        .await?
        .latency
        .p99_ms;
    f.latency_overhead_ms = f.waiter_p99_ms - f.echo_p99_ms;
    stop_echo.cancel();
    let _ = echo.await;
    drop(waiter);

    // Each phase gets fresh topics and responders, so no backlog leaks in.
    eprintln!("6. generator accuracy (open loop at 5000 req/s against a fresh echo)");
    let accuracy_topics = topics(&broker, "accuracy")?;
    let stop_echo = CancellationToken::new();
    let echo = start_echo(&bootstrap, &accuracy_topics, stop_echo.clone())?;
    until_answering(&bootstrap, &accuracy_topics).await?;
    let accuracy = config(
        &bootstrap,
        &accuracy_topics,
        LoadModel::Open { rate: 5000.0 },
        phase,
        0,
    );
    f.generator_send_delay_p99_ms = measure("generator", accuracy).await?.send_delay.p99_ms;
    stop_echo.cancel();
    let _ = echo.await;

    eprintln!("1. concurrency efficiency (W = 10,000, wait 1 s, 10,000 users)");
    let concurrency_topics = topics(&broker, "concurrency")?;
    let waiter = WaiterProcess::start(&bootstrap, &concurrency_topics, 10_000, &[])?;
    until_answering(&bootstrap, &concurrency_topics).await?;
    let concurrency = config(
        &bootstrap,
        &concurrency_topics,
        LoadModel::Closed { users: 10_000 },
        phase.max(Duration::from_secs(5)),
        1000,
    );
    f.concurrency_throughput_per_s = measure("waiter", concurrency).await?.throughput_per_s;
    f.concurrency_efficiency = f.concurrency_throughput_per_s / 10_000.0;
    f.concurrency_efficiency_vs_pipeline_limit =
        f.concurrency_throughput_per_s / (10_000f64).min(f.waiter_max_per_s);
    drop(waiter);

    eprintln!("4. tracing cost (wait 0, spans exported over OTLP/HTTP to a local sink)");
    let sink = otlp_sink().await?;
    let traced_topics = topics(&broker, "traced")?;
    let traced = WaiterProcess::start(
        &bootstrap,
        &traced_topics,
        10_000,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", sink.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ],
    )?;
    until_answering(&bootstrap, &traced_topics).await?;
    f.traced_max_per_s = max_throughput(
        "traced waiter",
        &bootstrap,
        &traced_topics,
        &args.users,
        phase,
    )
    .await?;
    f.tracing_cost_ratio = f.traced_max_per_s / f.waiter_max_per_s;
    drop(traced);

    eprintln!("5. memory under overload (W = 100, wait 100 ms: capacity 1,000 req/s)");
    let memory_topics = topics(&broker, "memory")?;
    let small = WaiterProcess::start(&bootstrap, &memory_topics, 100, &[])?;
    until_answering(&bootstrap, &memory_topics).await?;
    measure(
        "steady, 500 req/s",
        config(
            &bootstrap,
            &memory_topics,
            LoadModel::Open { rate: 500.0 },
            phase,
            100,
        ),
    )
    .await?;
    f.steady_rss_mb = small.rss_mb();
    let mut overload = config(
        &bootstrap,
        &memory_topics,
        LoadModel::Open { rate: 10_000.0 },
        Duration::from_secs(args.overload_seconds),
        100,
    );
    overload.timeout = Duration::from_secs(2);
    let sampler = {
        let pid = small.child.id();
        tokio::spawn(async move {
            let mut max: f64 = 0.0;
            let end = Instant::now() + Duration::from_secs(args.overload_seconds);
            while Instant::now() < end {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                if let Some(kb) = status
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                {
                    max = max.max(kb / 1024.0);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            max
        })
    };
    measure("overload, 10,000 req/s", overload).await?;
    f.overload_max_rss_mb = sampler.await?;
    f.overload_rss_growth_mb = f.overload_max_rss_mb - f.steady_rss_mb;
    drop(small);

    println!("figure                                   value        target");
    println!(
        "1. concurrency efficiency (W=10k, 1 s)   {:>8.3}      ≥ 0.95 up to the pipeline limit ({:.3} of min(W/wait, pipeline max))",
        f.concurrency_efficiency, f.concurrency_efficiency_vs_pipeline_limit
    );
    println!(
        "2. pipeline overhead (waiter ÷ echo)     {:>8.3}      ≥ 0.9   ({:.0} vs {:.0} replies/s)",
        f.pipeline_overhead_ratio, f.waiter_max_per_s, f.echo_max_per_s
    );
    println!(
        "3. latency overhead (p99, waiter − echo) {:>8.2} ms   ≤ 2 ms  (at {:.0} req/s: {:.2} vs {:.2} ms)",
        f.latency_overhead_ms, f.half_rate_per_s, f.waiter_p99_ms, f.echo_p99_ms
    );
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
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&f)?)?;
    }
    drop(broker);
    Ok(())
}
