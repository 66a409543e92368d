//! Scaffolding every waiter-bus service shares, so each `main.rs` only wires.
//!
//! Start with [`shutdown_on_signal`] (one `CancellationToken` cancelled on
//! SIGINT or SIGTERM) and [`operational_routes`] (`/metrics`, `/healthz`,
//! `/readyz`), then [`serve`], which runs an axum router on a bound listener
//! until the token is cancelled.

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Cancels the returned token on the first SIGINT (Ctrl-C) or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => tracing::info!("SIGINT received; shutting down"),
            () = terminate => tracing::info!("SIGTERM received; shutting down"),
        }
        cancel.cancel();
    });
    token
}

/// Whether a service is ready for traffic, and if not, why.
pub trait Readiness: Send + Sync + 'static {
    /// `Ok` when ready; `Err` says what it is waiting for.
    fn check(&self) -> Result<(), String>;
}

/// `/metrics` (Prometheus), `/healthz` (the process answers) and `/readyz`
/// (503 with the reason until `readiness` says ready).
pub fn operational_routes(readiness: Arc<dyn Readiness>) -> Router {
    Router::new()
        .route("/metrics", get(telemetry::metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                async move {
                    match readiness.check() {
                        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                        Err(reason) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {reason}\n"),
                        ),
                    }
                }
            }),
        )
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets
/// in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
