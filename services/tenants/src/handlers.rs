//! The HTTP handlers: tenants and variants, read and written. Mutations
//! reach them only through `service_kit::auth::require_bearer`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path as UrlPath, State, rejection::JsonRejection};
use axum::http::StatusCode;
use rdkafka::producer::FutureRecord;
use serde::{Deserialize, Serialize};
use service_kit::ApiError;
use tenancy::{
    LeaseRenewal, Routes, TenantRoutes, TenantState, VariantEndpoint, tenant_key, variant_key,
};

use crate::Registry;
use crate::lifecycle::Deleted;

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
    /// Writes variant `variant` (live) and waits until it shows.
    async fn put_live(&self, variant: VariantEndpoint) -> Result<(), ApiError> {
        let _writing = self.liveness.lock().await;
        let bytes = serde_json::to_vec(&variant).expect("a variant serialises");
        let key = variant_key(&variant.service, &variant.label);
        self.write(&key, Some(bytes), move |routes| {
            routes.endpoint(&variant.service, &variant.label) == Some(&variant)
        })
        .await
    }

    /// Writes variant `label` of `service` live or not, unless it already
    /// is, or (marking it down) an instance renewed meanwhile.
    pub(crate) async fn set_live(
        &self,
        service: &str,
        label: &str,
        live: bool,
    ) -> Result<(), ApiError> {
        let _writing = self.liveness.lock().await;
        let Some(current) = self.table.snapshot().endpoint(service, label).cloned() else {
            return Ok(());
        };
        if current.live == live || (!live && self.leases().is_held(service, label)) {
            return Ok(());
        }
        let variant = VariantEndpoint { live, ..current };
        let bytes = serde_json::to_vec(&variant).expect("a variant serialises");
        self.write(&variant_key(service, label), Some(bytes), move |routes| {
            routes.endpoint(&variant.service, &variant.label) == Some(&variant)
        })
        .await?;
        tracing::info!(%service, %label, live, "variant liveness changed");
        metrics::counter!("tenants_variant_liveness_changes_total", "live" => live.to_string())
            .increment(1);
        Ok(())
    }

    /// The lease book.
    pub(crate) fn leases(&self) -> std::sync::MutexGuard<'_, crate::leases::Leases> {
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `value` (or a tombstone) under `key`, then waits until the own
    /// table satisfies `visible`.
    pub(crate) async fn write(
        &self,
        key: &str,
        value: Option<Vec<u8>>,
        visible: impl Fn(&Routes) -> bool,
    ) -> Result<(), ApiError> {
        let mut record = FutureRecord::<str, Vec<u8>>::to(&self.routes_topic).key(key);
        if let Some(value) = &value {
            record = record.payload(value);
        }
        self.producer
            .send(record, Duration::from_secs(5))
            .await
            .map_err(|(e, _)| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the change could not be written to Kafka; try again",
                )
                .caused_by(format!("writing to `{}`: {e}", self.routes_topic))
            })?;
        let timeout = self.settings.write_timeout;
        self.table.wait_for(timeout, visible).await.map(|_| ()).ok_or_else(|| {
            ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!("the write was accepted but did not show within {timeout:?}; read it back later"),
            )
        })
    }
}

pub(crate) async fn list_tenants(State(registry): State<Registry>) -> Json<Vec<TenantRoutes>> {
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

/// `GET /tenants/{id}`: the mapping and how each of its variants is doing.
#[derive(Debug, Serialize, Deserialize)]
pub struct TenantStatus {
    /// The mapping as written.
    #[serde(flatten)]
    pub tenant: TenantRoutes,
    /// Each mapped variant.
    pub variants: Vec<VariantStatus>,
}

/// One mapped variant's status.
#[derive(Debug, Serialize, Deserialize)]
pub struct VariantStatus {
    /// The service.
    pub service: String,
    /// The variant label.
    pub label: String,
    /// Whether it is registered and some instance holds its lease.
    pub live: bool,
    /// Instances holding a lease.
    pub instances: usize,
    /// When an instance last renewed (Unix milliseconds).
    pub last_heartbeat_ms: Option<u64>,
    /// Its consumer group, for services that consume.
    pub group: Option<String>,
    /// Records on the group's topic not yet committed past.
    pub lag: Option<i64>,
    /// This tenant's records its live instances processed.
    pub processed: u64,
    /// This tenant's records its live instances left to another group.
    pub skipped: u64,
}

pub(crate) async fn get_tenant(
    State(registry): State<Registry>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<TenantStatus>, ApiError> {
    let routes = registry.table.snapshot();
    let tenant = routes
        .tenant(&id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("no tenant {id:?}")))?;
    let mut variants = Vec::new();
    for (service, label) in &tenant.services {
        let lease = registry.leases().status(service, label);
        let counts = lease.counts.get(&id).copied().unwrap_or_default();
        let consumers = registry.settings.variant_consumers.get(service);
        let group = consumers.map(|c| c.group_of(label));
        let lag = match (consumers, &group) {
            (Some(c), Some(group)) => {
                crate::lifecycle::group_position(&registry.kafka, group, &c.topic)
                    .await
                    .ok()
                    .and_then(|p| p.lag())
            }
            _ => None,
        };
        variants.push(VariantStatus {
            service: service.clone(),
            label: label.clone(),
            live: routes.endpoint(service, label).is_some_and(|v| v.live),
            instances: lease.instances,
            last_heartbeat_ms: lease.last_heartbeat_ms,
            group,
            lag,
            processed: counts.processed,
            skipped: counts.skipped,
        });
    }
    Ok(Json(TenantStatus { tenant, variants }))
}

/// `PUT /tenants/{id}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantBody {
    services: BTreeMap<String, String>,
    /// Other ways its requests are recognised (see `tenancy::Selector`).
    #[serde(default, rename = "match")]
    selectors: Vec<tenancy::Selector>,
    /// Deleted (drained first) this long after this write, e.g. `"30m"`.
    #[serde(default, with = "settings::duration::option")]
    ttl: Option<Duration>,
}

pub(crate) async fn put_tenant(
    State(registry): State<Registry>,
    UrlPath(id): UrlPath<String>,
    body: Result<Json<TenantBody>, JsonRejection>,
) -> Result<Json<TenantRoutes>, ApiError> {
    check_id("tenant id", &id)?;
    let Json(body) = body?;
    let routes = registry.table.snapshot();
    for (service, label) in &body.services {
        check_service(&registry, service)?;
        check_label(label)?;
        match routes.endpoint(service, label) {
            None => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "variant {service}/{label} is not registered: start it first (it registers once its partitions are assigned)"
                    ),
                ));
            }
            Some(variant) if !variant.live => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    format!(
                        "variant {service}/{label} is registered but not live (no instance renews its lease): start it first"
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(ttl) = body.ttl
        && ttl.is_zero()
    {
        return Err(ApiError::bad_request("`ttl` must be longer than zero"));
    }
    let tenant = TenantRoutes {
        id: id.clone(),
        services: body.services,
        selectors: body.selectors,
        state: TenantState::Active,
        expires_at_ms: body
            .ttl
            .map(|ttl| crate::lifecycle::now_ms() + ttl.as_millis() as u64),
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

pub(crate) async fn delete_tenant(
    State(registry): State<Registry>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Deleted>, ApiError> {
    crate::lifecycle::delete_tenant(&registry, &id)
        .await
        .map(Json)
}

pub(crate) async fn list_variants(State(registry): State<Registry>) -> Json<Vec<VariantEndpoint>> {
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

pub(crate) async fn put_variant(
    State(registry): State<Registry>,
    UrlPath((service, label)): UrlPath<(String, String)>,
    body: Result<Json<LeaseRenewal>, JsonRejection>,
) -> Result<Json<VariantEndpoint>, ApiError> {
    check_service(&registry, &service)?;
    check_label(&label)?;
    let Json(body) = body?;
    if !(body.endpoint.starts_with("http://") || body.endpoint.starts_with("https://")) {
        return Err(ApiError::bad_request(format!(
            "endpoint {:?} must be an http:// or https:// URL",
            body.endpoint
        )));
    }
    let instance = body.instance.as_deref().unwrap_or("unnamed");
    check_id("instance", instance)?;
    registry
        .leases()
        .renew(&service, &label, instance, body.counts);
    let variant = VariantEndpoint {
        service: service.clone(),
        label: label.clone(),
        endpoint: body.endpoint,
        live: true,
    };
    if registry.table.snapshot().endpoint(&service, &label) != Some(&variant) {
        registry.put_live(variant.clone()).await?;
        tracing::info!(%service, %label, endpoint = %variant.endpoint, %instance, "variant registered and live");
    }
    Ok(Json(variant))
}

/// `DELETE /variants/{service}/{label}/instances/{instance}`: an instance
/// stopping gives up its lease.
pub(crate) async fn leave_variant(
    State(registry): State<Registry>,
    UrlPath((service, label, instance)): UrlPath<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    if registry
        .table
        .snapshot()
        .endpoint(&service, &label)
        .is_none()
    {
        return Err(ApiError::not_found(format!("no variant {service}/{label}")));
    }
    let still_held = registry.leases().leave(&service, &label, &instance);
    tracing::info!(%service, %label, %instance, still_held, "variant instance left");
    if !still_held {
        registry.set_live(&service, &label, false).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /variants/{service}/{label}`: removes a registration no tenant
/// maps to.
pub(crate) async fn delete_variant(
    State(registry): State<Registry>,
    UrlPath((service, label)): UrlPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let routes = registry.table.snapshot();
    if routes.endpoint(&service, &label).is_none() {
        return Err(ApiError::not_found(format!("no variant {service}/{label}")));
    }
    let mapped = routes.tenants_mapping(&service, &label);
    if !mapped.is_empty() {
        return Err(crate::lifecycle::still_mapped(&service, &label, &mapped));
    }
    let (s, l) = (service.clone(), label.clone());
    registry
        .write(&variant_key(&service, &label), None, move |routes| {
            routes.endpoint(&s, &l).is_none()
        })
        .await?;
    registry.leases().forget(&service, &label);
    tracing::info!(%service, %label, "variant deregistered");
    Ok(StatusCode::NO_CONTENT)
}
