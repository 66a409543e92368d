//! A service run inside another program.

use tokio_util::sync::CancellationToken;

use crate::ServiceApp;

/// A service running on this process's runtime (the demo, `load
/// --embedded`, tests): started on its bound port, told to stop when
/// dropped, and whose own result [`RunningService::stop`] returns, so a
/// shutdown error is never hidden.
pub struct RunningService {
    service: protocol::Service,
    port: u16,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl RunningService {
    /// Builds the service from `settings`, runs it, and returns once its
    /// API is open ([`ServiceApp::api_open`]).
    pub async fn start<A: ServiceApp>(settings: A::Settings) -> Result<Self, A::Error> {
        Ok(Self::spawn_open(A::build(settings).await?).await)
    }

    /// [`Self::spawn`], returning once its API is open.
    pub async fn spawn_open<A: ServiceApp>(app: A) -> Self {
        let open = app.api_open();
        let running = Self::spawn(app);
        open.await;
        running
    }

    /// Runs an already built service (for callers that take something from
    /// it first, such as its route table or readiness).
    pub fn spawn<A: ServiceApp>(app: A) -> Self {
        let port = app.port();
        let stop = CancellationToken::new();
        let service = A::SERVICE;
        let running = app.run_until_stopped(stop.clone());
        let task = tokio::spawn(async move {
            use anyhow::Context;
            let result = running
                .await
                .with_context(|| format!("{service} stopped with an error"));
            if let Err(e) = &result {
                tracing::error!(error = format!("{e:#}"), "service failed");
            }
            result
        });
        Self {
            service,
            port,
            stop,
            task: Some(task),
        }
    }

    /// Which service this is.
    pub fn service(&self) -> protocol::Service {
        self.service
    }

    /// The HTTP port it bound.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its base URL on loopback.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Whether it has stopped (on its own, or after [`Self::stop`]).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|task| task.is_finished())
    }

    /// Tells it to stop without waiting (a graceful stop begins).
    pub fn begin_stop(&self) {
        self.stop.cancel();
    }

    /// Stops it and waits for it to drain: its own result, or the panic
    /// that ended it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop.cancel();
        let task = self.task.take().expect("a running service has its task");
        match task.await {
            Ok(result) => result,
            Err(e) => Err(anyhow::anyhow!("{} panicked: {e}", self.service)),
        }
    }

    /// Ends it the way a crash would: its task is aborted mid-flight, so
    /// nothing drains, no lease is given up and no final commit is made
    /// (what its clients close on drop, they still close).
    pub async fn kill(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// [`Self::stop`], giving up (and naming the service) after `within`.
    pub async fn stop_within(self, within: std::time::Duration) -> anyhow::Result<()> {
        let service = self.service;
        tokio::time::timeout(within, self.stop())
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("{service} did not drain within {within:?}")))
    }
}

impl Drop for RunningService {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
