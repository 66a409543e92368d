//! The tenants registry: the one writer of `tenant-routes`.
//!
//! Start with [`router`], the HTTP API:
//!
//! | method | path | |
//! |---|---|---|
//! | GET | `/tenants` | every mapping (no token) |
//! | GET | `/tenants/{id}` | the mapping and each variant's status: live, last heartbeat, group lag, records processed and skipped |
//! | PUT | `/tenants/{id}` | `{"services": {"dispatch": "sbx-123", "waiter": "sbx-123"}, "match": [...], "ttl": "30m"}` |
//! | DELETE | `/tenants/{id}` | drain, unmap, then delete its variants' unused consumer groups |
//! | GET | `/variants` | registered variants, live or not |
//! | PUT | `/variants/{service}/{label}` | `{"endpoint": "http://…", "instance": "…"}`: registers, and renews the instance's lease |
//! | DELETE | `/variants/{service}/{label}/instances/{instance}` | an instance stopping gives up its lease |
//! | DELETE | `/variants/{service}/{label}` | removes a registration no tenant maps to (409 otherwise) |
//!
//! Mutations need `Authorization: Bearer <token>`. Every write goes to the
//! compacted topic and the answer waits until this registry's own
//! [`tenancy::RouteTable`] shows it, so a client that reads back sees its
//! write. A tenant may only be mapped to variants that are registered and
//! live: a variant registers after its partitions are assigned and pinned,
//! so no tenant record is produced into a gap no consumer is reading.
//!
//! Inside: `handlers` (the routes above), the token check (a layer on the
//! mutating routes only), `leases` (which variant instances renewed when),
//! `lifecycle` (draining and deleting tenants, expiring them, marking
//! lapsed variants not live), `groups` (deleting a deleted tenant's
//! consumer groups once they are empty) and `settings`.

mod groups;
mod handlers;
mod leases;
mod lifecycle;
mod settings;

pub use groups::{DeletionOutcome, GroupDeletion, GroupDeletionSettings};
pub use handlers::{TenantStatus, VariantStatus};
pub use leases::LeaseSettings;
pub use lifecycle::{Deleted, DrainOutcome, VariantConsumers};
pub use settings::{DEFAULTS, Settings, TenantsSettings};

use service_kit::ServiceApp;
use service_kit::auth::{BearerToken, require_bearer};
use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, put};
use kafka_kit::KafkaSettings;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::FutureProducer;
use service_kit::HttpListener;
use tenancy::RouteTable;
use tokio_util::sync::CancellationToken;

/// Why the registry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TenantsError {
    /// The port could not be bound.
    #[error(transparent)]
    Bind(#[from] std::io::Error),
    /// A Kafka client could not be created.
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The route table could not start or catch up.
    #[error(transparent)]
    Routes(#[from] tenancy::RouteTableError),
}

#[derive(Clone)]
struct Registry {
    table: RouteTable,
    producer: FutureProducer,
    groups: groups::GroupDeleter,
    settings: Arc<TenantsSettings>,
    // Where mappings are written (the table above reads it back).
    routes_topic: Arc<str>,
    // For reading variant groups' positions.
    kafka: KafkaSettings,
    leases: Arc<std::sync::Mutex<leases::Leases>>,
    // Liveness writes one at a time, each re-checking the lease book.
    liveness: Arc<tokio::sync::Mutex<()>>,
}

/// A built, not yet running, registry.
pub struct Application {
    listener: HttpListener,
    port: u16,
    // How long the route table may take to catch up before the registry exits.
    catch_up: std::time::Duration,
    registry: Registry,
}

impl Application {
    /// The registry's own route table (for tests measuring propagation).
    pub fn route_table(&self) -> RouteTable {
        self.registry.table.clone()
    }
}

fn router_with(registry: Registry) -> Router {
    use handlers::*;
    let token = BearerToken::new(&registry.settings.token, protocol::Service::Tenants);
    let authorized = axum::middleware::from_fn_with_state(token, require_bearer);
    Router::new()
        .route("/tenants", get(list_tenants))
        .route(
            "/tenants/{id}",
            get(get_tenant).merge(
                put(put_tenant)
                    .delete(delete_tenant)
                    .route_layer(authorized.clone()),
            ),
        )
        .route("/variants", get(list_variants))
        .route(
            "/variants/{service}/{label}",
            put(put_variant)
                .delete(delete_variant)
                .route_layer(authorized.clone()),
        )
        .route(
            "/variants/{service}/{label}/instances/{instance}",
            delete(leave_variant).route_layer(authorized),
        )
        .with_state(registry)
}

/// The API on its own, for embedding; see the crate docs.
pub async fn router(settings: Settings) -> Result<Router, TenantsError> {
    let patience = settings.routes.catch_up_timeout;
    let registry = Application::build(settings).await?.registry;
    registry.table.caught_up(patience).await?;
    Ok(router_with(registry))
}

impl ServiceApp for Application {
    const SERVICE: protocol::Service = protocol::Service::Tenants;
    const ABOUT: &'static str = "Manage tenants, their variant mappings and variant endpoints.";
    const DEFAULTS: &'static str = DEFAULTS;
    type Settings = Settings;
    type Error = TenantsError;

    /// Binds, connects, and starts reading `tenant-routes` (caught up in
    /// [`ServiceApp::run_until_stopped`]).
    async fn build(settings: Settings) -> Result<Self, TenantsError> {
        let listener = service_kit::bind(&settings.http).await?;
        let port = listener.port();
        let catch_up = settings.routes.catch_up_timeout;
        let table = RouteTable::start(&settings.kafka, &settings.routes.topic).await?;
        let producer: FutureProducer = settings
            .kafka
            .producer_config()
            .set("acks", "all")
            .set("linger.ms", "0")
            .create()?;
        let admin: AdminClient<DefaultClientContext> = settings.kafka.client_config().create()?;
        groups::describe_metrics();
        telemetry::counter_at_zero(
            "tenants_variant_liveness_changes_total",
            "Variants marked live or not live by their leases.",
            &[&[("live", "true")], &[("live", "false")]],
        );
        telemetry::counter_at_zero(
            "tenants_deleted_total",
            "Tenants deleted, by how their variants' drain ended.",
            &[
                &[("drain", "drained")],
                &[("drain", "timed_out")],
                &[("drain", "nothing_to_drain")],
            ],
        );
        Ok(Self {
            listener,
            port,
            catch_up,
            registry: Registry {
                table,
                producer,
                groups: groups::GroupDeleter::new(
                    Arc::new(admin),
                    settings.tenants.group_deletion.clone(),
                ),
                settings: Arc::new(settings.tenants),
                routes_topic: settings.routes.topic.into(),
                kafka: settings.kafka,
                leases: Arc::default(),
                liveness: Arc::default(),
            },
        })
    }

    fn api_open(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (table, patience) = (self.registry.table.clone(), self.catch_up);
        async move {
            // Running, the service reports a table that never catches up.
            let _ = table.caught_up(patience).await;
        }
    }

    /// The bound port.
    fn port(&self) -> u16 {
        self.port
    }

    /// Serves until `shutdown` is cancelled. `/readyz` answers from the
    /// start, naming what the registry waits for; the API answers 503 until
    /// the route table has read `tenant-routes` to its end (a write decided
    /// on half the table would be wrong), and the registry exits if that
    /// takes longer than `routes.catch_up_timeout`.
    async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), TenantsError> {
        let table = self.registry.table.clone();
        let ready = Arc::new(service_kit::ReadyWhen(move || table.ready()));
        let app = service_kit::with_operations(
            service_kit::unavailable_until(router_with(self.registry.clone()), ready.clone()),
            protocol::Service::Tenants,
            protocol::BASELINE,
            ready,
        );
        tracing::info!(port = self.port, "tenants registry running");
        let stop_serving = shutdown.child_token();
        let serving = tokio::spawn(service_kit::serve(self.listener, app, stop_serving.clone()));
        let caught_up = tokio::select! {
            caught_up = self.registry.table.caught_up(self.catch_up) => caught_up,
            () = shutdown.cancelled() => Ok(()),
        };
        if let Err(e) = caught_up {
            stop_serving.cancel();
            let _ = serving.await;
            return Err(e.into());
        }
        let watching = tokio::spawn(lifecycle::watch(self.registry.clone(), shutdown.clone()));
        let served = serving.await.expect("the HTTP server does not panic");
        let _ = watching.await;
        Ok(served?)
    }
}
