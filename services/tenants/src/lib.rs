//! The tenants registry: the one writer of `tenant-routes`.
//!
//! Start with [`router`], the HTTP API:
//!
//! | method | path | |
//! |---|---|---|
//! | GET | `/tenants`, `/tenants/{id}` | read (no token) |
//! | PUT | `/tenants/{id}` | `{"services": {"dispatch": "sbx-123", "waiter": "sbx-123"}}` |
//! | DELETE | `/tenants/{id}` | tombstone, then delete its variants' unused consumer groups |
//! | GET | `/variants` | registered variants |
//! | PUT | `/variants/{service}/{label}` | `{"endpoint": "http://…"}`, sent by a variant once ready |
//! | DELETE | `/variants/{service}/{label}` | sent by a variant as it stops |
//!
//! Mutations need `Authorization: Bearer <token>`. Every write goes to the
//! compacted topic and the answer waits until this registry's own
//! [`tenancy::RouteTable`] shows it, so a client that reads back sees its
//! write. A tenant may only be mapped to variants that are registered: a
//! variant registers after its partitions are assigned, so no tenant record
//! is produced into a gap no consumer is reading.

mod groups;

pub use groups::{DeletionOutcome, GroupDeletion, GroupDeletionSettings};

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, State, rejection::JsonRejection};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, put};
use axum::{Json, Router};
use kafka_kit::KafkaSettings;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use service_kit::{ApiError, HttpSettings};
use tenancy::{RouteTable, Routes, TenantRoutes, VariantEndpoint, tenant_key, variant_key};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Checked-in defaults.
pub const DEFAULTS: &str = include_str!("../config/base.yaml");

/// The registry's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The HTTP listener.
    pub http: HttpSettings,
    /// The broker.
    pub kafka: KafkaSettings,
    /// Registry behaviour.
    pub tenants: TenantsSettings,
}

/// Registry behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantsSettings {
    /// The compacted topic.
    pub topic: String,
    /// Bearer token for mutations.
    pub token: String,
    /// Services a tenant may map.
    pub services: BTreeSet<String>,
    /// Consumer-group pattern per service; `{label}` is replaced.
    pub variant_groups: BTreeMap<String, String>,
    /// How long a write may take to show in the registry's own table.
    pub write_timeout_ms: u64,
    /// Deleting a deleted tenant's variant consumer groups.
    pub group_deletion: GroupDeletionSettings,
}

impl Settings {
    /// Defaults → optional file → environment (and `KAFKA_BOOTSTRAP_SERVERS`).
    pub fn load(file: Option<&Path>) -> Result<Self, settings::SettingsError> {
        settings::Loader::new(DEFAULTS)
            .file(file)
            .kafka_section("kafka")
            .load()
    }

    /// The defaults pointed at `kafka`, HTTP on an ephemeral loopback port.
    pub fn defaults_with(kafka: &KafkaSettings) -> Self {
        let mut settings: Settings = settings::defaults(DEFAULTS);
        settings.kafka.bootstrap_servers = kafka.bootstrap_servers.clone();
        settings.http.host = "127.0.0.1".into();
        settings.http.port = 0;
        settings
    }
}

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
}

/// A built, not yet running, registry.
pub struct Application {
    listener: TcpListener,
    port: u16,
    registry: Registry,
}

impl Application {
    /// Binds, connects, and reads `tenant-routes` up to its current end.
    pub async fn build(settings: Settings) -> Result<Self, TenantsError> {
        let (listener, port) = service_kit::bind(&settings.http).await?;
        let table = RouteTable::start(&settings.kafka, &settings.tenants.topic).await?;
        table.caught_up(Duration::from_secs(30)).await?;
        let producer: FutureProducer = settings
            .kafka
            .producer_config()
            .set("acks", "all")
            .set("linger.ms", "0")
            .create()?;
        let admin: AdminClient<DefaultClientContext> = settings.kafka.client_config().create()?;
        groups::describe_metrics();
        Ok(Self {
            listener,
            port,
            registry: Registry {
                table,
                producer,
                groups: groups::GroupDeleter::new(
                    Arc::new(admin),
                    settings.tenants.group_deletion.clone(),
                ),
                settings: Arc::new(settings.tenants),
            },
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The registry's own route table (for tests measuring propagation).
    pub fn route_table(&self) -> RouteTable {
        self.registry.table.clone()
    }

    /// Serves until `shutdown` is cancelled.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> Result<(), TenantsError> {
        let app = router_with(self.registry)
            .merge(service_kit::operational_routes(Arc::new(
                service_kit::AlwaysReady,
            )))
            .layer(propagation::HttpTraceLayer::new(
                protocol::Service::Tenants.as_str(),
                tenancy::BASELINE,
            ));
        tracing::info!(port = self.port, "tenants registry running");
        Ok(service_kit::serve(self.listener, app, shutdown).await?)
    }
}

fn router_with(registry: Registry) -> Router {
    Router::new()
        .route("/tenants", get(list_tenants))
        .route(
            "/tenants/{id}",
            get(get_tenant).put(put_tenant).delete(delete_tenant),
        )
        .route("/variants", get(list_variants))
        .route(
            "/variants/{service}/{label}",
            put(put_variant).delete(delete_variant),
        )
        .with_state(registry)
}

/// The API on its own, for embedding; see the crate docs.
pub async fn router(settings: Settings) -> Result<Router, TenantsError> {
    Ok(router_with(Application::build(settings).await?.registry))
}

fn authorize(registry: &Registry, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "mutations need `Authorization: Bearer <token>`",
        )),
        Some(token) if token == registry.settings.token => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the bearer token is not valid",
        )),
    }
}

/// Tenant ids travel in baggage: keep them short and header-safe.
fn check_id(what: &str, id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid {what} {id:?}: use 1-64 letters, digits, `-` or `_`"
        )))
    }
}

fn check_label(label: &str) -> Result<(), ApiError> {
    check_id("variant label", label)?;
    if label == tenancy::BASELINE {
        return Err(ApiError::bad_request(
            "`baseline` is the shared baseline, not a variant label",
        ));
    }
    Ok(())
}

fn check_service(registry: &Registry, service: &str) -> Result<(), ApiError> {
    if registry.settings.services.contains(service) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "unknown service {service:?}; known: {}",
            registry
                .settings
                .services
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

impl Registry {
    /// Writes `value` (or a tombstone) under `key`, then waits until the own
    /// table satisfies `visible`.
    async fn write(
        &self,
        key: &str,
        value: Option<Vec<u8>>,
        visible: impl Fn(&Routes) -> bool,
    ) -> Result<(), ApiError> {
        let mut record = FutureRecord::<str, Vec<u8>>::to(&self.settings.topic).key(key);
        if let Some(value) = &value {
            record = record.payload(value);
        }
        self.producer
            .send(record, Duration::from_secs(5))
            .await
            .map_err(|(e, _)| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot write to `{}`: {e}", self.settings.topic),
                )
            })?;
        let timeout = Duration::from_millis(self.settings.write_timeout_ms);
        self.table.wait_for(timeout, visible).await.map(|_| ()).ok_or_else(|| {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("the write was accepted but did not show within {timeout:?}; read it back later"),
            )
        })
    }
}

async fn list_tenants(State(registry): State<Registry>) -> Json<Vec<TenantRoutes>> {
    Json(
        registry
            .table
            .snapshot()
            .tenants()
            .into_iter()
            .cloned()
            .collect(),
    )
}

async fn get_tenant(
    State(registry): State<Registry>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<TenantRoutes>, ApiError> {
    registry
        .table
        .snapshot()
        .tenant(&id)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no tenant {id:?}")))
}

/// `PUT /tenants/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TenantBody {
    services: BTreeMap<String, String>,
}

async fn put_tenant(
    State(registry): State<Registry>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    body: Result<Json<TenantBody>, JsonRejection>,
) -> Result<Json<TenantRoutes>, ApiError> {
    authorize(&registry, &headers)?;
    check_id("tenant id", &id)?;
    let Json(body) = body?;
    let routes = registry.table.snapshot();
    for (service, label) in &body.services {
        check_service(&registry, service)?;
        check_label(label)?;
        if routes.endpoint(service, label).is_none() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "variant {service}/{label} is not registered: start it first (it registers once its partitions are assigned)"
                ),
            ));
        }
    }
    let tenant = TenantRoutes {
        id: id.clone(),
        services: body.services,
    };
    let bytes = serde_json::to_vec(&tenant).expect("a tenant serialises");
    let expected = tenant.clone();
    registry
        .write(&tenant_key(&id), Some(bytes), move |routes| {
            routes.tenant(&expected.id) == Some(&expected)
        })
        .await?;
    tracing::info!(tenant = %id, services = ?tenant.services, "tenant mapped");
    Ok(Json(tenant))
}

/// What deleting a tenant did.
#[derive(Debug, Serialize, Deserialize)]
pub struct Deleted {
    /// The tenant.
    pub tenant: String,
    /// Consumer groups of its variants no other tenant uses, and what
    /// became of each.
    pub consumer_groups: Vec<GroupDeletion>,
}

async fn delete_tenant(
    State(registry): State<Registry>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Json<Deleted>, ApiError> {
    authorize(&registry, &headers)?;
    let routes = registry.table.snapshot();
    let Some(tenant) = routes.tenant(&id).cloned() else {
        return Err(ApiError::not_found(format!("no tenant {id:?}")));
    };
    let gone = id.clone();
    registry
        .write(&tenant_key(&id), None, move |routes| {
            routes.tenant(&gone).is_none()
        })
        .await?;
    // A group still serving another tenant's mapping stays.
    let after = registry.table.snapshot();
    let groups: Vec<String> = tenant
        .services
        .iter()
        .filter(|(service, label)| {
            !after
                .tenants()
                .iter()
                .any(|t| t.services.get(*service) == Some(*label))
        })
        .filter_map(|(service, label)| {
            registry
                .settings
                .variant_groups
                .get(service)
                .map(|pattern| pattern.replace("{label}", label))
        })
        .collect();
    let consumer_groups = registry.groups.delete(&groups).await;
    tracing::info!(tenant = %id, ?consumer_groups, "tenant deleted");
    Ok(Json(Deleted {
        tenant: id,
        consumer_groups,
    }))
}

async fn list_variants(State(registry): State<Registry>) -> Json<Vec<VariantEndpoint>> {
    Json(
        registry
            .table
            .snapshot()
            .variants()
            .into_iter()
            .cloned()
            .collect(),
    )
}

/// `PUT /variants/{service}/{label}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VariantBody {
    endpoint: String,
}

async fn put_variant(
    State(registry): State<Registry>,
    UrlPath((service, label)): UrlPath<(String, String)>,
    headers: HeaderMap,
    body: Result<Json<VariantBody>, JsonRejection>,
) -> Result<Json<VariantEndpoint>, ApiError> {
    authorize(&registry, &headers)?;
    check_service(&registry, &service)?;
    check_label(&label)?;
    let Json(body) = body?;
    if !(body.endpoint.starts_with("http://") || body.endpoint.starts_with("https://")) {
        return Err(ApiError::bad_request(format!(
            "endpoint {:?} must be an http:// or https:// URL",
            body.endpoint
        )));
    }
    let variant = VariantEndpoint {
        service: service.clone(),
        label: label.clone(),
        endpoint: body.endpoint,
    };
    let bytes = serde_json::to_vec(&variant).expect("a variant serialises");
    let expected = variant.clone();
    registry
        .write(&variant_key(&service, &label), Some(bytes), move |routes| {
            routes.endpoint(&expected.service, &expected.label) == Some(&expected)
        })
        .await?;
    tracing::info!(%service, %label, endpoint = %variant.endpoint, "variant registered");
    Ok(Json(variant))
}

async fn delete_variant(
    State(registry): State<Registry>,
    UrlPath((service, label)): UrlPath<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorize(&registry, &headers)?;
    if registry
        .table
        .snapshot()
        .endpoint(&service, &label)
        .is_none()
    {
        return Err(ApiError::not_found(format!("no variant {service}/{label}")));
    }
    let (s, l) = (service.clone(), label.clone());
    registry
        .write(&variant_key(&service, &label), None, move |routes| {
            routes.endpoint(&s, &l).is_none()
        })
        .await?;
    tracing::info!(%service, %label, "variant deregistered");
    Ok(StatusCode::NO_CONTENT)
}
