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

/// The topics one request/reply flow uses: where requests go, where replies
/// come back, where unusable requests are moved. [`Default`] is the
/// project's own names; tests and isolated stacks use names of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTopics {
    /// Requests are produced here and consumed by the waiter.
    pub requests: String,
    /// Replies go here when a request names no `responseTopic`.
    pub replies: String,
    /// Unusable requests are moved here.
    pub dead_letters: String,
}

impl Default for RequestTopics {
    fn default() -> Self {
        Self {
            requests: REQUESTS.into(),
            replies: RESPONSES.into(),
            dead_letters: DEAD_LETTER.into(),
        }
    }
}
