//! A waiter instance as its own operating-system process, so that a crash
//! is a real one: SIGKILL leaves no consumer to say goodbye to the group
//! and no lease to give up, exactly as a pod killed by the OOM killer.
//! The churn scenario uses it for `--kill` (see [`crate::StackOptions`]'s
//! `waiter_binary`).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

/// One waiter process and the configuration file it was started with.
pub struct WaiterProcess {
    /// The variant label it serves.
    pub label: String,
    child: tokio::process::Child,
    // Read by the process at start; kept until it exits.
    _config: tempfile::NamedTempFile,
}

/// What a waiter process needs to join the stack.
pub struct WaiterProcessConfig<'a> {
    /// The `waiter` executable.
    pub binary: &'a Path,
    /// The variant label it serves.
    pub label: &'a str,
    /// The broker and client properties.
    pub kafka: &'a kafka_kit::KafkaSettings,
    /// Where it reads requests and writes replies and dead letters.
    pub topics: &'a protocol::topics::RequestTopics,
    /// Its consumer group.
    pub group: &'a str,
    /// The route table's topic.
    pub routes_topic: &'a str,
    /// The registry's base URL.
    pub registry: &'a str,
    /// The registry's token.
    pub token: &'a str,
    /// The ledger's base URL.
    pub ledger: &'a str,
    /// Its behaviour change: every wait scaled by this.
    pub wait_scale: f64,
}

impl WaiterProcess {
    /// Starts `config.binary` with a configuration file equivalent to the
    /// in-process stack's waiter settings (JSON, which the YAML loader
    /// reads). Its log lines go to this process's stderr.
    pub fn spawn(config: &WaiterProcessConfig<'_>) -> anyhow::Result<Self> {
        let file = json!({
            "service": {"variant": config.label},
            "http": {"host": "127.0.0.1", "port": 0},
            "kafka": {
                "bootstrap_servers": config.kafka.bootstrap_servers,
                "client": config.kafka.client,
                "consumer": config.kafka.consumer,
                "producer": config.kafka.producer,
            },
            "waiter": {
                "request_topic": config.topics.requests,
                "default_response_topic": config.topics.replies,
                "dead_letter_topic": config.topics.dead_letters,
                "group_id": config.group,
                "consumers": 1,
                "producers": 1,
                "wait_scale": config.wait_scale,
            },
            "ledger": {"url": config.ledger},
            "registry": {"url": config.registry, "token": config.token},
            "routes": {"topic": config.routes_topic},
        });
        let mut written = tempfile::Builder::new()
            .prefix("waiter-")
            .suffix(".yaml")
            .tempfile()
            .context("writing a waiter process's configuration")?;
        serde_json::to_writer_pretty(&mut written, &file)?;
        let child = tokio::process::Command::new(config.binary)
            .arg("--config")
            .arg(written.path())
            // The configuration file names the broker; an inherited
            // variable must not override it.
            .env_remove("KAFKA_BOOTSTRAP_SERVERS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", config.binary.display()))?;
        Ok(Self {
            label: config.label.to_string(),
            child,
            _config: written,
        })
    }

    /// SIGKILL, then reaps it.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await.context("killing a waiter process")
    }

    /// SIGTERM, then waits up to `within` for it to drain and exit.
    pub async fn stop_within(mut self, within: Duration) -> anyhow::Result<()> {
        let pid = self
            .child
            .id()
            .context("the waiter process already exited")?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
            .with_context(|| format!("signalling waiter process {pid}"))?;
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .with_context(|| format!("waiter process {pid} did not exit within {within:?}"))??;
        anyhow::ensure!(
            status.success(),
            "waiter process {pid} exited with {status}"
        );
        Ok(())
    }
}
