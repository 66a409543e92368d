//! Kafka header names. The first three are the Go waiter app's, verbatim.

/// Identifies a request so its reply can be matched (and duplicates counted).
pub const CORRELATION: &str = "correlation";
/// Topic the reply must be produced to.
pub const RESPONSE_TOPIC: &str = "responseTopic";
/// W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// W3C trace state.
pub const TRACESTATE: &str = "tracestate";
/// W3C baggage; carries the tenant.
pub const BAGGAGE: &str = "baggage";
/// Why a record was sent to the dead-letter topic.
pub const DEAD_LETTER_REASON: &str = "dlt.reason";
/// Which variant handled each hop so far, as `service=label,service=label`;
/// the same name is used as an HTTP header and a Kafka header.
pub const HOPS: &str = "waiter-bus-hops";
/// Marks a record as a waiter's reply (its value: the variant that
/// replied). A waiter never serves a record that carries it, so a reply
/// that reaches a request topic cannot loop.
pub const REPLY: &str = "waiter-bus-reply";
/// The `tenant-routes` version the request's route was decided at (a
/// decimal offset); every hop and consumer resolves the request's tenant
/// against the routes of that version. The same name is used as an HTTP
/// header (gateway → dispatch) and a Kafka header.
pub const ROUTES_VERSION: &str = "waiter-bus-routes-version";
/// When the caller stops waiting for the reply: Unix epoch milliseconds
/// in decimal (see [`crate::deadline`]). The same name is used as an HTTP
/// header (client → gateway → dispatch) and a Kafka header (→ waiter).
pub const DEADLINE: &str = "waiter-bus-deadline";
/// On a dead letter whose payload was cut: the original length in bytes.
pub const DEAD_LETTER_TRUNCATED: &str = "dlt.truncated";
/// Where a dead-lettered record came from: `topic/partition@offset`.
pub const DEAD_LETTER_ORIGIN: &str = "dlt.origin";

/// Reply timing, all in microseconds, so a client can split its
/// end-to-end latency into hops. Durations are measured on the waiter's
/// monotonic clock; `waiter.consumed.us` is wall-clock time since the
/// Unix epoch, for comparing with the request's Kafka timestamp.
pub mod timing {
    /// Wall-clock time the waiter's consumer received the request.
    pub const CONSUMED_AT_US: &str = "waiter.consumed.us";
    /// Waiting for a free waiter (the queue).
    pub const QUEUE_US: &str = "waiter.queue.us";
    /// The wait itself, plus the call to the ledger when configured.
    pub const SERVICE_US: &str = "waiter.service.us";
    /// From the end of service to the reply being handed to the producer client.
    pub const HANDOFF_US: &str = "waiter.handoff.us";
}

/// The value of the last header named `name`: a header may repeat, and the
/// last occurrence wins, as it does for Kafka Streams' `lastHeader`.
pub fn last<'a, H: rdkafka::message::Headers>(
    headers: Option<&'a H>,
    name: &str,
) -> Option<&'a [u8]> {
    headers?
        .iter()
        .filter(|h| h.key == name)
        .last()
        .and_then(|h| h.value)
}

/// [`last`] as UTF-8 text; `None` when absent or not UTF-8.
pub fn last_str<'a, H: rdkafka::message::Headers>(
    headers: Option<&'a H>,
    name: &str,
) -> Option<&'a str> {
    last(headers, name).and_then(|v| std::str::from_utf8(v).ok())
}
