//! Console sign-in over real HTTP: tokens and local users exchanged for a session cookie, the
//! cookie's attributes, CSRF and Origin checks, expiry, sign-out, the admin's session list and
//! revocation, and the audit entries of each.
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::*;
use crate::api::session::ManualClock;

/// A signed-in console: its cookie header value and CSRF token.
struct Console {
    cookie: String,
    csrf: String,
    body: Value,
}

async fn sign_in_response(base: &str, client: &reqwest::Client, body: Value) -> reqwest::Response {
    client
        .post(format!("{base}/api/v1/session"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

fn set_cookie(response: &reqwest::Response) -> String {
    response.headers()["set-cookie"].to_str().unwrap().to_owned()
}

async fn sign_in(server: &Server, body: Value) -> Console {
    let response = sign_in_response(&server.base, &client(), body.clone()).await;
    assert_eq!(response.status(), StatusCode::OK, "{body}");
    let cookie = set_cookie(&response).split(';').next().unwrap().to_owned();
    let body = json(response).await;
    Console { cookie, csrf: body["csrf_token"].as_str().unwrap().to_owned(), body }
}

/// A request with `console`'s cookie, an optional CSRF token and an optional Origin.
async fn with_cookie(
    server: &Server,
    method: Method,
    path: &str,
    console: &Console,
    csrf: Option<&str>,
    origin: Option<&str>,
) -> reqwest::Response {
    let mut request = client().request(method, format!("{}{path}", server.base)).header("cookie", &console.cookie);
    if let Some(csrf) = csrf {
        request = request.header("x-csrf-token", csrf);
    }
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.send().await.unwrap()
}

fn is_rfc3339(time: &Value) -> bool {
    time.as_str()
        .is_some_and(|text| time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok())
}

async fn status(server: &Server, console: &Console) -> StatusCode {
    with_cookie(server, Method::GET, "/api/v1/status", console, None, None).await.status()
}

/// `(actor, action, detail)` of the audit entries about no device, oldest first.
fn session_audit(fixture: &Fixture) -> Vec<(String, String, String)> {
    let conn = crate::schema::open(&fixture.dir.0.join("iotgw.db")).unwrap();
    let mut statement =
        conn.prepare("SELECT actor, action, detail FROM inventory_audit WHERE mac IS NULL ORDER BY id").unwrap();
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

#[tokio::test]
async fn a_token_or_a_local_user_signs_in_for_a_strict_http_only_cookie() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    let response = sign_in_response(&server.base, &client(), json!({ "token": OPERATOR_TOKEN })).await;
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = set_cookie(&response);
    let attributes: Vec<&str> = cookie.split("; ").collect();
    assert!(attributes[0].starts_with("iotgw_session=") && attributes[0].len() == "iotgw_session=".len() + 43);
    assert_eq!(attributes[1..], ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"], "{cookie}");
    let token_session = json(response).await;
    assert_eq!((token_session["name"].as_str(), token_session["role"].as_str()), (Some("otto"), Some("operator")));
    assert_eq!(token_session["csrf_token"].as_str().unwrap().len(), 43);
    assert!(!cookie.contains(token_session["csrf_token"].as_str().unwrap()));
    assert!(is_rfc3339(&token_session["expires_at"]));

    let console = sign_in(&server, json!({ "user": "vic", "password": PASSWORD })).await;
    assert_eq!((console.body["name"].as_str(), console.body["role"].as_str()), (Some("vic"), Some("viewer")));
    // The cookie alone authenticates reads, and shows its session.
    let response = with_cookie(&server, Method::GET, "/api/v1/status", &console, None, None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(response).await["devices"]["enrolled"], 1);
    let response = with_cookie(&server, Method::GET, "/api/v1/session", &console, None, Some(&server.base)).await;
    let shown = json(response).await;
    for field in ["name", "role", "csrf_token"] {
        assert_eq!(shown[field], console.body[field], "{field}");
    }
    assert!(is_rfc3339(&shown["expires_at"]));
    // Without the cookie there is no session to show, even with a token.
    let response = get(&server, "/api/v1/session", Some(VIEWER_TOKEN)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let audit = session_audit(&fixture);
    let actions: Vec<(&str, &str)> = audit.iter().map(|(actor, action, _)| (actor.as_str(), action.as_str())).collect();
    assert_eq!(actions, [("api:otto", "sign_in"), ("user:vic", "sign_in")]);
    assert!(audit[1].2.contains("viewer") && audit[1].2.contains("user"), "{audit:?}");
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_user_and_a_wrong_password_get_the_same_401_and_no_cookie() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    let mut bodies = Vec::new();
    for body in [
        json!({ "user": "vic", "password": "wrong" }),
        json!({ "user": "mallory", "password": PASSWORD }),
        json!({ "token": "not-a-token" }),
    ] {
        let response = sign_in_response(&server.base, &client(), body.clone()).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{body}");
        assert!(!response.headers().contains_key("set-cookie"), "{body}");
        bodies.push(response.text().await.unwrap());
    }
    assert_eq!(bodies[0], bodies[1], "the answer does not tell which names exist");
    assert_eq!(bodies[0], bodies[2]);
    for malformed in [json!({}), json!({ "user": "vic" }), json!({ "token": "t", "user": "vic", "password": "p" })] {
        let response = sign_in_response(&server.base, &client(), malformed.clone()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{malformed}");
    }
    assert!(session_audit(&fixture).is_empty(), "refused sign-ins are not signed in");
    server.stop().await;
}

#[tokio::test]
async fn bad_sign_ins_are_throttled_like_bad_tokens() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    let mut statuses = Vec::new();
    for attempt in 0..12 {
        let body = json!({ "user": "opal", "password": format!("guess-{attempt}") });
        statuses.push(sign_in_response(&server.base, &client(), body).await.status());
    }
    assert_eq!(statuses[..10], [StatusCode::UNAUTHORIZED; 10]);
    assert_eq!(statuses[10..], [StatusCode::TOO_MANY_REQUESTS; 2]);
    // The right password waits too, and so do bearer tokens from that address.
    let response = sign_in_response(&server.base, &client(), json!({ "user": "opal", "password": PASSWORD })).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(get(&server, "/api/v1/status", Some(VIEWER_TOKEN)).await.status(), StatusCode::TOO_MANY_REQUESTS);
    server.stop().await;
}

#[tokio::test]
async fn a_cookie_request_that_changes_something_needs_the_csrf_token_and_the_same_origin() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    let console = sign_in(&server, json!({ "user": "opal", "password": PASSWORD })).await;
    let quarantine = format!("/api/v1/devices/{CAMERA}/quarantine");
    let refusals = [
        (None, None, "no token"),
        (Some("wrong-token"), None, "a wrong token"),
        (Some(&console.csrf[..42]), None, "a truncated token"),
        (Some(console.csrf.as_str()), Some("http://evil.example"), "a foreign Origin"),
        (Some(console.csrf.as_str()), Some("null"), "an opaque Origin"),
    ];
    for (csrf, origin, what) in refusals {
        let response = with_cookie(&server, Method::POST, &quarantine, &console, csrf, origin).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{what}");
        let body = json(response).await;
        assert_eq!(body["code"], "csrf", "{what}: {body}");
    }
    assert_eq!(server.access(CAMERA), Some(Access::Enrolled), "nothing acted");
    // A foreign page cannot even read with the cookie.
    let response =
        with_cookie(&server, Method::GET, "/api/v1/devices", &console, None, Some("https://evil.example")).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // The console's own request acts, audited as the user.
    let response =
        with_cookie(&server, Method::POST, &quarantine, &console, Some(&console.csrf), Some(&server.base)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(json(response).await["actor"], "user:opal");
    assert_eq!(server.access(CAMERA), Some(Access::Quarantined));
    assert_eq!(fixture.access_audit(CAMERA).last().unwrap().0, "user:opal");
    // Bearer requests need no CSRF token.
    assert_eq!(
        post(&server, &format!("/api/v1/devices/{CAMERA}/release"), OPERATOR_TOKEN, None).await.status(),
        StatusCode::OK
    );
    // A sign-in posted from another site is refused before credentials are looked at.
    let response = client()
        .post(format!("{}/api/v1/session", server.base))
        .header("origin", "https://evil.example")
        .body(json!({ "token": OPERATOR_TOKEN }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    server.stop().await;
}

#[tokio::test]
async fn a_viewer_session_cannot_quarantine() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    let console = sign_in(&server, json!({ "user": "vic", "password": PASSWORD })).await;
    let quarantine = format!("/api/v1/devices/{CAMERA}/quarantine");
    let response = with_cookie(&server, Method::POST, &quarantine, &console, Some(&console.csrf), None).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body = json(response).await;
    assert!(body["code"].is_null() && body["error"].as_str().unwrap().contains("operator"), "{body}");
    assert_eq!(server.access(CAMERA), Some(Access::Enrolled));
    server.stop().await;
}

#[tokio::test]
async fn sessions_end_when_idle_and_at_their_absolute_limit() {
    let fixture = Fixture::new();
    let clock = ManualClock::new();
    let options = Options { session_clock: Some(clock.clock()), ..Options::default() };
    let server = Server::start_with(fixture.directory(), false, options).await;
    let idle = sign_in(&server, json!({ "user": "vic", "password": PASSWORD })).await;
    let busy = sign_in(&server, json!({ "token": VIEWER_TOKEN })).await;
    // Used every 1,700 s (under the 1,800 s idle limit) until the 43,200 s absolute limit.
    for _ in 0..25 {
        clock.advance(Duration::from_secs(1_700));
        assert_eq!(status(&server, &busy).await, StatusCode::OK);
    }
    assert_eq!(status(&server, &idle).await, StatusCode::UNAUTHORIZED, "idle for 42,500 s");
    clock.advance(Duration::from_secs(699));
    assert_eq!(status(&server, &busy).await, StatusCode::OK, "43,199 s after sign-in");
    clock.advance(Duration::from_secs(1));
    let response = with_cookie(&server, Method::GET, "/api/v1/status", &busy, None, None).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "43,200 s after sign-in, though used a second ago");
    assert!(json(response).await["error"].as_str().unwrap().contains("sign in"));
    // An ended session is no failed authentication: the address is not throttled for it.
    for _ in 0..20 {
        assert_eq!(status(&server, &busy).await, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(get(&server, "/api/v1/status", Some(VIEWER_TOKEN)).await.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn sign_out_needs_the_csrf_token_ends_the_session_and_clears_the_cookie() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    let console = sign_in(&server, json!({ "user": "opal", "password": PASSWORD })).await;
    let response = with_cookie(&server, Method::DELETE, "/api/v1/session", &console, None, None).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(json(response).await["code"], "csrf");
    let response = with_cookie(&server, Method::DELETE, "/api/v1/session", &console, Some(&console.csrf), None).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(set_cookie(&response), "iotgw_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    for path in ["/api/v1/status", "/api/v1/session"] {
        let response = with_cookie(&server, Method::GET, path, &console, None, None).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let actions: Vec<String> =
        session_audit(&fixture).into_iter().map(|(actor, action, _)| format!("{actor} {action}")).collect();
    assert_eq!(actions, ["user:opal sign_in", "user:opal sign_out"]);
    server.stop().await;
}

#[tokio::test]
async fn an_admin_lists_and_revokes_sessions_and_an_operator_cannot() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    let admin = sign_in(&server, json!({ "user": "ada", "password": PASSWORD })).await;
    let viewer = sign_in(&server, json!({ "user": "vic", "password": PASSWORD })).await;
    let exchanged = sign_in(&server, json!({ "token": ADMIN_TOKEN })).await;
    assert_eq!(exchanged.body["role"], "admin", "tokens may be admin");

    let response = get(&server, "/api/v1/sessions", Some(ADMIN_TOKEN)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let list = json(response).await;
    let list = list.as_array().unwrap();
    let names: Vec<(&str, &str, &str)> = list
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["role"].as_str().unwrap(), s["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("ada", "admin", "user"), ("vic", "viewer", "user"), ("root", "admin", "token")]);
    for (entry, console) in list.iter().zip([&admin, &viewer, &exchanged]) {
        let id = entry["id"].as_str().unwrap();
        assert_eq!(id.len(), 16);
        assert!(!console.cookie.contains(id), "the id is not the cookie");
        assert!(entry.get("csrf_token").is_none());
        for time in ["created", "last_seen", "expires_at"] {
            assert!(is_rfc3339(&entry[time]), "{time}");
        }
    }
    let viewer_id = list[1]["id"].as_str().unwrap().to_owned();

    // Operators and viewers neither list nor revoke.
    assert_eq!(get(&server, "/api/v1/sessions", Some(OPERATOR_TOKEN)).await.status(), StatusCode::FORBIDDEN);
    let response = with_cookie(&server, Method::GET, "/api/v1/sessions", &viewer, None, None).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let revoke = format!("{}/api/v1/sessions/{viewer_id}", server.base);
    let response = client().delete(&revoke).bearer_auth(OPERATOR_TOKEN).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(with_cookie(&server, Method::GET, "/api/v1/status", &viewer, None, None).await.status(), StatusCode::OK);

    // The admin's console revokes (with its CSRF token), and the viewer's cookie is worthless.
    let path = format!("/api/v1/sessions/{viewer_id}");
    assert_eq!(with_cookie(&server, Method::DELETE, &path, &admin, None, None).await.status(), StatusCode::FORBIDDEN);
    let response = with_cookie(&server, Method::DELETE, &path, &admin, Some(&admin.csrf), None).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        with_cookie(&server, Method::GET, "/api/v1/status", &viewer, None, None).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let response = client().delete(&revoke).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(json(get(&server, "/api/v1/sessions", Some(ADMIN_TOKEN)).await).await.as_array().unwrap().len(), 2);

    let audit = session_audit(&fixture);
    let (actor, action, detail) = audit.last().unwrap();
    assert_eq!((actor.as_str(), action.as_str()), ("user:ada", "session_revoked"));
    assert!(detail.contains(&viewer_id) && detail.contains("user:vic"), "{detail}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cookie_is_secure_when_the_api_is_served_over_tls() {
    let fixture = Fixture::new();
    let server = TlsServer::start(&fixture).await;
    let base = format!("https://{}", server.addr);
    let response = sign_in_response(&base, &server.client(), json!({ "user": "vic", "password": PASSWORD })).await;
    assert_eq!(response.status(), StatusCode::OK);
    let cookie = set_cookie(&response);
    assert!(cookie.ends_with("; HttpOnly; SameSite=Strict; Path=/; Max-Age=43200; Secure"), "{cookie}");
    server.stop().await;
}

#[test]
fn users_with_a_bad_hash_or_a_name_used_twice_are_refused_with_their_place() {
    let path = std::path::Path::new("gateway.toml");
    let hash = users::cheap_hash(PASSWORD);
    let user = |name: &str| {
        format!("  {{ name = \"{name}\", role = \"viewer\", password_argon2 = \"{}\" }},\n", hash.as_str())
    };
    let bad_hash = "[api]\nusers = [\n  { name = \"a\", role = \"admin\", password_argon2 = \"hunter2\" },\n]\n";
    let error = crate::config::parse(path, bad_hash).unwrap_err().to_string();
    assert!(error.starts_with("gateway.toml:3:") && error.contains("argon2id PHC string"), "{error}");
    let twice = format!("[api]\nusers = [\n{}{}]\nsession_idle_secs = 0\n", user("vic"), user("vic"));
    let error = crate::config::parse(path, &twice).unwrap_err().to_string();
    assert!(error.contains("\"vic\" is used twice") && error.contains("session_idle_secs"), "every problem: {error}");
    let error = crate::config::parse(path, "[api]\nsession_max_secs = 9223372036854775807\n").unwrap_err();
    assert!(error.to_string().contains("between 1 and 2592000"), "{error}");
    let error = crate::config::parse(path, "[api]\nsession_idle_secs = 50000\n").unwrap_err();
    assert!(error.to_string().contains("longer than api.session_max_secs = 43200"), "{error}");
    let config = crate::config::parse(path, &format!("[api]\nusers = [\n{}]\n", user("vic"))).unwrap();
    assert_eq!(config.api.session_lifetimes(), crate::api::session::Lifetimes::default());

    // The users file: its own errors with their place, and its names against the config's.
    let dir = TempDir::new();
    let file = dir.0.join("users.toml");
    let api = crate::api::Config { users_file: Some(file.clone()), ..config.api };
    std::fs::write(&file, "[[users]]\nname = \"opal\"\nrole = \"operator\"\npassword_argon2 = \"$2b$10$x\"\n").unwrap();
    let error = UserSet::load(&api).unwrap_err().to_string();
    assert!(error.contains("users.toml:4:") && error.contains("argon2id"), "{error}");
    std::fs::write(
        &file,
        format!("[[users]]\nname = \"vic\"\nrole = \"admin\"\npassword_argon2 = \"{}\"\n", hash.as_str()),
    )
    .unwrap();
    assert!(UserSet::load(&api).unwrap_err().to_string().contains("used twice"));
    std::fs::write(
        &file,
        format!("[[users]]\nname = \"opal\"\nrole = \"admin\"\npassword_argon2 = \"{}\"\n", hash.as_str()),
    )
    .unwrap();
    let users = UserSet::load(&api).unwrap();
    assert_eq!(users.verify("opal", PASSWORD).map(|c| c.role), Some(Role::Admin));
}
