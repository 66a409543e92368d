//! The waiter (service C): Kafka consumers → a pool of waiters → producers,
//! joined by bounded channels. It is the Go "waiter service bus" made
//! production-grade, and the service performance engineers tune.
//!
//! Start with [`Application`]: [`Application::build`] binds the HTTP port and
//! creates the Kafka clients from [`Settings`]; [`Application::run_until_stopped`]
//! runs the pipeline until the shutdown token is cancelled, then drains the
//! stages in order. The stages themselves are [`consumer`], [`waiters`] and
//! [`producer`]; [`pipeline`] holds what travels between them and how a
//! record's offset is released only after its reply is acknowledged
//! (at-least-once), and how a caller's deadline drops work nobody waits
//! for any more (`can_finish`, `expire`, the `QueueEstimate`). [`request`]
//! decides per record: serve, refuse with an error reply, or dead-letter.
//! `standins` runs the baseline in the group of a variant that is down.
//! Every reason an event is counted by (failures, dead letters, skips,
//! expiries) is an enum in [`reasons`], which [`metrics`] registers from.
//! Each stage's rules have unit tests that need no broker, on tokio's
//! paused clock: the consumer takes any rdkafka `Message` (tests build
//! `OwnedMessage`s), the pool reads and writes channels, and the producers
//! write through `RecordSink` (tests script one); the integration tests in
//! `tests/waiter/` prove the wiring against a real broker.
//! Programs that run a waiter inside
//! themselves (the demo, `load --embedded`, tests) use [`RunningWaiter`]
//! with [`Settings::in_process`].

pub mod consumer;
mod in_process;
pub mod ledger;
mod lifecycle;
pub mod metrics;
pub(crate) mod pipeline;
pub mod producer;
pub mod reasons;
pub mod request;
pub mod settings;
mod stages;
mod standins;
pub mod waiters;

use service_kit::ServiceApp;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, Producer};
use service_kit::HttpListener;
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use crate::consumer::{WaiterConsumer, WaiterContext};
pub use crate::in_process::RunningWaiter;
pub use crate::settings::Settings;
use lifecycle::*;
use stages::Stages;

/// Why the waiter could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum WaiterError {
    /// The HTTP port could not be bound.
    #[error("cannot bind {address}: {source}")]
    Bind {
        /// `host:port`.
        address: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A Kafka client could not be created (usually a bad librdkafka property).
    #[error("cannot create the Kafka {role}: {source}")]
    Kafka {
        /// `consumer` or `producer`.
        role: &'static str,
        /// librdkafka's reason.
        source: rdkafka::error::KafkaError,
    },
    /// A pipeline stage ended before shutdown was asked for.
    #[error("pipeline stage ended unexpectedly: {0}")]
    StageFailed(String),
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    /// The route table could not start or catch up.
    #[error(transparent)]
    Routes(#[from] tenancy::RouteTableError),
}

/// Whether the waiter is consuming: its route table has caught up and it
/// has partitions assigned.
#[derive(Clone)]
pub struct Readiness {
    assigned: Arc<watch::Sender<usize>>,
    routes: tenancy::RouteTable,
    stopped: consumer::StoppedPartitions,
}

impl Readiness {
    /// Partitions currently assigned across this instance's consumers.
    pub fn assigned_partitions(&self) -> usize {
        *self.assigned.borrow()
    }

    /// Waits until at least one partition is assigned.
    pub async fn assigned(&self) {
        let mut assigned = self.assigned.subscribe();
        let _ = assigned.wait_for(|&n| n > 0).await;
    }
}

impl service_kit::Readiness for Readiness {
    fn check(&self) -> Result<(), String> {
        self.routes.ready()?;
        if self.assigned_partitions() == 0 {
            return Err("no partitions assigned yet".into());
        }
        self.stopped.check()
    }
}

/// A built, not yet running, waiter.
pub struct Application {
    // Taken when the server starts.
    listener: Option<HttpListener>,
    port: u16,
    settings: Settings,
    stages: Stages,
    consumers: Vec<Arc<WaiterConsumer>>,
    producers: Vec<FutureProducer>,
    readiness: Readiness,
}

impl Application {
    /// This instance's name, as it appears in replies: the resource's
    /// `service.instance.id`.
    pub fn instance(&self) -> &str {
        &self.stages.waiter.instance
    }

    /// The waiter's route table.
    pub fn route_table(&self) -> tenancy::RouteTable {
        self.readiness.routes.clone()
    }

    /// A handle telling whether partitions are assigned.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }
}

impl Application {
    /// A variant registers with the tenants registry once it has partitions,
    /// so a tenant is never mapped to a variant that is not yet reading.
    fn registration(&self) -> Option<(tenancy::Registration, AbortOnDropHandle<()>)> {
        let registration = tenancy::Registration::for_variant(
            &self.settings.registry,
            protocol::Service::Waiter,
            self.stages.variant(),
            self.port,
            &self.stages.waiter.instance,
            self.stages.consumer.tally.clone(),
        )?;
        let readiness = self.readiness.clone();
        let consumers = self.consumers.clone();
        let topic = self.settings.waiter.request_topic.clone();
        let registering = registration.clone();
        let task = tokio::spawn(async move {
            readiness.assigned().await;
            let pinned =
                tokio::task::spawn_blocking(move || pin_start_positions(&consumers, &topic)).await;
            if let Ok(Err(e)) = pinned {
                tracing::warn!(error = %e, "could not pin start positions; records produced right after registration may be missed");
            }
            if let Err(e) = registering.register().await {
                tracing::error!(error = %e, "registration failed; tenants cannot be mapped to this variant until a renewal reaches the registry");
            }
            registering.keep_alive().await;
        });
        // Dropped with the service, even when it is aborted rather than
        // stopped: a crashed instance must stop renewing its lease.
        Some((registration, AbortOnDropHandle::new(task)))
    }
}

/// A consumer of the request topic in `group`, subscribed.
pub(crate) fn new_consumer(
    settings: &Settings,
    group: &str,
    client_id: String,
    offset_reset: &str,
    context: WaiterContext,
) -> Result<WaiterConsumer, WaiterError> {
    let w = &settings.waiter;
    let consumer: WaiterConsumer = settings
        .kafka
        .consumer_config()
        .set("group.id", group)
        .set("client.id", client_id)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.commit.interval.ms",
            w.commit_interval.as_millis().to_string(),
        )
        .set("auto.offset.reset", offset_reset)
        .set(
            "statistics.interval.ms",
            w.statistics_interval.as_millis().to_string(),
        )
        .set("enable.partition.eof", "false")
        .create_with_context(context)
        .map_err(|source| WaiterError::Kafka {
            role: "consumer",
            source,
        })?;
    consumer
        .subscribe(&[&w.request_topic])
        .map_err(|source| WaiterError::Kafka {
            role: "consumer",
            source,
        })?;
    Ok(consumer)
}

impl ServiceApp for Application {
    const SERVICE: protocol::Service = protocol::Service::Waiter;
    const ABOUT: &'static str = "Consume wait requests from Kafka, wait, and reply.";
    const DEFAULTS: &'static str = settings::DEFAULTS;
    type Settings = Settings;
    type Error = WaiterError;

    fn load_settings(file: Option<&std::path::Path>) -> anyhow::Result<Settings> {
        Ok(Settings::load(file)?)
    }

    fn variant(settings: &Settings) -> &str {
        settings.service.variant.as_str()
    }

    /// Binds the HTTP port, creates and subscribes the consumers, creates the producers.
    async fn build(settings: Settings) -> Result<Self, WaiterError> {
        let listener =
            service_kit::bind(&settings.http)
                .await
                .map_err(|source| WaiterError::Bind {
                    address: format!("{}:{}", settings.http.host, settings.http.port),
                    source,
                })?;
        let port = listener.port();
        let w = &settings.waiter;
        let group = settings.group_id();
        let routes = tenancy::RouteTable::start(&settings.kafka, &settings.routes.topic).await?;
        let stages = Stages::resolve(&settings, routes.clone());
        let variant = stages.variant().to_string();
        let assigned = Arc::new(watch::channel(0).0);
        let mut consumers = Vec::with_capacity(w.consumers.get());
        for index in 0..w.consumers.get() {
            let consumer = new_consumer(
                &settings,
                &group,
                format!("waiter-{variant}-{index}"),
                settings.auto_offset_reset().as_str(),
                WaiterContext::new(&stages.consumer, assigned.clone()),
            )?;
            consumers.push(Arc::new(consumer));
        }
        let mut producers = Vec::with_capacity(w.producers.get());
        for index in 0..w.producers.get() {
            let producer: FutureProducer = settings
                .kafka
                .producer_config()
                .set("client.id", format!("waiter-{variant}-producer-{index}"))
                .set("acks", "all")
                .set(
                    "message.timeout.ms",
                    w.delivery_timeout.as_millis().to_string(),
                )
                .create()
                .map_err(|source| WaiterError::Kafka {
                    role: "producer",
                    source,
                })?;
            producers.push(producer);
        }
        let stopped = stages.consumer.stopped.clone();
        Ok(Self {
            listener: Some(listener),
            port,
            stages,
            consumers,
            producers,
            readiness: Readiness {
                assigned,
                routes,
                stopped,
            },
            settings,
        })
    }

    /// The bound HTTP port (useful when configured as 0).
    fn port(&self) -> u16 {
        self.port
    }

    /// Runs until `shutdown` is cancelled, then drains: consumers stop, the
    /// channels empty, waits finish, replies are delivered, offsets commit.
    /// Work still unfinished after `drain_timeout_ms` is abandoned uncommitted
    /// (it is redelivered to whoever consumes the partition next).
    async fn run_until_stopped(mut self, shutdown: CancellationToken) -> Result<(), WaiterError> {
        let w = &self.settings.waiter;
        // Health and readiness are served from the start: while the route
        // table waits (for a broker, for the topic), `/readyz` says for what.
        let http_stop = CancellationToken::new();
        let router = service_kit::with_operations(
            axum::Router::new(),
            protocol::Service::Waiter,
            self.stages.variant(),
            Arc::new(self.readiness.clone()),
        );
        let listener = self
            .listener
            .take()
            .expect("a built waiter has its listener");
        let http = tokio::spawn(service_kit::serve(listener, router, http_stop.clone()));
        // Nothing is consumed before the mappings that decide who processes
        // what are known.
        let caught_up = tokio::select! {
            caught_up = self.readiness.routes.caught_up(self.settings.routes.catch_up_timeout) => caught_up,
            () = shutdown.cancelled() => Ok(()),
        };
        if let Err(e) = caught_up {
            http_stop.cancel();
            let _ = http.await;
            return Err(e.into());
        }
        let registration = self.registration();
        let (work_tx, work_rx) = mpsc::channel(w.request_channel_capacity.get());
        let (out_tx, out_rx) = mpsc::channel(w.reply_channel_capacity.get());
        let out_rx = Arc::new(Mutex::new(out_rx));
        let abandon = CancellationToken::new();
        let mut stages = JoinSet::new();
        let config = &self.stages;
        stages.extend(self.consumers.iter().map(|consumer| {
            let (work, dead_letters) = (work_tx.clone(), out_tx.clone());
            consumer::run(
                consumer.clone(),
                config.consumer.clone(),
                work,
                dead_letters,
                shutdown.clone(),
            )
        }));
        let t = &self.settings.tenancy;
        if !self.settings.is_variant() && t.stand_in_for_variants && t.tenant_routing {
            stages.spawn(standins::run(
                Arc::new(self.settings.clone()),
                config.consumer.clone(),
                work_tx.clone(),
                out_tx.clone(),
                shutdown.clone(),
            ));
        }
        stages.spawn(waiters::run(config.waiter.clone(), work_rx, out_tx.clone()));
        stages.extend(self.producers.iter().map(|producer| {
            producer::run(
                producer.clone(),
                config.producer.clone(),
                out_rx.clone(),
                abandon.clone(),
            )
        }));
        let sampler = tokio::spawn(sample_channels(
            self.stages.metrics.clone(),
            work_tx.clone(),
            out_tx.clone(),
            shutdown.clone(),
        ));
        // Only the stages hold senders now: the channels close as stages end.
        drop((work_tx, out_tx));

        tracing::info!(
            port = self.port,
            variant = %self.stages.variant(),
            instance = %self.stages.waiter.instance,
            consumers = w.consumers,
            waiters = w.waiters,
            producers = w.producers,
            "waiter running"
        );

        let mut outcome = tokio::select! {
            biased;
            () = shutdown.cancelled() => Ok(()),
            // Consumers return when shutdown is cancelled; only a stage that
            // ends before that is a failure.
            ended = stages.join_next() => match ended {
                _ if shutdown.is_cancelled() => Ok(()),
                Some(Err(e)) => Err(WaiterError::StageFailed(e.to_string())),
                _ => Err(WaiterError::StageFailed("a stage returned".into())),
            },
        };
        shutdown.cancel();
        if let Some((registration, registered)) = registration {
            // Give up the lease before draining: when this is the variant's
            // last instance, records stamped from now on go to the baseline.
            registered.abort();
            registration.deregister().await;
        }
        tracing::info!("draining the pipeline");
        let drain = w.drain_timeout;
        let drained =
            tokio::time::timeout(drain, async { while stages.join_next().await.is_some() {} })
                .await;
        if drained.is_err() {
            tracing::warn!(
                ?drain,
                "drain timed out; unfinished records stay uncommitted and will be redelivered"
            );
            abandon.cancel();
            stages.shutdown().await;
        }
        sampler.abort();
        // The final commit and flush block (a commit waits out a pending
        // rebalance, and for a coordinator while the broker is away): off
        // the async threads, which other services in the same process (the
        // demo, tests) share, and bounded, so a waiter whose broker is gone
        // still stops.
        let (consumers, producers) = (self.consumers.clone(), self.producers.clone());
        let committed = lifecycle::on_own_thread("final-commit", FINAL_COMMIT_BOUND, move || {
            for consumer in &consumers {
                match consumer.commit_consumer_state(CommitMode::Sync) {
                    Ok(()) => {}
                    Err(rdkafka::error::KafkaError::ConsumerCommit(
                        rdkafka::types::RDKafkaErrorCode::NoOffset,
                    )) => {}
                    Err(e) => tracing::warn!(error = %e, "final offset commit failed"),
                }
            }
            for producer in &producers {
                if let Err(e) = producer.flush(Duration::from_secs(5)) {
                    tracing::warn!(error = %e, "producer flush failed");
                }
            }
        })
        .await;
        if !committed {
            tracing::warn!(
                bound = ?FINAL_COMMIT_BOUND,
                "the final offset commit did not finish in time (is the broker reachable?); \
                 records since the last commit will be redelivered"
            );
        }
        close_consumers(self.consumers, CONSUMER_CLOSE_BOUND).await;
        http_stop.cancel();
        match http.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => outcome = outcome.and(Err(WaiterError::Http(e))),
            Err(e) => outcome = outcome.and(Err(WaiterError::StageFailed(e.to_string()))),
        }
        tracing::info!("waiter stopped");
        outcome
    }
}
