//! Console sign-in: `POST /api/v1/session` exchanges a token or a local user's password for a
//! session cookie, `GET` shows the session, `DELETE` signs out; an admin lists every session
//! (`GET /api/v1/sessions`) and revokes one (`DELETE /api/v1/sessions/{id}`). Sessions live in
//! `session`; passwords are checked by `users` on the blocking pool.
//!
//! The cookie is `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's page
//! sends it), `Path=/`, `Secure` when the API is served over TLS. A request it authenticates
//! (`ApiState::authenticate`) must, unless it is a GET or HEAD, carry the session's CSRF token
//! in `X-CSRF-Token`, and a present `Origin` must name this host: both are checked here
//! (`check_cookie_request`). Bad credentials are counted by the `throttle` like bad tokens.
//! Sign-in, sign-out and revocation are audit entries (`sign_in`, `sign_out`,
//! `session_revoked`) of the server's audit log (`Authority::audit`): the gateway's and the
//! fleet hub's servers share these routes (`routes`).
use axum::{
    Extension, Json, Router,
    body::Bytes,
    extract::{ConnectInfo, Path, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{delete, get},
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{
    auth::{CallerKind, Role},
    error::ApiError,
    gate::{Admin, Authority, SessionCaller},
    handlers::blocking,
    model::ErrorBody,
    session::Session,
};

/// The session cookie's name.
pub const COOKIE: &str = "iotgw_session";
/// The header a cookie request other than GET or HEAD carries the CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Password checks running at once: each holds argon2's memory (19 MiB at the default cost).
pub const MAX_CONCURRENT_VERIFICATIONS: usize = 2;

/// Body of `POST /api/v1/session`: a token, or a user name and password.
#[derive(Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// An API token (`[api] tokens`).
    pub token: Option<String>,
    /// A local user's name (`[api] users`), with `password`.
    pub user: Option<String>,
    pub password: Option<String>,
}

/// The caller's session (`POST` and `GET /api/v1/session`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    pub name: String,
    #[schema(value_type = String, example = "operator")]
    pub role: Role,
    /// Send it as `X-CSRF-Token` with every request other than GET and HEAD.
    pub csrf_token: String,
    /// When the session ends unless used again before (idle), or at the latest.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
}

/// One session, as an admin lists it (never its cookie nor its CSRF token).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SessionEntry {
    /// Public id, for `DELETE /api/v1/sessions/{id}`: not the cookie.
    pub id: String,
    pub name: String,
    #[schema(value_type = String, example = "viewer")]
    pub role: Role,
    /// `token` (an API token was exchanged) or `user` (a local user signed in).
    pub kind: CallerKind,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub last_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
}

impl From<&Session> for SessionInfo {
    fn from(session: &Session) -> Self {
        Self {
            name: session.caller.name.clone(),
            role: session.caller.role,
            csrf_token: session.csrf_token.clone(),
            expires_at: session.expires.into(),
        }
    }
}

impl From<Session> for SessionEntry {
    fn from(session: Session) -> Self {
        Self {
            id: session.id,
            name: session.caller.name,
            role: session.caller.role,
            kind: session.caller.kind,
            created: session.created.into(),
            last_seen: session.last_seen.into(),
            expires_at: session.expires.into(),
        }
    }
}

/// The value of the request's session cookie, if it sent one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(name, value)| (name == COOKIE && !value.is_empty()).then_some(value))
}

/// Whether a present `Origin` names the host the request was sent to (`Host`): a page of
/// another site posting here fails this, whatever cookies its browser sends.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else { return true };
    let host = headers.get(header::HOST).and_then(|host| host.to_str().ok());
    // `null` (sandboxed or privacy-sensitive contexts) has no host and never matches.
    let authority = origin.to_str().ok().and_then(|origin| origin.split_once("://")).map(|(_, authority)| authority);
    matches!((authority, host), (Some(authority), Some(host)) if authority.eq_ignore_ascii_case(host))
}

/// The checks of a request authenticated by the cookie: same origin, and the CSRF token for
/// anything but GET and HEAD.
pub fn check_cookie_request(method: &Method, headers: &HeaderMap, session: &Session) -> Result<(), ApiError> {
    if !same_origin(headers) {
        return Err(ApiError::Csrf("the Origin header does not match the host"));
    }
    if method == Method::GET || method == Method::HEAD {
        return Ok(());
    }
    match headers.get(CSRF_HEADER).map(HeaderValue::to_str) {
        None => Err(ApiError::Csrf("a request with the session cookie needs X-CSRF-Token (the session's csrf_token)")),
        Some(Ok(token)) if session.csrf_matches(token) => Ok(()),
        Some(_) => Err(ApiError::Csrf("X-CSRF-Token does not match the session")),
    }
}

/// `Set-Cookie` of a new session, or (`secret = None`) the one that deletes it.
fn set_cookie(secret: Option<&str>, max_age_secs: u64, secure: bool) -> Result<HeaderValue, ApiError> {
    let value = secret.unwrap_or("");
    let max_age = if secret.is_some() { max_age_secs } else { 0 };
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::try_from(format!("{COOKIE}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"))
        .map_err(|error| ApiError::Internal(format!("session cookie: {error}")))
}

/// The session routes, for any server state that authenticates like the API.
pub fn routes<S: Authority>() -> Router<S> {
    Router::new()
        .route("/api/v1/session", get(current).post(sign_in::<S>).delete(sign_out::<S>))
        .route("/api/v1/sessions", get(list::<S>))
        .route("/api/v1/sessions/{id}", delete(revoke::<S>))
}

/// Signs in with a token or a local user: sets the session cookie.
#[utoipa::path(
    post, path = "/api/v1/session", tag = "session",
    request_body = SignIn,
    responses(
        (status = 200, body = SessionInfo, description = "Signed in; Set-Cookie: iotgw_session=...; HttpOnly; SameSite=Strict; Path=/; Max-Age=session_max_secs (; Secure over TLS)"),
        (status = 400, body = ErrorBody, description = "Neither a token nor a user and password"),
        (status = 401, body = ErrorBody, description = "Unknown token, or wrong user name or password (one answer for both)"),
        (status = 403, body = ErrorBody, description = "The Origin header names another host (code csrf)"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
    ),
    security(())
)]
pub async fn sign_in<S: Authority>(
    State(state): State<S>,
    connection: Option<Extension<ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    if !same_origin(&headers) {
        return Err(ApiError::Csrf("the Origin header does not match the host"));
    }
    let source = state.admit(connection.map(|Extension(ConnectInfo(addr))| addr.ip()))?;
    let request: SignIn = serde_json::from_slice(&body).map_err(|error| {
        ApiError::BadRequest(format!(
            "body must be {{\"token\": ...}} or {{\"user\": ..., \"password\": ...}}: {error}"
        ))
    })?;
    let gate = state.gate();
    let caller = match request {
        SignIn { token: Some(token), user: None, password: None } => gate.tokens.authenticate(&token),
        SignIn { token: None, user: Some(user), password: Some(password) } => {
            let _permit = gate
                .verifications
                .clone()
                .acquire_owned()
                .await
                .map_err(|error| ApiError::Internal(format!("password checks: {error}")))?;
            let (users, name) = (gate.users.clone(), user.clone());
            let caller = blocking(move || Ok(users.verify(&name, &password))).await?;
            if caller.is_none() {
                tracing::warn!(user = %crate::untrusted::escape(&user), "console sign-in refused");
            }
            caller
        }
        _ => {
            return Err(ApiError::BadRequest("send either \"token\", or \"user\" and \"password\"".into()));
        }
    };
    let Some(caller) = caller else {
        state.refuse(source);
        return Err(ApiError::BadCredentials);
    };
    let (secret, session) = gate.sessions.create(caller);
    let detail = format!("session {} ({}, {})", session.id, session.caller.role, session.caller.kind.as_str());
    if let Err(error) = state.audit(session.caller.actor(), "sign_in", detail).await {
        // A sign-in the audit log does not hold must not be usable.
        state.gate().sessions.end(&session.id);
        return Err(error);
    }
    tracing::info!(actor = session.caller.actor(), session = session.id, "console sign-in");
    let gate = state.gate();
    let cookie = set_cookie(Some(&secret), gate.sessions.lifetimes().max.as_secs(), gate.secure_cookies)?;
    Ok(([(header::SET_COOKIE, cookie)], Json(SessionInfo::from(&session))).into_response())
}

/// The session of the request's cookie.
#[utoipa::path(
    get, path = "/api/v1/session", tag = "session",
    responses(
        (status = 200, body = SessionInfo, description = "Success"),
        (status = 401, body = ErrorBody, description = "No session cookie, or its session ended"),
        (status = 403, body = ErrorBody, description = "The Origin header names another host (code csrf)"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
    ),
    security(("session" = []))
)]
pub async fn current(SessionCaller(session): SessionCaller) -> Json<SessionInfo> {
    Json(SessionInfo::from(&session))
}

/// Signs out: ends the cookie's session and deletes the cookie.
#[utoipa::path(
    delete, path = "/api/v1/session", tag = "session",
    params(("X-CSRF-Token" = String, Header, description = "The session's csrf_token")),
    responses(
        (status = 204, description = "Signed out; Set-Cookie deletes iotgw_session"),
        (status = 401, body = ErrorBody, description = "No session cookie, or its session ended"),
        (status = 403, body = ErrorBody, description = "No or a wrong X-CSRF-Token, or a foreign Origin (code csrf)"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
    ),
    security(("session" = []))
)]
pub async fn sign_out<S: Authority>(
    State(state): State<S>,
    SessionCaller(session): SessionCaller,
) -> Result<Response, ApiError> {
    state.gate().sessions.end(&session.id);
    state.audit(session.caller.actor(), "sign_out", format!("session {}", session.id)).await?;
    let cookie = set_cookie(None, 0, state.gate().secure_cookies)?;
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, cookie)]).into_response())
}

/// Every live session, oldest first.
#[utoipa::path(
    get, path = "/api/v1/sessions", tag = "session",
    responses(
        (status = 200, body = Vec<SessionEntry>, description = "Success"),
        (status = 401, body = ErrorBody, description = "No token or session, or not one of ours"),
        (status = 403, body = ErrorBody, description = "The caller lacks the admin role, or a foreign Origin (code csrf)"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
    ),
    security(("bearer" = []))
)]
pub async fn list<S: Authority>(State(state): State<S>, _admin: Admin) -> Json<Vec<SessionEntry>> {
    Json(state.gate().sessions.list().into_iter().map(SessionEntry::from).collect())
}

/// Ends a session: its cookie no longer authenticates.
#[utoipa::path(
    delete, path = "/api/v1/sessions/{id}", tag = "session",
    params(("id" = String, Path, description = "The session's id from GET /api/v1/sessions")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, body = ErrorBody, description = "No token or session, or not one of ours"),
        (status = 403, body = ErrorBody, description = "The caller lacks the admin role; or, with the cookie, no or a wrong X-CSRF-Token or a foreign Origin (code csrf)"),
        (status = 404, body = ErrorBody, description = "No such session (ended or never was)"),
        (status = 429, body = ErrorBody, description = "Too many failed authentications from this address (Retry-After)"),
    ),
    security(("bearer" = []))
)]
pub async fn revoke<S: Authority>(
    State(state): State<S>,
    Admin(admin): Admin,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let session = state
        .gate()
        .sessions
        .end(&id)
        .ok_or_else(|| ApiError::UnknownSession(crate::untrusted::escape(&id).into_owned()))?;
    let detail = format!("session {} of {}", session.id, session.caller.actor());
    state.audit(admin.actor(), "session_revoked", detail).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        pairs.iter().map(|(name, value)| (name.clone(), HeaderValue::from_str(value).unwrap())).collect()
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let found = headers(&[(header::COOKIE, "a=1; iotgw_session=abc; b=2")]);
        assert_eq!(session_cookie(&found), Some("abc"));
        assert_eq!(session_cookie(&headers(&[(header::COOKIE, "iotgw_session=")])), None);
        assert_eq!(session_cookie(&headers(&[(header::COOKIE, "xiotgw_session=abc")])), None);
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn origin_must_name_the_host_when_present() {
        assert!(same_origin(&headers(&[(header::HOST, "gw:8443")])));
        assert!(same_origin(&headers(&[(header::HOST, "gw:8443"), (header::ORIGIN, "https://GW:8443")])));
        for origin in ["https://evil.example", "https://gw", "null", "gw:8443"] {
            assert!(!same_origin(&headers(&[(header::HOST, "gw:8443"), (header::ORIGIN, origin)])), "{origin}");
        }
        assert!(!same_origin(&headers(&[(header::ORIGIN, "https://gw:8443")])), "no Host to compare with");
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_under_tls() {
        let set = set_cookie(Some("s3cret"), 43_200, false).unwrap();
        assert_eq!(set, "iotgw_session=s3cret; HttpOnly; SameSite=Strict; Path=/; Max-Age=43200");
        let cleared = set_cookie(None, 43_200, true).unwrap();
        assert_eq!(cleared, "iotgw_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0; Secure");
    }
}
