//! The run's books: every request pending, answered, timed out or never
//! sent, and the histograms its outcomes feed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::Config;
use crate::report::{Counts, new_histogram};

/// A request awaiting its reply.
pub(super) struct Pending {
    pub(super) intended: Instant,
    pub(super) deadline: Instant,
    pub(super) sent_wall_us: u64,
    // Closed loop: the user waiting for this request's outcome.
    pub(super) done: Option<oneshot::Sender<()>>,
    // The request's root span, ended when the outcome is known.
    pub(super) span: Option<tracing::Span>,
}

#[derive(Clone, Copy)]
pub(super) enum Outcome {
    Received,
    TimedOut,
}

pub(super) struct State {
    pub(super) pending: HashMap<String, Pending>,
    // Deadlines in order, so the sweeper touches only what expired instead
    // of scanning every pending request under the lock.
    pub(super) deadlines: BinaryHeap<Reverse<(Instant, String)>>,
    // Outcomes of recently finished requests, to tell duplicates and late
    // replies from replies this run never asked for. Kept for
    // `FINISHED_RETENTION` timeouts, so a long run does not grow without bound;
    // a reply later than that counts as unexpected.
    pub(super) finished: HashMap<String, Outcome>,
    pub(super) finished_order: VecDeque<(Instant, String)>,
    pub(super) retention: Duration,
    pub(super) counts: Counts,
    pub(super) latency: Histogram<u64>,
    pub(super) send_delay: Histogram<u64>,
    pub(super) producer_ack: Histogram<u64>,
    pub(super) broker_to_consumer: Histogram<u64>,
    pub(super) queue: Histogram<u64>,
    pub(super) service: Histogram<u64>,
    pub(super) reply_handoff: Histogram<u64>,
    pub(super) reply_consume: Histogram<u64>,
    pub(super) reply_timestamp_type: Option<&'static str>,
    pub(super) per_second: Vec<Histogram<u64>>,
    pub(super) started: Instant,
    // When the last request was answered, and the longest time between two
    // answers so far with when it began: a pause that per-second counts
    // would round to whole seconds.
    pub(super) last_answer: Option<Instant>,
    pub(super) longest_gap: (Duration, Duration),
}

pub(super) type Shared = Arc<Mutex<State>>;

/// How many timeouts a finished request's outcome is remembered for.
pub(super) const FINISHED_RETENTION: u32 = 3;

impl State {
    pub(super) fn new(started: Instant, retention: Duration) -> Self {
        Self {
            pending: HashMap::new(),
            deadlines: BinaryHeap::new(),
            finished: HashMap::new(),
            finished_order: VecDeque::new(),
            retention,
            counts: Counts::default(),
            latency: new_histogram(),
            send_delay: new_histogram(),
            producer_ack: new_histogram(),
            broker_to_consumer: new_histogram(),
            queue: new_histogram(),
            service: new_histogram(),
            reply_handoff: new_histogram(),
            reply_consume: new_histogram(),
            reply_timestamp_type: None,
            per_second: Vec::new(),
            started,
            last_answer: None,
            longest_gap: (Duration::ZERO, Duration::ZERO),
        }
    }

    /// Registers a request awaiting its reply.
    pub(super) fn track(&mut self, correlation: &str, pending: Pending) {
        self.deadlines
            .push(Reverse((pending.deadline, correlation.to_string())));
        self.pending.insert(correlation.to_string(), pending);
    }

    /// Remembers how a request ended.
    pub(super) fn finish(&mut self, correlation: &str, outcome: Outcome) {
        self.finished.insert(correlation.to_string(), outcome);
        self.finished_order
            .push_back((Instant::now(), correlation.to_string()));
    }

    /// Times out what is past its deadline and forgets old outcomes.
    pub(super) fn sweep(&mut self, now: Instant) {
        while let Some(Reverse((deadline, _))) = self.deadlines.peek() {
            if *deadline > now {
                break;
            }
            let Reverse((_, correlation)) = self.deadlines.pop().expect("peeked");
            // Answered or unsent requests are no longer pending: nothing to do.
            if let Some(pending) = self.pending.remove(&correlation) {
                self.counts.timed_out += 1;
                self.finish(&correlation, Outcome::TimedOut);
                if let Some(done) = pending.done {
                    let _ = done.send(());
                }
            }
        }
        while let Some((finished_at, _)) = self.finished_order.front() {
            if now.saturating_duration_since(*finished_at) < self.retention {
                break;
            }
            let (_, correlation) = self.finished_order.pop_front().expect("front");
            self.finished.remove(&correlation);
        }
    }
}

pub(super) fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, State> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

pub(super) fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

/// Counts an attempt, records its send delay and registers it as pending.
pub(super) fn begin(
    shared: &Shared,
    config: &Config,
    correlation: &str,
    intended: Instant,
    done: Option<oneshot::Sender<()>>,
    span: Option<tracing::Span>,
) -> u64 {
    let actual = Instant::now();
    let sent_wall_us = wall_us();
    let mut state = lock(shared);
    state.counts.attempted += 1;
    state
        .send_delay
        .saturating_record(micros(actual.saturating_duration_since(intended)));
    state.track(
        correlation,
        Pending {
            intended,
            deadline: intended + config.timeout,
            sent_wall_us,
            done,
            span,
        },
    );
    sent_wall_us
}

/// Records a request that never left. Under overload its deadline may have
/// passed first; then it was counted as timed out, which it was not.
pub(super) fn not_sent(state: &mut State, correlation: &str) {
    state.counts.send_failed += 1;
    match state.pending.remove(correlation) {
        Some(pending) => {
            if let Some(done) = pending.done {
                let _ = done.send(());
            }
        }
        None => {
            if let Some(Outcome::TimedOut) = state.finished.remove(correlation) {
                // Its place in `finished_order` expires harmlessly.
                state.counts.timed_out -= 1;
            }
        }
    }
}

/// Records an answer: latency from the intended send time, or a late or
/// duplicate reply when the request is no longer pending.
pub(super) fn answer(state: &mut State, correlation: &str, refused: bool) -> Option<Pending> {
    let now = Instant::now();
    let Some(pending) = state.pending.remove(correlation) else {
        match state.finished.get(correlation) {
            Some(Outcome::Received) => state.counts.duplicates += 1,
            Some(Outcome::TimedOut) => state.counts.late += 1,
            None => state.counts.unexpected += 1,
        }
        return None;
    };
    state.finish(correlation, Outcome::Received);
    state.counts.received += 1;
    if let Some(last) = state.last_answer.replace(now) {
        let gap = now.saturating_duration_since(last);
        if gap > state.longest_gap.0 {
            state.longest_gap = (gap, last.saturating_duration_since(state.started));
        }
    }
    if refused {
        state.counts.error_replies += 1;
    }
    let latency = micros(now.saturating_duration_since(pending.intended));
    state.latency.saturating_record(latency);
    let second = now.saturating_duration_since(state.started).as_secs() as usize;
    if state.per_second.len() <= second {
        state.per_second.resize_with(second + 1, new_histogram);
    }
    state.per_second[second].saturating_record(latency);
    Some(pending)
}

pub(super) async fn sweep_timeouts(shared: Shared, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        lock(&shared).sweep(Instant::now());
    }
}
