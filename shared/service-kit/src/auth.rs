//! Bearer tokens for the routes that change state (the registry's
//! mutations, the ledger's writes), as a route layer.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use crate::ApiError;

/// The token shipped in the checked-in defaults; a service that runs with it
/// says so loudly at start-up.
pub const DEFAULT_TOKEN: &str = "dev-token";

/// The token a route layer checks.
#[derive(Clone)]
pub struct BearerToken(Arc<str>);

impl BearerToken {
    /// Checks requests against `token`; warns when it is the default one.
    pub fn new(token: &settings::Secret, service: protocol::Service) -> Self {
        if token.expose() == DEFAULT_TOKEN {
            tracing::warn!(
                %service,
                "the bearer token is the default `{DEFAULT_TOKEN}`: anyone who has read the README can change this service's state; set a token of your own"
            );
        }
        Self(token.expose().into())
    }

    /// Whether `headers` carry `Authorization: Bearer <this token>`.
    pub fn admits(&self, headers: &axum::http::HeaderMap) -> bool {
        presented(headers).is_some_and(|token| self.accepts(token))
    }

    fn accepts(&self, presented: &str) -> bool {
        // Constant time: how long a guess takes says nothing about how much
        // of it was right.
        presented.as_bytes().ct_eq(self.0.as_bytes()).into()
    }
}

/// The bearer token `headers` present, if any.
fn presented(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Lets a request through only with `Authorization: Bearer <token>`: 401
/// without one, 403 with another. Use with
/// `axum::middleware::from_fn_with_state(token, require_bearer)`.
pub async fn require_bearer(
    State(token): State<BearerToken>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match presented(request.headers()) {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this needs `Authorization: Bearer <token>`",
        )),
        Some(presented) if token.accepts(presented) => Ok(next.run(request).await),
        Some(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the bearer token is not valid",
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Log lines written while `run` runs.
    fn logged(run: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl Write for Lines {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, run);
        String::from_utf8(lines.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn the_shipped_token_is_announced_loudly_and_others_are_not() {
        let default = logged(|| {
            BearerToken::new(
                &settings::Secret::new(DEFAULT_TOKEN),
                protocol::Service::Ledger,
            );
        });
        assert!(
            default.contains("WARN") && default.contains("default"),
            "{default}"
        );
        let own = logged(|| {
            BearerToken::new(&settings::Secret::new("s3cret"), protocol::Service::Ledger);
        });
        assert!(own.is_empty(), "{own}");
    }

    #[test]
    fn only_the_exact_token_is_accepted() {
        let token = BearerToken::new(&settings::Secret::new("s3cret"), protocol::Service::Ledger);
        assert!(token.accepts("s3cret"));
        for wrong in ["", "s3cre", "s3cret ", "S3CRET", "s3cret-and-more"] {
            assert!(!token.accepts(wrong), "{wrong:?}");
        }
    }
}
