//! The services of the flow, by name.

use serde::{Deserialize, Serialize};

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
    /// The web console: watches the others, is no hop of the flow (not in
    /// [`Service::ALL`], never parsed from a hops header).
    Console,
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
            Service::Console => "console",
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
