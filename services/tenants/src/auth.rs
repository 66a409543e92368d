//! The registry's token check, as a layer on the mutating routes only:
//! reads need no token.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use service_kit::ApiError;

/// Lets a request through only with `Authorization: Bearer <token>`:
/// 401 without one, 403 with another.
pub(crate) async fn require_token(
    State(token): State<Arc<str>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "mutations need `Authorization: Bearer <token>`",
        )),
        Some(presented) if presented == &*token => Ok(next.run(request).await),
        Some(_) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "the bearer token is not valid",
        )),
    }
}
