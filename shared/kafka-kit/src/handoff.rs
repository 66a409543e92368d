//! Bounded hand-off between pipeline stages, with the time blocked measured.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// Sends `item` on a bounded channel, waiting while it is full (that wait is
/// the backpressure), and returns how long the send was blocked.
///
/// The fast path (`try_send`) keeps the common, unsaturated case free of
/// clock reads. `Err` gives the item back when the receiver is gone.
pub async fn send_timed<T>(sender: &mpsc::Sender<T>, item: T) -> Result<Duration, T> {
    match sender.try_send(item) {
        Ok(()) => Ok(Duration::ZERO),
        Err(mpsc::error::TrySendError::Closed(item)) => Err(item),
        Err(mpsc::error::TrySendError::Full(item)) => {
            let started = Instant::now();
            sender
                .send(item)
                .await
                .map(|()| started.elapsed())
                .map_err(|e| e.0)
        }
    }
}

/// Items waiting in a bounded channel right now.
pub fn depth<T>(sender: &mpsc::Sender<T>) -> usize {
    sender.max_capacity() - sender.capacity()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn an_unsaturated_send_is_not_blocked() {
        let (tx, _rx) = mpsc::channel(1);
        assert_eq!(send_timed(&tx, 1).await, Ok(Duration::ZERO));
        assert_eq!(depth(&tx), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_channel_blocks_until_the_receiver_takes_an_item() {
        let (tx, mut rx) = mpsc::channel(1);
        tx.send(0).await.unwrap();
        let receiver = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let first = rx.recv().await;
            (first, rx.recv().await)
        });
        let blocked = send_timed(&tx, 1).await.unwrap();
        assert!(blocked >= Duration::from_millis(250), "{blocked:?}");
        assert_eq!(receiver.await.unwrap(), (Some(0), Some(1)));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_closed_channel_gives_the_item_back() {
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        assert_eq!(send_timed(&tx, 7).await, Err(7));
    }
}
