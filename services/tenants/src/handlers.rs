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
use tenancy::{Routes, TenantRoutes, VariantEndpoint, tenant_key, variant_key};

use crate::{GroupDeletion, Registry};

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

pub(crate) async fn get_tenant(
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
pub(crate) struct TenantBody {
    services: BTreeMap<String, String>,
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

pub(crate) async fn delete_tenant(
    State(registry): State<Registry>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Deleted>, ApiError> {
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

/// `PUT /variants/{service}/{label}` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct VariantBody {
    endpoint: String,
}

pub(crate) async fn put_variant(
    State(registry): State<Registry>,
    UrlPath((service, label)): UrlPath<(String, String)>,
    body: Result<Json<VariantBody>, JsonRejection>,
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

pub(crate) async fn delete_variant(
    State(registry): State<Registry>,
    UrlPath((service, label)): UrlPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
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
