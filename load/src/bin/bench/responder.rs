//! What answers a measurement's requests: a `waiter` process, or this
//! binary as the bare echo.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use load::LoadModel;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use crate::broker::*;
use crate::measure::*;

/// A responder process (a `waiter`, or this binary as the bare echo),
/// killed on drop.
pub(crate) struct ResponderProcess {
    pub(crate) child: Child,
    /// Its consumer group.
    pub(crate) group: String,
    pub(crate) _config: tempfile::NamedTempFile,
}

impl ResponderProcess {
    /// Starts `responder` with the same configuration file and environment
    /// whichever it is, so both use the same client settings.
    pub(crate) fn start(
        responder: Responder<'_>,
        bootstrap: &str,
        topics: &Topics,
    ) -> anyhow::Result<Self> {
        let group = format!("bench-{}", uuid::Uuid::new_v4().simple());
        Self::start_in_group(responder, bootstrap, topics, &group)
    }

    /// [`Self::start`] in consumer group `group`: a restarted responder
    /// goes on where the one before it committed.
    pub(crate) fn start_in_group(
        responder: Responder<'_>,
        bootstrap: &str,
        topics: &Topics,
        group: &str,
    ) -> anyhow::Result<Self> {
        let here = std::env::current_exe()?;
        let config_file = tempfile::Builder::new()
            .prefix("bench-responder-")
            .suffix(".yaml")
            .tempfile()?;
        let settings = match responder {
            Responder::Configured { settings } => settings,
            Responder::Echo | Responder::Waiter { .. } => CLIENT_YAML,
        };
        std::fs::write(config_file.path(), settings)?;
        let config = config_file.path();
        let (mut command, waiters, env) = match responder {
            Responder::Echo => {
                let mut command = Command::new(&here);
                command.arg("--echo").arg(config);
                (command, 1, &[][..])
            }
            Responder::Waiter { .. } | Responder::Configured { .. } => {
                let (waiters, env) = match responder {
                    Responder::Waiter { waiters, env } => (waiters, env),
                    _ => (50, &[][..]),
                };
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
            .env(
                "RUST_LOG",
                std::env::var("BENCH_RESPONDER_RUST_LOG").unwrap_or_else(|_| "error".into()),
            )
            .env("WAITER_BUS__HTTP__HOST", "127.0.0.1")
            .env("WAITER_BUS__HTTP__PORT", "0")
            .env("WAITER_BUS__WAITER__REQUEST_TOPIC", &topics.requests)
            .env(
                "WAITER_BUS__WAITER__DEFAULT_RESPONSE_TOPIC",
                &topics.replies,
            )
            .env("WAITER_BUS__WAITER__GROUP_ID", group)
            .env("WAITER_BUS__WAITER__CONSUMERS", "1")
            .env("WAITER_BUS__WAITER__PRODUCERS", "1")
            .env("WAITER_BUS__WAITER__WAITERS", waiters.to_string())
            .env("WAITER_BUS__WAITER__REQUEST_CHANNEL_CAPACITY", "1000")
            .env("WAITER_BUS__WAITER__REPLY_CHANNEL_CAPACITY", "1000")
            .envs(env.iter().copied())
            // The services log to stdout; the waiter's panics and the
            // echo's errors go to stderr.
            .stdout(responder_log()?)
            .stderr(responder_log()?)
            .spawn()?;
        Ok(Self {
            child,
            group: group.to_string(),
            _config: config_file,
        })
    }

    pub(crate) fn rss_mb(&self) -> f64 {
        rss_mb(self.child.id())
    }

    /// CPU time the process has used so far (user + system), in seconds.
    pub(crate) fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.child.id())
    }
}

/// A process's user + system CPU time in seconds, 0 when it cannot be read:
/// fields 14 and 15 of `/proc/<pid>/stat`, in clock ticks.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name (field 2) is in parentheses and may hold spaces.
    let Some((_, after_name)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields 14 and 15 of the whole line are 12 and 13 after the name.
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64);
    (ticks(11) + ticks(12)) / per_second
}

/// Where a responder's log goes: the file `BENCH_RESPONDER_LOG` names
/// (appended to, at the level `BENCH_RESPONDER_RUST_LOG` sets, `error` by
/// default), else nowhere.
fn responder_log() -> anyhow::Result<Stdio> {
    match std::env::var_os("BENCH_RESPONDER_LOG") {
        Some(path) => Ok(std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.to_string_lossy()))?
            .into()),
        None => Ok(Stdio::null()),
    }
}

/// A process's resident set in MB, 0 when it cannot be read.
pub(crate) fn rss_mb(pid: u32) -> f64 {
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

/// Sends single requests until one is answered: the responder is ready.
pub(crate) async fn until_answering(bootstrap: &str, topics: &Topics) -> anyhow::Result<()> {
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

/// What answers the requests of one measurement.
#[derive(Clone, Copy)]
pub(crate) enum Responder<'a> {
    /// The bare rdkafka echo.
    Echo,
    /// A `waiter` with `waiters` permits and extra environment.
    Waiter {
        waiters: usize,
        env: &'a [(&'a str, &'a str)],
    },
    /// A `waiter` with its client settings from `settings` (a settings
    /// file's text: empty for its own defaults) instead of the figures'
    /// shared `CLIENT_YAML`.
    Configured { settings: &'a str },
}

/// A responder answering on its own fresh topics; stopped on drop.
pub(crate) struct Running {
    pub(crate) topics: Topics,
    pub(crate) process: ResponderProcess,
}

impl Responder<'_> {
    pub(crate) async fn start(self, broker: &Broker, name: &str) -> anyhow::Result<Running> {
        let bootstrap = broker.bootstrap_servers();
        let topics = topics(broker, name).await?;
        let process = ResponderProcess::start(self, bootstrap, &topics)?;
        until_answering(bootstrap, &topics).await?;
        Ok(Running { topics, process })
    }
}

/// The best closed-loop throughput over `users`, each at wait 0 against a
/// fresh responder.
pub(crate) async fn max_throughput(
    label: &str,
    broker: &Broker,
    responder: Responder<'_>,
    users: &[usize],
    phase: Duration,
    sample_ratio: f64,
) -> anyhow::Result<f64> {
    let mut best: f64 = 0.0;
    for &n in users {
        let running = responder.start(broker, &label.replace(' ', "-")).await?;
        let mut load = config(
            broker.bootstrap_servers(),
            &running.topics,
            LoadModel::Closed { users: n },
            phase,
            0,
        );
        load.sample_ratio = sample_ratio;
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
pub(crate) struct EchoSettings {
    pub(crate) kafka: kafka_kit::KafkaSettings,
    pub(crate) waiter: EchoTopics,
}

#[derive(serde::Deserialize)]
pub(crate) struct EchoTopics {
    pub(crate) request_topic: String,
    pub(crate) default_response_topic: String,
    pub(crate) group_id: Option<String>,
}

pub(crate) const ECHO_DEFAULTS: &str = r#"
kafka: {bootstrap_servers: "localhost:9092", client: {}, consumer: {}, producer: {}}
waiter: {request_topic: Waiter-Requests, default_response_topic: Waiter-Responses, group_id: null}
"#;

/// The bare echo: consume a request, produce a reply with its correlation,
/// in one loop, with the clients a waiter would build from the same settings.
/// The floor any pipeline sits on. Runs until killed.
pub(crate) async fn echo(config: &std::path::Path) -> anyhow::Result<()> {
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
