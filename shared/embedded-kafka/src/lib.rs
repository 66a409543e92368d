//! The Kafka brokers for development, tests and benchmarks: an embedded one
//! (librdkafka's mock cluster, serving the real Kafka protocol on a loopback
//! port) and, in [`apache`], a real Apache Kafka run as a JVM. The
//! `kafka-dev` binary in this crate serves either until Ctrl-C.
//!
//! Start with [`EmbeddedKafka::start`]. It owns the mock cluster on a
//! dedicated thread (rdkafka's `MockCluster` is not `Send`), creates the
//! project's topics, sets the consumer-group initial rebalance delay to zero
//! (the mock's default of 3 s would make every group test sit idle), and hands
//! back a `Send + Sync` handle with the bootstrap address. Any Kafka client,
//! in process or not (kcat, another service), can connect to it.
//!
//! Known limits of the mock (real Kafka has none of them): topics are created
//! through the mock API or auto-creation, not the admin CreateTopics call; a
//! produce acknowledgement reports a constant LogAppendTime while consumers see
//! the producer's CreateTime; there is no compaction; there is no
//! ListGroups, DescribeGroups or DeleteGroups (describing a group fails
//! cleanly with "unsupported feature"; asking to *delete* one makes
//! librdkafka abort the asking client later, so nothing may ask), and offset
//! commits are refused while a group rebalances.

pub mod apache;
pub mod broker;

pub use broker::{Broker, BrokerError};

use std::sync::mpsc;
use std::thread::JoinHandle;

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer};

/// Options for [`EmbeddedKafka::start`].
#[derive(Debug, Clone)]
pub struct EmbeddedKafkaOptions {
    /// Number of mock brokers.
    pub brokers: i32,
    /// Partitions for each created topic.
    pub partitions: i32,
    /// Topics created at start.
    pub topics: Vec<String>,
    /// Consumer-group initial rebalance delay; Kafka's default is 3 s.
    pub group_initial_rebalance_delay_ms: i32,
}

impl Default for EmbeddedKafkaOptions {
    fn default() -> Self {
        Self {
            brokers: 1,
            partitions: 4,
            topics: project_topics(),
            group_initial_rebalance_delay_ms: 0,
        }
    }
}

/// The project's topics, which both brokers create at start.
pub fn project_topics() -> Vec<String> {
    protocol::topics::ALL
        .iter()
        .map(|t| t.to_string())
        .collect()
}

/// Why the embedded broker could not start or act.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedKafkaError {
    /// librdkafka refused to create the owning client or the mock cluster.
    #[error("could not start the mock cluster: {0}")]
    Start(String),
    /// A mock-cluster operation failed.
    #[error("mock cluster operation `{operation}` failed: {reason}")]
    Operation {
        /// The operation, for example `create_topic Waiter-Requests`.
        operation: String,
        /// librdkafka's reason.
        reason: String,
    },
    /// The thread owning the cluster is gone.
    #[error("the embedded broker thread has stopped")]
    Stopped,
}

enum Command {
    CreateTopic {
        name: String,
        partitions: i32,
        reply: mpsc::Sender<Result<(), EmbeddedKafkaError>>,
    },
    SetBrokerUp {
        broker: i32,
        up: bool,
        reply: mpsc::Sender<Result<(), EmbeddedKafkaError>>,
    },
    SetPartitionLeader {
        topic: String,
        partition: i32,
        leader: i32,
        reply: mpsc::Sender<Result<(), EmbeddedKafkaError>>,
    },
    SetGroupCoordinator {
        group: String,
        broker: i32,
        reply: mpsc::Sender<Result<(), EmbeddedKafkaError>>,
    },
    RefuseProduce {
        refuse: bool,
        reply: mpsc::Sender<Result<(), EmbeddedKafkaError>>,
    },
    Shutdown,
}

/// A running embedded broker. Dropping it stops the broker.
pub struct EmbeddedKafka {
    bootstrap_servers: String,
    brokers: i32,
    // The owner thread is the only place the mock cluster lives; commands
    // reach it over this channel so the handle can move between threads.
    commands: mpsc::Sender<Command>,
    owner: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedKafka {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedKafka")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .finish()
    }
}

impl EmbeddedKafka {
    /// Starts a mock cluster and creates `options.topics`.
    pub fn start(options: EmbeddedKafkaOptions) -> Result<Self, EmbeddedKafkaError> {
        let brokers = options.brokers;
        let (commands, command_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let owner = std::thread::Builder::new()
            .name("embedded-kafka".into())
            .spawn(move || own_cluster(options, ready_tx, command_rx))
            .map_err(|e| EmbeddedKafkaError::Start(e.to_string()))?;
        let bootstrap_servers = ready_rx.recv().map_err(|_| EmbeddedKafkaError::Stopped)??;
        Ok(Self {
            bootstrap_servers,
            brokers,
            commands,
            owner: Some(owner),
        })
    }

    /// The `host:port` list a client uses as `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap_servers
    }

    /// How many mock brokers it runs (ids 1 to this).
    pub fn brokers(&self) -> i32 {
        self.brokers
    }

    /// Client settings for services on this broker, tuned around three of
    /// the mock's habits: it answers a fetch only when the fetch's wait
    /// runs out (`fetch.wait.max.ms` 5, so that wait does not dominate
    /// every hop); every rebalance of a running group waits the session
    /// timeout minus one second whether or not all members have rejoined,
    /// so a variant scaling out would stall its group for 5 s at the
    /// services' 6 s (`session.timeout.ms` 2500: 1.5 s); and it finds a
    /// fetch's first record by walking the partition's log from its oldest
    /// record set, so records produced one per produce request (the
    /// services' `linger.ms` 0, right for Apache Kafka) slow every fetch as
    /// the log grows (`linger.ms` 1 batches them).
    pub fn client_settings(&self) -> kafka_kit::KafkaSettings {
        let mut settings = kafka_kit::KafkaSettings::new(self.bootstrap_servers.clone());
        settings
            .consumer
            .insert("fetch.wait.max.ms".into(), "5".into());
        settings
            .consumer
            .insert("session.timeout.ms".into(), "2500".into());
        settings.producer.insert("linger.ms".into(), "1".into());
        settings
    }

    /// Creates a topic (idempotent for an existing name).
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), EmbeddedKafkaError> {
        let (reply, reply_rx) = mpsc::channel();
        self.commands
            .send(Command::CreateTopic {
                name: name.to_string(),
                partitions,
                reply,
            })
            .map_err(|_| EmbeddedKafkaError::Stopped)?;
        reply_rx.recv().map_err(|_| EmbeddedKafkaError::Stopped)?
    }
}

impl EmbeddedKafka {
    /// Takes broker `broker` (1-based) down: its connections close and new
    /// ones are refused until [`Self::broker_up`]. For failure tests.
    pub fn broker_down(&self, broker: i32) -> Result<(), EmbeddedKafkaError> {
        self.set_broker_up(broker, false)
    }

    /// Brings broker `broker` back.
    pub fn broker_up(&self, broker: i32) -> Result<(), EmbeddedKafkaError> {
        self.set_broker_up(broker, true)
    }

    /// Makes every produce request fail with a retriable error (not
    /// enough in-sync replicas), as a cluster that cannot meet
    /// `min.insync.replicas` does, or take them again. Cluster-wide: the
    /// mock cannot refuse one topic's writes (a leaderless partition crashes
    /// its produce handler). For failure tests.
    pub fn refuse_produce(&self, refuse: bool) -> Result<(), EmbeddedKafkaError> {
        let (reply, reply_rx) = mpsc::channel();
        self.commands
            .send(Command::RefuseProduce { refuse, reply })
            .map_err(|_| EmbeddedKafkaError::Stopped)?;
        reply_rx.recv().map_err(|_| EmbeddedKafkaError::Stopped)?
    }

    /// Makes broker `leader` (1-based) lead `topic`'s `partition`: with
    /// [`Self::broker_down`], one topic's partitions go away while the
    /// others' stay. For failure tests and benchmarks.
    pub fn set_partition_leader(
        &self,
        topic: &str,
        partition: i32,
        leader: i32,
    ) -> Result<(), EmbeddedKafkaError> {
        let (reply, reply_rx) = mpsc::channel();
        self.commands
            .send(Command::SetPartitionLeader {
                topic: topic.to_string(),
                partition,
                leader,
                reply,
            })
            .map_err(|_| EmbeddedKafkaError::Stopped)?;
        reply_rx.recv().map_err(|_| EmbeddedKafkaError::Stopped)?
    }

    /// Makes broker `broker` (1-based) coordinate consumer group `group`.
    pub fn set_group_coordinator(
        &self,
        group: &str,
        broker: i32,
    ) -> Result<(), EmbeddedKafkaError> {
        let (reply, reply_rx) = mpsc::channel();
        self.commands
            .send(Command::SetGroupCoordinator {
                group: group.to_string(),
                broker,
                reply,
            })
            .map_err(|_| EmbeddedKafkaError::Stopped)?;
        reply_rx.recv().map_err(|_| EmbeddedKafkaError::Stopped)?
    }

    fn set_broker_up(&self, broker: i32, up: bool) -> Result<(), EmbeddedKafkaError> {
        let (reply, reply_rx) = mpsc::channel();
        self.commands
            .send(Command::SetBrokerUp { broker, up, reply })
            .map_err(|_| EmbeddedKafkaError::Stopped)?;
        reply_rx.recv().map_err(|_| EmbeddedKafkaError::Stopped)?
    }
}

impl Drop for EmbeddedKafka {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        if let Some(owner) = self.owner.take() {
            let _ = owner.join();
        }
    }
}

fn own_cluster(
    options: EmbeddedKafkaOptions,
    ready: mpsc::Sender<Result<String, EmbeddedKafkaError>>,
    commands: mpsc::Receiver<Command>,
) {
    // A client configured with `test.mock.num.brokers` creates and owns the
    // mock cluster; through it both rdkafka's wrapper and the raw handle (for
    // the calls rdkafka does not wrap) are reachable.
    let owner: BaseProducer = match ClientConfig::new()
        .set("test.mock.num.brokers", options.brokers.to_string())
        .set("log_level", "3")
        .create()
    {
        Ok(owner) => owner,
        Err(e) => {
            let _ = ready.send(Err(EmbeddedKafkaError::Start(e.to_string())));
            return;
        }
    };
    let Some(cluster) = owner.client().mock_cluster() else {
        let _ = ready.send(Err(EmbeddedKafkaError::Start(
            "librdkafka did not create a mock cluster".into(),
        )));
        return;
    };
    let raw = unsafe { rdkafka_sys::rd_kafka_handle_mock_cluster(owner.client().native_ptr()) };
    // SAFETY: `raw` belongs to `owner`, which outlives this call on this
    // thread; the call only queues an operation for the mock's own thread.
    unsafe {
        rdkafka_sys::rd_kafka_mock_group_initial_rebalance_delay_ms(
            raw,
            options.group_initial_rebalance_delay_ms,
        )
    };
    let create = |name: &str, partitions: i32| {
        cluster
            .create_topic(name, partitions, 1)
            .map_err(|e| EmbeddedKafkaError::Operation {
                operation: format!("create_topic {name}"),
                reason: e.to_string(),
            })
    };
    for topic in &options.topics {
        // The routes' offsets are their versions: one partition, one order.
        let partitions = match topic.as_str() {
            protocol::topics::TENANT_ROUTES => 1,
            _ => options.partitions,
        };
        if let Err(e) = create(topic, partitions) {
            let _ = ready.send(Err(e));
            return;
        }
    }
    if ready.send(Ok(cluster.bootstrap_servers())).is_err() {
        return;
    }
    while let Ok(command) = commands.recv() {
        match command {
            Command::CreateTopic {
                name,
                partitions,
                reply,
            } => {
                let _ = reply.send(create(&name, partitions));
            }
            Command::SetBrokerUp { broker, up, reply } => {
                let result = match up {
                    true => cluster.broker_up(broker),
                    false => cluster.broker_down(broker),
                };
                let _ = reply.send(result.map_err(|e| EmbeddedKafkaError::Operation {
                    operation: format!("broker {broker} {}", if up { "up" } else { "down" }),
                    reason: e.to_string(),
                }));
            }
            Command::SetPartitionLeader {
                topic,
                partition,
                leader,
                reply,
            } => {
                let result = cluster.partition_leader(&topic, partition, Some(leader));
                let _ = reply.send(result.map_err(|e| EmbeddedKafkaError::Operation {
                    operation: format!("leader of {topic}/{partition} to broker {leader}"),
                    reason: e.to_string(),
                }));
            }
            Command::SetGroupCoordinator {
                group,
                broker,
                reply,
            } => {
                let result = cluster.coordinator(
                    rdkafka::mocking::MockCoordinator::Group(group.clone()),
                    broker,
                );
                let _ = reply.send(result.map_err(|e| EmbeddedKafkaError::Operation {
                    operation: format!("coordinator of {group} to broker {broker}"),
                    reason: e.to_string(),
                }));
            }
            Command::RefuseProduce { refuse, reply } => {
                use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
                cluster.clear_request_errors(RDKafkaApiKey::Produce);
                if refuse {
                    // One error per produce request (retries included): far
                    // more than any test sends while writes are refused.
                    let errors =
                        vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 1_000_000];
                    cluster.request_errors(RDKafkaApiKey::Produce, &errors);
                }
                let _ = reply.send(Ok(()));
            }
            Command::Shutdown => break,
        }
    }
    drop(cluster);
    drop(owner);
}

/// Sends `signal` to `child`, a process this one started and has not
/// reaped (so its pid is still its own); `false` if it could not be sent.
pub fn signal(child: &std::process::Child, signal: nix::sys::signal::Signal) -> bool {
    let Ok(pid) = i32::try_from(child.id()) else {
        return false;
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).is_ok()
}
