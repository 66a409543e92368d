//! The optional call to service D, recording each completed wait.

use std::time::Duration;

use http::HeaderMap;
use protocol::wire::LedgerEntry;

/// Why the ledger did not record a wait.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Connection refused, timeout, or a transport failure.
    #[error("ledger unreachable: {0}")]
    Unreachable(#[from] reqwest::Error),
    /// The ledger answered with an error status.
    #[error("ledger answered {0}")]
    Status(http::StatusCode),
}

/// Posts completed waits to `{base}/records` with the trace context.
#[derive(Debug, Clone)]
pub struct LedgerClient {
    client: reqwest::Client,
    records_url: String,
}

impl LedgerClient {
    /// A client for the ledger at `base_url`, each call bounded by `timeout`.
    pub fn new(base_url: &str, timeout: Duration) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .expect("a TLS-free reqwest client always builds"),
            records_url: format!("{}/records", base_url.trim_end_matches('/')),
        }
    }

    /// Records `entry`, carrying the current span's context and baggage.
    pub async fn record(&self, entry: &LedgerEntry) -> Result<(), LedgerError> {
        let mut headers = HeaderMap::new();
        propagation::inject_http(&propagation::current_context(), &mut headers);
        let response = self
            .client
            .post(&self.records_url)
            .headers(headers)
            .json(entry)
            .send()
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(LedgerError::Status(response.status()))
        }
    }
}
