//! Kafka header names. The first three are the Go waiter app's, verbatim;
//! [`spring`] and [`smallrye`] are the request/reply headers of those
//! clients, which the waiter reads too (see its `waiter.reply_headers`).

/// Identifies a request so its reply can be matched (and duplicates counted).
pub const CORRELATION: &str = "correlation";
/// Topic the reply must be produced to.
pub const RESPONSE_TOPIC: &str = "responseTopic";
/// The reply partition dispatch asks for (its own, so it reads only its
/// replies): Spring's name and encoding, a 4-byte big-endian int, which
/// the waiter reads by default.
pub const REPLY_PARTITION: &str = spring::REPLY_PARTITION;
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

/// Spring Kafka's request/reply headers (`KafkaHeaders`), as its
/// `ReplyingKafkaTemplate` sends them and expects them back.
pub mod spring {
    /// The topic the reply goes to (UTF-8 bytes).
    pub const REPLY_TOPIC: &str = "kafka_replyTopic";
    /// The partition the reply goes to: a 4-byte big-endian int.
    pub const REPLY_PARTITION: &str = "kafka_replyPartition";
    /// Matches the reply to its request: opaque bytes (16 by default, a
    /// UUID), returned unchanged on the reply.
    pub const CORRELATION_ID: &str = "kafka_correlationId";
}

/// SmallRye Reactive Messaging's (Quarkus) `KafkaRequestReply` headers.
pub mod smallrye {
    /// The topic the reply goes to.
    pub const REPLY_TOPIC: &str = "REPLY_TOPIC";
    /// The partition the reply goes to: a 4-byte big-endian int.
    pub const REPLY_PARTITION: &str = "REPLY_PARTITION";
    /// Matches the reply to its request: opaque bytes.
    pub const CORRELATION_ID: &str = "REPLY_CORRELATION_ID";
}

/// A reply partition as Spring and SmallRye write it: a 4-byte big-endian
/// int. For clients that write text, a value of other length that is all
/// ASCII digits is read as a decimal. `Ok(None)` for -1 (Kafka's "any
/// partition"); an error says what is wrong with any other value.
pub fn reply_partition(value: &[u8]) -> Result<Option<i32>, String> {
    let partition = match <[u8; 4]>::try_from(value) {
        Ok(bytes) => i32::from_be_bytes(bytes),
        Err(_) => std::str::from_utf8(value)
            .ok()
            .filter(|text| {
                !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'-')
            })
            .and_then(|text| text.parse::<i32>().ok())
            .ok_or_else(|| {
                format!(
                    "a reply partition is a 4-byte big-endian int or a decimal, not {} byte(s)",
                    value.len()
                )
            })?,
    };
    match partition {
        -1 => Ok(None),
        p if p >= 0 => Ok(Some(p)),
        p => Err(format!("reply partition {p} is negative")),
    }
}

/// The bytes Spring and SmallRye write for `partition`.
pub fn reply_partition_bytes(partition: i32) -> [u8; 4] {
    partition.to_be_bytes()
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_partitions_read_as_the_java_clients_write_them() {
        assert_eq!(reply_partition(&reply_partition_bytes(3)), Ok(Some(3)));
        assert_eq!(reply_partition(&[0, 0, 1, 0]), Ok(Some(256)));
        assert_eq!(reply_partition(&reply_partition_bytes(-1)), Ok(None));
        assert_eq!(reply_partition(b"7"), Ok(Some(7)));
        assert_eq!(reply_partition(b"-1"), Ok(None));
        assert!(
            reply_partition(&reply_partition_bytes(-5))
                .unwrap_err()
                .contains("negative")
        );
        assert!(reply_partition(b"").unwrap_err().contains("0 byte"));
        assert!(reply_partition(b"x1").is_err());
        assert!(reply_partition(&[1, 2, 3, 4, 5]).is_err());
    }
}
