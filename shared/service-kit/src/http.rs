//! Every service's HTTP listener and the limits no client can get past:
//! headers must arrive within `header_read_timeout` (hyper's own timer), a
//! request must be answered within `request_timeout` (408 after), a body
//! may be at most `max_body_bytes` (413 after), and at most
//! `max_connections` connections are open at once (beyond that new ones
//! wait in the kernel's backlog instead of exhausting file descriptors).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::timeout::TimeoutLayer;

/// The `http` section of a service's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Interface to bind.
    pub host: String,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
    /// What a client may cost.
    #[serde(default)]
    pub limits: HttpLimits,
}

/// What one client may cost a server (`http.limits`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimits {
    /// Time for a client to send a request's headers.
    #[serde(with = "settings::duration")]
    pub header_read_timeout: Duration,
    /// Time for a request to be read and answered.
    #[serde(with = "settings::duration")]
    pub request_timeout: Duration,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Connections open at once.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            max_body_bytes: 64 * 1024,
            max_connections: 512,
        }
    }
}

impl HttpSettings {
    /// An ephemeral port on loopback: a service inside another program.
    pub fn loopback_ephemeral() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 0,
            limits: HttpLimits::default(),
        }
    }
}

/// A bound listener and the limits it serves with.
#[derive(Debug)]
pub struct HttpListener {
    listener: TcpListener,
    port: u16,
    limits: HttpLimits,
}

impl HttpListener {
    /// The port actually bound.
    pub fn port(&self) -> u16 {
        self.port
    }
}

/// Binds `settings`.
pub async fn bind(settings: &HttpSettings) -> std::io::Result<HttpListener> {
    let listener = TcpListener::bind((settings.host.as_str(), settings.port))
        .await
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot bind {}:{}: {e}", settings.host, settings.port),
            )
        })?;
    Ok(HttpListener {
        port: listener.local_addr()?.port(),
        listener,
        limits: settings.limits,
    })
}

/// Serves `router` until `shutdown` is cancelled, then lets the requests in
/// flight finish; within the listener's limits throughout.
pub async fn serve(
    listener: HttpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let HttpListener {
        listener, limits, ..
    } = listener;
    let router = router
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(RequestBodyLimitLayer::new(limits.max_body_bytes));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder.http2().timer(TokioTimer::new());
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    loop {
        let slot = tokio::select! {
            slot = connections.clone().acquire_owned() => slot.expect("never closed"),
            () = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
