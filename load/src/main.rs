//! `load`: request/reply load over Kafka. Exit status 0 when every
//! objective (`--slo`) was met, 2 when one was missed, 1 on error.

// The services' allocator (see `service_kit::global_allocator!`): the
// generator allocates per request on one thread and frees on another too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use embedded_kafka::{EmbeddedKafka, EmbeddedKafkaOptions};
use load::{Config, LoadModel, Slo, WaitSpec};

/// Offer request/reply load to the waiter over Kafka and report honestly.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        default_value = "localhost:9092"
    )]
    bootstrap_servers: String,
    /// Where to send: `kafka` (the request topic) or `http` (POST /wait on --url).
    #[arg(long, default_value = "kafka", value_parser = ["kafka", "http"])]
    target: String,
    /// The gateway's base URL, for `--target http`.
    #[arg(long, default_value = "http://localhost:8080")]
    url: String,
    /// Start an embedded broker and a waiter in this process and load them.
    #[arg(long)]
    embedded: bool,
    /// Open loop: requests per second, whatever the replies do.
    #[arg(long, conflicts_with = "users")]
    rate: Option<f64>,
    /// Closed loop: users, each sending its next request after the last reply.
    #[arg(long)]
    users: Option<usize>,
    /// How long to send, e.g. 30s or 2m.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Open loop: rise linearly to the rate over this time.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    ramp_up: Duration,
    /// The wait each request asks for: milliseconds, or a uniform range like 10..200.
    #[arg(long, default_value = "10")]
    wait_ms: WaitSpec,
    /// Put `tenant=ID` in each request's baggage.
    #[arg(long)]
    tenant: Option<String>,
    /// Filler bytes added to each request body.
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
    /// A request with no reply after this long counts as timed out.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Send no deadline header, as the Go app's clients and JMeter plans do:
    /// the waiter then serves every request however late (compare goodput
    /// under overload with and without).
    #[arg(long)]
    no_deadline: bool,
    /// Request topic.
    #[arg(long, default_value = protocol::topics::REQUESTS)]
    request_topic: String,
    /// Response topic (named in each request's `responseTopic`).
    #[arg(long, default_value = protocol::topics::RESPONSES)]
    response_topic: String,
    /// Objectives that set the exit status, e.g. --slo p99=200ms --slo errors=0.
    #[arg(long = "slo", value_name = "NAME=LIMIT")]
    slos: Vec<Slo>,
    /// Write every figure to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write a self-contained HTML report with plots to this file.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Embedded mode: concurrent waits in the waiter.
    #[arg(long, default_value_t = 10_000)]
    waiters: usize,
    /// No live progress line.
    #[arg(long)]
    quiet: bool,
    /// Take the generator's Kafka client properties from this services-style
    /// settings file (`kafka.client`, `kafka.producer`, `kafka.consumer`),
    /// e.g. `config/low-latency.yaml`; `--producer` and `--consumer` win.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A librdkafka property for the generator's producer (repeatable),
    /// e.g. `--producer linger.ms=5 --producer compression.type=lz4`.
    #[arg(long = "producer", value_name = "KEY=VALUE", value_parser = property)]
    producer_properties: Vec<(String, String)>,
    /// A librdkafka property for the generator's reply consumer (repeatable),
    /// e.g. `--consumer fetch.wait.max.ms=1`.
    #[arg(long = "consumer", value_name = "KEY=VALUE", value_parser = property)]
    consumer_properties: Vec<(String, String)>,
}

/// Parses `KEY=VALUE`; librdkafka itself rejects unknown keys and bad values
/// when the client is created, naming both.
fn property(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(format!(
            "expected KEY=VALUE, e.g. linger.ms=5, got `{text}`"
        )),
    }
}

fn main() -> std::process::ExitCode {
    // The table is the output; log lines are for trouble only, unless asked.
    if std::env::var_os("RUST_LOG").is_none() {
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("RUST_LOG", "warn,librdkafka=error,rdkafka=error") };
    }
    match tokio::runtime::Runtime::new()
        .context("starting the runtime")
        .and_then(|runtime| runtime.block_on(run(Args::parse())))
    {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(2),
        Err(e) => {
            eprintln!("load: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Returns whether every objective was met.
async fn run(args: Args) -> anyhow::Result<bool> {
    let mut telemetry_config =
        telemetry::TelemetryConfig::service("load", env!("CARGO_PKG_VERSION"), "baseline");
    telemetry_config.log_output = telemetry::LogOutput::Stderr;
    if args.embedded {
        // The waiter runs in this process; its spans go out as the waiter's.
        telemetry_config = telemetry_config.hosting_every_service();
    }
    let telemetry = telemetry::init(telemetry_config)?;
    let model = match (args.rate, args.users) {
        (_, Some(users)) => LoadModel::Closed { users },
        (rate, None) => LoadModel::Open {
            rate: rate.unwrap_or(100.0),
        },
    };
    if args.embedded && args.target == "http" {
        anyhow::bail!("--embedded starts a broker and a waiter, not a gateway; use --target kafka");
    }
    let mut config = Config::new(&args.bootstrap_servers);
    if args.target == "http" {
        config.target = load::Target::Http {
            url: args.url.clone(),
        };
    }
    config.request_topic = args.request_topic.clone();
    config.response_topic = args.response_topic.clone();
    config.model = model;
    config.duration = args.duration;
    config.ramp_up = args.ramp_up;
    config.wait = args.wait_ms;
    config.tenant = args.tenant.clone();
    config.payload_bytes = args.payload_bytes;
    config.timeout = args.timeout;
    config.deadline = !args.no_deadline;
    config.progress = !args.quiet;
    config.trace = telemetry.otlp_enabled();
    if let Some(file) = &args.config {
        let properties = load::client_properties(file)?;
        config.producer_properties = properties.producer;
        config.consumer_properties = properties.consumer;
    }
    config
        .producer_properties
        .extend(args.producer_properties.iter().cloned());
    config
        .consumer_properties
        .extend(args.consumer_properties.iter().cloned());

    let embedded = match args.embedded {
        true => Some(start_embedded(&mut config, args.waiters).await?),
        false => None,
    };
    let report = load::run(config).await.context("running the load")?;
    if let Some(embedded) = embedded {
        embedded.stop().await;
    }
    print!("{}", report.table());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("figures written to {}", path.display());
    }
    if let Some(path) = &args.html {
        std::fs::write(path, load::html::render(&report))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("report written to {}", path.display());
    }
    let missed = report.violations(&args.slos);
    for objective in &missed {
        println!("SLO missed: {objective}");
    }
    telemetry.shutdown(Duration::from_secs(5));
    Ok(missed.is_empty())
}

/// A broker and a waiter running in this process.
struct Embedded {
    waiter: waiter::RunningWaiter,
    broker: EmbeddedKafka,
}

impl Embedded {
    /// Drains the waiter while the broker is still up, then stops the broker.
    async fn stop(self) {
        let stopped = self
            .waiter
            .into_service()
            .stop_within(Duration::from_secs(30))
            .await;
        if let Err(e) = stopped {
            eprintln!("load: the embedded waiter: {e:#}");
        }
        drop(self.broker);
    }
}

async fn start_embedded(config: &mut Config, waiters: usize) -> anyhow::Result<Embedded> {
    let broker = EmbeddedKafka::start(EmbeddedKafkaOptions::default())
        .context("starting the embedded broker")?;
    config.bootstrap_servers = broker.bootstrap_servers().to_string();
    // Tuned for the mock's habits (see `EmbeddedKafka::client_settings`).
    let kafka = broker.client_settings();
    let topics = protocol::topics::RequestTopics {
        requests: config.request_topic.clone(),
        replies: config.response_topic.clone(),
        dead_letters: protocol::topics::DEAD_LETTER.into(),
    };
    let mut settings = waiter::Settings::in_process(kafka, &topics, "waiter");
    let pipeline = &mut settings.waiter;
    pipeline.producers = NonZeroUsize::MIN;
    pipeline.waiters =
        NonZeroUsize::new(waiters).context("--embedded-waiters must be at least 1")?;
    pipeline.request_channel_capacity = NonZeroUsize::new(1000).expect("not zero");
    pipeline.reply_channel_capacity = NonZeroUsize::new(1000).expect("not zero");
    let waiter = waiter::RunningWaiter::start_assigned(settings, Duration::from_secs(30))
        .await
        .context("starting the embedded waiter")?;
    eprintln!(
        "load: embedded broker at {} with a waiter of {waiters} waits",
        broker.bootstrap_servers()
    );
    Ok(Embedded { waiter, broker })
}
