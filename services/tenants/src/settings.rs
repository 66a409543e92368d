//! The registry's settings: `services/tenants/config/base.yaml`, then a
//! file, then `WAITER_BUS__…` variables.

use std::collections::{BTreeMap, BTreeSet};

use kafka_kit::KafkaSettings;
use serde::Deserialize;
use service_kit::HttpSettings;

use crate::GroupDeletionSettings;
use crate::leases::LeaseSettings;
use crate::lifecycle::VariantConsumers;

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
    /// The route table this registry writes and reads back.
    pub routes: tenancy::RouteTableSettings,
    /// Registry behaviour.
    pub tenants: TenantsSettings,
}

/// Registry behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantsSettings {
    /// Bearer token for mutations.
    pub token: settings::Secret,
    /// Services a tenant may map.
    pub services: BTreeSet<String>,
    /// Per consuming service: its variants' consumer group (`{label}` is
    /// replaced) and the topic the group reads.
    pub variant_consumers: BTreeMap<String, VariantConsumers>,
    /// How long a write may take to show in the registry's own table.
    #[serde(with = "settings::duration")]
    pub write_timeout: std::time::Duration,
    /// Deleting a deleted tenant's variant consumer groups.
    pub group_deletion: GroupDeletionSettings,
    /// Variant leases.
    pub lease: LeaseSettings,
    /// How long deleting a tenant waits for its variants to finish the
    /// records stamped for them.
    #[serde(with = "settings::duration")]
    pub drain_timeout: std::time::Duration,
}

impl Settings {
    /// The defaults pointed at `kafka`, HTTP on an ephemeral loopback port.
    pub fn defaults_with(kafka: &KafkaSettings) -> Self {
        settings::in_process(DEFAULTS, &kafka.bootstrap_servers)
    }
}
