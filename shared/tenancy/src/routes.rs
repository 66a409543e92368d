//! The route model and its record format on `tenant-routes`.
//!
//! Two kinds of keys share the compacted topic:
//! - `tenant/<id>` → [`TenantRoutes`]: which variant label serves each service
//!   for that tenant; a tombstone deletes the tenant.
//! - `variant/<service>/<label>` → [`VariantEndpoint`]: where a running
//!   variant answers HTTP (the gateway forwards to dispatch variants there);
//!   a tombstone deregisters it.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

/// One tenant's mapping: service name → variant label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantRoutes {
    /// Tenant id, as carried in baggage (`tenant=123`).
    pub id: String,
    /// Service (`dispatch`, `waiter`) → label (`sbx-123`).
    pub services: BTreeMap<String, String>,
}

/// A running variant's HTTP endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantEndpoint {
    /// The service it is a variant of.
    pub service: String,
    /// Its label.
    pub label: String,
    /// Base URL, e.g. `http://127.0.0.1:8082`.
    pub endpoint: String,
}

/// A decoded `tenant-routes` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteRecord {
    /// A tenant's mapping, or `None` for a tombstone.
    Tenant(String, Option<TenantRoutes>),
    /// A variant registration, or `None` for a tombstone.
    Variant(String, String, Option<VariantEndpoint>),
}

/// The record key of tenant `id`.
pub fn tenant_key(id: &str) -> String {
    format!("tenant/{id}")
}

/// The record key of variant `label` of `service`.
pub fn variant_key(service: &str, label: &str) -> String {
    format!("variant/{service}/{label}")
}

impl RouteRecord {
    /// Decodes a record; `Err` says why it is unusable.
    pub fn decode(key: &str, value: Option<&[u8]>) -> Result<Self, String> {
        let parse = |what: &str| -> Result<serde_json::Value, String> {
            serde_json::from_slice(value.unwrap_or_default())
                .map_err(|e| format!("{what} `{key}`: {e}"))
        };
        if let Some(id) = key.strip_prefix("tenant/") {
            let routes = match value {
                None => None,
                Some(_) => Some(
                    serde_json::from_value::<TenantRoutes>(parse("tenant")?)
                        .map_err(|e| format!("tenant `{key}`: {e}"))?,
                ),
            };
            return Ok(RouteRecord::Tenant(id.to_string(), routes));
        }
        if let Some(rest) = key.strip_prefix("variant/") {
            let (service, label) = rest
                .split_once('/')
                .ok_or_else(|| format!("variant key `{key}` lacks a label"))?;
            let endpoint = match value {
                None => None,
                Some(_) => Some(
                    serde_json::from_value::<VariantEndpoint>(parse("variant")?)
                        .map_err(|e| format!("variant `{key}`: {e}"))?,
                ),
            };
            return Ok(RouteRecord::Variant(
                service.to_string(),
                label.to_string(),
                endpoint,
            ));
        }
        Err(format!("unknown key `{key}`"))
    }
}

/// Every tenant's mapping and every registered variant, as of some point in
/// `tenant-routes`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    tenants: HashMap<String, TenantRoutes>,
    variants: HashMap<(String, String), VariantEndpoint>,
}

impl Routes {
    /// The label tenant `tenant` maps `service` to, if any.
    pub fn variant_for(&self, tenant: &str, service: &str) -> Option<&str> {
        self.tenants
            .get(tenant)?
            .services
            .get(service)
            .map(String::as_str)
    }

    /// Tenant `id`'s mapping.
    pub fn tenant(&self, id: &str) -> Option<&TenantRoutes> {
        self.tenants.get(id)
    }

    /// Every tenant, in id order.
    pub fn tenants(&self) -> Vec<&TenantRoutes> {
        let mut tenants: Vec<_> = self.tenants.values().collect();
        tenants.sort_by(|a, b| a.id.cmp(&b.id));
        tenants
    }

    /// Where variant `label` of `service` answers.
    pub fn endpoint(&self, service: &str, label: &str) -> Option<&VariantEndpoint> {
        self.variants.get(&(service.to_string(), label.to_string()))
    }

    /// Every registered variant, ordered by service then label.
    pub fn variants(&self) -> Vec<&VariantEndpoint> {
        let mut variants: Vec<_> = self.variants.values().collect();
        variants.sort_by(|a, b| (&a.service, &a.label).cmp(&(&b.service, &b.label)));
        variants
    }

    /// Adds or replaces a tenant.
    pub fn put_tenant(&mut self, tenant: TenantRoutes) {
        self.tenants.insert(tenant.id.clone(), tenant);
    }

    /// Applies a decoded record.
    pub fn apply(&mut self, record: RouteRecord) {
        match record {
            RouteRecord::Tenant(id, Some(routes)) => {
                self.tenants.insert(id, routes);
            }
            RouteRecord::Tenant(id, None) => {
                self.tenants.remove(&id);
            }
            RouteRecord::Variant(service, label, Some(endpoint)) => {
                self.variants.insert((service, label), endpoint);
            }
            RouteRecord::Variant(service, label, None) => {
                self.variants.remove(&(service, label));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_tombstones_delete() {
        let tenant = TenantRoutes {
            id: "123".into(),
            services: [("waiter".to_string(), "sbx-123".to_string())].into(),
        };
        let mut routes = Routes::default();
        let bytes = serde_json::to_vec(&tenant).unwrap();
        routes.apply(RouteRecord::decode(&tenant_key("123"), Some(&bytes)).unwrap());
        assert_eq!(routes.variant_for("123", "waiter"), Some("sbx-123"));
        assert_eq!(routes.variant_for("123", "dispatch"), None);
        routes.apply(RouteRecord::decode(&tenant_key("123"), None).unwrap());
        assert_eq!(routes.tenant("123"), None);

        let variant = VariantEndpoint {
            service: "dispatch".into(),
            label: "sbx-123".into(),
            endpoint: "http://127.0.0.1:1".into(),
        };
        let bytes = serde_json::to_vec(&variant).unwrap();
        routes
            .apply(RouteRecord::decode(&variant_key("dispatch", "sbx-123"), Some(&bytes)).unwrap());
        assert_eq!(routes.endpoint("dispatch", "sbx-123"), Some(&variant));
    }

    #[test]
    fn unusable_records_say_why() {
        assert!(
            RouteRecord::decode("tenant/1", Some(b"{"))
                .unwrap_err()
                .contains("tenant/1")
        );
        assert!(
            RouteRecord::decode("other/1", Some(b"{}"))
                .unwrap_err()
                .contains("unknown key")
        );
        assert!(
            RouteRecord::decode("variant/x", Some(b"{}"))
                .unwrap_err()
                .contains("label")
        );
    }
}
