//! When requests leave: an open loop on a schedule, or closed-loop users.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::Config;

use super::accounting::*;
use super::transport::*;

/// Sends on schedule; returns how long sending lasted.
///
/// The schedule is kept by a thread of its own: tokio's timer wakes on
/// millisecond ticks, which alone would put a send up to a millisecond behind
/// its intended time, while a thread's sleep is accurate to tens of
/// microseconds. The thread hands each intended time to this task, which
/// starts the send.
pub(super) async fn open_loop(
    config: &Arc<Config>,
    rate: f64,
    sender: &Sender,
    shared: &Shared,
    started: Instant,
) -> Duration {
    let end = started + config.duration;
    let ramp_up = config.ramp_up;
    let (due_tx, mut due_rx) = mpsc::unbounded_channel::<Instant>();
    let pacer = std::thread::Builder::new()
        .name("load-pacer".into())
        .spawn(move || {
            let mut next = started;
            while next < end {
                let now = Instant::now();
                if next > now {
                    std::thread::sleep(next - now);
                    continue;
                }
                while next <= now && next < end {
                    if due_tx.send(next).is_err() {
                        return;
                    }
                    next += interval(rate, next - started, ramp_up);
                }
            }
        })
        .expect("the pacer thread starts");
    let mut sends = tokio::task::JoinSet::new();
    while let Some(intended) = due_rx.recv().await {
        sends.spawn(send_one(
            config.clone(),
            sender.clone(),
            shared.clone(),
            intended,
            None,
        ));
        while sends.try_join_next().is_some() {}
    }
    let _ = pacer.join();
    while sends.join_next().await.is_some() {}
    config.duration
}

/// The gap after a request sent `since` the start: `1 / rate`, with the rate
/// climbing linearly from 1 % during the ramp-up.
pub(super) fn interval(rate: f64, since: Duration, ramp_up: Duration) -> Duration {
    let current = if since < ramp_up {
        rate * (since.as_secs_f64() / ramp_up.as_secs_f64()).max(0.01)
    } else {
        rate
    };
    Duration::from_secs_f64(1.0 / current)
}

pub(super) async fn closed_loop(
    config: &Arc<Config>,
    users: usize,
    sender: &Sender,
    shared: &Shared,
    started: Instant,
) -> Duration {
    let end = started + config.duration;
    let mut running = tokio::task::JoinSet::new();
    for _ in 0..users {
        let (config, sender, shared) = (config.clone(), sender.clone(), shared.clone());
        running.spawn(async move {
            while Instant::now() < end {
                let (done_tx, done_rx) = oneshot::channel();
                send_one(
                    config.clone(),
                    sender.clone(),
                    shared.clone(),
                    Instant::now(),
                    Some(done_tx),
                )
                .await;
                let _ = done_rx.await;
            }
        });
    }
    while running.join_next().await.is_some() {}
    started.elapsed()
}
