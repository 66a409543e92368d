//! Stage 2: the waiter pool. A wait is a timer, not a thread: one dispatcher
//! takes requests off the channel and starts a task per wait, holding one of
//! `waiters` permits, so 10,000 concurrent waits cost 10,000 small tasks and
//! a full pool stops the dispatcher, which fills the channel, which blocks
//! the consumers.

use std::sync::Arc;
use std::time::Instant;

use kafka_kit::handoff::send_timed;
use opentelemetry::KeyValue;
use protocol::wire::{ReplyStatus, WaitReply};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::metrics::{WaiterMetrics, handed_off, observe};
use crate::pipeline::{Outgoing, OutgoingKind, Work, can_finish, expire, has_passed};
use crate::reasons::ExpiredAt;
use protocol::wire::LedgerEntry;

/// What the waiter pool reads, resolved once from the settings.
pub(crate) struct WaiterConfig {
    pub variant: String,
    /// Named in every reply: the resource's `service.instance.id`.
    pub instance: String,
    /// Waits in progress at once.
    pub waiters: usize,
    /// Replies built and not yet delivered, at most: each holds one from
    /// the end of its wait until the producers have delivered it (or moved
    /// it aside). A wait that ends with none free keeps its pool slot until
    /// one is, so while replies cannot be delivered the pool fills and the
    /// consumers stop reading: consumer lag grows, memory does not.
    /// `waiter.undelivered_replies`, and never fewer than `waiters` plus the
    /// ledger's concurrent calls: a slow ledger holds at most those, and
    /// the pool still has `waiters` to flow through.
    pub reply_slots: usize,
    /// Factor applied to every wait, and how replies describe it (`None` at 1).
    pub wait_scale: f64,
    pub behaviour: Option<String>,
    /// See `waiter.deadline_margin`.
    pub deadline_margin: std::time::Duration,
    /// Told how long each request waited for its slot.
    pub queue_estimate: crate::pipeline::QueueEstimate,
    pub ledger: Option<crate::ledger::LedgerClient>,
    pub metrics: WaiterMetrics,
}

/// Serves requests until the request channel closes and every wait is done.
pub(crate) async fn run(
    config: Arc<WaiterConfig>,
    mut requests: mpsc::Receiver<Work>,
    replies: mpsc::Sender<Outgoing>,
) {
    let permits = Arc::new(Semaphore::new(config.waiters));
    let reply_slots = Arc::new(Semaphore::new(config.reply_slots));
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(work) = requests.recv().await {
        let permit = permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        config.queue_estimate.observe(work.consumed_at.elapsed());
        // The permit may have taken a while: a request that can no longer
        // finish before its caller gives up does not get to use it.
        let wait = work.request.wait(config.wait_scale);
        if !can_finish(work.deadline, wait, config.deadline_margin) {
            drop(permit);
            expire(&config.metrics, &work.span, work.ack, ExpiredAt::Waiter);
            continue;
        }
        let slot = WaitSlot::take(permit, &config.metrics);
        let config = config.clone();
        let replies = replies.clone();
        let reply_slots = reply_slots.clone();
        tasks.spawn(async move {
            let Some(outgoing) = serve(&config, work, slot, reply_slots).await else {
                return;
            };
            let span = outgoing.span.clone();
            match send_timed(&replies, outgoing).await {
                Ok(blocked) => {
                    handed_off(
                        &config.metrics.replies_blocked,
                        &span,
                        "reply.queued",
                        blocked,
                    );
                }
                Err(_) => tracing::warn!("producers gone; the reply is left for redelivery"),
            }
        });
        // Reap finished tasks so the set does not grow with the run.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// One of the pool's `waiters` permits, held for the wait and until the
/// reply has a reply slot ([`WaiterConfig::reply_slots`]): the ledger call,
/// the hand-off and the delivery run on that slot instead, so a slow
/// ledger never shrinks the pool, and replies that cannot be delivered
/// stop it instead of piling up.
struct WaitSlot {
    _permit: OwnedSemaphorePermit,
    in_flight: metrics::Gauge,
}

impl WaitSlot {
    fn take(permit: OwnedSemaphorePermit, metrics: &WaiterMetrics) -> Self {
        metrics.waits_in_flight.increment(1.0);
        Self {
            _permit: permit,
            in_flight: metrics.waits_in_flight.clone(),
        }
    }
}

impl Drop for WaitSlot {
    fn drop(&mut self) {
        self.in_flight.decrement(1.0);
    }
}

/// Waits, records, and builds the reply, which carries its reply slot to
/// the producers; `None` when the caller's deadline passed meanwhile (the request is
/// dropped unanswered).
async fn serve(
    config: &WaiterConfig,
    work: Work,
    slot: WaitSlot,
    reply_slots: Arc<Semaphore>,
) -> Option<Outgoing> {
    // Taken while the pool slot is still held (see `WaitSlot`).
    let reply_slot = async move {
        let in_hand = reply_slots
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        drop(slot);
        in_hand
    };
    let dequeued_at = Instant::now();
    let queue = dequeued_at - work.consumed_at;
    observe(&config.metrics.stage_queue, queue);
    work.span.add_event(
        "dequeued",
        vec![KeyValue::new("waiter.queue_us", queue.as_micros() as i64)],
    );
    let request = &work.request;
    let mut in_hand = None;
    let (status, waited, error, ledger_recorded) = match &request.refusal {
        Some(refusal) => {
            in_hand = Some(reply_slot.await);
            tracing::info!(parent: &work.span, correlation = %request.correlation.text(), reason = %refusal, "refusing request");
            (
                ReplyStatus::Error,
                std::time::Duration::ZERO,
                Some(refusal.clone()),
                None,
            )
        }
        None => {
            // No span for an unsampled record (its process span is none):
            // one with a `none` parent would start a trace of its own.
            let wait_span = match work.span.is_none() {
                true => tracing::Span::none(),
                false => tracing::info_span!(
                    parent: &work.span,
                    "wait",
                    wait_ms = request.requested.as_millis() as i64,
                    service = protocol::Service::Waiter.as_str(),
                    variant = %config.variant,
                ),
            };
            async {
                // Tokio's clock, which the timer below runs on (and which
                // tests pause and advance).
                let started = tokio::time::Instant::now();
                let wait = request.wait(config.wait_scale);
                // A zero wait needs no timer: registering one costs a trip
                // through the timer wheel and a wake-up per record.
                let waited = match wait.is_zero() {
                    true => std::time::Duration::ZERO,
                    false => {
                        tokio::time::sleep(wait).await;
                        started.elapsed()
                    }
                };
                in_hand = Some(reply_slot.await);
                let recorded = match &config.ledger {
                    None => None,
                    Some(ledger) => Some(record_in_ledger(config, ledger, &work, waited).await),
                };
                (ReplyStatus::Ok, waited, None, recorded)
            }
            .instrument(wait_span)
            .await
        }
    };
    let serviced_at = Instant::now();
    let service = serviced_at - dequeued_at;
    observe(&config.metrics.stage_service, service);
    if has_passed(work.deadline) {
        expire(&config.metrics, &work.span, work.ack, ExpiredAt::Reply);
        return None;
    }

    let waited_ms = waited.as_millis() as u64;
    let message = match status {
        ReplyStatus::Ok => format!("Waited {waited_ms} ms for {}", request.name),
        ReplyStatus::Error => format!("Refused to wait for {}", request.name),
    };
    let reply = WaitReply {
        status,
        correlation: request.correlation.text(),
        name: request.name.clone(),
        message,
        requested_wait_ms: request.requested.as_millis() as u64,
        waited_ms,
        variant: config.variant.clone(),
        instance: config.instance.clone(),
        trace_id: work.trace_id.clone(),
        error,
        ledger_recorded,
        behaviour: config.behaviour.clone(),
    };
    let reply_slot = Some(in_hand.expect("every path above takes a reply slot"));
    Some(Outgoing {
        topic: request.response_topic.clone(),
        partition: request.reply_partition,
        // The request's key (clients such as Gatling match replies by it);
        // a request without one is keyed by its correlation, so replies
        // still spread over the reply topic's partitions.
        key: work.key.or_else(|| Some(request.correlation.value.clone())),
        payload: serde_json::to_vec(&reply).expect("a reply always serialises"),
        // The request's headers as they came, its correlation among them
        // (under the name the caller used, byte for byte); the producers
        // add the reply's own (`pipeline::mark_reply`).
        headers: work.carried,
        span: work.span,
        ack: work.ack,
        consumed_at: work.consumed_at,
        kind: OutgoingKind::Reply {
            ok: status == ReplyStatus::Ok,
            consumed_wall_us: work.consumed_wall_us,
            queue,
            service,
            serviced_at,
        },
        origin: work.origin,
        reply_slot,
    })
}

/// A ledger that is down must not cost the caller its reply: the failure is
/// logged, counted, marked on the span, and reported in the reply.
async fn record_in_ledger(
    config: &WaiterConfig,
    ledger: &crate::ledger::LedgerClient,
    work: &Work,
    waited: std::time::Duration,
) -> bool {
    let mut variants: std::collections::BTreeMap<protocol::Service, String> = work
        .hops
        .iter()
        .map(|hop| (hop.service, hop.variant.clone()))
        .collect();
    variants.insert(protocol::Service::Waiter, config.variant.clone());
    let entry = LedgerEntry {
        request_id: work.request.correlation.text(),
        tenant: work.tenant.clone(),
        variants,
        trace_id: work.trace_id.clone(),
        waited_ms: waited.as_millis() as u64,
        behaviour: config.behaviour.clone(),
    };
    match ledger.record(&entry).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, correlation = %work.request.correlation.text(), "ledger did not record the wait");
            config.metrics.failed(e.failure());
            tracing::Span::current().add_event(
                "ledger.failed",
                vec![KeyValue::new("error.message", e.to_string())],
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    //! The pool's rules on tokio's paused clock: waits, deadlines and
    //! backpressure in milliseconds, no broker.
    use std::time::Duration;

    use protocol::wire::WaitReply;

    use super::*;
    use crate::pipeline::testing::Partition;

    fn config(waiters: usize, reply_slots: usize, wait_scale: f64) -> Arc<WaiterConfig> {
        Arc::new(WaiterConfig {
            variant: "baseline".into(),
            instance: "test".into(),
            waiters,
            reply_slots,
            wait_scale,
            behaviour: None,
            deadline_margin: Duration::from_millis(100),
            queue_estimate: crate::pipeline::QueueEstimate::new(),
            ledger: None,
            metrics: WaiterMetrics::new("baseline"),
        })
    }

    fn reply(outgoing: &Outgoing) -> WaitReply {
        serde_json::from_slice(&outgoing.payload).expect("a reply body")
    }

    /// The pool serving from a channel of `capacity`.
    fn pool(
        config: Arc<WaiterConfig>,
        capacity: usize,
    ) -> (mpsc::Sender<Work>, mpsc::Receiver<Outgoing>) {
        let (requests, requests_rx) = mpsc::channel(capacity);
        let (replies_tx, replies) = mpsc::channel(1000);
        tokio::spawn(run(config, requests_rx, replies_tx));
        (requests, replies)
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_lasts_what_was_asked_scaled_by_the_variant() {
        let (requests, mut replies) = pool(config(10, 10, 0.5), 10);
        let mut partition = Partition::new();
        let started = tokio::time::Instant::now();
        requests
            .send(partition.work(Duration::from_millis(400), None))
            .await
            .unwrap();
        let outgoing = replies.recv().await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(200));
        let body = reply(&outgoing);
        assert_eq!((body.requested_wait_ms, body.waited_ms), (400, 200));
        assert_eq!(body.message, "Waited 200 ms for test");
        assert!(outgoing.reply_slot.is_some(), "the reply holds its slot");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_request_is_answered_at_once_with_an_error() {
        let (requests, mut replies) = pool(config(10, 10, 1.0), 10);
        let mut partition = Partition::new();
        let mut work = partition.work(Duration::from_secs(600), None);
        work.request.refusal = Some("wait_ms 600000 exceeds the maximum".into());
        let started = tokio::time::Instant::now();
        requests.send(work).await.unwrap();
        let body = reply(&replies.recv().await.unwrap());
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(body.status, ReplyStatus::Error);
        assert_eq!(body.waited_ms, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_whose_deadline_passed_while_it_queued_is_dropped_unanswered() {
        // One waiter: the second request queues behind a 1 s wait, and its
        // caller gives up after 500 ms.
        let (requests, mut replies) = pool(config(1, 10, 1.0), 10);
        let mut partition = Partition::new();
        for (wait, deadline) in [
            (Duration::from_secs(1), None),
            (Duration::from_millis(10), Some(Duration::from_millis(500))),
        ] {
            requests.send(partition.work(wait, deadline)).await.unwrap();
        }
        let first = replies.recv().await.unwrap();
        assert_eq!(reply(&first).correlation, "request-0");
        drop(first);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(replies.try_recv().is_err(), "no reply for the expired one");
        // Its offset is released all the same: nobody waits for it.
        assert_eq!(
            partition.finished_count(),
            1,
            "the expired request's ack is finished"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_that_would_outlast_its_deadline_is_not_started() {
        let (requests, mut replies) = pool(config(10, 10, 1.0), 10);
        let mut partition = Partition::new();
        // 300 ms of wait and 100 ms of margin do not fit in 350 ms.
        for deadline in [350, 450] {
            let deadline = Some(Duration::from_millis(deadline));
            requests
                .send(partition.work(Duration::from_millis(300), deadline))
                .await
                .unwrap();
        }
        let served = replies.recv().await.unwrap();
        assert_eq!(reply(&served).correlation, "request-1");
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(replies.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn while_replies_go_undelivered_the_pool_stops_taking_requests() {
        // Two reply slots, two waiters, a request channel of one.
        let (requests, mut replies) = pool(config(2, 2, 1.0), 1);
        let mut partition = Partition::new();
        let works: Vec<Work> = (0..10)
            .map(|_| partition.work(Duration::ZERO, None))
            .collect();
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let feeder = {
            let sent = sent.clone();
            tokio::spawn(async move {
                for work in works {
                    requests.send(work).await.unwrap();
                    sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            })
        };
        // The producers hold what they were given, undelivered.
        let mut undelivered = vec![replies.recv().await.unwrap(), replies.recv().await.unwrap()];
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(replies.try_recv().is_err(), "no third reply without a slot");
        // Two waits holding their pool slots, one request at the pool's
        // door, one in the channel: the rest stay with the consumer.
        let taken = sent.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(taken, 6, "the pool took {taken} of 10 requests");
        assert!(!feeder.is_finished());
        // Delivered: every slot comes back, and every request is answered.
        undelivered.clear();
        for _ in 2..10 {
            drop(replies.recv().await.unwrap());
        }
        feeder.await.unwrap();
    }
}
