//! What crosses waiter-bus services, typed once: every producer and
//! consumer of it uses these definitions, none rebuilds them from strings.
//!
//! Start with [`Service`] (who handles a hop) and [`Hops`] (which variant
//! handled each hop so far, carried as the `waiter-bus-hops` header). The
//! Kafka contract is in [`topics`] and [`headers`] (the Go waiter app's
//! names, so its JMeter plans keep working); the JSON bodies are in
//! [`wire`]; [`Deadline`] is when a caller stops waiting. [`TENANT_BAGGAGE_KEY`] names the baggage entry that carries the
//! tenant, and [`BASELINE`] the label of the shared baseline.

pub mod deadline;
pub mod headers;
pub mod hops;
mod service;
pub mod topics;
pub mod wire;

pub use deadline::Deadline;
pub use hops::{Hop, Hops};
pub use service::{Service, UnknownService};

/// The W3C baggage entry that carries the tenant.
pub const TENANT_BAGGAGE_KEY: &str = "tenant";

/// The variant label of the shared baseline.
pub const BASELINE: &str = "baseline";

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
