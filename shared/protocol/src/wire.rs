//! The JSON bodies on the wire, shared by every producer and consumer of them.

use serde::{Deserialize, Serialize};

/// A wait request: the body of a `Waiter-Requests` record and of `POST /wait`.
///
/// A plain-text record body is also accepted by the waiter: it is the
/// caller's name, waited for the default time (the Go app's format).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitRequestBody {
    /// Who is waiting; echoed in the reply.
    pub name: String,
    /// How long to wait; the waiter's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// Ignored filler, so load tests can choose the record size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub padding: Option<String>,
}

/// The longest `name` a request may carry, in bytes. The reply repeats the
/// name; bounding it keeps every reply far below the broker's record limit
/// (1 MB by default), so no reply can be refused for its size.
pub const MAX_NAME_BYTES: usize = 1024;

/// Why a request's `name` is refused, the same on the HTTP and Kafka paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRefusal {
    /// Empty or only white space.
    Empty,
    /// Longer than [`MAX_NAME_BYTES`].
    TooLong,
}

impl std::fmt::Display for NameRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameRefusal::Empty => f.write_str("`name` must not be empty"),
            NameRefusal::TooLong => write!(f, "`name` is longer than {MAX_NAME_BYTES} bytes"),
        }
    }
}

impl WaitRequestBody {
    /// Checks the name both paths accept.
    pub fn check_name(name: &str) -> Result<(), NameRefusal> {
        match name {
            n if n.trim().is_empty() => Err(NameRefusal::Empty),
            n if n.len() > MAX_NAME_BYTES => Err(NameRefusal::TooLong),
            _ => Ok(()),
        }
    }
}

/// Whether a request was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyStatus {
    /// The wait happened.
    Ok,
    /// The request was refused (for example a wait over the maximum).
    Error,
}

/// The waiter's reply: the body of a `Waiter-Responses` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitReply {
    /// `ok`, or `error` with [`WaitReply::error`] saying why.
    pub status: ReplyStatus,
    /// The request's correlation id.
    pub correlation: String,
    /// The caller's name from the request.
    pub name: String,
    /// A human-readable summary.
    pub message: String,
    /// How long was requested.
    pub requested_wait_ms: u64,
    /// How long the waiter actually waited (0 when refused).
    pub waited_ms: u64,
    /// Variant label of the waiter that served it (`baseline` or e.g. `sbx-123`).
    pub variant: String,
    /// The waiter instance that served it.
    pub instance: String,
    /// Trace id of the request's trace (32 hex digits).
    pub trace_id: String,
    /// Why the request was refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether the wait was recorded in the ledger (absent when no ledger is configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ledger_recorded: Option<bool>,
    /// The serving variant's behaviour change, e.g. `wait_scale=0.5`
    /// (absent when it behaves as the baseline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behaviour: Option<String>,
}

/// One completed wait, as the waiter posts it to the ledger (D) and the
/// ledger serves it back: the body of `POST /records` and the items of
/// `GET /records`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerEntry {
    /// The request's correlation id.
    pub request_id: String,
    /// The tenant from baggage; absent for production traffic.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Which variant handled each hop of the request.
    pub variants: std::collections::BTreeMap<crate::Service, String>,
    /// The request's trace id.
    pub trace_id: String,
    /// How long the waiter waited.
    pub waited_ms: u64,
    /// The serving variant's behaviour change, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behaviour: Option<String>,
}

/// What dispatch (B) answers to `POST /wait`: the gateway (A) reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DispatchResponse {
    /// The correlation id the request carried.
    pub correlation: String,
    /// Dispatch's variant label.
    pub dispatch_variant: String,
    /// The waiter's reply.
    pub reply: WaitReply,
}
