//! The registry's settings: `services/tenants/config/base.yaml`, then a
//! file, then `WAITER_BUS__…` variables.

use std::collections::{BTreeMap, BTreeSet};

use kafka_kit::KafkaSettings;
use serde::Deserialize;
use service_kit::HttpSettings;

use crate::GroupDeletionSettings;

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
    /// Consumer-group pattern per service; `{label}` is replaced.
    pub variant_groups: BTreeMap<String, String>,
    /// How long a write may take to show in the registry's own table.
    #[serde(with = "settings::duration")]
    pub write_timeout: std::time::Duration,
    /// Deleting a deleted tenant's variant consumer groups.
    pub group_deletion: GroupDeletionSettings,
}

impl Settings {
    /// The defaults pointed at `kafka`, HTTP on an ephemeral loopback port.
    pub fn defaults_with(kafka: &KafkaSettings) -> Self {
        settings::in_process(DEFAULTS, &kafka.bootstrap_servers)
    }
}
