//! What travels between the stages, and how a record's offset is released.
//!
//! ```text
//! consumers ──Work──▶ [requests channel] ──▶ waiters ──Outgoing──▶ [replies channel] ──▶ producers
//!     └──────────────── Outgoing (dead letters) ──────────────────────┘
//! ```
//!
//! Every record carries a [`kafka_kit::acks::Ack`] from the consumer that
//! read it to the producer that delivers its reply (or dead letter). Only
//! when the broker acknowledges that delivery is the ack finished; the
//! acknowledgement flows back to the consumer task, which stores only the
//! contiguous finished prefix of a partition for commit: at-least-once.
//! Stages know nothing of each other beyond these types.

use std::time::{Duration, Instant};

use kafka_kit::acks::Ack;
use protocol::headers;
use rdkafka::message::Headers;

use crate::request::WaitRequest;

/// A parsed request on its way to a waiter.
pub(crate) struct Work {
    pub request: WaitRequest,
    /// The record's CONSUMER `process` span; ends when the reply is delivered.
    pub span: tracing::Span,
    pub ack: Ack,
    pub consumed_at: Instant,
    pub consumed_wall_us: u64,
    /// Request headers carried on to the reply.
    pub carried: HeaderList,
    /// The request record's key, which the reply echoes.
    pub key: Option<Vec<u8>>,
    pub trace_id: String,
    pub tenant: Option<String>,
    /// `waiter-bus-hops` from the request: who handled the earlier hops.
    pub hops: protocol::Hops,
    /// The request record: `topic/partition@offset`.
    pub origin: String,
    /// When the caller stops waiting, if it said: its `waiter-bus-deadline`
    /// (a wall-clock time) turned into this process's monotonic clock at
    /// consumption, so a clock step here cannot move it and paused time in
    /// tests does.
    pub deadline: Option<tokio::time::Instant>,
}

/// How long work has lately waited between the consumer and a waiter slot
/// (the request channel, then the pool): an exponentially weighted mean of
/// what the pool observes, which halves every `HALF_LIFE` without a new
/// observation, so an estimate from an overload past cannot keep shedding
/// work once nothing reaches the pool any more. The consumer counts it in
/// when judging whether a record can still meet its deadline, so it sheds
/// at once, cheaply, what would otherwise expire in the channel, and the
/// records it hands on are fresh enough to be served in time.
#[derive(Debug, Clone)]
pub(crate) struct QueueEstimate {
    inner: std::sync::Arc<QueueEstimateInner>,
}

#[derive(Debug)]
struct QueueEstimateInner {
    started: Instant,
    mean_us: std::sync::atomic::AtomicU64,
    observed_at_us: std::sync::atomic::AtomicU64,
}

impl QueueEstimate {
    const HALF_LIFE: Duration = Duration::from_millis(250);

    pub(crate) fn new() -> Self {
        Self {
            inner: std::sync::Arc::new(QueueEstimateInner {
                started: Instant::now(),
                mean_us: 0.into(),
                observed_at_us: 0.into(),
            }),
        }
    }

    /// Records that a request waited `queued` for its slot.
    pub(crate) fn observe(&self, queued: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let sample = queued.as_micros() as u64;
        let mean = self.current().as_micros() as u64;
        // Weight 1/8: a few dozen requests move it; races between waiters
        // lose a sample now and then, which a mean can afford.
        self.inner
            .mean_us
            .store(mean - mean / 8 + sample / 8, Relaxed);
        self.inner
            .observed_at_us
            .store(self.inner.started.elapsed().as_micros() as u64, Relaxed);
    }

    /// The estimate now.
    pub(crate) fn current(&self) -> Duration {
        self.at(self.inner.started.elapsed())
    }

    /// The estimate `since_start` after it was created.
    fn at(&self, since_start: Duration) -> Duration {
        use std::sync::atomic::Ordering::Relaxed;
        let mean = self.inner.mean_us.load(Relaxed);
        if mean == 0 {
            return Duration::ZERO;
        }
        let since = (since_start.as_micros() as u64)
            .saturating_sub(self.inner.observed_at_us.load(Relaxed));
        let halvings = since / Self::HALF_LIFE.as_micros() as u64;
        Duration::from_micros(mean.checked_shr(halvings as u32).unwrap_or(0))
    }
}

/// Whether work with `deadline` that still has `work` to do (its wait) can
/// finish with `margin` to spare (the reply's way back); no deadline, yes.
pub(crate) fn can_finish(
    deadline: Option<tokio::time::Instant>,
    work: Duration,
    margin: Duration,
) -> bool {
    deadline
        .is_none_or(|d| d.saturating_duration_since(tokio::time::Instant::now()) >= work + margin)
}

/// Whether `deadline` has passed.
pub(crate) fn has_passed(deadline: Option<tokio::time::Instant>) -> bool {
    deadline.is_some_and(|d| tokio::time::Instant::now() >= d)
}

/// Drops a request whose deadline has passed or cannot be met: nobody
/// waits for its reply, so none is sent; its offset is committed (ack
/// finished) so it is not redelivered either. Counted by stage and marked
/// on its span.
pub(crate) fn expire(
    metrics: &crate::metrics::WaiterMetrics,
    span: &tracing::Span,
    ack: Ack,
    stage: crate::reasons::ExpiredAt,
) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    metrics.expired.count(stage);
    span.add_event(
        "expired",
        vec![opentelemetry::KeyValue::new(
            "waiter.expired_at",
            stage.label(),
        )],
    );
    ack.finish();
}

/// Record headers as they travel between stages: a value may be null, and
/// stays null on the reply.
pub(crate) type HeaderList = Vec<(String, Option<Vec<u8>>)>;

/// A record on its way to a producer.
pub(crate) struct Outgoing {
    pub topic: String,
    /// The partition the caller asked for; `None` partitions by key.
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// Headers other than trace context, which the producer injects.
    pub headers: HeaderList,
    pub span: tracing::Span,
    pub ack: Ack,
    pub consumed_at: Instant,
    pub kind: OutgoingKind,
    /// The request record it answers: `topic/partition@offset`.
    pub origin: String,
    /// A reply's slot (see `WaiterConfig::reply_slots`), held until the
    /// producers have delivered it or moved it aside.
    pub reply_slot: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// What an outgoing record is.
pub(crate) enum OutgoingKind {
    /// A reply; the timings become headers when the producer takes it.
    Reply {
        ok: bool,
        consumed_wall_us: u64,
        queue: Duration,
        service: Duration,
        serviced_at: Instant,
    },
    /// An unusable record moved aside.
    DeadLetter { reason: crate::reasons::DeadLetter },
}

/// A record moved to the dead-letter topic, before it is marked: what it
/// held, why it is moved, and the request record it came from.
pub(crate) struct DeadLetterOf {
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: HeaderList,
    pub reason: crate::reasons::DeadLetter,
    /// The reason in words (`dlt.reason`).
    pub detail: String,
    /// `topic/partition@offset` (`dlt.origin`).
    pub origin: String,
}

impl Outgoing {
    /// A dead letter bound for `topic`, carrying the record's span and
    /// acknowledgement (finished once the dead letter is delivered).
    pub(crate) fn dead_letter(
        topic: &str,
        mut of: DeadLetterOf,
        span: tracing::Span,
        ack: Ack,
        consumed_at: Instant,
    ) -> Self {
        // Refused at the consumer, the record came in within the broker's
        // size limit, so it goes out whole.
        make_dead_letter(
            &mut of.headers,
            &mut of.payload,
            &of.detail,
            &of.origin,
            usize::MAX,
        );
        Outgoing {
            topic: topic.to_string(),
            partition: None,
            key: of.key,
            payload: of.payload,
            headers: of.headers,
            span,
            ack,
            consumed_at,
            kind: OutgoingKind::DeadLetter { reason: of.reason },
            origin: of.origin,
            reply_slot: None,
        }
    }
}

/// Makes `headers` and `payload` a dead letter's, the one place any is
/// made: the payload cut to at most `keep` bytes (the length it had noted
/// in `dlt.truncated`), why it could not be used or delivered, and the
/// request record it came from.
pub(crate) fn make_dead_letter(
    headers: &mut HeaderList,
    payload: &mut Vec<u8>,
    detail: &str,
    origin: &str,
    keep: usize,
) {
    if payload.len() > keep {
        headers.push((
            headers::DEAD_LETTER_TRUNCATED.into(),
            Some(payload.len().to_string().into_bytes()),
        ));
        payload.truncate(keep);
    }
    headers.push((
        headers::DEAD_LETTER_REASON.into(),
        Some(detail.as_bytes().to_vec()),
    ));
    headers.push((
        headers::DEAD_LETTER_ORIGIN.into(),
        Some(origin.as_bytes().to_vec()),
    ));
}

/// What a reply carries on from its request (see [`carried_headers`]),
/// with the correlation generated for a request that had none: the reply
/// must name it, though the request did not. For a record whose trace is
/// not `sampled`, no span of this waiter's injects its context, so the
/// request's own trace context and baggage travel on unchanged, and the
/// reply still continues the caller's (unsampled) trace.
pub(crate) fn carried_to_reply<H: Headers>(
    headers: Option<&H>,
    unsampled: bool,
    request: &WaitRequest,
) -> HeaderList {
    let mut carried = carried(headers, unsampled);
    if request.correlation_generated {
        carried.push((
            request.correlation.header.clone(),
            Some(request.correlation.value.clone()),
        ));
    }
    carried
}

/// A reply's own headers, added as the producers take it: the mark that
/// it is a reply (so no waiter ever serves it), naming the variant that
/// answered, and how long each stage took. With what it carried on from
/// its request ([`carried_to_reply`]) and the trace context each send
/// injects, these are all its headers.
pub(crate) fn mark_reply(
    headers: &mut HeaderList,
    variant: &str,
    timing: [(&'static str, u64); 4],
) {
    headers.push((headers::REPLY.into(), Some(variant.as_bytes().to_vec())));
    for (name, value) in timing {
        headers.push((name.into(), Some(value.to_string().into_bytes())));
    }
}

/// Headers a reply carries on from its request, as they came (the
/// correlation header byte for byte, null values null, repeats repeated):
/// everything but the trace context (the reply has its own) and earlier
/// timing (it has its own).
pub(crate) fn carried_headers<H: Headers>(headers: Option<&H>) -> HeaderList {
    carried(headers, false)
}

fn carried<H: Headers>(headers: Option<&H>, with_trace_context: bool) -> HeaderList {
    const REPLACED: [&str; 3] = [headers::TRACEPARENT, headers::TRACESTATE, headers::BAGGAGE];
    let Some(headers) = headers else {
        return Vec::new();
    };
    headers
        .iter()
        .filter(|h| with_trace_context || !REPLACED.contains(&h.key))
        .filter(|h| !h.key.starts_with("waiter."))
        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
        .collect()
}

/// What the stages' unit tests build records from: acknowledgements of one
/// partition, and requests as the consumer hands them on.
#[cfg(test)]
pub(crate) mod testing {
    use std::time::{Duration, Instant};

    use kafka_kit::acks::{Ack, AckSender, AckStream, OffsetTracker, ack_channel};

    use super::Work;
    use crate::request::{Correlation, WaitRequest};

    /// Records of one partition, each with its acknowledgement.
    pub(crate) struct Partition {
        acks: AckSender,
        /// Acknowledgements finished so far come out here.
        pub finished: AckStream,
        offsets: OffsetTracker,
        next: i64,
    }

    impl Partition {
        pub(crate) fn new() -> Self {
            let (acks, finished) = ack_channel();
            let offsets = OffsetTracker::new();
            offsets.assign([0]);
            Self {
                acks,
                finished,
                offsets,
                next: 0,
            }
        }

        /// The next record's acknowledgement.
        pub(crate) fn ack(&mut self) -> Ack {
            let offset = self.next;
            self.next += 1;
            self.offsets.begin(&self.acks, "requests", 0, offset)
        }

        /// How many acknowledgements have been finished since last asked.
        pub(crate) fn finished_count(&mut self) -> usize {
            let mut count = 0;
            while self.finished.try_recv().is_some() {
                count += 1;
            }
            count
        }

        /// A request for `wait`, its caller waiting `deadline` from now.
        pub(crate) fn work(&mut self, wait: Duration, deadline: Option<Duration>) -> Work {
            let offset = self.next;
            Work {
                request: WaitRequest {
                    correlation: Correlation {
                        header: protocol::headers::CORRELATION.into(),
                        value: format!("request-{offset}").into_bytes(),
                    },
                    correlation_generated: false,
                    response_topic: "replies".into(),
                    reply_partition: None,
                    name: "test".into(),
                    requested: wait,
                    refusal: None,
                },
                span: tracing::Span::none(),
                ack: self.ack(),
                consumed_at: Instant::now(),
                consumed_wall_us: 0,
                carried: Vec::new(),
                key: None,
                trace_id: String::new(),
                tenant: None,
                hops: Default::default(),
                origin: format!("requests/0@{offset}"),
                deadline: deadline.map(|d| tokio::time::Instant::now() + d),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_estimate_follows_the_pool_and_forgets_an_overload_past() {
        let estimate = QueueEstimate::new();
        assert_eq!(estimate.current(), Duration::ZERO);
        for _ in 0..64 {
            estimate.observe(Duration::from_secs(1));
        }
        let loaded = estimate.current();
        assert!(loaded > Duration::from_millis(900), "{loaded:?}");
        for _ in 0..64 {
            estimate.observe(Duration::ZERO);
        }
        assert!(estimate.current() < Duration::from_millis(50));
        // Without observations it halves every 250 ms: a stale estimate
        // cannot keep the consumer shedding.
        for _ in 0..64 {
            estimate.observe(Duration::from_secs(1));
        }
        let now = estimate.inner.started.elapsed();
        let later = estimate.at(now + Duration::from_secs(3));
        assert!(later < Duration::from_millis(1), "{later:?}");
    }
}
