//! The one error type handlers return.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// A handler's failure: a status and a message for the client, as
/// `{"error": "..."}`. The message says what went wrong in the client's
/// terms; the cause (internal addresses, broker errors) goes only to the
/// log, with every server-side failure.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    cause: Option<String>,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            cause: None,
        }
    }

    /// Adds the internal cause: logged, never sent to the client.
    pub fn caused_by(mut self, cause: impl std::fmt::Display) -> Self {
        self.cause = Some(cause.to_string());
        self
    }

    /// 400: the request itself is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.status, self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            let cause = self.cause.as_deref().unwrap_or_default();
            tracing::error!(status = %self.status, error = %self.message, cause, "request failed");
        }
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl From<axum::extract::rejection::JsonRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        Self::new(rejection.status(), rejection.body_text())
    }
}

/// The caller's `waiter-bus-deadline` header, if it sent one; a malformed
/// one is a 400 that names the header.
pub fn caller_deadline(
    headers: &axum::http::HeaderMap,
) -> Result<Option<protocol::Deadline>, ApiError> {
    headers
        .get(protocol::headers::DEADLINE)
        .map(|value| protocol::Deadline::parse(value.as_bytes()))
        .transpose()
        .map_err(ApiError::bad_request)
}
