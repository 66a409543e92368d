//! A real Apache Kafka broker (KRaft, one node acting as broker and
//! controller) run as a JVM on loopback: the broker users run, for tests,
//! benchmarks and `kafka-dev --apache`.
//!
//! [`ApacheKafka::start`] makes sure the broker's jars are in the cache
//! (resolved once from Maven Central by the checked-in `apache/pom.xml`, see
//! [`install`]), formats a data directory if it is new, starts the JVM, waits
//! until the broker answers and creates the project's topics through the
//! admin API. [`ApacheKafka::kill`] and [`ApacheKafka::restart`] are the
//! real-broker form of a fault: `kill -9`, then the same broker back on the
//! same data directory and port.

mod admin;
mod data_dir;
mod install;

pub use admin::create_topics;
pub use install::{POM, cache_dir, install, version};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;

use data_dir::{DataDir, LOG4J2, Ports, ports};
use install::require;

/// How long a started broker may take to answer before start-up fails.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a SIGTERM'd broker may take to shut down cleanly before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the Apache broker could not be installed, started or used.
#[derive(Debug, thiserror::Error)]
pub enum ApacheKafkaError {
    /// A program the broker needs is missing from the machine.
    #[error("{program} was not found: {install}")]
    Missing {
        /// The program, e.g. `java`.
        program: &'static str,
        /// What to install to get it.
        install: &'static str,
    },
    /// Resolving the broker's jars from Maven Central failed.
    #[error("downloading Apache Kafka {version} with Maven failed:\n{output}")]
    Install {
        /// The Kafka version.
        version: &'static str,
        /// Maven's output.
        output: String,
    },
    /// Formatting the data directory failed.
    #[error("formatting {dir} failed:\n{output}")]
    Format {
        /// The data directory.
        dir: PathBuf,
        /// The storage tool's output.
        output: String,
    },
    /// The broker did not come up.
    #[error("the broker did not start: {reason} (its log: {log})")]
    Start {
        /// What went wrong.
        reason: String,
        /// The broker's log file.
        log: PathBuf,
    },
    /// The data directory named is a file.
    #[error("the data directory {0} is not a directory")]
    NotADirectory(PathBuf),
    /// The admin API refused to create a topic.
    #[error("creating topic {topic}: {reason}")]
    Topic {
        /// The topic.
        topic: String,
        /// The broker's answer.
        reason: String,
    },
    /// A file or process operation failed (the cause is the error's source,
    /// so a report that prints the chain names it once).
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ApacheKafkaError {
    let what = what.into();
    move |source| ApacheKafkaError::Io { what, source }
}

/// Options for [`ApacheKafka::start`].
#[derive(Debug, Clone)]
pub struct ApacheKafkaOptions {
    /// Where the broker keeps its data, configuration and log. `None`: a
    /// temporary directory, removed when the broker is dropped. A directory
    /// from an earlier run is reused with its data, cluster id and ports.
    pub data_dir: Option<PathBuf>,
    /// The client port on 127.0.0.1; `None` picks a free one (or, for a
    /// reused data directory, the one it had).
    pub port: Option<u16>,
    /// Partitions of the project's topics and of auto-created ones.
    pub partitions: i32,
    /// Topics created at start (`tenant-routes` is created compacted).
    pub topics: Vec<String>,
    /// `group.initial.rebalance.delay.ms`; Kafka's default is 3 s.
    pub group_initial_rebalance_delay_ms: i32,
    /// Ask the kernel to kill the broker when this process dies
    /// (`PR_SET_PDEATHSIG`). The kernel ties that to the thread that
    /// spawned the JVM, so the JVM is always spawned (at start and at every
    /// restart) by a thread that lives as long as the [`ApacheKafka`]: a
    /// restart from a short-lived thread (tokio's blocking pool) must not
    /// have the broker killed when that thread retires.
    pub die_with_parent: bool,
}

impl Default for ApacheKafkaOptions {
    fn default() -> Self {
        Self {
            data_dir: None,
            port: None,
            partitions: 4,
            topics: protocol::topics::ALL.map(String::from).to_vec(),
            group_initial_rebalance_delay_ms: 0,
            die_with_parent: false,
        }
    }
}

/// A running Apache Kafka broker. Dropping it stops the broker (SIGTERM,
/// then SIGKILL after 30 s).
pub struct ApacheKafka {
    child: Option<Child>,
    // With `die_with_parent`: the thread that spawns the JVM.
    launcher: Option<Launcher>,
    lib: PathBuf,
    data_dir: DataDir,
    ports: Ports,
    options: ApacheKafkaOptions,
}

/// A thread that spawns processes for as long as it is kept: a child asked
/// to die with its parent dies with this thread, not with whichever thread
/// asked for the spawn.
struct Launcher {
    requests: std::sync::mpsc::Sender<(Command, std::sync::mpsc::Sender<std::io::Result<Child>>)>,
}

impl Launcher {
    fn start() -> Result<Self, ApacheKafkaError> {
        let (requests, incoming) =
            std::sync::mpsc::channel::<(Command, std::sync::mpsc::Sender<std::io::Result<Child>>)>(
            );
        std::thread::Builder::new()
            .name("apache-kafka-launcher".into())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            })
            .map_err(io("starting the launcher thread"))?;
        Ok(Self { requests })
    }

    fn spawn(&self, command: Command) -> std::io::Result<Child> {
        let (reply, answer) = std::sync::mpsc::channel();
        let gone = || std::io::Error::other("the launcher thread has stopped");
        self.requests.send((command, reply)).map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

impl std::fmt::Debug for ApacheKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApacheKafka")
            .field("bootstrap_servers", &self.bootstrap_servers())
            .field("data_dir", &self.data_dir.path())
            .finish()
    }
}

impl ApacheKafka {
    /// Installs (once), formats (once per data directory) and starts a
    /// broker, then creates `options.topics`. Blocks until the broker answers.
    pub fn start(options: ApacheKafkaOptions) -> Result<Self, ApacheKafkaError> {
        require(
            "java",
            "install Java 17 or newer (Debian: apt-get install openjdk-17-jre-headless)",
        )?;
        let lib = install()?;
        let data_dir = match &options.data_dir {
            Some(path) => {
                if path.exists() && !path.is_dir() {
                    return Err(ApacheKafkaError::NotADirectory(path.clone()));
                }
                std::fs::create_dir_all(path)
                    .map_err(io(format!("creating {}", path.display())))?;
                DataDir::Kept(path.clone())
            }
            None => DataDir::Temporary(
                tempfile::Builder::new()
                    .prefix("apache-kafka-")
                    .tempdir()
                    .map_err(io("creating a temporary data directory"))?,
            ),
        };
        let ports = ports(data_dir.path(), options.port)?;
        let mut broker = Self {
            child: None,
            launcher: options.die_with_parent.then(Launcher::start).transpose()?,
            lib,
            data_dir,
            ports,
            options,
        };
        broker.write_config()?;
        broker.format_if_new()?;
        broker.launch()?;
        broker.create_topics()?;
        Ok(broker)
    }

    /// The `host:port` a client uses as `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        format!("127.0.0.1:{}", self.ports.client)
    }

    /// Where the broker keeps its data, configuration and log.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The broker's log file (JVM output at WARN and above).
    pub fn log_file(&self) -> PathBuf {
        self.data_dir().join("broker.log")
    }

    /// Kills the broker with SIGKILL, as a crash would, and waits until the
    /// process is gone. Its data directory stays for [`Self::restart`].
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the broker again on the same data directory and port (after
    /// [`Self::kill`] or [`Self::stop`]); blocks until it answers.
    pub fn restart(&mut self) -> Result<(), ApacheKafkaError> {
        self.kill();
        self.launch()?;
        // Answering is not serving: wait until the topics' partitions are
        // led again (creating existing topics is a no-op that waits so).
        self.create_topics()
    }

    /// Stops the broker cleanly: SIGTERM, then SIGKILL if it has not exited
    /// within 30 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: plain kill(2) on a child we own and have not reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Waits for the broker process to exit by itself (it never does while
    /// healthy): returns its exit status, for a supervisor that must notice
    /// a broker that died.
    pub fn try_exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    fn config_file(&self) -> PathBuf {
        self.data_dir().join("server.properties")
    }

    /// The broker's `log.dirs`: a partition's segments are in
    /// `<topic>-<partition>/` under it.
    pub fn log_dir(&self) -> PathBuf {
        self.data_dir().join("kraft")
    }

    fn write_config(&self) -> Result<(), ApacheKafkaError> {
        let Ports { client, controller } = self.ports;
        let partitions = self.options.partitions;
        let config = format!(
            "# Written by kafka-dev on every start; edits are overwritten.\n\
             node.id=1\n\
             process.roles=broker,controller\n\
             listeners=PLAINTEXT://127.0.0.1:{client},CONTROLLER://127.0.0.1:{controller}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{client}\n\
             controller.listener.names=CONTROLLER\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
             inter.broker.listener.name=PLAINTEXT\n\
             controller.quorum.voters=1@127.0.0.1:{controller}\n\
             log.dirs={log_dir}\n\
             num.partitions={partitions}\n\
             auto.create.topics.enable=true\n\
             offsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=10\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             transaction.state.log.num.partitions=4\n\
             share.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\n\
             group.initial.rebalance.delay.ms={delay}\n\
             # Small segments keep a development broker's disk use modest.\n\
             log.segment.bytes=67108864\n\
             log.retention.bytes=268435456\n",
            log_dir = self.log_dir().display(),
            delay = self.options.group_initial_rebalance_delay_ms,
        );
        std::fs::write(self.config_file(), config).map_err(io("writing server.properties"))?;
        std::fs::write(self.data_dir().join("log4j2.properties"), LOG4J2)
            .map_err(io("writing log4j2.properties"))
    }

    fn java(&self) -> Command {
        let mut java = Command::new("java");
        java.arg("-cp")
            .arg(format!("{}/*", self.lib.display()))
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.data_dir().join("log4j2.properties").display()
            ))
            .arg("-Djava.awt.headless=true")
            .stdin(Stdio::null());
        java
    }

    fn format_if_new(&self) -> Result<(), ApacheKafkaError> {
        if self.log_dir().join("meta.properties").exists() {
            return Ok(());
        }
        let output = self
            .java()
            .arg("kafka.tools.StorageTool")
            .arg("format")
            .arg(format!("--cluster-id={}", new_cluster_id()))
            .arg("--config")
            .arg(self.config_file())
            .output()
            .map_err(io("running the storage tool"))?;
        if !output.status.success() {
            return Err(ApacheKafkaError::Format {
                dir: self.log_dir(),
                output: String::from_utf8_lossy(&[output.stdout, output.stderr].concat()).into(),
            });
        }
        Ok(())
    }

    fn launch(&mut self) -> Result<(), ApacheKafkaError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .map_err(io("opening the broker log"))?;
        let log_err = log.try_clone().map_err(io("opening the broker log"))?;
        let mut java = self.java();
        java.args([
            "-Xms256m",
            "-Xmx1g",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
        ])
        .arg("kafka.Kafka")
        .arg(self.config_file())
        .stdout(log)
        .stderr(log_err);
        if self.options.die_with_parent {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; nothing else runs between
            // fork and exec.
            unsafe {
                java.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    Ok(())
                });
            }
        }
        let child = match &self.launcher {
            Some(launcher) => launcher.spawn(java),
            None => java.spawn(),
        }
        .map_err(io("starting java"))?;
        self.child = Some(child);
        self.wait_until_ready()
    }

    fn wait_until_ready(&mut self) -> Result<(), ApacheKafkaError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let admin = self.admin()?;
        loop {
            if let Some(status) = self.try_exit_status() {
                self.child = None;
                return Err(self.start_error(format!("the JVM exited with {status}")));
            }
            // Metadata naming a broker means the controller has elected itself
            // and the broker has registered; before that, clients get nothing.
            if let Ok(metadata) = admin.inner().fetch_metadata(None, Duration::from_secs(1))
                && !metadata.brokers().is_empty()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(self.start_error(format!("no answer within {READY_TIMEOUT:?}")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn start_error(&self, reason: String) -> ApacheKafkaError {
        ApacheKafkaError::Start {
            reason,
            log: self.log_file(),
        }
    }

    fn admin(&self) -> Result<AdminClient<DefaultClientContext>, ApacheKafkaError> {
        ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap_servers())
            .set("log_level", "3")
            .create()
            .map_err(|e| self.start_error(format!("an admin client: {e}")))
    }

    /// Creates `name` with `partitions` partitions through the admin API; an
    /// existing topic is fine. `tenant-routes` is created compacted.
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), ApacheKafkaError> {
        create_topics(&self.bootstrap_servers(), &[name], partitions)
    }

    fn create_topics(&self) -> Result<(), ApacheKafkaError> {
        let topics: Vec<&str> = self.options.topics.iter().map(String::as_str).collect();
        create_topics(&self.bootstrap_servers(), &topics, self.options.partitions)?;
        admin::wait_for_group_coordinator(&self.bootstrap_servers())
    }
}

impl Drop for ApacheKafka {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A random cluster id as Kafka makes them: a UUID in URL-safe base64,
/// never starting with `-` (the storage tool's argument parser would read
/// such an id as an option: one format in 64 failed before).
fn new_cluster_id() -> String {
    use base64::Engine;
    loop {
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(uuid::Uuid::new_v4().as_bytes());
        if !id.starts_with('-') {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_ids_never_read_as_an_option() {
        for _ in 0..2000 {
            let id = new_cluster_id();
            assert!(!id.starts_with('-'), "{id}");
            assert_eq!(id.len(), 22);
        }
    }
}
