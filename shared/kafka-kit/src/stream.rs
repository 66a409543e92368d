//! Reading a consumer's messages until told to stop.

use futures_lite::StreamExt;
use rdkafka::consumer::{ConsumerContext, MessageStream};
use rdkafka::message::BorrowedMessage;
use tokio_util::sync::CancellationToken;

/// The next message of `stream`, or `None` once `stop` is cancelled or the
/// stream has ended. A consume error (a broker away, a rebalance under way)
/// is logged, naming `reader`, and reading goes on: librdkafka recovers by
/// itself, and every caller wants to keep reading until told otherwise.
pub async fn next_message<'a, C: ConsumerContext + 'static>(
    stream: &mut MessageStream<'a, C>,
    stop: &CancellationToken,
    reader: &str,
) -> Option<BorrowedMessage<'a>> {
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return None,
            next = stream.next() => next,
        };
        match next {
            Some(Ok(message)) => return Some(message),
            Some(Err(e)) => tracing::warn!(error = %e, "{reader}: consume failed; retrying"),
            None => return None,
        }
    }
}
