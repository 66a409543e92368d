//! A real Apache Kafka run as JVMs on loopback: one node acting as broker
//! and KRaft controller, or a cluster of several such nodes (three is the
//! production shape: replication factor 3, `min.insync.replicas=2`). The
//! broker users run, for tests, benchmarks and `kafka-dev --apache`.
//!
//! [`ApacheKafka::start`] makes sure the broker's jars are in the cache
//! (resolved once from Maven Central by the checked-in `apache/pom.xml`, see
//! [`install`]), formats each node's data directory if it is new, starts the
//! JVMs, waits until every node has registered and creates the project's
//! topics through the admin API. [`ApacheKafka::kill_node`] and
//! [`ApacheKafka::restart_node`] are the real-broker form of a fault: `kill
//! -9` of one node, then the same node back on the same data and port
//! ([`ApacheKafka::kill`] and [`ApacheKafka::restart`] do it to every node).
//! [`leader_of`] and [`coordinator_of`] say which node to kill.

mod admin;
mod data_dir;
mod install;

pub use admin::{coordinator_of, create_topics, leader_of};
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
    /// Where the cluster keeps its data, configuration and logs. `None`: a
    /// temporary directory, removed when the cluster is dropped. A directory
    /// from an earlier run is reused with its data, cluster id and ports.
    pub data_dir: Option<PathBuf>,
    /// The first node's client port on 127.0.0.1 (node `n` takes the port
    /// `n - 1` above it); `None` picks free ones (or, for a reused data
    /// directory, the ones it had).
    pub port: Option<u16>,
    /// Nodes in the cluster, each a broker and a KRaft controller. One is a
    /// development broker; three is the production shape: the project's
    /// topics get replication factor 3 and `min.insync.replicas=2`.
    pub brokers: usize,
    /// Partitions of the project's topics and of auto-created ones.
    pub partitions: i32,
    /// Topics created at start (`tenant-routes` is created compacted).
    pub topics: Vec<String>,
    /// `group.initial.rebalance.delay.ms`; Kafka's default is 3 s.
    pub group_initial_rebalance_delay_ms: i32,
    /// Ask the kernel to kill the JVMs when this process dies
    /// (`PR_SET_PDEATHSIG`). The kernel ties that to the thread that
    /// spawned a JVM, so every JVM is spawned (at start and at every
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
            brokers: 1,
            partitions: 4,
            topics: protocol::topics::ALL.map(String::from).to_vec(),
            group_initial_rebalance_delay_ms: 0,
            die_with_parent: false,
        }
    }
}

/// The most nodes a cluster of this crate runs (each is a JVM of up to 1 GiB).
pub const MAX_BROKERS: usize = 9;

/// A running Apache Kafka: one node, or a cluster of several on loopback.
/// Dropping it stops every node (SIGTERM, then SIGKILL after 30 s).
pub struct ApacheKafka {
    nodes: Vec<Node>,
    // With `die_with_parent`: the thread that spawns the JVMs.
    launcher: Option<Launcher>,
    lib: PathBuf,
    data_dir: DataDir,
    options: ApacheKafkaOptions,
}

/// One node of the cluster: a broker and a controller in one JVM, with its
/// own directory (the data directory itself for a single node, `node-<id>`
/// under it in a cluster) and ports.
struct Node {
    id: i32,
    dir: PathBuf,
    ports: Ports,
    child: Option<Child>,
}

impl Node {
    fn config_file(&self) -> PathBuf {
        self.dir.join("server.properties")
    }

    fn log_dir(&self) -> PathBuf {
        self.dir.join("kraft")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.join("broker.log")
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited by `deadline`.
    fn stop(&mut self, deadline: Instant) {
        let Some(child) = self.child.as_mut() else {
            return;
        };
        let _ = crate::signal(child, nix::sys::signal::Signal::SIGTERM);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                self.child = None;
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill();
    }
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
    /// Installs (once), formats (once per data directory) and starts the
    /// nodes, then creates `options.topics`. Blocks until every node has
    /// registered with the cluster and every topic's partitions are led.
    pub fn start(options: ApacheKafkaOptions) -> Result<Self, ApacheKafkaError> {
        if !(1..=MAX_BROKERS).contains(&options.brokers) {
            return Err(ApacheKafkaError::Start {
                reason: format!(
                    "a cluster has 1 to {MAX_BROKERS} brokers, not {}",
                    options.brokers
                ),
                log: PathBuf::new(),
            });
        }
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
        let mut nodes = Vec::with_capacity(options.brokers);
        for index in 0..options.brokers {
            let id = index as i32 + 1;
            let dir = match options.brokers {
                1 => data_dir.path().to_path_buf(),
                _ => data_dir.path().join(format!("node-{id}")),
            };
            std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
            let port = options.port.map(|p| p.saturating_add(index as u16));
            let ports = ports(&dir, port)?;
            nodes.push(Node {
                id,
                dir,
                ports,
                child: None,
            });
        }
        let mut cluster = Self {
            nodes,
            launcher: options.die_with_parent.then(Launcher::start).transpose()?,
            lib,
            data_dir,
            options,
        };
        cluster.write_configs()?;
        cluster.format_if_new()?;
        // Every node is spawned before any is waited for: a controller
        // quorum of three elects no leader until two of them run.
        let ids = cluster.node_ids();
        for &id in &ids {
            cluster.spawn(id)?;
        }
        cluster.wait_until_registered(&ids)?;
        cluster.create_topics()?;
        Ok(cluster)
    }

    /// The `host:port` list a client uses as `bootstrap.servers`: every node.
    pub fn bootstrap_servers(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.ports.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The nodes' ids (`node.id`, which is also the broker id clients see
    /// in metadata as partition leaders): 1 to the number of brokers.
    pub fn node_ids(&self) -> Vec<i32> {
        self.nodes.iter().map(|node| node.id).collect()
    }

    /// Where the cluster keeps its data, configuration and logs.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// The first node's log file (JVM output at WARN and above); the other
    /// nodes' are [`Self::node_log_file`].
    pub fn log_file(&self) -> PathBuf {
        self.nodes[0].log_file()
    }

    /// Node `id`'s log file.
    pub fn node_log_file(&self, id: i32) -> Option<PathBuf> {
        self.node(id).ok().map(Node::log_file)
    }

    /// The first node's `log.dirs`: a partition's segments are in
    /// `<topic>-<partition>/` under it (every partition, on a single node).
    pub fn log_dir(&self) -> PathBuf {
        self.nodes[0].log_dir()
    }

    /// Kills every node with SIGKILL, as a crash would, and waits until the
    /// processes are gone. The data stays for [`Self::restart`].
    pub fn kill(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }

    /// Starts every node again on the same data and ports (after
    /// [`Self::kill`] or [`Self::stop`]); blocks until the topics are led.
    pub fn restart(&mut self) -> Result<(), ApacheKafkaError> {
        self.kill();
        let ids = self.node_ids();
        for &id in &ids {
            self.spawn(id)?;
        }
        self.wait_until_registered(&ids)?;
        // Answering is not serving: wait until the topics' partitions are
        // led again (creating existing topics is a no-op that waits so).
        self.create_topics()
    }

    /// Kills node `id` with SIGKILL, as a crash would; the others run on.
    pub fn kill_node(&mut self, id: i32) -> Result<(), ApacheKafkaError> {
        self.node_mut(id)?.kill();
        Ok(())
    }

    /// Starts node `id` again on its data and ports after
    /// [`Self::kill_node`]; blocks until it has registered with the cluster
    /// and, once every node runs again, the topics are led. A node that runs
    /// is left alone. While another node is still down the cluster may not
    /// take writes (two of three lost: no controller quorum, and
    /// `min.insync.replicas` unmet), so only registration is awaited.
    pub fn restart_node(&mut self, id: i32) -> Result<(), ApacheKafkaError> {
        if self.node_mut(id)?.child.is_none() {
            self.spawn(id)?;
        }
        self.wait_until_registered(&[id])?;
        if self.nodes.iter().any(|node| node.child.is_none()) {
            return Ok(());
        }
        self.create_topics()
    }

    /// Whether node `id` is running (not killed or stopped).
    pub fn node_running(&self, id: i32) -> bool {
        self.node(id).is_ok_and(|node| node.child.is_some())
    }

    /// Stops every node cleanly: SIGTERM, then SIGKILL for any that has not
    /// exited within 30 s.
    pub fn stop(&mut self) {
        let deadline = Instant::now() + STOP_TIMEOUT;
        for node in &mut self.nodes {
            if let Some(child) = &node.child {
                let _ = crate::signal(child, nix::sys::signal::Signal::SIGTERM);
            }
        }
        for node in &mut self.nodes {
            node.stop(deadline);
        }
    }

    /// Whether a node this cluster runs has exited by itself (none does
    /// while healthy): its id and exit status, for a supervisor that must
    /// notice.
    pub fn try_exit_status(&mut self) -> Option<(i32, std::process::ExitStatus)> {
        self.nodes.iter_mut().find_map(|node| {
            let status = node.child.as_mut()?.try_wait().ok().flatten()?;
            Some((node.id, status))
        })
    }

    /// Forgets node `id`'s process after it exited (it counts as killed, so
    /// [`Self::restart_node`] starts it again).
    pub fn forget_exited(&mut self, id: i32) {
        if let Ok(node) = self.node_mut(id)
            && node
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some())
        {
            node.child = None;
        }
    }

    fn node(&self, id: i32) -> Result<&Node, ApacheKafkaError> {
        self.nodes
            .iter()
            .find(|node| node.id == id)
            .ok_or_else(|| self.no_such_node(id))
    }

    fn node_mut(&mut self, id: i32) -> Result<&mut Node, ApacheKafkaError> {
        let error = self.no_such_node(id);
        self.nodes
            .iter_mut()
            .find(|node| node.id == id)
            .ok_or(error)
    }

    fn no_such_node(&self, id: i32) -> ApacheKafkaError {
        self.start_error(format!(
            "no node {id}: the cluster's nodes are {:?}",
            self.node_ids()
        ))
    }

    /// Replication for the project's topics and Kafka's internal ones: 3
    /// (or every node, in a smaller cluster), acknowledged by 2.
    fn replication(&self) -> (usize, usize) {
        let replicas = self.nodes.len().min(3);
        (replicas, replicas.min(2))
    }

    fn write_configs(&self) -> Result<(), ApacheKafkaError> {
        let voters = self
            .nodes
            .iter()
            .map(|node| format!("{}@127.0.0.1:{}", node.id, node.ports.controller))
            .collect::<Vec<_>>()
            .join(",");
        let (replicas, min_isr) = self.replication();
        for node in &self.nodes {
            let Ports { client, controller } = node.ports;
            let config = format!(
                "# Written by kafka-dev on every start; edits are overwritten.\n\
                 node.id={id}\n\
                 process.roles=broker,controller\n\
                 listeners=PLAINTEXT://127.0.0.1:{client},CONTROLLER://127.0.0.1:{controller}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{client}\n\
                 controller.listener.names=CONTROLLER\n\
                 listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
                 inter.broker.listener.name=PLAINTEXT\n\
                 controller.quorum.voters={voters}\n\
                 log.dirs={log_dir}\n\
                 num.partitions={partitions}\n\
                 auto.create.topics.enable=true\n\
                 default.replication.factor={replicas}\n\
                 min.insync.replicas={min_isr}\n\
                 offsets.topic.replication.factor={replicas}\n\
                 offsets.topic.num.partitions=10\n\
                 transaction.state.log.replication.factor={replicas}\n\
                 transaction.state.log.min.isr={min_isr}\n\
                 transaction.state.log.num.partitions=4\n\
                 share.coordinator.state.topic.replication.factor={replicas}\n\
                 share.coordinator.state.topic.min.isr={min_isr}\n\
                 group.initial.rebalance.delay.ms={delay}\n\
                 # Small segments keep a development broker's disk use modest.\n\
                 log.segment.bytes=67108864\n\
                 log.retention.bytes=268435456\n",
                id = node.id,
                log_dir = node.log_dir().display(),
                partitions = self.options.partitions,
                delay = self.options.group_initial_rebalance_delay_ms,
            );
            std::fs::write(node.config_file(), config).map_err(io("writing server.properties"))?;
            std::fs::write(node.dir.join("log4j2.properties"), LOG4J2)
                .map_err(io("writing log4j2.properties"))?;
        }
        Ok(())
    }

    fn java(&self, node: &Node) -> Command {
        let mut java = Command::new("java");
        java.arg("-cp")
            .arg(format!("{}/*", self.lib.display()))
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                node.dir.join("log4j2.properties").display()
            ))
            .arg("-Djava.awt.headless=true")
            .stdin(Stdio::null());
        java
    }

    /// Formats every node that has no data yet, all with the cluster's id
    /// (the one a formatted node has, or a new one).
    fn format_if_new(&self) -> Result<(), ApacheKafkaError> {
        let formatted = |node: &Node| node.log_dir().join("meta.properties");
        let existing_id = self.nodes.iter().find_map(|node| {
            std::fs::read_to_string(formatted(node))
                .ok()
                .and_then(|text| {
                    text.lines()
                        .find_map(|line| line.strip_prefix("cluster.id="))
                        .map(str::to_string)
                })
        });
        let cluster_id = existing_id.unwrap_or_else(new_cluster_id);
        for node in &self.nodes {
            if formatted(node).exists() {
                continue;
            }
            let output = self
                .java(node)
                .arg("kafka.tools.StorageTool")
                .arg("format")
                .arg(format!("--cluster-id={cluster_id}"))
                .arg("--config")
                .arg(node.config_file())
                .output()
                .map_err(io("running the storage tool"))?;
            if !output.status.success() {
                return Err(ApacheKafkaError::Format {
                    dir: node.log_dir(),
                    output: String::from_utf8_lossy(&[output.stdout, output.stderr].concat())
                        .into(),
                });
            }
        }
        Ok(())
    }

    fn spawn(&mut self, id: i32) -> Result<(), ApacheKafkaError> {
        let node = self.node(id)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log_file())
            .map_err(io("opening the broker log"))?;
        let log_err = log.try_clone().map_err(io("opening the broker log"))?;
        let mut java = self.java(node);
        // A cluster's nodes share the machine: each gets less heap.
        let heap = if self.nodes.len() == 1 { "1g" } else { "512m" };
        java.args([
            "-Xms256m".to_string(),
            format!("-Xmx{heap}"),
            "-XX:+UseG1GC".into(),
            "-XX:MaxGCPauseMillis=20".into(),
        ])
        .arg("kafka.Kafka")
        .arg(node.config_file())
        .stdout(log)
        .stderr(log_err);
        if self.options.die_with_parent {
            use std::os::unix::process::CommandExt;
            // SAFETY: prctl is async-signal-safe; nothing else runs between
            // fork and exec.
            unsafe {
                java.pre_exec(|| {
                    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
                    Ok(())
                });
            }
        }
        let child = match &self.launcher {
            Some(launcher) => launcher.spawn(java),
            None => java.spawn(),
        }
        .map_err(io("starting java"))?;
        self.node_mut(id)?.child = Some(child);
        Ok(())
    }

    /// Waits until the metadata clients get names each of `ids` as a
    /// broker: its controller quorum has a leader and it has registered
    /// (unfenced); before that, clients get nothing from it.
    fn wait_until_registered(&mut self, ids: &[i32]) -> Result<(), ApacheKafkaError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let admin = self.admin()?;
        loop {
            for &id in ids {
                let node = self.node_mut(id)?;
                if let Some(status) = node
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten())
                {
                    node.child = None;
                    let log = node.log_file();
                    return Err(ApacheKafkaError::Start {
                        reason: format!("node {id}'s JVM exited with {status}"),
                        log,
                    });
                }
            }
            if let Ok(metadata) = admin.inner().fetch_metadata(None, Duration::from_secs(1)) {
                let registered: Vec<i32> = metadata.brokers().iter().map(|b| b.id()).collect();
                if ids.iter().all(|id| registered.contains(id)) {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                for &id in ids {
                    self.node_mut(id)?.kill();
                }
                return Err(self.start_error(format!(
                    "nodes {ids:?} did not all register within {READY_TIMEOUT:?}"
                )));
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
