//! Who may come in, for every server that speaks this API: the gateway's (`ApiState`) and the
//! fleet hub's (`hub::api`). A `Gate` holds the credentials of an `[api]` section (tokens,
//! local users), the console's sessions and the failure throttle; a server's state implements
//! `Authority` (its gate, where refusals are counted, where sign-ins are audited), and then
//! the extractors (`Caller`, `Operator`, `Admin`, `SessionCaller`) and the sign-in routes
//! (`signin::routes`) serve it unchanged.
use std::{future::Future, sync::Arc, time::Instant};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{HeaderMap, Method, request::Parts},
};

use super::{
    ApiError, Config, CredentialsError, TokenSet, UserSet,
    auth::{self, Caller, Role},
    session::{self, Session},
    signin, throttle,
};

/// The credentials, sessions and throttle of one server. Cheap to clone.
#[derive(Clone)]
pub struct Gate {
    pub(super) tokens: Arc<TokenSet>,
    pub(super) users: Arc<UserSet>,
    pub(super) sessions: Arc<session::SessionStore>,
    /// Whether the session cookie is `Secure` (the API is served over TLS).
    pub(super) secure_cookies: bool,
    /// Bounds the password checks running at once (`signin::MAX_CONCURRENT_VERIFICATIONS`).
    pub(super) verifications: Arc<tokio::sync::Semaphore>,
    pub(super) failures: Arc<throttle::FailureLimiter>,
}

impl Gate {
    /// Loads the tokens and users (and their files) named in `config`; no one is signed in.
    pub fn new(config: &Config) -> Result<Self, CredentialsError> {
        let tokens = TokenSet::load(config)?;
        let users = UserSet::load(config)?;
        if tokens.is_empty() && users.is_empty() {
            tracing::warn!(
                "no API tokens nor users configured ([api] tokens, tokens_file, users, users_file): every API request will get 401"
            );
        }
        Ok(Self {
            tokens: Arc::new(tokens),
            users: Arc::new(users),
            sessions: Arc::new(session::SessionStore::new(config.session_lifetimes())),
            secure_cookies: config.tls(),
            verifications: Arc::new(tokio::sync::Semaphore::new(signin::MAX_CONCURRENT_VERIFICATIONS)),
            failures: Arc::default(),
        })
    }

    /// Keeps the console's sessions in `sessions` (tests give it a clock of their own).
    pub fn with_sessions(mut self, sessions: session::SessionStore) -> Self {
        self.sessions = Arc::new(sessions);
        self
    }

    /// Throttles failed authentications with `failures` (shared with routers beside the API).
    pub fn with_failure_limiter(mut self, failures: Arc<throttle::FailureLimiter>) -> Self {
        self.failures = failures;
        self
    }

    pub fn failure_limiter(&self) -> Arc<throttle::FailureLimiter> {
        self.failures.clone()
    }
}

/// A server state the API's authentication serves.
pub trait Authority: Clone + Send + Sync + 'static {
    fn gate(&self) -> &Gate;

    /// Counts a refused authentication in the server's metrics.
    fn count_auth_failure(&self);

    /// Records `action` by `actor` in the server's audit log (sign-in, sign-out, revocation).
    fn audit(
        &self,
        actor: String,
        action: &'static str,
        detail: String,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// The caller of a request: its bearer token, or else its session cookie (`signin`: other
    /// requests than GET and HEAD then need the session's CSRF token, and a present `Origin`
    /// must be this host). Counts refusals. A `source` that failed too often lately is refused
    /// before its credentials are looked at (`throttle`).
    fn authenticate(
        &self,
        method: &Method,
        headers: &HeaderMap,
        source: Option<std::net::IpAddr>,
    ) -> Result<Caller, ApiError> {
        self.authenticate_session(method, headers, source).map(|(caller, _)| caller)
    }

    /// `authenticate`, with the session when the cookie authenticated the request.
    fn authenticate_session(
        &self,
        method: &Method,
        headers: &HeaderMap,
        source: Option<std::net::IpAddr>,
    ) -> Result<(Caller, Option<Session>), ApiError> {
        let source = self.admit(source)?;
        let authorization = headers.get(axum::http::header::AUTHORIZATION).map(|value| value.to_str());
        if authorization.is_none()
            && let Some(secret) = signin::session_cookie(headers)
        {
            // An ended session is not counted as a failure: a console left open past its
            // session would otherwise get its user's address throttled. Guessing a 256-bit
            // secret needs no throttle to fail.
            let session = self.gate().sessions.touch(secret).ok_or(ApiError::NoSession)?;
            signin::check_cookie_request(method, headers, &session)?;
            return Ok((session.caller.clone(), Some(session)));
        }
        let result = match authorization {
            None => Err(ApiError::MissingToken),
            Some(Err(_)) => Err(ApiError::InvalidToken),
            Some(Ok(value)) => auth::bearer_token(value)
                .ok_or(ApiError::MissingToken)
                .and_then(|token| self.gate().tokens.authenticate(token).ok_or(ApiError::InvalidToken)),
        };
        if result.is_err() {
            self.refuse(source);
        }
        result.map(|caller| (caller, None))
    }

    /// The throttle's source of a request from `peer`, unless it failed too often lately.
    fn admit(&self, peer: Option<std::net::IpAddr>) -> Result<throttle::Source, ApiError> {
        let source = throttle::Source::of(peer.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into()));
        if let Some(retry_after) = self.gate().failures.retry_after(source, Instant::now()) {
            self.count_auth_failure();
            return Err(ApiError::Throttled { retry_after });
        }
        Ok(source)
    }

    /// Counts a failed authentication of `source`.
    fn refuse(&self, source: throttle::Source) {
        self.count_auth_failure();
        self.gate().failures.failed(source, Instant::now());
    }
}

/// The address of the request's peer (set by `server`; absent when a router is called
/// without a connection, as in-process tests do).
pub fn peer(parts: &Parts) -> Option<std::net::IpAddr> {
    parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>().map(|ConnectInfo(addr)| addr.ip())
}

/// `caller`, if their role is `needed` or above.
pub fn require(caller: Caller, needed: Role) -> Result<Caller, ApiError> {
    if caller.role < needed {
        return Err(ApiError::Forbidden { name: caller.name, has: caller.role, needed });
    }
    Ok(caller)
}

impl<S: Authority> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        state.authenticate(&parts.method, &parts.headers, peer(parts))
    }
}

/// A caller holding the operator role.
pub struct Operator(pub Caller);

impl<S: Authority> FromRequestParts<S> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = state.authenticate(&parts.method, &parts.headers, peer(parts))?;
        Ok(Operator(require(caller, Role::Operator)?))
    }
}

/// A caller holding the admin role.
pub struct Admin(pub Caller);

impl<S: Authority> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = state.authenticate(&parts.method, &parts.headers, peer(parts))?;
        Ok(Admin(require(caller, Role::Admin)?))
    }
}

/// The caller of a request that carries the session cookie, with its session.
pub struct SessionCaller(pub Session);

impl<S: Authority> FromRequestParts<S> for SessionCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let (_, session) = state.authenticate_session(&parts.method, &parts.headers, peer(parts))?;
        session.map(SessionCaller).ok_or(ApiError::NoSession)
    }
}
