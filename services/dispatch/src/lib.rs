//! Dispatch (service B): turns `POST /wait` into a request on
//! `Waiter-Requests` and waits for the matching reply on `Waiter-Responses`.
//!
//! Start with [`Application`]. [`Application::build`] creates the producer,
//! a reply reader and a membership in the reply group
//! (`dispatch.reply_group`), which shares the response topic's partitions
//! among the dispatch instances: each request names one of this instance's
//! partitions as its reply partition, so N instances each read about 1/N
//! of the replies (see [`ownership`] for how a partition changes hands
//! without losing a waiting call). A request carries `correlation`,
//! `responseTopic`, `kafka_replyPartition`, `traceparent`,
//! `baggage` and the `waiter-bus-hops` header (begun here: a caller's own hops are
//! not believed); the caller gets the waiter's
//! reply, or 504 when none arrives within `reply_timeout`, or 503 when the
//! broker does not take the request or this instance owns no reply
//! partition (more instances than partitions, or the group still forming).

mod instruments;
mod ownership;
mod replies;

use ownership::{Membership, ReplyPartitions};
use replies::{Pending, PendingGuard, complete_replies};
use service_kit::ServiceApp;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{State, rejection::JsonRejection};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use kafka_kit::KafkaSettings;
use opentelemetry::baggage::BaggageExt;
use protocol::wire::{NameRefusal, WaitRequestBody};
use protocol::{Hops, Service, headers};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Deserialize;
use service_kit::HttpListener;
use service_kit::{ApiError, HttpSettings, ServiceSettings};
use tenancy::RegistrySettings;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Checked-in defaults.
pub const DEFAULTS: &str = include_str!("../config/base.yaml");

/// Dispatch's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Topics and timeouts.
    pub dispatch: DispatchSettings,
    /// Who this instance is.
    pub service: ServiceSettings,
    /// The HTTP listener.
    pub http: HttpSettings,
    /// The broker.
    pub kafka: KafkaSettings,
    /// Variant registration.
    pub registry: RegistrySettings,
    /// The route table each request's routes version is checked against.
    pub routes: tenancy::RouteTableSettings,
}

/// Request/reply settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatchSettings {
    /// Where requests are published.
    pub request_topic: String,
    /// Where replies are read, and what requests name as `responseTopic`.
    pub response_topic: String,
    /// How long a caller waits for its reply.
    #[serde(with = "settings::duration")]
    pub reply_timeout: Duration,
    /// The consumer group whose members share the response topic's
    /// partitions; unset: `dispatch-<variant>-<response_topic>`.
    #[serde(default)]
    pub reply_group: Option<String>,
}

impl DispatchSettings {
    /// The reply group of a dispatch of `variant`.
    pub fn reply_group_for(&self, variant: &str) -> String {
        self.reply_group
            .clone()
            .unwrap_or_else(|| format!("dispatch-{variant}-{}", self.response_topic))
    }
}

impl Settings {
    /// The defaults pointed at `kafka` (its extra properties over the
    /// defaults'), HTTP on an ephemeral loopback port.
    pub fn defaults_with(kafka: &KafkaSettings) -> Self {
        let mut settings: Self = settings::in_process(DEFAULTS, &kafka.bootstrap_servers);
        settings.kafka = settings.kafka.overlaid_with(kafka);
        settings
    }
}

/// Why dispatch could not start.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The port could not be bound.
    #[error(transparent)]
    Bind(#[from] std::io::Error),
    /// A Kafka client could not be created or assigned.
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The response topic does not exist.
    #[error("response topic `{0}` does not exist")]
    NoResponseTopic(String),
    /// Registration with the tenants registry failed.
    #[error(transparent)]
    Registry(#[from] tenancy::RegistryError),
    /// The route table could not start or catch up.
    #[error(transparent)]
    Routes(#[from] tenancy::RouteTableError),
}

pub use protocol::wire::DispatchResponse;

/// How many `/wait` calls are waiting for their reply; for tests and
/// operators watching a drain.
#[derive(Clone)]
pub struct PendingRequests(Pending);

impl PendingRequests {
    /// Calls waiting for their reply right now.
    pub fn count(&self) -> usize {
        self.0.count()
    }
}

/// This instance's share of the reply traffic; for tests and operators
/// checking that instances split it.
#[derive(Clone)]
pub struct ReplyShare {
    pending: Pending,
    partitions: ReplyPartitions,
}

impl ReplyShare {
    /// The response topic's partitions this instance's calls name now.
    pub fn partitions(&self) -> Vec<i32> {
        self.partitions.advertised()
    }

    /// Replies read since start, whoever's they were.
    pub fn replies_read(&self) -> u64 {
        self.pending.replies_read().0
    }

    /// Of those, replies for another instance's calls.
    pub fn replies_for_others(&self) -> u64 {
        self.pending.replies_read().1
    }
}

/// Ready once this instance owns a reply partition to name.
struct OwnsReplyPartition {
    partitions: ReplyPartitions,
    topic: Arc<str>,
    group: String,
}

impl service_kit::Readiness for OwnsReplyPartition {
    fn check(&self) -> Result<(), String> {
        if self.partitions.advertised().is_empty() {
            return Err(no_reply_partition(&self.topic, &self.group));
        }
        Ok(())
    }
}

/// Fails unless `topic` exists with partitions: a dispatch without its
/// reply topic could only time every call out. A cluster missing a broker
/// can fail a metadata request on its way to another broker: retried,
/// within the start-up `patience`.
async fn response_topic_exists(
    replies: Arc<StreamConsumer>,
    topic: &str,
    patience: Duration,
) -> Result<(), DispatchError> {
    let asked = topic.to_string();
    let metadata = tokio::task::spawn_blocking(move || {
        kafka_kit::assign::until_led(patience, || {
            replies.fetch_metadata(Some(&asked), Duration::from_secs(10))
        })
    })
    .await
    .expect("a metadata request does not panic")?;
    if metadata
        .topics()
        .first()
        .is_none_or(|topic| topic.partitions().is_empty())
    {
        return Err(DispatchError::NoResponseTopic(topic.to_string()));
    }
    Ok(())
}

/// Ready once the route table has caught up and this instance owns a
/// reply partition; otherwise the first of those it waits for.
struct Ready {
    routes: tenancy::RouteTable,
    partitions: OwnsReplyPartition,
}

impl service_kit::Readiness for Ready {
    fn check(&self) -> Result<(), String> {
        self.routes.ready()?;
        self.partitions.check()
    }
}

fn no_reply_partition(topic: &str, group: &str) -> String {
    format!(
        "this dispatch owns no partition of `{topic}` to take replies on: its reply group \
         `{group}` has not assigned it one (still forming, or more instances than partitions)"
    )
}

#[derive(Clone)]
struct AppState {
    producer: FutureProducer,
    pending: Pending,
    partitions: ReplyPartitions,
    reply_group: Arc<str>,
    variant: Arc<str>,
    request_topic: Arc<str>,
    response_topic: Arc<str>,
    reply_timeout: Duration,
    routes: tenancy::RouteTable,
    version_wait: Duration,
}

/// A built, not yet running, dispatch.
pub struct Application {
    listener: HttpListener,
    port: u16,
    state: AppState,
    replies: StreamConsumer,
    membership: Membership,
    registration: Option<tenancy::Registration>,
    catch_up: Duration,
}

impl Application {
    /// The calls waiting for their reply.
    pub fn pending_requests(&self) -> PendingRequests {
        PendingRequests(self.state.pending.clone())
    }

    /// This instance's share of the replies.
    pub fn reply_share(&self) -> ReplyShare {
        ReplyShare {
            pending: self.state.pending.clone(),
            partitions: self.state.partitions.clone(),
        }
    }
}

/// The routes version this request is decided at, and the context to
/// publish under: the caller's version (the gateway's) once this table has
/// reached it, else this table's; the tenant from baggage or a mapping's
/// selectors, written into the baggage so every consumer sees it.
async fn route_request(
    state: &AppState,
    request_headers: &HeaderMap,
) -> Result<(tenancy::RoutesVersion, opentelemetry::Context), ApiError> {
    let stamped = request_headers
        .get(headers::ROUTES_VERSION)
        .map(|value| tenancy::parse_version(value.as_bytes()))
        .transpose()
        .map_err(ApiError::bad_request)?;
    let (routes, version) = match stamped {
        None => {
            let routes = state.routes.snapshot();
            let version = routes.version();
            (routes, version)
        }
        Some(version) => {
            let routes = state
                .routes
                .routes_for("the caller", version, state.version_wait)
                .await;
            // Never stamp a version this table has not read: consumers
            // would wait for it on every record.
            let version = version.min(routes.version());
            (routes, version)
        }
    };
    let cx = propagation::current_context();
    let baggage = cx.baggage();
    let facts = tenancy::HttpFacts {
        headers: request_headers,
        baggage,
    };
    let resolved = tenancy::resolve_tenant(routes.at(version), &facts);
    let cx = match resolved {
        Some(tenant) if propagation::tenant(&cx).as_deref() != Some(tenant.as_str()) => cx
            .with_baggage([opentelemetry::KeyValue::new(
                propagation::TENANT_BAGGAGE_KEY,
                tenant,
            )]),
        _ => cx,
    };
    Ok((version, cx))
}

async fn wait(
    State(state): State<AppState>,
    request_headers: HeaderMap,
    body: Result<Json<WaitRequestBody>, JsonRejection>,
) -> Result<Json<DispatchResponse>, ApiError> {
    let Json(body) = body?;
    match WaitRequestBody::check_name(&body.name) {
        Ok(()) => {}
        Err(refused @ NameRefusal::TooLong) => {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                refused.to_string(),
            ));
        }
        Err(refused) => return Err(ApiError::bad_request(refused.to_string())),
    }
    // Ours (the reply timeout) or the caller's, whichever comes first; the
    // waiter drops the request once it cannot be answered before it.
    let received_ms = protocol::deadline::now_unix_ms();
    let deadline = protocol::Deadline::after(state.reply_timeout)
        .earliest(service_kit::caller_deadline(&request_headers)?);
    let (routes_version, context) = route_request(&state, &request_headers).await?;
    let routes_version_number = routes_version as i64;
    let routes_version = routes_version.to_string();
    let deadline_header = deadline.to_header();
    let Some(reply_partition) = state.partitions.claim() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            no_reply_partition(&state.response_topic, &state.reply_group),
        ));
    };
    let reply_partition_header = headers::reply_partition_bytes(reply_partition.partition());
    let correlation = uuid::Uuid::new_v4().to_string();
    let (_pending, reply_rx) =
        PendingGuard::register(&state.pending, &correlation, reply_partition);

    // The hops start here: a caller's own `waiter-bus-hops` is not
    // believed (anyone could claim `gateway=evil` and reach the ledger).
    let hops = Hops::new()
        .then(Service::Dispatch, &state.variant)
        .to_header();
    let payload = serde_json::to_vec(&body).expect("a request always serialises");
    let publish = kafka_kit::spans::send(
        &tracing::Span::current(),
        &state.request_topic,
        &correlation,
        Service::Dispatch.as_str(),
        &state.variant,
    );
    publish.record("messaging.message.conversation_id", correlation.as_str());
    publish.record("waiter_bus.routes_version", routes_version_number);
    let _ = publish.set_parent(context);
    let record_headers = [
        (headers::CORRELATION, correlation.as_str()),
        (headers::RESPONSE_TOPIC, &state.response_topic),
        (headers::HOPS, hops.as_str()),
        (headers::ROUTES_VERSION, routes_version.as_str()),
        (headers::DEADLINE, deadline_header.as_str()),
    ]
    .into_iter()
    .fold(
        propagation::inject_kafka(&publish.context(), OwnedHeaders::new()),
        |acc, (key, value)| {
            acc.insert(Header {
                key,
                value: Some(value),
            })
        },
    )
    .insert(Header {
        key: headers::REPLY_PARTITION,
        value: Some(&reply_partition_header[..]),
    });
    let record = FutureRecord::to(&state.request_topic)
        .key(&correlation)
        .payload(&payload)
        .headers(record_headers);
    let sent = state
        .producer
        .send(record, Duration::from_secs(1))
        .instrument(publish.clone())
        .await;
    kafka_kit::spans::record_outcome(&publish, &sent);
    drop(publish);
    if let Err((e, _)) = sent {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the request could not be published to Kafka; try again",
        )
        .caused_by(e));
    }
    match tokio::time::timeout(deadline.remaining(), reply_rx).await {
        Ok(Ok(reply)) => Ok(Json(DispatchResponse {
            correlation,
            dispatch_variant: state.variant.to_string(),
            reply,
        })),
        _ => {
            metrics::counter!(instruments::REPLIES_TIMED_OUT).increment(1);
            // On the call's SERVER span: a late reply shows up in the same
            // trace as a `process` span marked `waiter_bus.reply.late`.
            tracing::Span::current().add_event("reply.timed_out", vec![]);
            Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "no reply from the waiter within {} ms (correlation {correlation})",
                    deadline.unix_ms().saturating_sub(received_ms)
                ),
            ))
        }
    }
}

impl ServiceApp for Application {
    const SERVICE: protocol::Service = protocol::Service::Dispatch;
    const ABOUT: &'static str = "Publish wait requests to Kafka and await their replies.";
    const DEFAULTS: &'static str = DEFAULTS;
    type Settings = Settings;
    type Error = DispatchError;

    fn variant(settings: &Settings) -> &str {
        settings.service.variant.as_str()
    }

    /// Binds, creates the producer and the reply reader (assigned nothing
    /// yet), joins the reply group (on the first poll).
    async fn build(settings: Settings) -> Result<Self, DispatchError> {
        instruments::register();
        let listener = service_kit::bind(&settings.http).await?;
        let port = listener.port();
        let producer: FutureProducer = settings
            .kafka
            .producer_config()
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                settings.dispatch.reply_timeout.as_millis().to_string(),
            )
            .create()?;
        let replies: StreamConsumer = settings
            .kafka
            .consumer_config()
            .set(
                "group.id",
                format!("dispatch-{}", uuid::Uuid::new_v4().simple()),
            )
            .set("enable.auto.commit", "false")
            .create()?;
        let reply_group = settings.dispatch.reply_group_for(&settings.service.variant);
        let membership = Membership::subscribe(
            &settings.kafka,
            &reply_group,
            &settings.dispatch.response_topic,
        )?;
        let routes = tenancy::RouteTable::start(&settings.kafka, &settings.routes.topic).await?;
        let variant = settings.service.variant.clone();
        let registration = tenancy::Registration::for_variant(
            &settings.registry,
            Service::Dispatch,
            &variant,
            port,
            telemetry::instance_id(),
            tenancy::TenantTally::default(),
        );
        Ok(Self {
            listener,
            port,
            state: AppState {
                producer,
                pending: Pending::default(),
                partitions: ReplyPartitions::default(),
                reply_group: reply_group.into(),
                variant: variant.into(),
                request_topic: settings.dispatch.request_topic.into(),
                response_topic: settings.dispatch.response_topic.into(),
                reply_timeout: settings.dispatch.reply_timeout,
                routes,
                version_wait: settings.routes.version_wait,
            },
            replies,
            membership,
            registration,
            catch_up: settings.routes.catch_up_timeout,
        })
    }

    fn api_open(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (table, partitions, patience) = (
            self.state.routes.clone(),
            self.state.partitions.clone(),
            self.catch_up,
        );
        async move {
            // Running, the service reports a table that never catches up and
            // warns of a reply group that gives it nothing.
            if table.caught_up(patience).await.is_ok() {
                partitions.wait_for_one(patience).await;
            }
        }
    }

    /// The bound port.
    fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown` is cancelled; a variant registers itself first
    /// and deregisters on the way out.
    ///
    /// It serves `/readyz` from the start, naming what it waits for: the
    /// route table to catch up (until then `/wait` answers 503; past
    /// `routes.catch_up_timeout` dispatch exits), then the reply group to
    /// give it a partition (until then `/wait` answers 503 too; past the
    /// same patience it warns and keeps waiting, not ready).
    ///
    /// Stopping drains in order: the HTTP server stops taking requests and
    /// waits for the calls in flight, while the reply reader keeps running,
    /// so those calls get their replies (or time out) instead of all ending
    /// in a 504; only then does the reader stop and the instance leave the
    /// reply group, so its partitions move to the others at once.
    async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), DispatchError> {
        let variant = self.state.variant.to_string();
        // `/readyz` answers from the start, naming what dispatch waits for;
        // `/wait` answers 503 until the route table has caught up.
        let readiness = Arc::new(Ready {
            routes: self.state.routes.clone(),
            partitions: OwnsReplyPartition {
                partitions: self.state.partitions.clone(),
                topic: self.state.response_topic.clone(),
                group: self.state.reply_group.to_string(),
            },
        });
        let routes = self.state.routes.clone();
        let api = Router::new()
            .route("/wait", post(wait))
            .with_state(self.state.clone());
        let app = service_kit::with_operations(
            service_kit::unavailable_until(
                api,
                Arc::new(service_kit::ReadyWhen(move || routes.ready())),
            ),
            Service::Dispatch,
            &variant,
            readiness,
        );
        let stop_serving = CancellationToken::new();
        let mut serving =
            tokio::spawn(service_kit::serve(self.listener, app, stop_serving.clone()));
        let caught_up = tokio::select! {
            caught_up = self.state.routes.caught_up(self.catch_up) => caught_up.map_err(DispatchError::from),
            () = shutdown.cancelled() => Ok(()),
        };
        let replies = Arc::new(self.replies);
        let started = match caught_up {
            Ok(()) if !shutdown.is_cancelled() => {
                let topic = &self.state.response_topic;
                match response_topic_exists(replies.clone(), topic, self.catch_up).await {
                    Ok(()) => match &self.registration {
                        Some(registration) => registration.register().await.map_err(Into::into),
                        None => Ok(()),
                    },
                    Err(e) => Err(e),
                }
            }
            other => other,
        };
        if started.is_err() || shutdown.is_cancelled() {
            stop_serving.cancel();
            let served = serving.await.expect("the HTTP server does not panic");
            return started.and(served.map_err(DispatchError::from));
        }
        let renewing = match &self.registration {
            Some(registration) => {
                let renewing = registration.clone();
                // Aborted with the service, however it ends.
                Some(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(
                    async move { renewing.keep_alive().await },
                )))
            }
            None => None,
        };
        // The reader outlives the HTTP server: it stops only once every
        // call in flight has been answered or timed out.
        let reader_stop = CancellationToken::new();
        let leave_group = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ownership, membership) = self.membership.run(leave_group.clone());
        let managing = tokio::spawn(ownership::manage(
            replies.clone(),
            self.state.response_topic.clone(),
            self.state.partitions.clone(),
            ownership,
            reader_stop.clone(),
        ));
        let reader = tokio::spawn(complete_replies(
            replies,
            self.state.response_topic.clone(),
            self.state.pending.clone(),
            self.state.variant.clone(),
            reader_stop.clone(),
        ));
        if !self.state.partitions.wait_for_one(self.catch_up).await {
            tracing::warn!(
                "{}; serving, not ready, until it does",
                no_reply_partition(&self.state.response_topic, &self.state.reply_group)
            );
        }
        tracing::info!(port = self.port, %variant, "dispatch running");
        let served = tokio::select! {
            served = &mut serving => served,
            () = shutdown.cancelled() => {
                stop_serving.cancel();
                (&mut serving).await
            }
        }
        .expect("the HTTP server does not panic");
        if let Some(renewing) = renewing {
            renewing.abort();
        }
        reader_stop.cancel();
        let _ = reader.await;
        let _ = managing.await;
        leave_group.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = tokio::task::spawn_blocking(move || membership.join()).await;
        if let Some(registration) = &self.registration {
            registration.deregister().await;
        }
        served.map_err(DispatchError::from)
    }
}
