//! The reply leg: calls waiting for their reply, and the reader that
//! completes them from `Waiter-Responses`.
//!
//! The reader reads the partitions [`crate::ownership`] keeps it on (the
//! ones this instance's calls name as their reply partition) and
//! completes the calls waiting here; a reply for another instance's call
//! (read while a partition changes hands) is counted and skipped. A reply
//! it takes gets a
//! CONSUMER `process Waiter-Responses` span, a child of the waiter's `send`
//! span, so one trace runs from the caller through Kafka and the waiter
//! and back. A reply that arrives after its call gave up (a 504, or a
//! client that went away) gets the same span marked
//! `waiter_bus.reply.late`, so a user looking at that trace finds it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use protocol::headers;
use protocol::wire::WaitReply;
use rdkafka::Message;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::BorrowedMessage;
use tokio::sync::oneshot;

use crate::ownership::Claim;
use tokio_util::sync::CancellationToken;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// How many calls that gave up are remembered, to recognise their late
/// replies: a bounded record, oldest forgotten first.
const GAVE_UP_REMEMBERED: usize = 10_000;

/// Calls waiting for their reply, by correlation id, and those that lately
/// gave up waiting. Shared by the handlers and the reply reader.
#[derive(Clone, Default)]
pub(crate) struct Pending {
    calls: Arc<Mutex<Calls>>,
    counts: Arc<ReplyCounts>,
}

/// What the reader has read since start.
#[derive(Default)]
struct ReplyCounts {
    read: AtomicU64,
    for_others: AtomicU64,
}

#[derive(Default)]
struct Calls {
    waiting: HashMap<String, oneshot::Sender<WaitReply>>,
    gave_up: HashMap<String, Instant>,
    gave_up_order: VecDeque<String>,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Calls waiting right now.
    pub(crate) fn count(&self) -> usize {
        self.lock().waiting.len()
    }

    /// Replies read since start, and how many of them were for calls of
    /// another instance.
    pub(crate) fn replies_read(&self) -> (u64, u64) {
        (
            self.counts.read.load(Ordering::Relaxed),
            self.counts.for_others.load(Ordering::Relaxed),
        )
    }
}

/// Removes a call's entry when the call ends, however it ends: a client
/// that disconnects drops the handler mid-wait, and an entry must not
/// outlive it. A call that ends unanswered is remembered as given up. It
/// holds the call's reply partition, released after the entry is gone.
pub(crate) struct PendingGuard {
    pending: Pending,
    correlation: String,
    _reply_partition: Claim,
}

impl PendingGuard {
    pub(crate) fn register(
        pending: &Pending,
        correlation: &str,
        reply_partition: Claim,
    ) -> (Self, oneshot::Receiver<WaitReply>) {
        let (reply_tx, reply_rx) = oneshot::channel();
        pending
            .lock()
            .waiting
            .insert(correlation.to_string(), reply_tx);
        let guard = Self {
            pending: pending.clone(),
            correlation: correlation.to_string(),
            _reply_partition: reply_partition,
        };
        (guard, reply_rx)
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        let mut calls = self.pending.lock();
        if calls.waiting.remove(&self.correlation).is_none() {
            return;
        }
        if calls.gave_up_order.len() >= GAVE_UP_REMEMBERED
            && let Some(oldest) = calls.gave_up_order.pop_front()
        {
            calls.gave_up.remove(&oldest);
        }
        calls
            .gave_up
            .insert(self.correlation.clone(), Instant::now());
        calls.gave_up_order.push_back(self.correlation.clone());
    }
}

/// Whose a reply is, as far as this instance knows.
enum Owner {
    /// A call here is waiting for it.
    Waiting(oneshot::Sender<WaitReply>),
    /// A call here gave up on it this long ago.
    GaveUp(std::time::Duration),
    /// Another instance's.
    Elsewhere,
}

impl Pending {
    fn owner(&self, correlation: &str) -> Owner {
        let mut calls = self.lock();
        if let Some(waiting) = calls.waiting.remove(correlation) {
            return Owner::Waiting(waiting);
        }
        match calls.gave_up.remove(correlation) {
            Some(at) => Owner::GaveUp(at.elapsed()),
            None => Owner::Elsewhere,
        }
    }
}

/// Reads replies from `topic` until `stop`, completing the calls waiting
/// for them.
pub(crate) async fn complete_replies(
    replies: Arc<StreamConsumer>,
    topic: Arc<str>,
    pending: Pending,
    variant: Arc<str>,
    stop: CancellationToken,
) {
    let span_name = format!("process {topic}");
    let mut stream = replies.stream();
    while let Some(message) = kafka_kit::stream::next_message(&mut stream, &stop, "replies").await {
        pending.counts.read.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::instruments::REPLIES_READ).increment(1);
        let Some(correlation) = propagation::kafka_header(message.headers(), headers::CORRELATION)
        else {
            continue;
        };
        let waiting = match pending.owner(correlation) {
            Owner::Elsewhere => {
                // Another instance's request: its span is that instance's.
                pending.counts.for_others.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::instruments::REPLIES_IGNORED).increment(1);
                continue;
            }
            Owner::GaveUp(ago) => {
                metrics::counter!(crate::instruments::REPLIES_LATE).increment(1);
                let span = reply_span(&span_name, &message, &variant, correlation);
                span.record("waiter_bus.reply.late", true);
                span.add_event(
                    "reply arrived after the call gave up",
                    vec![opentelemetry::KeyValue::new(
                        "waiter_bus.reply.late_ms",
                        ago.as_millis() as i64,
                    )],
                );
                tracing::info!(parent: &span, %correlation, late_ms = ago.as_millis() as i64, "late reply: its call already gave up");
                continue;
            }
            Owner::Waiting(waiting) => waiting,
        };
        let span = reply_span(&span_name, &message, &variant, correlation);
        let _entered = span.enter();
        match message.payload().map(serde_json::from_slice::<WaitReply>) {
            Some(Ok(reply)) => {
                let _ = waiting.send(reply);
            }
            _ => {
                span.record("otel.status_code", "ERROR");
                tracing::warn!(%correlation, "reply is not a waiter reply; the caller will time out")
            }
        }
    }
}

/// The CONSUMER span of a reply this instance takes, a child of the
/// waiter's `send` span whose context the reply carries.
fn reply_span(
    name: &str,
    message: &BorrowedMessage<'_>,
    variant: &str,
    correlation: &str,
) -> tracing::Span {
    // No consumer group: the reader is assigned its partitions itself.
    let span = kafka_kit::spans::process(
        name,
        message,
        None,
        protocol::Service::Dispatch.as_str(),
        variant,
    );
    span.record("messaging.message.conversation_id", correlation);
    let _ = span.set_parent(propagation::extract_kafka(message.headers()));
    span
}
