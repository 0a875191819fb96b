//! Shared fixtures of the integrations tests: a private rsyslogd per test (Debian's rsyslog,
//! its own config, ports and output file), a test CA, free loopback ports, bounded waits.
#![allow(dead_code, reason = "each test file uses a different subset")]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use iotgw::{
    device::Mac,
    event::{EventKind, GatewayEvent, Severity},
    integrations::{
        self,
        config::{AggregationConfig, SinkConfig},
    },
};

pub const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

/// True when rsyslogd is installed; a test that needs it fails when it is not (a skipped test
/// never ran). Always true when it returns.
pub fn rsyslog_available(test: &str) -> bool {
    assert!(
        Path::new(RSYSLOGD).exists(),
        "{test}: {RSYSLOGD} is missing; Debian's rsyslog and rsyslog-gnutls (installed by `cargo xtask setup`)"
    );
    true
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("iotgw-it-{name}-{}-{}", std::process::id(), rand_suffix()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("IOTGW_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish() as u32
}

/// A loopback TCP port free right now.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `check` every 50 ms until it returns Some or `limit` passes.
pub async fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    iotgw_test_support::wait::until_async(what, limit, async || check()).await
}

/// How long the integrations may take to stop once shutdown is triggered (delivery attempts
/// are cut short by their own timeouts).
pub const STOP_WAIT: Duration = Duration::from_secs(30);

/// Waits for the integrations to stop after shutdown was triggered, bounded: a task that
/// ignored shutdown fails the test instead of hanging it.
pub async fn joined(handle: iotgw::integrations::Integrations) {
    iotgw_test_support::wait::within("the integrations' tasks to stop at shutdown", STOP_WAIT, handle.join()).await;
}

/// A CA and a server certificate for 127.0.0.1/localhost, as PEM files in `dir`.
pub struct TestPki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn test_pki(dir: &Path, prefix: &str) -> TestPki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, format!("{prefix} test CA"));
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let pki = TestPki {
        ca: dir.join(format!("{prefix}-ca.pem")),
        cert: dir.join(format!("{prefix}-cert.pem")),
        key: dir.join(format!("{prefix}-key.pem")),
    };
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

/// What a private rsyslogd listens on.
pub enum Listen {
    Udp(u16),
    Tcp(u16),
    /// TLS (RFC 5425) with this server certificate.
    Tls(u16, TestPki),
}

/// A private rsyslogd writing every message it parsed as one JSON object per line: its own
/// RFC 5424 fields, the structured data as parsed by mmpstrucdata, and CEF as parsed by
/// mmnormalize (liblognorm's `cef` parser).
pub struct Rsyslog {
    dir: PathBuf,
    conf: PathBuf,
    pub output: PathBuf,
    child: Option<Child>,
    tcp_probe: Option<u16>,
}

impl Rsyslog {
    pub fn start(dir: &Path, name: &str, listen: &[Listen]) -> Self {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let output = dir.join("parsed.jsonl");
        let rulebase = dir.join("cef.rb");
        std::fs::write(&rulebase, "version=2\nrule=:%cef:cef%\n").unwrap();
        let mut conf = format!(
            "global(workDirectory=\"{dir}\" parser.escapeControlCharactersOnReceive=\"off\"{tls_global})\n\
             module(load=\"mmpstrucdata\")\nmodule(load=\"mmnormalize\")\n",
            dir = dir.display(),
            tls_global = listen
                .iter()
                .find_map(|l| match l {
                    Listen::Tls(_, pki) => Some(format!(
                        " defaultNetstreamDriver=\"gtls\" defaultNetstreamDriverCAFile=\"{}\" \
                         defaultNetstreamDriverCertFile=\"{}\" defaultNetstreamDriverKeyFile=\"{}\"",
                        pki.ca.display(),
                        pki.cert.display(),
                        pki.key.display()
                    )),
                    _ => None,
                })
                .unwrap_or_default(),
        );
        let mut tcp_probe = None;
        let mut tcp_module = false;
        for l in listen {
            match l {
                Listen::Udp(port) => conf.push_str(&format!(
                    "module(load=\"imudp\")\ninput(type=\"imudp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"main\")\n"
                )),
                Listen::Tcp(port) => {
                    if !tcp_module {
                        conf.push_str("module(load=\"imtcp\")\n");
                        tcp_module = true;
                    }
                    tcp_probe = Some(*port);
                    conf.push_str(&format!("input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"main\")\n"));
                }
                Listen::Tls(port, _) => {
                    conf.push_str(
                        "module(load=\"imtcp\" streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=\"anon\")\n",
                    );
                    tcp_probe = Some(*port);
                    conf.push_str(&format!("input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"main\")\n"));
                }
            }
        }
        conf.push_str(&format!(
            r#"template(name="parsed" type="string" string="%$!%\n")
template(name="ts" type="string" string="%timereported:::date-rfc3339%")
ruleset(name="main") {{
  set $!input = $inputname;
  set $!pri = $pri;
  set $!version = $protocol-version;
  set $!timestamp = exec_template("ts");
  set $!hostname = $hostname;
  set $!app_name = $app-name;
  set $!procid = $procid;
  set $!msgid = $msgid;
  set $!structured_data = $structured-data;
  set $!msg = $msg;
  action(type="mmpstrucdata")
  if $msg startswith "CEF:0|" then {{ action(type="mmnormalize" rulebase="{rulebase}") }}
  action(type="omfile" file="{output}" template="parsed")
}}
"#,
            rulebase = rulebase.display(),
            output = output.display()
        ));
        let conf_path = dir.join("rsyslog.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut rsyslog = Self { dir, conf: conf_path, output, child: None, tcp_probe };
        rsyslog.run();
        rsyslog
    }

    /// Starts (or restarts) the daemon with the same config, ports and output file.
    pub fn run(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new(RSYSLOGD)
            .arg("-n")
            .arg("-f")
            .arg(&self.conf)
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start rsyslogd");
        self.child = Some(child);
        // Ready once the TCP/TLS listener accepts; UDP-only instances get a fixed grace.
        let start = Instant::now();
        match self.tcp_probe {
            Some(port) => loop {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break;
                }
                assert!(start.elapsed() < Duration::from_secs(10), "rsyslogd did not listen on {port}");
                std::thread::sleep(Duration::from_millis(50));
            },
            None => std::thread::sleep(Duration::from_millis(500)),
        }
    }

    /// Stops the daemon (SIGTERM, then waits).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Every parsed message written so far.
    pub fn parsed(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.output)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("rsyslog output {line:?}: {e}")))
            .collect()
    }

    pub async fn wait_parsed(&self, count: usize, limit: Duration) -> Vec<serde_json::Value> {
        wait_for(&format!("{count} messages in {}", self.output.display()), limit, || {
            let parsed = self.parsed();
            (parsed.len() >= count).then_some(parsed)
        })
        .await
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.stop();
    }
}

pub const DEVICE: Mac = Mac([0x02, 0x00, 0x00, 0x00, 0x00, 0x01]);

/// An alert with every character a format must escape.
pub fn nasty_alert(incident: &str, resolved: bool, severity: Severity) -> GatewayEvent {
    let mut event = GatewayEvent::new(
        severity,
        Some(DEVICE),
        "detector:scan",
        EventKind::Alert {
            incident_id: incident.into(),
            detector: "scan".into(),
            score: 0.93,
            expected: "2 peers | \"cloud\" \\ [x]".into(),
            observed: "40 peers = a]b\\c\nnext | é".into(),
            flows: vec!["tcp 10.0.0.5:4000 -> 10.0.0.9:22".into()],
            resolved,
        },
    );
    event.device_ip = Some("10.0.0.5".parse().unwrap());
    event
}

/// Numbered audit events, to check order.
pub fn numbered(n: usize) -> GatewayEvent {
    GatewayEvent::new(
        Severity::Info,
        Some(DEVICE),
        "test",
        EventKind::Audit { action: "seq".into(), detail: format!("n={n}") },
    )
}

/// Polls the integrations backlog until `check` holds.
pub async fn wait_backlog(
    handle: &iotgw::integrations::Integrations,
    what: &str,
    limit: Duration,
    check: impl Fn(&[iotgw::integrations::SinkBacklog]) -> bool,
) -> Vec<iotgw::integrations::SinkBacklog> {
    let start = Instant::now();
    loop {
        let backlog = handle.backlog().await;
        if check(&backlog) {
            return backlog;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}: {backlog:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The integrations config of the delivery tests: these sinks, hostname `gw-test`.
pub fn config(sinks: Vec<SinkConfig>) -> integrations::Config {
    // These tests follow `numbered` events (one key) one by one: aggregation off here;
    // `integrations_flood.rs` tests it.
    integrations::Config {
        hostname: Some("gw-test".into()),
        sinks,
        aggregation: AggregationConfig::off(),
        ..Default::default()
    }
}

/// Retries and timeouts short enough for a test.
pub fn fast(mut sink: SinkConfig) -> SinkConfig {
    sink.retry_initial_ms = 50;
    sink.retry_max_ms = 300;
    sink.timeout_ms = 2_000;
    sink
}
