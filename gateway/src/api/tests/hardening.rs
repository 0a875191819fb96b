//! The API under hostile or broken clients: throttled bad tokens, JSON errors for every
//! refusal, timeouts, connection caps, TLS.
use reqwest::StatusCode;
use serde_json::json;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_throttled_per_source_with_429_and_retry_after() {
    let fixture = Fixture::new();
    let server = start_with_soar(&fixture).await;
    let (mut unauthorized, mut throttled) = (0, 0);
    let start = std::time::Instant::now();
    for attempt in 0..200 {
        let response = get(&server, "/api/v1/status", Some(&format!("guess-{attempt}"))).await;
        match response.status() {
            StatusCode::UNAUTHORIZED => unauthorized += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                throttled += 1;
                let wait: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=2).contains(&wait), "{wait}");
                assert!(json(response).await["error"].as_str().unwrap().contains("too many"));
            }
            other => panic!("attempt {attempt}: {other}"),
        }
    }
    let elapsed = start.elapsed();
    // The burst of 10, plus one per second the loop took.
    let allowed = 10 + elapsed.as_secs() as usize + 1;
    assert!(unauthorized <= allowed, "{unauthorized} bad tokens looked at in {elapsed:?}");
    assert_eq!(unauthorized + throttled, 200);
    eprintln!("200 bad-token requests in {elapsed:?}: {unauthorized} answered 401, {throttled} answered 429");
    // The source is throttled on the SOAR route too, and even a good token waits.
    let response = soar_post(&server, json!({ "action": "tag", "device": CAMERA, "tag": "x" }), "t-1").await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(get(&server, "/api/v1/status", Some(VIEWER_TOKEN)).await.status(), StatusCode::TOO_MANY_REQUESTS);
    // After the wait, a good token is served again.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(get(&server, "/api/v1/status", Some(VIEWER_TOKEN)).await.status(), StatusCode::OK);
    server.stop().await;
}

#[tokio::test]
async fn errors_405_413_414_431_carry_the_json_error_body() {
    let fixture = Fixture::new();
    let server = Server::start(fixture.directory(), false).await;
    let check = |what: &'static str, expected: StatusCode| {
        move |response: reqwest::Response| async move {
            assert_eq!(response.status(), expected, "{what}");
            assert_eq!(response.headers()["content-type"], "application/json", "{what}");
            let body: serde_json::Value = response.json().await.unwrap();
            assert!(!body["error"].as_str().unwrap().is_empty(), "{what}: {body}");
            body
        }
    };
    let response = client().delete(format!("{}/api/v1/status", server.base)).send().await.unwrap();
    assert!(response.headers()["allow"].to_str().unwrap().contains("GET"));
    check("405", StatusCode::METHOD_NOT_ALLOWED)(response).await;
    let big = json!({ "reason": "x".repeat(MAX_BODY_BYTES) }).to_string();
    let response = post(&server, &format!("/api/v1/devices/{CAMERA}/quarantine"), OPERATOR_TOKEN, Some(&big)).await;
    check("413", StatusCode::PAYLOAD_TOO_LARGE)(response).await;
    let long = format!("/api/v1/devices/{}", "a".repeat(server::MAX_URI_BYTES));
    check("414", StatusCode::URI_TOO_LONG)(get(&server, &long, Some(VIEWER_TOKEN)).await).await;
    let response = client()
        .get(format!("{}/api/v1/status", server.base))
        .bearer_auth(VIEWER_TOKEN)
        .header("x-padding", "p".repeat(server::MAX_HEADER_BYTES))
        .send()
        .await
        .unwrap();
    check("431", StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)(response).await;
    let mut many = client().get(format!("{}/api/v1/status", server.base)).bearer_auth(VIEWER_TOKEN);
    for i in 0..=server::MAX_HEADERS {
        many = many.header(format!("x-h{i}"), "1");
    }
    check("431 (count)", StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)(many.send().await.unwrap()).await;
    assert_eq!(server.access(CAMERA), Some(Access::Enrolled));
    server.stop().await;
}

#[tokio::test]
async fn silent_and_idle_connections_are_closed() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let fixture = Fixture::new();
    let limits = server::Limits { header_read_timeout: Duration::from_millis(300), ..server::Limits::default() };
    let server = Server::start_with(fixture.directory(), false, Options { limits, ..Options::default() }).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    // Reads until the server closes; panics if it has not within `limit`.
    async fn closed_within(stream: &mut tokio::net::TcpStream, limit: Duration) -> Vec<u8> {
        let mut read = Vec::new();
        tokio::time::timeout(limit, stream.read_to_end(&mut read))
            .await
            .expect("the server closed the connection in time")
            .ok();
        read
    }
    // Sends nothing at all.
    let started = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    closed_within(&mut silent, Duration::from_secs(3)).await;
    // Sends half a head (slowloris).
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    closed_within(&mut slow, Duration::from_secs(3)).await;
    // Keeps a served connection open without a next request.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let answer = closed_within(&mut idle, Duration::from_secs(3)).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer[..answer.len().min(80)]));
    eprintln!("three connections closed by the server in {:?}", started.elapsed());
    server.stop().await;
}

#[tokio::test]
async fn one_source_cannot_hold_more_than_its_share_of_connections() {
    use tokio::io::AsyncReadExt as _;
    let fixture = Fixture::new();
    let limits = server::Limits { max_connections_per_source: 4, ..server::Limits::default() };
    let server = Server::start_with(fixture.directory(), false, Options { limits, ..Options::default() }).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    // The fifth is closed at once (well before the 10 s head timeout).
    let mut fifth = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(2), fifth.read_to_end(&mut buffer)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "the fifth connection was not closed: {read:?}");
    // The four held ones are still open.
    let mut byte = [0u8; 1];
    let still = tokio::time::timeout(Duration::from_millis(200), held[0].read(&mut byte)).await;
    assert!(still.is_err(), "a held connection was closed: {still:?}");
    // Once they are gone, the source is served again.
    drop(held);
    let mut served = false;
    for _ in 0..50 {
        // Until the server has seen the four close, a new connection may still be turned away.
        let response = client().get(format!("{}/api/v1/status", server.base)).bearer_auth(VIEWER_TOKEN).send().await;
        if response.is_ok_and(|r| r.status() == StatusCode::OK) {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served);
    server.stop().await;
}

#[test]
fn an_api_beyond_loopback_needs_tls_or_an_explicit_insecure_plaintext() {
    let path = std::path::Path::new("gateway.toml");
    let error = crate::config::parse(path, "[api]\nlisten = \"0.0.0.0:8080\"\n").unwrap_err().to_string();
    assert!(error.contains("beyond loopback") && error.contains("insecure_plaintext"), "{error}");
    let error = crate::config::parse(path, "[api]\nlisten = \"[::]:8080\"\n").unwrap_err().to_string();
    assert!(error.contains("beyond loopback"), "{error}");
    let error = crate::config::parse(path, "[api]\ntls_cert = \"/c.pem\"\n").unwrap_err().to_string();
    assert!(error.contains("tls_cert and api.tls_key must be set together"), "{error}");
    let plain = crate::config::parse(path, "[api]\nlisten = \"0.0.0.0:8080\"\ninsecure_plaintext = true\n").unwrap();
    assert!(!plain.api.tls());
    let tls = "[api]\nlisten = \"0.0.0.0:8443\"\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\n";
    assert!(crate::config::parse(path, tls).unwrap().api.tls());
}

#[tokio::test]
async fn a_request_whose_body_never_arrives_gets_408_with_the_json_error_body() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let fixture = Fixture::new();
    let limits = server::Limits { request_timeout: Duration::from_millis(300), ..server::Limits::default() };
    let server = Server::start_with(fixture.directory(), false, Options { limits, ..Options::default() }).await;
    let addr = server.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/devices/{CAMERA}/quarantine HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {OPERATOR_TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{{\"reason\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("content-type: application/json") && answer.contains("{\"error\":"), "{answer}");
    assert_eq!(server.access(CAMERA), Some(Access::Enrolled), "nothing acted");
    server.stop().await;
}
