//! A tenant's way out, and the watch that keeps variants honest.
//!
//! Deleting a tenant ([`delete_tenant`], also run when its TTL expires):
//! 1. **drain**: the tenant is written `draining`, so records stamped from
//!    then on go to the baseline, and the registry waits (bounded by
//!    `tenants.drain_timeout`) until each of its variants' consumer groups
//!    has committed past the end its topic had at that moment: the records
//!    stamped for the variant before are finished;
//! 2. **unmap**: the tenant's tombstone;
//! 3. **delete** the variants' consumer groups no other tenant uses, once
//!    they are empty (`groups`).
//!
//! [`watch`] runs for the registry's lifetime: it marks a variant not live
//! once every instance's lease has lapsed, and deletes expired tenants.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use kafka_kit::KafkaSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use service_kit::ApiError;
use tenancy::{TenantRoutes, TenantState, tenant_key};
use tokio_util::sync::CancellationToken;

use crate::{GroupDeletion, Registry};

/// The `tenants.variant_consumers` entry of one service: the consumer group
/// of its variants (`{label}` is replaced) and the topic it reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantConsumers {
    /// The group pattern, e.g. `waiter-{label}`.
    pub group: String,
    /// The topic the group consumes.
    pub topic: String,
}

impl VariantConsumers {
    /// The group of variant `label`.
    pub fn group_of(&self, label: &str) -> String {
        self.group.replace("{label}", label)
    }
}

/// How draining a deleted tenant ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DrainOutcome {
    /// Every variant group committed past the records stamped for it.
    Drained,
    /// Some group had not when `drain_timeout` ran out; its remaining
    /// records of the tenant are still processed by that group (or by the
    /// baseline standing in for it), after the unmapping.
    TimedOut,
    /// No variant of the tenant has a consumer group to wait for.
    NothingToDrain,
}

/// What deleting a tenant did.
#[derive(Debug, Serialize, Deserialize)]
pub struct Deleted {
    /// The tenant.
    pub tenant: String,
    /// How the drain ended, and how long it took.
    pub drain: DrainOutcome,
    /// Milliseconds spent draining.
    pub drain_ms: u64,
    /// Consumer groups of its variants no other tenant uses, and what
    /// became of each.
    pub consumer_groups: Vec<GroupDeletion>,
}

/// A group's position on its topic: per partition, the committed offset
/// (if any) and the high watermark.
pub(crate) struct GroupPosition {
    pub partitions: Vec<(i32, Option<i64>, i64)>,
}

impl GroupPosition {
    /// Records not yet committed past (partitions without a committed
    /// offset count from nothing: unknown, so `None`).
    pub fn lag(&self) -> Option<i64> {
        self.partitions
            .iter()
            .map(|(_, committed, high)| committed.map(|c| (high - c).max(0)))
            .sum()
    }

    fn passed(&self, targets: &HashMap<i32, i64>) -> bool {
        self.partitions.iter().all(|(partition, committed, _)| {
            let target = targets.get(partition).copied().unwrap_or(0);
            target == 0 || committed.is_some_and(|c| c >= target)
        })
    }
}

/// Reads `group`'s committed offsets and `topic`'s high watermarks, off
/// the async threads (the calls block).
pub(crate) async fn group_position(
    kafka: &KafkaSettings,
    group: &str,
    topic: &str,
) -> Result<GroupPosition, String> {
    const TIMEOUT: Duration = Duration::from_secs(5);
    let config = kafka
        .consumer_config()
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .clone();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        // Never subscribes: reading a group's offsets does not join it.
        let reader: BaseConsumer = config.create().map_err(|e| e.to_string())?;
        let metadata = reader
            .fetch_metadata(Some(&topic), TIMEOUT)
            .map_err(|e| e.to_string())?;
        let mut list = TopicPartitionList::new();
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            list.add_partition(&topic, partition.id());
        }
        let committed = reader
            .committed_offsets(list, TIMEOUT)
            .map_err(|e| e.to_string())?;
        let mut partitions = Vec::new();
        for element in committed.elements() {
            let (_, high) = reader
                .fetch_watermarks(&topic, element.partition(), TIMEOUT)
                .map_err(|e| e.to_string())?;
            let committed = match element.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            };
            partitions.push((element.partition(), committed, high));
        }
        Ok(GroupPosition { partitions })
    })
    .await
    .map_err(|e| e.to_string())?
}

impl Registry {
    /// The consumer groups (with their topic) of `tenant`'s variants.
    pub(crate) fn variant_groups(&self, tenant: &TenantRoutes) -> Vec<(String, String, String)> {
        tenant
            .services
            .iter()
            .filter_map(|(service, label)| {
                let consumers = self.settings.variant_consumers.get(service)?;
                Some((
                    service.clone(),
                    consumers.group_of(label),
                    consumers.topic.clone(),
                ))
            })
            .collect()
    }

    /// Waits, bounded, until every group in `groups` has committed past the
    /// end its topic has now.
    async fn drain(&self, groups: &[(String, String, String)]) -> DrainOutcome {
        if groups.is_empty() {
            return DrainOutcome::NothingToDrain;
        }
        let deadline = Instant::now() + self.settings.drain_timeout;
        let mut targets = Vec::new();
        for (_, group, topic) in groups {
            match group_position(&self.kafka, group, topic).await {
                Ok(position) => {
                    let ends: HashMap<i32, i64> = position
                        .partitions
                        .iter()
                        .map(|(p, _, high)| (*p, *high))
                        .collect();
                    targets.push((group.clone(), topic.clone(), ends));
                }
                Err(e) => {
                    tracing::warn!(%group, error = %e, "cannot read the group's position; not waiting for it");
                }
            }
        }
        loop {
            let mut pending = false;
            for (group, topic, ends) in &targets {
                match group_position(&self.kafka, group, topic).await {
                    Ok(position) if position.passed(ends) => {}
                    _ => pending = true,
                }
            }
            if !pending {
                return DrainOutcome::Drained;
            }
            if Instant::now() >= deadline {
                return DrainOutcome::TimedOut;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Drains, unmaps and cleans up tenant `id`; see the module docs.
pub(crate) async fn delete_tenant(registry: &Registry, id: &str) -> Result<Deleted, ApiError> {
    let routes = registry.table.snapshot();
    let Some(tenant) = routes.tenant(id).cloned() else {
        return Err(ApiError::not_found(format!("no tenant {id:?}")));
    };
    let started = Instant::now();
    let draining = TenantRoutes {
        state: TenantState::Draining,
        ..tenant.clone()
    };
    let bytes = serde_json::to_vec(&draining).expect("a tenant serialises");
    let gone = id.to_string();
    registry
        .write(&tenant_key(id), Some(bytes), move |routes| {
            routes
                .tenant(&gone)
                .is_none_or(|t| t.state == TenantState::Draining)
        })
        .await?;
    tracing::info!(tenant = %id, "tenant draining");
    let groups = registry.variant_groups(&tenant);
    let drain = registry.drain(&groups).await;
    let drain_ms = started.elapsed().as_millis() as u64;
    let gone = id.to_string();
    registry
        .write(&tenant_key(id), None, move |routes| {
            routes.tenant(&gone).is_none()
        })
        .await?;
    // A group still serving another tenant's mapping stays.
    let after = registry.table.snapshot();
    let unused: Vec<String> = tenant
        .services
        .iter()
        .filter(|(service, label)| after.tenants_mapping(service, label).is_empty())
        .filter_map(|(service, label)| {
            registry
                .settings
                .variant_consumers
                .get(service)
                .map(|consumers| consumers.group_of(label))
        })
        .collect();
    let consumer_groups = registry.groups.delete(&unused).await;
    tracing::info!(tenant = %id, ?drain, drain_ms, ?consumer_groups, "tenant deleted");
    metrics::counter!("tenants_deleted_total", "drain" => drain_label(drain)).increment(1);
    Ok(Deleted {
        tenant: id.to_string(),
        drain,
        drain_ms,
        consumer_groups,
    })
}

fn drain_label(outcome: DrainOutcome) -> &'static str {
    match outcome {
        DrainOutcome::Drained => "drained",
        DrainOutcome::TimedOut => "timed_out",
        DrainOutcome::NothingToDrain => "nothing_to_drain",
    }
}

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Marks variants whose leases lapsed not live, and deletes expired
/// tenants, until `stop`.
pub(crate) async fn watch(registry: Registry, stop: CancellationToken) {
    {
        let routes = registry.table.snapshot();
        let mut leases = registry.leases();
        for variant in routes.variants().into_iter().filter(|v| v.live) {
            leases.assume_live(&variant.service, &variant.label);
        }
    }
    let mut tick = tokio::time::interval(registry.settings.lease.check_every);
    // Tenants whose deletion is under way; one that fails leaves the set
    // and is tried again at the next tick.
    let expiring = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let lapsed = registry.leases().lapse(registry.settings.lease.ttl);
        for (service, label) in lapsed {
            tracing::warn!(%service, %label, "every instance's lease lapsed; the variant is not live");
            if let Err(e) = registry.set_live(&service, &label, false).await {
                // Retried below, through the table, at every tick.
                tracing::warn!(%service, %label, error = %e, "could not mark the variant not live; retrying");
            }
        }
        // A variant the table shows live but nobody holds (a failed write
        // above, or one written by an earlier registry) is retried here.
        let routes = registry.table.snapshot();
        for variant in routes.variants().into_iter().filter(|v| v.live) {
            if !registry.leases().is_held(&variant.service, &variant.label) {
                let _ = registry
                    .set_live(&variant.service, &variant.label, false)
                    .await;
            }
        }
        let now = now_ms();
        for tenant in routes.tenants() {
            let expired = tenant.expires_at_ms.is_some_and(|at| at <= now);
            let starting = expired
                && expiring
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(tenant.id.clone());
            if starting {
                let (registry, expiring) = (registry.clone(), expiring.clone());
                let id = tenant.id.clone();
                tokio::spawn(async move {
                    tracing::info!(tenant = %id, "tenant expired; deleting it");
                    if let Err(e) = delete_tenant(&registry, &id).await {
                        tracing::warn!(tenant = %id, error = %e, "deleting an expired tenant failed; retrying");
                    }
                    expiring
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                });
            }
        }
    }
}

/// The refusal to remove a variant that tenants still map to.
pub(crate) fn still_mapped(service: &str, label: &str, tenants: &[&str]) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        format!(
            "variant {service}/{label} is mapped by tenant(s) {}: re-map or delete them first",
            tenants.join(", ")
        ),
    )
}
