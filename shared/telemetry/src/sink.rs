//! A bounded in-memory store of finished spans that can be waited on.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry::trace::TraceId;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};
use tokio::sync::{broadcast, watch};

/// Keeps the most recent finished spans. Tests wait on it for a condition
/// instead of sleeping; the demo reads a trace from it to draw a waterfall.
#[derive(Clone, Debug)]
pub struct SpanSink {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    capacity: usize,
    spans: Mutex<VecDeque<SpanData>>,
    // Bumped on every finished span so waiters re-check their condition
    // without polling.
    finished: watch::Sender<u64>,
    // Every finished span, for followers such as the web console; a span
    // is copied for it only while someone follows.
    followers: broadcast::Sender<SpanData>,
}

/// The condition was not met before the deadline.
#[derive(Debug, thiserror::Error)]
#[error("no matching spans within {0:?}")]
pub struct SpanSinkTimeout(pub Duration);

impl SpanSink {
    /// A sink keeping at most `capacity` spans (0 keeps none).
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                capacity,
                spans: Mutex::new(VecDeque::new()),
                finished: watch::channel(0).0,
                followers: broadcast::channel(4096).0,
            }),
        }
    }

    /// Every span finished from now on (a follower that falls more than
    /// 4,096 spans behind is told how many it missed).
    pub fn subscribe(&self) -> broadcast::Receiver<SpanData> {
        self.inner.followers.subscribe()
    }

    /// A copy of every span held.
    pub fn snapshot(&self) -> Vec<SpanData> {
        self.lock().iter().cloned().collect()
    }

    /// The held spans of one trace, in start order.
    pub fn trace(&self, trace_id: TraceId) -> Vec<SpanData> {
        let mut spans: Vec<SpanData> = self
            .lock()
            .iter()
            .filter(|s| s.span_context.trace_id() == trace_id)
            .cloned()
            .collect();
        spans.sort_by_key(|s| s.start_time);
        spans
    }

    /// Waits until `condition` holds for the spans of `trace_id`, returning them.
    pub async fn wait_for_trace(
        &self,
        trace_id: TraceId,
        timeout: Duration,
        condition: impl Fn(&[SpanData]) -> bool,
    ) -> Result<Vec<SpanData>, SpanSinkTimeout> {
        let mut changes = self.inner.finished.subscribe();
        let wait = async {
            loop {
                let spans = self.trace(trace_id);
                if condition(&spans) {
                    return spans;
                }
                if changes.changed().await.is_err() {
                    // The sender lives as long as `self`; unreachable in practice.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| SpanSinkTimeout(timeout))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<SpanData>> {
        // A panic while holding the lock cannot leave the deque inconsistent.
        self.inner.spans.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SpanProcessor for SpanSink {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if self.inner.capacity == 0 {
            return;
        }
        if self.inner.followers.receiver_count() > 0 {
            let _ = self.inner.followers.send(span.clone());
        }
        {
            let mut spans = self.lock();
            if spans.len() == self.inner.capacity {
                spans.pop_front();
            }
            spans.push_back(span);
        }
        self.inner.finished.send_modify(|n| *n += 1);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}
