//! How every list of the API pages: the rows are a JSON array, and the cursor of the next
//! page travels in the `Next-Cursor` response header, absent on the last page. A client
//! passes it back as `cursor` with the same filters and sort. Cursors are opaque and
//! URL-safe.
use axum::{
    Json,
    http::{HeaderName, HeaderValue},
    response::{IntoResponse, Response},
};
use serde::Serialize;

/// The response header holding the next page's cursor.
pub const NEXT_CURSOR: HeaderName = HeaderName::from_static("next-cursor");

/// `items` as a JSON array, with `Next-Cursor` when another page follows.
pub fn paged<T: Serialize>(items: Vec<T>, next: Option<String>) -> Response {
    let mut response = Json(items).into_response();
    // The cursors are URL-safe base64: always a valid header value.
    if let Some(next) = next.and_then(|next| HeaderValue::from_str(&next).ok()) {
        response.headers_mut().insert(NEXT_CURSOR, next);
    }
    response
}
