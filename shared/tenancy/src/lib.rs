//! Who processes which record: the tenancy rules of waiter-bus.
//!
//! Start with [`decide`], the one pure function every consumer calls per
//! record: from the consumer's [`ConsumerTenancy`], the record's tenant (from
//! W3C baggage; absent means the production tenancy) and a [`Routes`]
//! snapshot, it returns [`Decision::Process`] or [`Decision::Skip`] with a
//! reason. It combines the two rule sets the project is built on: variant
//! routing (a tenant maps services to variant labels in the registry) and
//! tenancy filtering (`allowed_tenancies` and `tenant_routing`, reproducing
//! the ten-row consumption decision table).
//!
//! [`RouteTable`] keeps a [`Routes`] snapshot current by tailing the
//! compacted `tenant-routes` topic from the beginning; every router and
//! consumer owns one, so look-ups never leave the process.
//! [`RouteTable::caught_up`] says when it has read everything that existed
//! at start, and no consumer processes anything before that.
//! [`RegistryClient`] is how a variant tells the tenants registry where it
//! answers once it is ready, and takes that back when it stops.

mod decision;
mod registry;
mod routes;
mod selectors;
mod table;

pub use decision::{
    AllowedTenancies, ConsumerTenancy, Decision, Environment, RecordRoute, SkipReason, Tenancy,
    decide,
};
pub use registry::{
    LeaseRenewal, Registration, RegistryClient, RegistryError, RegistrySettings, TenantCounts,
    TenantTally,
};
pub use routes::{
    Route, RouteRecord, Routes, RoutesAt, RoutesVersion, TenantRoutes, TenantState,
    VariantEndpoint, parse_version, tenant_key, variant_key,
};
pub use selectors::{HttpFacts, Pattern, RequestFacts, Selector, resolve_tenant};
pub use table::{RouteTable, RouteTableError, RouteTableSettings};

/// The header carrying a record's routes version.
pub use protocol::headers::ROUTES_VERSION;

/// The label of the shared baseline.
pub use protocol::BASELINE;
