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
//! With `KAFKA_BOOTSTRAP_SERVERS` set, the figures are taken on that broker
//! instead; the topics each measurement creates are deleted at the end.

// The services' allocator (see `service_kit::global_allocator!`): the
// generator allocates per request on one thread and frees on another too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use embedded_kafka::apache::{ApacheKafka, ApacheKafkaOptions};
use embedded_kafka::{EmbeddedKafka, EmbeddedKafkaOptions};
use load::{Config, LoadModel, Report, WaitSpec};
use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
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
    #[arg(long, value_delimiter = ',', default_values_t = [100, 1000, 3000])]
    users: Vec<usize>,
    /// Write the figures to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Take the figures on a real Apache Kafka this run starts (the broker
    /// `kafka-dev --apache` runs; needs Java) instead of the embedded one.
    #[arg(long, conflicts_with = "broker_loss")]
    apache: bool,
    /// Instead of the figures: broker loss on a real Apache Kafka this run
    /// starts. Open-loop load through a waiter; the broker is killed with
    /// SIGKILL mid-load and restarted on its data directory; prints replies
    /// lost, duplicates and the time to recover.
    #[arg(long)]
    broker_loss: bool,
    /// Broker loss: offered rate (req/s).
    #[arg(long, default_value_t = 500.0, requires = "broker_loss")]
    loss_rate: f64,
    /// Broker loss: seconds the broker stays down.
    #[arg(long, default_value_t = 5, requires = "broker_loss")]
    outage_seconds: u64,
    /// Internal: be the bare echo, configured like a waiter by this file and
    /// the `WAITER_BUS__…` environment.
    #[arg(long, hide = true, value_name = "CONFIG")]
    echo: Option<PathBuf>,
}

/// The client settings the waiter and the echo share.
const CLIENT_YAML: &str = r#"
kafka:
  consumer:
    heartbeat.interval.ms: "500"
    session.timeout.ms: "6000"
    fetch.wait.max.ms: "5"
  producer:
    linger.ms: "1"
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

/// A responder process (a `waiter`, or this binary as the bare echo),
/// killed on drop.
struct ResponderProcess {
    child: Child,
    _config: tempfile::NamedTempFile,
}

impl ResponderProcess {
    /// Starts `responder` with the same configuration file and environment
    /// whichever it is, so both use the same client settings.
    fn start(responder: Responder<'_>, bootstrap: &str, topics: &Topics) -> anyhow::Result<Self> {
        let here = std::env::current_exe()?;
        let config_file = tempfile::Builder::new()
            .prefix("bench-responder-")
            .suffix(".yaml")
            .tempfile()?;
        std::fs::write(config_file.path(), CLIENT_YAML)?;
        let config = config_file.path();
        let (mut command, waiters, env) = match responder {
            Responder::Echo => {
                let mut command = Command::new(&here);
                command.arg("--echo").arg(config);
                (command, 1, &[][..])
            }
            Responder::Waiter { waiters, env } => {
                let binary = here
                    .parent()
                    .context("the bench binary has a folder")?
                    .join("waiter");
                if !binary.exists() {
                    bail!(
                        "{} not found: build it first with `cargo build --release -p waiter -p load`",
                        binary.display()
                    );
                }
                let mut command = Command::new(binary);
                command.arg("--config").arg(config);
                (command, waiters, env)
            }
        };
        let child = command
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
            _config: config_file,
        })
    }

    fn rss_mb(&self) -> f64 {
        rss_mb(self.child.id())
    }
}

/// A process's resident set in MB, 0 when it cannot be read.
fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

impl Drop for ResponderProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Topics {
    requests: String,
    replies: String,
}

/// Where the figures are taken.
enum Broker {
    /// The embedded broker, started by this run.
    Embedded(EmbeddedKafka),
    /// A broker named by `KAFKA_BOOTSTRAP_SERVERS`; the topics this run
    /// creates are listed so they can be deleted at the end.
    External {
        bootstrap: String,
        admin: AdminClient<DefaultClientContext>,
        created: std::sync::Mutex<Vec<String>>,
        /// The Apache Kafka this run started (`--apache`, `--broker-loss`).
        owned: Option<Box<std::sync::Mutex<ApacheKafka>>>,
    },
}

impl Broker {
    fn start(apache: bool) -> anyhow::Result<Self> {
        if apache {
            eprintln!(
                "starting Apache Kafka {}",
                embedded_kafka::apache::version()
            );
            let broker = ApacheKafka::start(ApacheKafkaOptions {
                die_with_parent: true,
                ..ApacheKafkaOptions::default()
            })
            .context("starting Apache Kafka")?;
            let bootstrap = broker.bootstrap_servers();
            return Ok(Self::External {
                admin: rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", &bootstrap)
                    .create()?,
                bootstrap,
                created: Default::default(),
                owned: Some(Box::new(std::sync::Mutex::new(broker))),
            });
        }
        match std::env::var("KAFKA_BOOTSTRAP_SERVERS") {
            Ok(bootstrap) if !bootstrap.trim().is_empty() => {
                let admin = rdkafka::ClientConfig::new()
                    .set("bootstrap.servers", bootstrap.trim())
                    .create()
                    .context("connecting to KAFKA_BOOTSTRAP_SERVERS")?;
                Ok(Self::External {
                    bootstrap: bootstrap.trim().to_string(),
                    admin,
                    created: Default::default(),
                    owned: None,
                })
            }
            _ => Ok(Self::Embedded(EmbeddedKafka::start(
                EmbeddedKafkaOptions {
                    group_initial_rebalance_delay_ms: 0,
                    ..EmbeddedKafkaOptions::default()
                },
            )?)),
        }
    }

    fn bootstrap_servers(&self) -> &str {
        match self {
            Self::Embedded(broker) => broker.bootstrap_servers(),
            Self::External { bootstrap, .. } => bootstrap,
        }
    }

    async fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        match self {
            Self::Embedded(broker) => Ok(broker.create_topic(name, partitions)?),
            Self::External { admin, created, .. } => {
                let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
                // A broker that does not answer fails the run instead of
                // hanging it.
                let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
                for result in admin
                    .create_topics([&topic], &options)
                    .await
                    .with_context(|| format!("creating topic {name}"))?
                {
                    result.map_err(|(topic, e)| anyhow::anyhow!("creating {topic}: {e}"))?;
                }
                created
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(name.to_string());
                Ok(())
            }
        }
    }

    /// Deletes the topics this run created on an external broker.
    async fn clean_up(&self) {
        if let Self::External { admin, created, .. } = self {
            let names = std::mem::take(&mut *created.lock().unwrap_or_else(|e| e.into_inner()));
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            if let Err(e) = admin.delete_topics(&names, &AdminOptions::new()).await {
                eprintln!("could not delete the benchmark's topics {names:?}: {e}");
            }
        }
    }
}

/// Fresh, empty topics: the embedded broker finds a fetch offset by walking
/// the partition's log from its oldest record, so a long log slows every
/// fetch. Each measurement starts on empty topics so none inherits another's.
async fn topics(broker: &Broker, name: &str) -> anyhow::Result<Topics> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let topics = Topics {
        requests: format!("bench-{name}-{id}-requests"),
        replies: format!("bench-{name}-{id}-replies"),
    };
    broker.create_topic(&topics.requests, 4).await?;
    broker.create_topic(&topics.replies, 4).await?;
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

/// What answers the requests of one measurement.
#[derive(Clone, Copy)]
enum Responder<'a> {
    /// The bare rdkafka echo.
    Echo,
    /// A `waiter` with `waiters` permits and extra environment.
    Waiter {
        waiters: usize,
        env: &'a [(&'a str, &'a str)],
    },
}

/// A responder answering on its own fresh topics; stopped on drop.
struct Running {
    topics: Topics,
    process: ResponderProcess,
}

impl Responder<'_> {
    async fn start(self, broker: &Broker, name: &str) -> anyhow::Result<Running> {
        let bootstrap = broker.bootstrap_servers();
        let topics = topics(broker, name).await?;
        let process = ResponderProcess::start(self, bootstrap, &topics)?;
        until_answering(bootstrap, &topics).await?;
        Ok(Running { topics, process })
    }
}

/// The best closed-loop throughput over `users`, each at wait 0 against a
/// fresh responder.
async fn max_throughput(
    label: &str,
    broker: &Broker,
    responder: Responder<'_>,
    users: &[usize],
    phase: Duration,
) -> anyhow::Result<f64> {
    let mut best: f64 = 0.0;
    for &n in users {
        let running = responder.start(broker, &label.replace(' ', "-")).await?;
        let load = config(
            broker.bootstrap_servers(),
            &running.topics,
            LoadModel::Closed { users: n },
            phase,
            0,
        );
        best = best.max(
            measure(&format!("{label}, {n} users"), load)
                .await?
                .throughput_per_s,
        );
    }
    Ok(best)
}

/// The echo reads the waiter's settings file and environment, but only the
/// parts a bare client needs (the rest, such as pool sizes, is ignored).
#[derive(serde::Deserialize)]
struct EchoSettings {
    kafka: kafka_kit::KafkaSettings,
    waiter: EchoTopics,
}

#[derive(serde::Deserialize)]
struct EchoTopics {
    request_topic: String,
    default_response_topic: String,
    group_id: Option<String>,
}

const ECHO_DEFAULTS: &str = r#"
kafka: {bootstrap_servers: "localhost:9092", client: {}, consumer: {}, producer: {}}
waiter: {request_topic: Waiter-Requests, default_response_topic: Waiter-Responses, group_id: null}
"#;

/// The bare echo: consume a request, produce a reply with its correlation,
/// in one loop, with the clients a waiter would build from the same settings.
/// The floor any pipeline sits on. Runs until killed.
async fn echo(config: &std::path::Path) -> anyhow::Result<()> {
    let settings: EchoSettings = settings::Loader::new(ECHO_DEFAULTS)
        .file(Some(config))
        .kafka_section("kafka")
        .load()?;
    let consumer: StreamConsumer = settings
        .kafka
        .consumer_config()
        .set(
            "group.id",
            settings.waiter.group_id.as_deref().unwrap_or("bench-echo"),
        )
        .set("auto.offset.reset", "latest")
        .create()?;
    consumer.subscribe(&[&settings.waiter.request_topic])?;
    let producer: FutureProducer = settings
        .kafka
        .producer_config()
        .set("acks", "all")
        .create()?;
    let replies = settings.waiter.default_response_topic;
    let mut stream = consumer.stream();
    let mut deliveries = tokio::task::JoinSet::new();
    // Never cancelled: the echo runs until the benchmark kills it.
    let forever = CancellationToken::new();
    while let Some(message) = kafka_kit::stream::next_message(&mut stream, &forever, "echo").await {
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
    anyhow::bail!("the echo's consumer stream ended")
}

/// Mean replies per second over whole seconds `from..to` of the run.
fn steady_throughput(report: &Report, from: u64, to: u64) -> f64 {
    let seconds = to.saturating_sub(from).max(1);
    let received: u64 = report
        .timeline
        .iter()
        .filter(|s| (from..to).contains(&s.second))
        .map(|s| s.received)
        .sum();
    received as f64 / seconds as f64
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
    if let Some(config) = &args.echo {
        return echo(config).await;
    }
    let phase = Duration::from_secs(args.seconds);
    let broker = Broker::start(args.apache || args.broker_loss)?;
    let bootstrap = broker.bootstrap_servers().to_string();
    eprintln!(
        "broker: {}",
        match &broker {
            Broker::Embedded(_) => format!("embedded, {bootstrap}"),
            Broker::External { owned: Some(_), .. } => format!(
                "Apache Kafka {}, {bootstrap}",
                embedded_kafka::apache::version()
            ),
            Broker::External { .. } => format!("{bootstrap} (KAFKA_BOOTSTRAP_SERVERS)"),
        }
    );
    if args.broker_loss {
        let result = broker_loss(&broker, &args).await;
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
    f.echo_max_per_s =
        max_throughput("bare echo", &broker, Responder::Echo, &args.users, phase).await?;
    f.waiter_max_per_s = max_throughput("waiter", &broker, waiter, &args.users, phase).await?;
    f.pipeline_overhead_ratio = f.waiter_max_per_s / f.echo_max_per_s;

    f.half_rate_per_s = (f.echo_max_per_s.min(f.waiter_max_per_s) / 2.0)
        .floor()
        .max(1.0);
    eprintln!(
        "3. latency overhead (open loop at {:.0} req/s)",
        f.half_rate_per_s
    );
    let open = |t: &Topics, rate: f64| config(&bootstrap, t, LoadModel::Open { rate }, phase, 0);
    let echo = Responder::Echo.start(&broker, "echo").await?;
    f.echo_p99_ms = measure("bare echo", open(&echo.topics, f.half_rate_per_s))
        .await?
        .latency
        .p99_ms;
    drop(echo);
    let running = waiter.start(&broker, "waiter").await?;
    f.waiter_p99_ms = measure("waiter", open(&running.topics, f.half_rate_per_s))
        .await?
        .latency
        .p99_ms;
    f.latency_overhead_ms = f.waiter_p99_ms - f.echo_p99_ms;
    drop(running);

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
        max_throughput("traced waiter", &broker, traced, &args.users, phase).await?;
    f.tracing_cost_ratio = f.traced_max_per_s / f.waiter_max_per_s;

    eprintln!("5. memory under overload (W = 100, wait 100 ms: capacity 1,000 req/s)");
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
    broker.clean_up().await;
    drop(broker);
    Ok(())
}

/// Broker loss on a real Apache Kafka this run owns: open-loop load through
/// a waiter; after `--seconds` the broker is killed with SIGKILL,
/// stays down for `--outage-seconds`, and is restarted on its data
/// directory. Requests wait up to a minute for their reply, so a reply that
/// never comes is a lost request, not a slow one.
async fn broker_loss(broker: &Broker, args: &Args) -> anyhow::Result<()> {
    let Broker::External {
        owned: Some(apache),
        ..
    } = broker
    else {
        bail!("--broker-loss needs a broker this run can kill: it starts its own Apache Kafka");
    };
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
    let mut load = config(
        &bootstrap,
        &waiter.topics,
        LoadModel::Open {
            rate: args.loss_rate,
        },
        run_for,
        10,
    );
    load.timeout = Duration::from_secs(60);
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
    apache.lock().unwrap_or_else(|e| e.into_inner()).kill();
    eprintln!("  broker killed at {:.1} s", killed_at.as_secs_f64());
    tokio::time::sleep(outage).await;
    let restarting = Instant::now();
    tokio::task::block_in_place(|| apache.lock().unwrap_or_else(|e| e.into_inner()).restart())?;
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
