//! The spinner on stderr while a run goes on.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::accounting::*;

pub(super) async fn show_progress(shared: Shared, stop: CancellationToken) {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}")
            .expect("a valid template"),
    );
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut last_received = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let state = lock(&shared);
        let c = &state.counts;
        let rate = (c.received - last_received) * 2;
        last_received = c.received;
        let p99 = if state.latency.is_empty() {
            0.0
        } else {
            state.latency.value_at_quantile(0.99) as f64 / 1000.0
        };
        bar.set_message(format!(
            "sent {} · {rate} replies/s · in flight {} · errors {} · p99 {p99:.1} ms",
            c.sent,
            state.pending.len(),
            c.errors()
        ));
        bar.tick();
    }
    bar.finish_and_clear();
}
