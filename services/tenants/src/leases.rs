//! Variant liveness: each running instance of a variant renews a lease by
//! re-sending its registration; the book of leases lives in this registry's
//! memory, and only a change of liveness is written to `tenant-routes`
//! (`live: true` when the first instance arrives, `live: false` when the
//! last one leaves or lapses). A registry that restarts gives every variant
//! the table lists as live one lease period to renew.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tenancy::TenantCounts;

/// The `tenants.lease` settings section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseSettings {
    /// A variant whose instances have all been silent this long is marked
    /// not live: records stamped from then on go to the baseline, and the
    /// baseline stands in for it on the records it left.
    #[serde(with = "settings::duration")]
    pub ttl: Duration,
    /// How often lapsed leases (and expired tenants) are looked for.
    #[serde(with = "settings::duration")]
    pub check_every: Duration,
}

struct Instance {
    renewed: Instant,
    counts: BTreeMap<String, TenantCounts>,
}

#[derive(Default)]
struct VariantLeases {
    instances: HashMap<String, Instance>,
    last_renewal: Option<SystemTime>,
}

/// The lease book: variant → instance → last renewal.
#[derive(Default)]
pub struct Leases {
    variants: HashMap<(String, String), VariantLeases>,
}

/// One variant's liveness as the registry sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseStatus {
    /// Instances holding a lease.
    pub instances: usize,
    /// When an instance last renewed (Unix milliseconds).
    pub last_heartbeat_ms: Option<u64>,
    /// Per tenant, summed over the instances holding a lease.
    pub counts: BTreeMap<String, TenantCounts>,
}

fn key(service: &str, label: &str) -> (String, String) {
    (service.to_string(), label.to_string())
}

impl Leases {
    /// `instance` of variant `label` of `service` renewed its lease.
    pub fn renew(
        &mut self,
        service: &str,
        label: &str,
        instance: &str,
        counts: BTreeMap<String, TenantCounts>,
    ) {
        let variant = self.variants.entry(key(service, label)).or_default();
        variant.last_renewal = Some(SystemTime::now());
        variant.instances.insert(
            instance.to_string(),
            Instance {
                renewed: Instant::now(),
                counts,
            },
        );
    }

    /// A lease for a variant the table says is live, from a registry that
    /// has just started and has not heard from it yet.
    pub fn assume_live(&mut self, service: &str, label: &str) {
        self.variants
            .entry(key(service, label))
            .or_default()
            .instances
            .entry("(before the registry started)".into())
            .or_insert(Instance {
                renewed: Instant::now(),
                counts: BTreeMap::new(),
            });
    }

    /// `instance` left; whether the variant still has a live instance.
    pub fn leave(&mut self, service: &str, label: &str, instance: &str) -> bool {
        let Some(variant) = self.variants.get_mut(&key(service, label)) else {
            return false;
        };
        variant.instances.remove(instance);
        !variant.instances.is_empty()
    }

    /// Drops instances silent for `ttl`; returns the variants left with none.
    pub fn lapse(&mut self, ttl: Duration) -> Vec<(String, String)> {
        let now = Instant::now();
        let mut emptied = Vec::new();
        for (variant, leases) in &mut self.variants {
            let before = leases.instances.len();
            leases
                .instances
                .retain(|_, instance| now.duration_since(instance.renewed) < ttl);
            if before > 0 && leases.instances.is_empty() {
                emptied.push(variant.clone());
            }
        }
        emptied
    }

    /// Whether variant `label` of `service` has a live instance.
    pub fn is_held(&self, service: &str, label: &str) -> bool {
        self.variants
            .get(&key(service, label))
            .is_some_and(|v| !v.instances.is_empty())
    }

    /// Forgets a variant whose registration was removed.
    pub fn forget(&mut self, service: &str, label: &str) {
        self.variants.remove(&key(service, label));
    }

    /// Variant `label` of `service`'s liveness.
    pub fn status(&self, service: &str, label: &str) -> LeaseStatus {
        let Some(variant) = self.variants.get(&key(service, label)) else {
            return LeaseStatus::default();
        };
        let mut counts: BTreeMap<String, TenantCounts> = BTreeMap::new();
        for instance in variant.instances.values() {
            for (tenant, c) in &instance.counts {
                let sum = counts.entry(tenant.clone()).or_default();
                sum.processed += c.processed;
                sum.skipped += c.skipped;
            }
        }
        LeaseStatus {
            instances: variant.instances.len(),
            last_heartbeat_ms: variant
                .last_renewal
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64),
            counts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_variant_is_held_while_one_instance_renews() {
        let mut leases = Leases::default();
        leases.renew("waiter", "x", "a", BTreeMap::new());
        leases.renew("waiter", "x", "b", BTreeMap::new());
        assert!(leases.leave("waiter", "x", "a"), "b still holds it");
        assert!(leases.is_held("waiter", "x"));
        assert!(!leases.leave("waiter", "x", "b"));
        assert!(!leases.is_held("waiter", "x"));
    }

    #[test]
    fn silent_instances_lapse_and_report_their_variant_once() {
        let mut leases = Leases::default();
        leases.renew("waiter", "x", "a", BTreeMap::new());
        assert!(leases.lapse(Duration::from_secs(60)).is_empty());
        assert_eq!(
            leases.lapse(Duration::ZERO),
            vec![("waiter".to_string(), "x".to_string())]
        );
        assert!(leases.lapse(Duration::ZERO).is_empty(), "reported once");
    }

    #[test]
    fn counts_are_summed_over_instances() {
        let mut leases = Leases::default();
        let counts = |p, s| {
            BTreeMap::from([(
                "t".to_string(),
                TenantCounts {
                    processed: p,
                    skipped: s,
                },
            )])
        };
        leases.renew("waiter", "x", "a", counts(3, 1));
        leases.renew("waiter", "x", "b", counts(4, 0));
        let status = leases.status("waiter", "x");
        assert_eq!(status.instances, 2);
        assert_eq!(
            status.counts["t"],
            TenantCounts {
                processed: 7,
                skipped: 1
            }
        );
        assert!(status.last_heartbeat_ms.is_some());
    }
}
