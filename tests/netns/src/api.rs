//! A client for the controller's local API, which listens on loopback inside the lab's
//! gateway namespace: each request connects from a thread that entered that namespace (a
//! socket keeps the namespace it was made in), then speaks one HTTP/1.1 exchange over it. The
//! same client speaks to the fleet hub, which listens on the host's loopback (`on_host`).
use std::{
    fs::File,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

/// Where `iotgw run` listens by default (`api::DEFAULT_LISTEN`), inside the gateway namespace.
pub const API_ADDR: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);
/// How long to wait for the API to start listening after the datapath is configured.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long one exchange may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The status and body of one response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("response is not JSON ({e}): {}", self.body))
    }
}

/// The API of the controller in namespace `ns` (or of a server on the host), called with
/// `token` (None: no header).
pub struct ApiClient {
    /// `None`: the host's own namespace.
    ns: Option<String>,
    addr: SocketAddr,
}

impl ApiClient {
    pub fn new(ns: &str) -> ApiClient {
        ApiClient { ns: Some(ns.to_owned()), addr: API_ADDR }
    }

    /// The API listening on `addr` in the host's namespace (the fleet hub).
    pub fn on_host(addr: SocketAddr) -> ApiClient {
        ApiClient { ns: None, addr }
    }

    /// Connects to the API (from inside the namespace when it has one), retrying until it
    /// listens.
    fn connect(&self) -> TcpStream {
        let (ns, addr) = (self.ns.clone(), self.addr);
        std::thread::spawn(move || {
            if let Some(ns) = &ns {
                let handle = File::open(crate::lab::Lab::ns_path(ns)).unwrap_or_else(|e| panic!("netns {ns}: {e}"));
                nix::sched::setns(handle, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            }
            let deadline = Instant::now() + CONNECT_TIMEOUT;
            loop {
                match TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
                    Ok(stream) => return stream,
                    Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
                    Err(e) => panic!("API at {addr} ({ns:?}) not reachable within {CONNECT_TIMEOUT:?}: {e}"),
                }
            }
        })
        .join()
        .expect("connect thread")
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Response {
        self.request("GET", path, token, None)
    }

    /// A connection kept open for many requests (`KeptAlive`).
    pub fn keep_alive(&self) -> KeptAlive {
        let stream = self.connect();
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("write timeout");
        stream.set_nodelay(true).expect("no delay");
        KeptAlive { stream, addr: self.addr, pending: Vec::new() }
    }

    pub fn post(&self, path: &str, token: Option<&str>, json_body: &str) -> Response {
        self.request("POST", path, token, Some(json_body))
    }

    /// One request on a fresh connection (`Connection: close`, so the body ends at EOF).
    pub fn request(&self, method: &str, path: &str, token: Option<&str>, json_body: Option<&str>) -> Response {
        let authorization = token.map(|token| format!("Bearer {token}"));
        let headers: Vec<(&str, &str)> = authorization.iter().map(|value| ("Authorization", value.as_str())).collect();
        self.request_with(method, path, &headers, json_body)
    }

    /// `request` with any headers (a session cookie, a CSRF token, an `Origin`).
    pub fn request_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        json_body: Option<&str>,
    ) -> Response {
        let mut stream = self.connect();
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("read timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("write timeout");
        let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", self.addr);
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        let body = json_body.unwrap_or("");
        if json_body.is_some() {
            request.push_str("Content-Type: application/json\r\n");
        }
        request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
        stream.write_all(request.as_bytes()).expect("sending the request");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).unwrap_or_else(|e| panic!("{method} {path}: reading the response: {e}"));
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) =
            text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{method} {path}: no header end in {text:?}"));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("{method} {path}: no status in {head:?}"));
        let chunked = head.lines().any(|line| {
            let line = line.to_ascii_lowercase();
            line.starts_with("transfer-encoding:") && line.contains("chunked")
        });
        let body = if chunked { dechunk(body) } else { body.to_owned() };
        Response { status, body }
    }
}

/// One kept-alive HTTP/1.1 connection to the API, as a client that makes many requests uses
/// it: connected once (from inside the namespace), then each request written on it and its
/// response read to its `Content-Length`.
pub struct KeptAlive {
    stream: TcpStream,
    addr: SocketAddr,
    /// Bytes read past the previous response (none with one request in flight at a time, but
    /// kept rather than lost).
    pending: Vec<u8>,
}

impl KeptAlive {
    /// `GET path` on this connection.
    pub fn get(&mut self, path: &str, token: Option<&str>) -> Response {
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n", self.addr);
        if let Some(token) = token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        request.push_str("\r\n");
        self.stream.write_all(request.as_bytes()).expect("sending the request");
        let head_end = loop {
            if let Some(end) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            self.fill(path);
        };
        let head = String::from_utf8_lossy(&self.pending[..head_end]).into_owned();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("GET {path}: no status in {head:?}"));
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("GET {path}: no Content-Length on a kept-alive response: {head:?}"));
        while self.pending.len() < head_end + length {
            self.fill(path);
        }
        let body = String::from_utf8_lossy(&self.pending[head_end..head_end + length]).into_owned();
        self.pending.drain(..head_end + length);
        Response { status, body }
    }

    fn fill(&mut self, path: &str) {
        let mut buffer = [0u8; 16 * 1024];
        let read = self.stream.read(&mut buffer).unwrap_or_else(|e| panic!("GET {path}: reading the response: {e}"));
        assert!(read > 0, "GET {path}: the API closed the kept-alive connection");
        self.pending.extend_from_slice(&buffer[..read]);
    }
}

/// Joins a chunked body (`size CRLF data CRLF ... 0 CRLF CRLF`).
fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size in {rest:?}"));
        if size == 0 {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    body
}

/// A token's entry for `[api] tokens`: the config holds only its SHA-256.
pub fn token_entry(name: &str, role: &str, token: &str) -> String {
    let hash: String = iotgw::api::auth::TokenHash::of(token).0.iter().map(|b| format!("{b:02x}")).collect();
    format!("{{ name = \"{name}\", role = \"{role}\", token_sha256 = \"{hash}\" }}")
}

/// The value of the sample `name` (without labels) in a `/metrics` scrape, if there is one.
pub fn metric(scrape: &str, name: &str) -> Option<f64> {
    scrape.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
