//! What crosses waiter-bus services, typed once: every producer and
//! consumer of it uses these definitions, none rebuilds them from strings.
//!
//! Start with [`Service`] (who handles a hop) and [`Hops`] (which variant
//! handled each hop so far, carried as the `waiter-bus-hops` header). The
//! Kafka contract is in [`topics`] and [`headers`] (the Go waiter app's
//! names, so its JMeter plans keep working); the JSON bodies are in
//! [`wire`]. [`TENANT_BAGGAGE_KEY`] names the baggage entry that carries the
//! tenant, and [`BASELINE`] the label of the shared baseline.

pub mod headers;
pub mod hops;
pub mod topics;
pub mod wire;

pub use hops::{Hop, Hops};

use serde::{Deserialize, Serialize};

/// The W3C baggage entry that carries the tenant.
pub const TENANT_BAGGAGE_KEY: &str = "tenant";

/// The variant label of the shared baseline.
pub const BASELINE: &str = "baseline";

/// A waiter-bus service: a hop of the flow, or the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Service {
    /// A: the edge.
    Gateway,
    /// B: HTTP → Kafka request/reply.
    Dispatch,
    /// C: consumers → waits → producers.
    Waiter,
    /// D: records completed waits.
    Ledger,
    /// The tenants registry.
    Tenants,
}

impl Service {
    /// Every service, in flow order, the registry last.
    pub const ALL: [Service; 5] = [
        Service::Gateway,
        Service::Dispatch,
        Service::Waiter,
        Service::Ledger,
        Service::Tenants,
    ];

    /// The name used in hops, spans, metrics and `service.name`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Service::Gateway => "gateway",
            Service::Dispatch => "dispatch",
            Service::Waiter => "waiter",
            Service::Ledger => "ledger",
            Service::Tenants => "tenants",
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no waiter-bus service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownService(pub String);

impl std::fmt::Display for UnknownService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown service {:?}", self.0)
    }
}

impl std::error::Error for UnknownService {}

impl std::str::FromStr for Service {
    type Err = UnknownService;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Service::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| UnknownService(name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_reads_back_what_it_writes() {
        for service in Service::ALL {
            assert_eq!(service.as_str().parse::<Service>(), Ok(service));
            assert_eq!(
                serde_json::to_value(service).unwrap(),
                serde_json::json!(service.as_str())
            );
        }
        assert!("dispatcher".parse::<Service>().is_err());
    }
}
