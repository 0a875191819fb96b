//! How a request fails: one `ApiError` per kind of failure, each with its HTTP status and a
//! JSON body `{"error": "..."}` that says what to do about it (and a `code` where a client
//! must tell refusals of one status apart: `csrf`).
use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::{
    actions::{ActionError, ApplyError},
    auth::Role,
    directory::DirectoryError,
    model::ErrorBody,
};
use crate::{alerts::AlertsError, datapath::ControlError, device::Mac};

/// The `WWW-Authenticate` challenge of a 401 (RFC 6750).
const BEARER_CHALLENGE: &str = "Bearer realm=\"iotgw\"";
const BEARER_CHALLENGE_INVALID: &str = "Bearer realm=\"iotgw\", error=\"invalid_token\"";

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No `Authorization: Bearer` header and no session cookie.
    #[error("authentication required: send Authorization: Bearer <token>, or sign in with POST /api/v1/session")]
    MissingToken,
    /// A token that is not one of ours.
    #[error("the bearer token is not valid")]
    InvalidToken,
    /// A sign-in with an unknown token, an unknown user or a wrong password: one answer for
    /// all, so it does not tell which names exist.
    #[error("sign-in refused: unknown token, or wrong user name or password")]
    BadCredentials,
    /// A session cookie whose session ended (expired, signed out, revoked), or none where a
    /// session is needed.
    #[error("no session: sign in with POST /api/v1/session")]
    NoSession,
    /// A request with the session cookie that may come from another site: no or a wrong
    /// `X-CSRF-Token`, or a foreign `Origin` (code `csrf`).
    #[error("forbidden: {0}")]
    Csrf(&'static str),
    #[error("no session {0}")]
    UnknownSession(String),
    /// Too many failed authentications from the caller's source (`throttle`): try again after
    /// `retry_after` (rounded up to whole seconds in `Retry-After`).
    #[error("too many failed authentications from this address: retry in {} s", retry_after_secs(*.retry_after))]
    Throttled { retry_after: std::time::Duration },
    /// The caller's role may not do this.
    #[error("forbidden: this needs the {needed} role, {name:?} has {has}")]
    Forbidden { name: String, has: Role, needed: Role },
    /// Malformed path, query or body.
    #[error("{0}")]
    BadRequest(String),
    #[error("no device {0} in the inventory")]
    UnknownDevice(Mac),
    #[error("no OTA campaign {0:?}")]
    UnknownCampaign(String),
    #[error("no such endpoint: {0}")]
    NoRoute(String),
    /// The action does not apply to the device's current state.
    #[error("{0}")]
    Conflict(#[from] ActionError),
    /// The datapath refused the change; nothing was recorded.
    #[error("the datapath refused the change: {0}")]
    Datapath(#[from] ControlError),
    #[error("{0}")]
    Directory(DirectoryError),
    /// An alert change or query refused (400, 404, 409) or failed (500).
    #[error("{0}")]
    Alert(#[from] crate::alerts::AlertsError),
    /// A service this one depends on (the fleet's broker) did not answer: nothing was done,
    /// the caller may try again (503, code `unavailable`).
    #[error("{0}")]
    Unavailable(String),
    /// A bug or a panicked task.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A query string that does not parse into the endpoint's parameters.
impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::QueryRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl From<DirectoryError> for ApiError {
    fn from(error: DirectoryError) -> Self {
        match error {
            DirectoryError::UnknownDevice(mac) => ApiError::UnknownDevice(mac),
            other => ApiError::Directory(other),
        }
    }
}

impl From<ApplyError> for ApiError {
    fn from(error: ApplyError) -> Self {
        match error {
            ApplyError::UnknownDevice(mac) => ApiError::UnknownDevice(mac),
            ApplyError::Refused(refused) => ApiError::Conflict(refused),
            ApplyError::Datapath(error) => ApiError::Datapath(error),
            ApplyError::Directory(error) => error.into(),
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::MissingToken | ApiError::InvalidToken | ApiError::BadCredentials | ApiError::NoSession => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Forbidden { .. } | ApiError::Csrf(_) => StatusCode::FORBIDDEN,
            ApiError::UnknownSession(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::UnknownDevice(_) | ApiError::UnknownCampaign(_) | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Datapath(_) => StatusCode::BAD_GATEWAY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Alert(error) => match error {
                AlertsError::Invalid(_) => StatusCode::BAD_REQUEST,
                AlertsError::NotFound(_) => StatusCode::NOT_FOUND,
                AlertsError::Transition { .. } | AlertsError::Conflict(_) => StatusCode::CONFLICT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Directory(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The body's `code`, for refusals a client handles apart from others of their status.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            ApiError::Csrf(_) => Some("csrf"),
            ApiError::Unavailable(_) => Some("unavailable"),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "api request failed");
        }
        let challenge = match self {
            ApiError::MissingToken => Some(BEARER_CHALLENGE),
            ApiError::InvalidToken => Some(BEARER_CHALLENGE_INVALID),
            _ => None,
        };
        let retry_after = match self {
            ApiError::Throttled { retry_after } => Some(retry_after_secs(retry_after)),
            _ => None,
        };
        let body = ErrorBody { error: self.to_string(), code: self.code().map(str::to_owned) };
        let mut response = (status, Json(body)).into_response();
        if let Some(challenge) = challenge {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// `Retry-After` holds whole seconds (RFC 9110 §10.2.3): round up, at least 1.
pub fn retry_after_secs(wait: std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}
