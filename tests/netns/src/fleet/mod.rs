//! The fleet lab: a private nats-server (JetStream, with the per-gateway authorization the
//! hub's `provision-*` tools print) and PostgreSQL on the host's loopback, the real `iotgw hub`
//! process on the host, and lab gateways in their own namespaces reporting to it. A gateway
//! reaches the broker through a relay on its namespace's loopback (`relay::Relay::
//! into_namespace`), so every byte stays on loopback. Used by the fleet lab test and
//! `cargo xtask demo --fleet`; everything stops (and its folders go) on drop.
use std::{
    io::{BufRead as _, BufReader},
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use iotgw_test_support::services::{NatsServer, Postgres, free_port, scratch};

use crate::{
    api::{ApiClient, Response, token_entry},
    controller::iotgw_bin,
    lab::Lab,
    relay::Relay,
};

/// The port a lab gateway's `[fleet] nats_url` names on its namespace's loopback.
pub const NAMESPACE_NATS_PORT: u16 = 4222;
/// The hub API's operator and viewer tokens.
pub const OPERATOR_TOKEN: &str = "fleet-lab-operator";
pub const VIEWER_TOKEN: &str = "fleet-lab-viewer";
/// Seconds between a lab gateway's health reports.
pub const HEALTH_SECS: u64 = 2;
/// How long the hub has to show what a gateway reported.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(30);

/// One gateway of the fleet, before it runs: its name and where its credentials are.
#[derive(Clone, Debug)]
pub struct Member {
    pub site: String,
    pub gateway: String,
    pub credentials: PathBuf,
}

/// The broker, the database and the hub, with the gateways' credentials provisioned.
pub struct Fleet {
    pub nats: NatsServer,
    pub postgres: Postgres,
    pub hub: HubProcess,
    pub members: Vec<Member>,
    /// Folder of keys, credentials and the hub's config.
    pub dir: PathBuf,
    /// The public key gateways verify policy bundles with.
    pub bundle_key: PathBuf,
}

/// The running `iotgw hub`.
pub struct HubProcess {
    child: Child,
    pub config: PathBuf,
    pub api_addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Fleet {
    /// Provisions `members` (site, gateway) and the hub, then starts nats-server with their
    /// authorization, PostgreSQL and the hub.
    pub fn start(members: &[(&str, &str)]) -> Fleet {
        let dir = scratch("fleet");
        let mut entries = vec![provision(&dir, &["provision-hub"])];
        let members: Vec<Member> = members
            .iter()
            .map(|(site, gateway)| {
                entries.push(provision(&dir, &["provision-gateway", "--site", site, "--gateway", gateway]));
                Member {
                    site: (*site).to_owned(),
                    gateway: (*gateway).to_owned(),
                    credentials: dir.join(format!("{site}.{gateway}.nk")),
                }
            })
            .collect();
        let nats = NatsServer::start_with_config(&iotgw::hub::credentials::authorization(&entries));
        let postgres = Postgres::start();
        iotgw(&["hub", "keygen", "--out"], &[dir.join("keys").as_os_str()]);
        let hub = HubProcess::start(&dir, &nats, &postgres);
        Fleet { bundle_key: dir.join("keys/bundle.pub.pem"), nats, postgres, hub, members, dir }
    }

    /// The `[fleet]` section for `member`, reaching the broker through a relay into `lab`'s
    /// gateway namespace (keep the relay as long as the gateway runs).
    pub fn gateway_config(&self, member: usize, lab: &Lab) -> (String, Relay) {
        let member = &self.members[member];
        let relay = Relay::into_namespace(
            &lab.gw,
            NAMESPACE_NATS_PORT,
            SocketAddr::from((Ipv4Addr::LOCALHOST, self.nats.port)),
        );
        let config = format!(
            "\n[fleet]\nnats_url = \"nats://127.0.0.1:{NAMESPACE_NATS_PORT}\"\nsite = \"{}\"\ngateway = \"{}\"\n\
             credentials = \"{}\"\nbundle_key = \"{}\"\nhealth_secs = {HEALTH_SECS}\n",
            member.site,
            member.gateway,
            member.credentials.display(),
            self.bundle_key.display()
        );
        (config, relay)
    }

    /// Signs and publishes the policy files in `dir` to `scope` (`site:<site>`) as `actor`.
    pub fn publish_policy(&self, scope: &str, dir: &Path, actor: &str) -> String {
        let config = self.hub.config.as_os_str();
        iotgw(
            &["hub", "policy", "publish", "--scope", scope, "--actor", actor, "--config"],
            &[config, "--dir".as_ref(), dir.as_os_str()],
        )
    }

    /// The hub's API, as the operator.
    pub fn api(&self) -> ApiClient {
        ApiClient::on_host(self.hub.api_addr)
    }

    /// Polls `GET path` as the operator until `done` accepts the answer; panics naming `what`
    /// with the last answer after `REPORT_TIMEOUT`.
    pub fn wait_for(&self, what: &str, path: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + REPORT_TIMEOUT;
        loop {
            let answer = self.api().get(path, Some(OPERATOR_TOKEN));
            let body = if answer.status == 200 { Some(answer.json()) } else { None };
            if let Some(body) = &body
                && done(body)
            {
                return body.clone();
            }
            assert!(Instant::now() < deadline, "the hub did not show {what} within {REPORT_TIMEOUT:?}: {answer:?}");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// `POST path` with a JSON body as the operator.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> Response {
        self.api().post(path, Some(OPERATOR_TOKEN), &body.to_string())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl HubProcess {
    fn start(dir: &Path, nats: &NatsServer, postgres: &Postgres) -> HubProcess {
        let api_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let config = dir.join("hub.toml");
        std::fs::write(
            &config,
            format!(
                "nats_url = \"{}\"\ncredentials = \"{}\"\ndatabase_url = \"{}\"\nsigning_key = \"{}\"\n\n\
                 [streams]\nmax_bytes = 268435456\n\n[api]\nlisten = \"{api_addr}\"\ntokens = [\n  {},\n  {},\n]\n",
                nats.url(),
                dir.join("hub.nk").display(),
                postgres.url(),
                dir.join("keys/bundle.pem").display(),
                token_entry("olga", "operator", OPERATOR_TOKEN),
                token_entry("vic", "viewer", VIEWER_TOKEN),
            ),
        )
        .expect("hub config");
        let mut child = Command::new(iotgw_bin())
            .args(["hub", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} hub: {e}", iotgw_bin().display()));
        let stderr = child.stderr.take().expect("stderr piped");
        let log: Arc<Mutex<Vec<String>>> = Arc::default();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[hub] {line}");
                lines.lock().expect("log lock").push(line);
            }
        });
        let mut hub = HubProcess { child, config, api_addr, log };
        let deadline = Instant::now() + REPORT_TIMEOUT;
        while std::net::TcpStream::connect_timeout(&api_addr, Duration::from_millis(200)).is_err() {
            if let Ok(Some(status)) = hub.child.try_wait() {
                panic!("iotgw hub exited ({status}): {:?}", hub.log.lock().expect("log lock"));
            }
            assert!(Instant::now() < deadline, "iotgw hub did not listen on {api_addr}");
            std::thread::sleep(Duration::from_millis(100));
        }
        hub
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log.lock().expect("log lock").iter().filter(|line| line.contains(needle)).cloned().collect()
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One lab per site, each with one meter reaching its head-end upstream (the scenario's),
/// the meters' MACs distinct from site to site (lab MACs otherwise repeat from lab to lab).
pub fn site_labs(count: usize) -> Vec<Lab> {
    (0..count)
        .map(|n| {
            let mut lab = Lab::new(1);
            lab.set_device_mac(0, [0x02, 0x77, 0x0f, 0x00, n as u8, 0x10]);
            crate::lab::ip(&lab.up, &["addr", "add", "10.78.0.40/24", "dev", "eth0"]);
            lab
        })
        .collect()
}

/// Runs `iotgw hub provision-*` with `--out dir` and returns the user entry it printed.
fn provision(dir: &Path, args: &[&str]) -> String {
    let printed = iotgw(&[&["hub"], args, &["--out"]].concat(), &[dir.as_os_str()]);
    printed
        .lines()
        .find(|line| !line.starts_with('#') && !line.trim().is_empty())
        .unwrap_or_else(|| panic!("no user entry in {printed:?}"))
        .to_owned()
}

/// Runs the `iotgw` CLI to success and returns its standard output.
fn iotgw(args: &[&str], more: &[&std::ffi::OsStr]) -> String {
    let output = Command::new(iotgw_bin())
        .args(args)
        .args(more)
        .output()
        .unwrap_or_else(|e| panic!("running iotgw {args:?}: {e}"));
    assert!(
        output.status.success(),
        "iotgw {args:?} {more:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
