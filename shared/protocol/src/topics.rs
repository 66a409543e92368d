//! Topic names used by the flow.

/// Requests produced by dispatch (B) or a load generator, consumed by the waiter (C).
pub const REQUESTS: &str = "Waiter-Requests";
/// Replies produced by the waiter, consumed by whoever asked.
pub const RESPONSES: &str = "Waiter-Responses";
/// Compacted topic holding tenant → variant mappings, tailed by every router.
pub const TENANT_ROUTES: &str = "tenant-routes";
/// Records that could not be parsed or used, with the reason in a header.
pub const DEAD_LETTER: &str = "Waiter-Requests-DLT";

/// Every topic the project needs, in the order they are created.
pub const ALL: [&str; 4] = [REQUESTS, RESPONSES, TENANT_ROUTES, DEAD_LETTER];
