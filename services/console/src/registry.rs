//! `/api/registry/…`: the tenants registry, passed through so the page
//! needs no second origin. The page sends the token its user typed; the
//! console adds none and keeps none.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Registry paths the page may use: tenants and variants, nothing else.
fn allowed(path: &str) -> bool {
    path == "tenants" || path.starts_with("tenants/") || path == "variants"
}

pub(crate) async fn pass_through(
    State(state): State<crate::AppState>,
    Path(path): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !allowed(&path) {
        return (
            StatusCode::NOT_FOUND,
            "not a registry path the console passes on",
        )
            .into_response();
    }
    let url = format!(
        "{}/{path}",
        state.settings.registry_url.trim_end_matches('/')
    );
    let mut request = state.http.request(method, url).body(body);
    for name in [header::AUTHORIZATION, header::CONTENT_TYPE] {
        if let Some(value) = headers.get(&name) {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(answer) => {
            let status = answer.status();
            let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
            let body = answer.bytes().await.unwrap_or_default();
            let mut response = (status, body).into_response();
            if let Some(content_type) = content_type {
                response
                    .headers_mut()
                    .insert(header::CONTENT_TYPE, content_type);
            }
            response
        }
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("the registry is unreachable: {e}"),
        )
            .into_response(),
    }
}
