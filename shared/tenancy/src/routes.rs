//! The route model and its record format on `tenant-routes`.
//!
//! Two kinds of keys share the compacted, single-partition topic:
//! - `tenant/<id>` → [`TenantRoutes`]: which variant label serves each service
//!   for that tenant; a tombstone deletes the tenant.
//! - `variant/<service>/<label>` → [`VariantEndpoint`]: where a registered
//!   variant answers HTTP and whether its lease is live; a tombstone removes
//!   the registration.
//!
//! The topic's offsets are the routes' versions: a table that has applied
//! every record before offset `v` is at version `v`. A producer stamps the
//! version its decision used into each record ([`crate::ROUTES_VERSION`]),
//! and every consumer resolves that record against the routes *as they were
//! at that version* ([`Routes::at`]), so consumers whose tables lag
//! differently still agree on who owns it. [`Routes`] keeps a short history
//! per key for that.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

/// A position in `tenant-routes`: every record before this offset is applied.
pub type RoutesVersion = u64;

/// Reads a stamped routes version (a decimal offset) from a header value.
pub fn parse_version(value: &[u8]) -> Result<RoutesVersion, String> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .ok_or_else(|| {
            format!(
                "`{}` must be a routes version (a decimal number), not {:?}",
                crate::ROUTES_VERSION,
                String::from_utf8_lossy(value)
            )
        })
}

/// Whether a tenant's mapping routes new records.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TenantState {
    /// Records stamped from now on go to the mapped variants.
    #[default]
    Active,
    /// Being deleted: records stamped from now on go to the baseline, while
    /// the variants finish the records stamped before.
    Draining,
}

impl TenantState {
    fn is_active(&self) -> bool {
        *self == TenantState::Active
    }
}

/// One tenant's mapping: service name → variant label.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantRoutes {
    /// Tenant id, as carried in baggage (`tenant=123`).
    pub id: String,
    /// Service (`dispatch`, `waiter`) → label (`sbx-123`).
    pub services: BTreeMap<String, String>,
    /// Other ways a request is recognised as this tenant's (see
    /// [`crate::Selector`]); the `tenant` baggage entry always works.
    #[serde(default, skip_serializing_if = "Vec::is_empty", rename = "match")]
    pub selectors: Vec<crate::Selector>,
    /// Active, or draining before deletion.
    #[serde(default, skip_serializing_if = "TenantState::is_active")]
    pub state: TenantState,
    /// When the registry deletes it (Unix milliseconds), if it has a TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

fn live_by_default() -> bool {
    true
}

/// A registered variant: its HTTP endpoint and whether its lease is live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantEndpoint {
    /// The service it is a variant of.
    pub service: String,
    /// Its label.
    pub label: String,
    /// Base URL, e.g. `http://127.0.0.1:8082`.
    pub endpoint: String,
    /// Some instance renews its lease. A variant that is not live is not
    /// routed to: records stamped while it is down go to the baseline.
    #[serde(default = "live_by_default")]
    pub live: bool,
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
        fn parse<T: serde::de::DeserializeOwned>(
            key: &str,
            value: Option<&[u8]>,
        ) -> Result<Option<T>, String> {
            value
                .map(|bytes| serde_json::from_slice(bytes).map_err(|e| format!("`{key}`: {e}")))
                .transpose()
        }
        if let Some(id) = key.strip_prefix("tenant/") {
            return Ok(RouteRecord::Tenant(id.to_string(), parse(key, value)?));
        }
        if let Some(rest) = key.strip_prefix("variant/") {
            let (service, label) = rest
                .split_once('/')
                .ok_or_else(|| format!("variant key `{key}` lacks a label"))?;
            return Ok(RouteRecord::Variant(
                service.to_string(),
                label.to_string(),
                parse(key, value)?,
            ));
        }
        Err(format!("unknown key `{key}`"))
    }
}

/// How many past values each key keeps. A record stamped with a version
/// older than a key's oldest kept change resolves against that oldest
/// value: such a record has waited through that many changes of one key.
const HISTORY_PER_KEY: usize = 16;

/// One key's values over versions: `(from, value)`, oldest first, where a
/// value holds for every version at or after `from` until the next entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct History<T> {
    entries: VecDeque<(RoutesVersion, Option<T>)>,
}

impl<T> Default for History<T> {
    fn default() -> Self {
        Self {
            entries: VecDeque::new(),
        }
    }
}

impl<T> History<T> {
    fn latest(&self) -> Option<&T> {
        self.entries.back().and_then(|(_, value)| value.as_ref())
    }

    fn at(&self, version: RoutesVersion) -> Option<&T> {
        let index = self.entries.partition_point(|(from, _)| *from <= version);
        match index {
            // Before the first change kept: the oldest kept value, unless
            // the history is complete (it started with this key's first
            // record, when the key did not exist yet).
            0 if self.entries.len() < HISTORY_PER_KEY => None,
            0 => self.entries.front().and_then(|(_, v)| v.as_ref()),
            i => self.entries[i - 1].1.as_ref(),
        }
    }

    fn push(&mut self, from: RoutesVersion, value: Option<T>) {
        self.entries.push_back((from, value));
        if self.entries.len() > HISTORY_PER_KEY {
            self.entries.pop_front();
        }
    }
}

/// Every tenant's mapping and every registered variant, as of some version
/// of `tenant-routes`, with enough history to answer for earlier versions.
///
/// The maps are persistent (structurally shared): a clone costs a pointer
/// copy and an update copies only the path to the changed entry, so the
/// route table publishes a new snapshot per record in time independent of
/// how many tenants there are, and catching up on a long topic is linear.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    version: RoutesVersion,
    tenants: PersistentMap<String, History<TenantRoutes>>,
    // By service, then label: a lookup on the consume path borrows both
    // keys instead of building an owned pair.
    variants: PersistentMap<String, PersistentMap<String, History<VariantEndpoint>>>,
}

type PersistentMap<K, V> = imbl::HashMap<K, V>;

/// Where a service's records of one tenant go, at one version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// No variant: the baseline.
    Baseline,
    /// The live variant with this label.
    Variant(&'a str),
    /// Mapped to this variant, but it is not live (stopped, crashed, or
    /// not registered): the baseline takes the record instead.
    VariantDown(&'a str),
}

impl Routes {
    /// The version: every record before this offset is applied.
    pub fn version(&self) -> RoutesVersion {
        self.version
    }

    /// The routes as they were at `version` (at most the current version).
    pub fn at(&self, version: RoutesVersion) -> RoutesAt<'_> {
        RoutesAt {
            routes: self,
            version: version.min(self.version),
        }
    }

    /// The routes now.
    pub fn current(&self) -> RoutesAt<'_> {
        self.at(self.version)
    }

    /// The label tenant `tenant` maps `service` to now, if any.
    pub fn variant_for(&self, tenant: &str, service: &str) -> Option<&str> {
        self.current().variant_for(tenant, service)
    }

    /// Tenant `id`'s mapping now.
    pub fn tenant(&self, id: &str) -> Option<&TenantRoutes> {
        self.tenants.get(id)?.latest()
    }

    /// Every tenant, in id order.
    pub fn tenants(&self) -> Vec<&TenantRoutes> {
        let mut tenants: Vec<_> = self.tenants.values().filter_map(History::latest).collect();
        tenants.sort_by(|a, b| a.id.cmp(&b.id));
        tenants
    }

    /// Variant `label` of `service`'s registration now.
    pub fn endpoint(&self, service: &str, label: &str) -> Option<&VariantEndpoint> {
        self.variants.get(service)?.get(label)?.latest()
    }

    /// Whether variant `label` of `service` was down (not live, or not
    /// registered) at some version after `version`, up to now: a record
    /// stamped at `version` for it would otherwise wait for its return, so
    /// a stand-in may take it. One that has been live ever since belongs to
    /// the variant's own instances.
    pub fn down_after(&self, service: &str, label: &str, version: RoutesVersion) -> bool {
        let Some(history) = self.variants.get(service).and_then(|v| v.get(label)) else {
            return true;
        };
        history
            .entries
            .iter()
            .filter(|(from, _)| *from > version)
            .any(|(_, endpoint)| !endpoint.as_ref().is_some_and(|e| e.live))
    }

    /// Every registered variant, ordered by service then label.
    pub fn variants(&self) -> Vec<&VariantEndpoint> {
        let mut variants: Vec<_> = self
            .variants
            .values()
            .flat_map(|labels| labels.values())
            .filter_map(History::latest)
            .collect();
        variants.sort_by(|a, b| (&a.service, &a.label).cmp(&(&b.service, &b.label)));
        variants
    }

    /// Tenants that map some service to variant `label` of `service` now.
    pub fn tenants_mapping(&self, service: &str, label: &str) -> Vec<&str> {
        self.tenants()
            .into_iter()
            .filter(|t| t.services.get(service).map(String::as_str) == Some(label))
            .map(|t| t.id.as_str())
            .collect()
    }

    /// Adds or replaces a tenant as the next version (tests and tools).
    pub fn put_tenant(&mut self, tenant: TenantRoutes) {
        let id = tenant.id.clone();
        self.apply(self.version, RouteRecord::Tenant(id, Some(tenant)));
    }

    /// Adds or replaces a variant as the next version (tests and tools).
    pub fn put_variant(&mut self, variant: VariantEndpoint) {
        let record = RouteRecord::Variant(
            variant.service.clone(),
            variant.label.clone(),
            Some(variant),
        );
        self.apply(self.version, record);
    }

    /// Moves past an unusable record at `offset`.
    pub fn pass(&mut self, offset: u64) {
        self.version = self.version.max(offset + 1);
    }

    /// Applies the record at `offset`; the version becomes `offset + 1`.
    pub fn apply(&mut self, offset: u64, record: RouteRecord) {
        let from = offset + 1;
        match record {
            RouteRecord::Tenant(id, routes) => {
                self.tenants.entry(id).or_default().push(from, routes);
            }
            RouteRecord::Variant(service, label, endpoint) => {
                self.variants
                    .entry(service)
                    .or_default()
                    .entry(label)
                    .or_default()
                    .push(from, endpoint);
            }
        }
        self.version = self.version.max(from);
    }
}

/// The routes at one version; see [`Routes::at`].
#[derive(Debug, Clone, Copy)]
pub struct RoutesAt<'a> {
    routes: &'a Routes,
    version: RoutesVersion,
}

impl<'a> RoutesAt<'a> {
    /// The version this view answers for.
    pub fn version(&self) -> RoutesVersion {
        self.version
    }

    /// Tenant `id`'s mapping at this version.
    pub fn tenant(&self, id: &str) -> Option<&'a TenantRoutes> {
        self.routes.tenants.get(id)?.at(self.version)
    }

    /// Every tenant at this version, in id order.
    pub fn tenants(&self) -> Vec<&'a TenantRoutes> {
        let mut tenants: Vec<_> = self
            .routes
            .tenants
            .values()
            .filter_map(|h| h.at(self.version))
            .collect();
        tenants.sort_by(|a, b| a.id.cmp(&b.id));
        tenants
    }

    /// The label an active tenant maps `service` to at this version.
    pub fn variant_for(&self, tenant: &str, service: &str) -> Option<&'a str> {
        let tenant = self.tenant(tenant)?;
        if tenant.state != TenantState::Active {
            return None;
        }
        tenant.services.get(service).map(String::as_str)
    }

    /// Variant `label` of `service`'s registration at this version.
    pub fn endpoint(&self, service: &str, label: &str) -> Option<&'a VariantEndpoint> {
        self.routes
            .variants
            .get(service)?
            .get(label)?
            .at(self.version)
    }

    /// Whether variant `label` of `service` was registered and live.
    pub fn is_live(&self, service: &str, label: &str) -> bool {
        self.endpoint(service, label).is_some_and(|v| v.live)
    }

    /// Where `service`'s records of `tenant` went at this version.
    pub fn route(&self, tenant: &str, service: &str) -> Route<'a> {
        match self.variant_for(tenant, service) {
            None => Route::Baseline,
            Some(label) if self.is_live(service, label) => Route::Variant(label),
            Some(label) => Route::VariantDown(label),
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
            ..TenantRoutes::default()
        };
        let mut routes = Routes::default();
        let bytes = serde_json::to_vec(&tenant).unwrap();
        routes.apply(
            0,
            RouteRecord::decode(&tenant_key("123"), Some(&bytes)).unwrap(),
        );
        assert_eq!(routes.variant_for("123", "waiter"), Some("sbx-123"));
        assert_eq!(routes.variant_for("123", "dispatch"), None);
        routes.apply(1, RouteRecord::decode(&tenant_key("123"), None).unwrap());
        assert_eq!(routes.tenant("123"), None);

        let variant = VariantEndpoint {
            service: "dispatch".into(),
            label: "sbx-123".into(),
            endpoint: "http://127.0.0.1:1".into(),
            live: true,
        };
        let bytes = serde_json::to_vec(&variant).unwrap();
        let record =
            RouteRecord::decode(&variant_key("dispatch", "sbx-123"), Some(&bytes)).unwrap();
        routes.apply(2, record);
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

    fn tenant(services: &[(&str, &str)]) -> TenantRoutes {
        TenantRoutes {
            id: "t".into(),
            services: services
                .iter()
                .map(|(s, l)| (s.to_string(), l.to_string()))
                .collect(),
            ..TenantRoutes::default()
        }
    }

    fn variant(label: &str, live: bool) -> VariantEndpoint {
        VariantEndpoint {
            service: "waiter".into(),
            label: label.into(),
            endpoint: "http://127.0.0.1:1".into(),
            live,
        }
    }

    #[test]
    fn each_version_answers_with_the_routes_of_its_time() {
        let mut routes = Routes::default();
        routes.apply(
            0,
            RouteRecord::Variant("waiter".into(), "x".into(), Some(variant("x", true))),
        );
        routes.apply(
            1,
            RouteRecord::Tenant("t".into(), Some(tenant(&[("waiter", "x")]))),
        );
        routes.apply(
            2,
            RouteRecord::Variant("waiter".into(), "x".into(), Some(variant("x", false))),
        );
        routes.apply(3, RouteRecord::Tenant("t".into(), None));
        assert_eq!(routes.version(), 4);
        let routes_at = |v| routes.at(v).route("t", "waiter");
        assert_eq!(routes_at(0), Route::Baseline, "before anything");
        assert_eq!(
            routes_at(1),
            Route::Baseline,
            "variant registered, tenant not yet mapped"
        );
        assert_eq!(routes_at(2), Route::Variant("x"));
        assert_eq!(routes_at(3), Route::VariantDown("x"));
        assert_eq!(routes_at(4), Route::Baseline, "tenant deleted");
        assert_eq!(
            routes_at(99),
            Route::Baseline,
            "a future version reads as now"
        );
        assert_eq!(routes.tenant("t"), None);
    }

    #[test]
    fn a_draining_tenant_routes_new_records_to_the_baseline_and_old_ones_to_its_variant() {
        let mut routes = Routes::default();
        routes.put_variant(variant("x", true));
        routes.put_tenant(tenant(&[("waiter", "x")]));
        let before = routes.version();
        routes.put_tenant(TenantRoutes {
            state: TenantState::Draining,
            ..tenant(&[("waiter", "x")])
        });
        assert_eq!(routes.at(before).route("t", "waiter"), Route::Variant("x"));
        assert_eq!(routes.current().route("t", "waiter"), Route::Baseline);
        assert_eq!(routes.tenants().len(), 1, "still listed while draining");
    }

    #[test]
    fn a_record_is_a_stand_ins_only_if_its_variant_went_down_after_it_was_stamped() {
        let mut routes = Routes::default();
        routes.put_variant(variant("x", true));
        let stamped_while_live = routes.version();
        assert!(!routes.down_after("waiter", "x", stamped_while_live));
        routes.put_variant(variant("x", false));
        assert!(routes.down_after("waiter", "x", stamped_while_live));
        routes.put_variant(variant("x", true));
        let stamped_after_return = routes.version();
        assert!(
            routes.down_after("waiter", "x", stamped_while_live),
            "it was down in between"
        );
        assert!(
            !routes.down_after("waiter", "x", stamped_after_return),
            "live ever since: the variant's own"
        );
        assert!(routes.down_after("waiter", "never-registered", 0));
    }

    #[test]
    fn history_is_bounded_and_old_versions_read_the_oldest_kept_value() {
        let mut routes = Routes::default();
        routes.put_variant(variant("x", true));
        routes.put_variant(variant("y", true));
        for i in 0..(HISTORY_PER_KEY as u64 * 2) {
            let label = if i % 2 == 0 { "x" } else { "y" };
            routes.put_tenant(tenant(&[("waiter", label)]));
        }
        let kept = &routes.tenants["t"].entries;
        assert_eq!(kept.len(), HISTORY_PER_KEY);
        let oldest = kept.front().unwrap().1.as_ref().unwrap();
        assert_eq!(
            routes.at(0).variant_for("t", "waiter"),
            oldest.services.get("waiter").map(String::as_str)
        );
    }
}
