//! The optional call to service D, recording each completed wait.
//!
//! The call is off the waiter's critical path: it runs after the wait has
//! given its permit back, at most `max_concurrent_calls` at once (beyond
//! that the wait is not recorded), and behind a circuit breaker: after
//! `breaker_failures` failures in a row no call is made for
//! `breaker_open_for`, so a hung or dead ledger costs each reply
//! `ledger_recorded: false` and nothing else.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use http::HeaderMap;
use protocol::wire::LedgerEntry;

/// Why the ledger did not record a wait.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Connection refused, timeout, or a transport failure.
    #[error("ledger unreachable: {0}")]
    Unreachable(#[from] propagation::ClientError),
    /// The ledger answered with an error status.
    #[error("ledger answered {0}")]
    Status(http::StatusCode),
    /// `max_concurrent_calls` calls are already waiting on the ledger.
    #[error("ledger busy: every call slot is taken")]
    Busy,
    /// The ledger failed repeatedly; calls are paused for a while.
    #[error("ledger paused after repeated failures")]
    CircuitOpen,
}

impl LedgerError {
    /// What the failure is counted as.
    pub fn failure(&self) -> crate::reasons::Failure {
        use crate::reasons::Failure;
        match self {
            LedgerError::Unreachable(_) | LedgerError::Status(_) => Failure::Ledger,
            LedgerError::Busy => Failure::LedgerBusy,
            LedgerError::CircuitOpen => Failure::LedgerPaused,
        }
    }
}

/// How hard the waiter leans on the ledger (the `ledger` settings).
#[derive(Debug, Clone, Copy)]
pub struct LedgerLimits {
    /// Each call's bound.
    pub timeout: Duration,
    /// Calls in flight at once.
    pub max_concurrent_calls: usize,
    /// Failures in a row that pause calls.
    pub breaker_failures: u32,
    /// How long calls stay paused.
    pub breaker_open_for: Duration,
}

/// Closed (calls go through), open (`open_until` ahead: none do), or half
/// open (`open_until` passed: one probe call goes through, and its outcome
/// closes or reopens the breaker).
#[derive(Debug, Default)]
struct Breaker {
    failures_in_a_row: u32,
    open_until: Option<Instant>,
    probing: bool,
}

/// Posts completed waits to `{base}/records` with the trace context.
#[derive(Debug, Clone)]
pub struct LedgerClient {
    client: propagation::ClientWithMiddleware,
    records_url: String,
    limits: LedgerLimits,
    token: Option<settings::Secret>,
    calls: Arc<Semaphore>,
    breaker: Arc<Mutex<Breaker>>,
}

impl LedgerClient {
    /// A client for the ledger at `base_url` within `limits`, sending
    /// `token` when the ledger requires one; its calls are CLIENT spans of
    /// the waiter `variant`.
    pub fn new(
        base_url: &str,
        limits: LedgerLimits,
        token: Option<settings::Secret>,
        variant: &str,
    ) -> Self {
        Self {
            client: propagation::traced_client(
                reqwest::Client::builder()
                    .timeout(limits.timeout)
                    .build()
                    .expect("a TLS-free reqwest client always builds"),
                protocol::Service::Waiter.as_str(),
                variant,
            ),
            records_url: format!("{}/records", base_url.trim_end_matches('/')),
            calls: Arc::new(Semaphore::new(limits.max_concurrent_calls)),
            limits,
            token,
            breaker: Arc::default(),
        }
    }

    /// Records `entry`, carrying the current span's context and baggage;
    /// refuses at once when every call slot is taken or the breaker is open.
    pub async fn record(&self, entry: &LedgerEntry) -> Result<(), LedgerError> {
        let probe = self.admit()?;
        let Ok(_slot) = self.calls.try_acquire() else {
            self.count(probe, None);
            return Err(LedgerError::Busy);
        };
        let result = self.post(entry).await;
        self.count(probe, Some(result.is_ok()));
        result
    }

    /// Whether a call may go out, and whether it is the half-open probe.
    fn admit(&self) -> Result<bool, LedgerError> {
        let mut breaker = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        match breaker.open_until {
            None => Ok(false),
            Some(until) if Instant::now() < until || breaker.probing => {
                Err(LedgerError::CircuitOpen)
            }
            Some(_) => {
                breaker.probing = true;
                Ok(true)
            }
        }
    }

    /// Counts a call's outcome (`None`: it was not made).
    fn count(&self, probe: bool, succeeded: Option<bool>) {
        let mut breaker = self.breaker.lock().unwrap_or_else(|e| e.into_inner());
        if probe {
            breaker.probing = false;
        }
        match succeeded {
            None => {}
            Some(true) => *breaker = Breaker::default(),
            Some(false) => {
                breaker.failures_in_a_row += 1;
                if probe || breaker.failures_in_a_row >= self.limits.breaker_failures {
                    breaker.failures_in_a_row = 0;
                    breaker.open_until = Some(Instant::now() + self.limits.breaker_open_for);
                    tracing::warn!(paused_for = ?self.limits.breaker_open_for, "the ledger keeps failing; calls are paused");
                }
            }
        }
    }

    async fn post(&self, entry: &LedgerEntry) -> Result<(), LedgerError> {
        let mut headers = HeaderMap::new();
        propagation::inject_http(&propagation::current_context(), &mut headers);
        let mut request = self.client.post(&self.records_url).headers(headers);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token.expose());
        }
        let response = request.json(entry).send().await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(LedgerError::Status(response.status()))
        }
    }
}
