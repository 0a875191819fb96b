//! The fleet lab: a private nats-server (JetStream, with the per-gateway authorization the
//! hub's `provision-*` tools print) and PostgreSQL on the host's loopback, the real `iotgw hub`
//! process on the host (`hub`), and lab gateways in their own namespaces reporting to it
//! (`member`), under load when a test wants it (`churn`). A gateway reaches the broker through a
//! relay on its namespace's loopback (`relay::Relay::into_namespace`), so every byte stays on
//! loopback. Used by the fleet lab tests and `cargo xtask demo --fleet`; everything stops (and
//! its folders go) on drop, also when a test fails.
use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use iotgw::{
    fleet::{
        bundle::Bundle,
        connect::{self, Endpoint},
        subjects,
    },
    ota::metadata::SigningKey,
};
use iotgw_test_support::{
    services::{NatsServer, Postgres, Scratch, scratch},
    wait::within,
};
use sqlx::Connection as _;

use crate::{
    api::{ApiClient, Response, token_entry},
    controller::iotgw_bin,
    lab::Lab,
    relay::Relay,
    scenario::Scenario,
};

pub mod churn;
pub mod hub;
pub mod ledger;
pub mod member;

pub use hub::HubProcess;
pub use member::{GATEWAY_TOKEN, LabGateway, Outbox};

/// Three sites of one gateway each: the fleet the lab tests and the demo run.
pub const THREE_SITES: [(&str, &str); 3] = [("site-a", "gw-1"), ("site-b", "gw-1"), ("site-c", "gw-1")];
/// The port a lab gateway's `[fleet] nats_url` names on its namespace's loopback.
pub const NAMESPACE_NATS_PORT: u16 = 4222;
/// The hub API's operator and viewer tokens.
pub const OPERATOR_TOKEN: &str = "fleet-lab-operator";
pub const VIEWER_TOKEN: &str = "fleet-lab-viewer";
/// Seconds between a lab gateway's health reports.
pub const HEALTH_SECS: u64 = 2;
/// How long the hub has to show what a gateway reported.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest one exchange with the hub's broker or database may take.
const BROKER_WAIT: Duration = Duration::from_secs(60);
/// The bundle group every lab gateway takes (`[fleet] groups`), so one bundle reaches them all.
pub const GROUP: &str = "lab-fleet";

/// The hub's durable consumer on the report stream, as the broker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportPosition {
    /// The stream's last sequence number.
    pub stream_last: u64,
    /// Every report up to this sequence number is acknowledged (the ack floor).
    pub acknowledged: u64,
    /// Reports delivered to the hub and not acknowledged yet.
    pub unacknowledged: u64,
    /// When the consumer was created (nanoseconds since the epoch): the same one, or a new one.
    pub consumer_created_ns: i128,
}

/// One gateway of the fleet, before it runs: its name and where its credentials are.
#[derive(Clone, Debug)]
pub struct Member {
    pub site: String,
    pub gateway: String,
    pub credentials: PathBuf,
}

/// The broker, the database and the hub, with the gateways' credentials provisioned. The hub
/// is stopped first on drop, while its servers still run.
pub struct Fleet {
    pub hub: HubProcess,
    pub nats: NatsServer,
    pub postgres: Postgres,
    pub members: Vec<Member>,
    /// Folder of keys, credentials and the hub's config; removed last (fields drop in order).
    pub dir: Scratch,
    /// The public key gateways verify policy bundles with.
    pub bundle_key: PathBuf,
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
                let args = ["provision-gateway", "--site", site, "--gateway", gateway, "--group", GROUP];
                entries.push(provision(&dir, &args));
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

    /// Starts a controller on `policies` at each of `labs` (the n-th as the n-th member), with
    /// the scenario's meter enrolled, reporting to the hub.
    pub fn start_gateways<'a>(&self, labs: &'a [Lab], policies: &[(&str, &str)]) -> Vec<LabGateway<'a>> {
        assert_eq!(labs.len(), self.members.len(), "one lab per member");
        labs.iter()
            .zip(&self.members)
            .map(|(lab, member)| {
                let relay = Relay::into_namespace(
                    &lab.gw,
                    NAMESPACE_NATS_PORT,
                    SocketAddr::from((Ipv4Addr::LOCALHOST, self.nats.port)),
                );
                let scenario = Scenario::start_with_config(lab, policies, &self.gateway_config(member));
                LabGateway { scenario, site: member.site.clone(), gateway: member.gateway.clone(), _relay: relay }
            })
            .collect()
    }

    /// `member`'s `[fleet]` section, reaching the broker at `NAMESPACE_NATS_PORT` on its
    /// namespace's loopback, and its API's token.
    fn gateway_config(&self, member: &Member) -> String {
        format!(
            "\n[fleet]\nnats_url = \"nats://127.0.0.1:{NAMESPACE_NATS_PORT}\"\nsite = \"{}\"\ngateway = \"{}\"\n\
             credentials = \"{}\"\nbundle_key = \"{}\"\ngroups = [\"{GROUP}\"]\nhealth_secs = {HEALTH_SECS}\n\n\
             [api]\ntokens = [{}]\n",
            member.site,
            member.gateway,
            member.credentials.display(),
            self.bundle_key.display(),
            token_entry("gina", "viewer", GATEWAY_TOKEN),
        )
    }

    /// Signs and publishes the policy files in `dir` to `scope` (`site:<site>`, `group:<group>`)
    /// as `actor`, with `iotgw hub policy publish` (which refuses files that fail the checks).
    pub fn publish_policy(&self, scope: &str, dir: &Path, actor: &str) -> String {
        let config = self.hub.config.as_os_str();
        iotgw(
            &["hub", "policy", "publish", "--scope", scope, "--actor", actor, "--config"],
            &[config, "--dir".as_ref(), dir.as_os_str()],
        )
    }

    /// The key the hub signs bundles with.
    pub fn signing_key(&self) -> SigningKey {
        let path = self.dir.join("keys/bundle.pem");
        iotgw::ota::keys::load_private(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Puts `bundle` into the policy bucket under its scope's key as it is: what a tool other
    /// than `hub policy publish` could put there (a bundle not signed by the hub's key, or files
    /// that fail the checks).
    pub fn put_bundle(&self, bundle: &Bundle) {
        self.as_hub(async |jetstream| {
            let bucket = jetstream.get_key_value(subjects::POLICY_BUCKET).await.expect("the policy bucket");
            bucket.put(bundle.scope.kv_key(), bundle.encode().into()).await.expect("putting the bundle");
        });
    }

    /// Where the hub's durable consumer is on the report stream.
    pub fn report_position(&self) -> ReportPosition {
        self.as_hub(async |jetstream| {
            let mut stream = jetstream.get_stream(subjects::REPORT_STREAM).await.expect("the report stream");
            let stream_last = stream.info().await.expect("stream info").state.last_sequence;
            let mut consumer: async_nats::jetstream::consumer::PullConsumer =
                stream.get_consumer(iotgw::hub::ingest::CONSUMER).await.expect("the hub's consumer");
            let info = consumer.info().await.expect("consumer info");
            ReportPosition {
                stream_last,
                acknowledged: info.ack_floor.stream_sequence,
                unacknowledged: info.num_ack_pending as u64,
                consumer_created_ns: info.created.unix_timestamp_nanos(),
            }
        })
    }

    /// Runs `f` on a JetStream connection made with the hub's credentials.
    fn as_hub<T>(&self, f: impl AsyncFnOnce(async_nats::jetstream::Context) -> T) -> T {
        let (url, credentials) = (self.nats.url(), self.dir.join("hub.nk"));
        // Bounded as a whole: the client connects in the background and retries for ever.
        runtime().block_on(within("a JetStream exchange as the hub", BROKER_WAIT, async {
            let endpoint = Endpoint {
                url: &url,
                name: "fleet-lab",
                credentials: Some(&credentials),
                tls_ca: None,
                inbox_prefix: None,
            };
            f(async_nats::jetstream::new(connect::connect(&endpoint).await.expect("connecting as the hub"))).await
        }))
    }

    /// The rows `sql` selects from the hub's PostgreSQL.
    pub fn query<T>(&self, sql: &str) -> Vec<T>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let url = self.postgres.url();
        runtime().block_on(within("a query of the hub's PostgreSQL", BROKER_WAIT, async {
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("connecting to PostgreSQL");
            // Written by the tests, over their own constants.
            let statement = sqlx::AssertSqlSafe(sql.to_owned());
            sqlx::query_as(statement).fetch_all(&mut conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
        }))
    }

    /// The hub's API, as the operator.
    pub fn api(&self) -> ApiClient {
        ApiClient::on_host(self.hub.api_addr)
    }

    /// Polls `GET path` as the operator until `done` accepts the answer; panics naming `what`
    /// with the last answer after `REPORT_TIMEOUT`.
    pub fn wait_for(&self, what: &str, path: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        eventually(&format!("the hub showing {what}"), REPORT_TIMEOUT, || {
            let answer = self.api().get(path, Some(OPERATOR_TOKEN));
            match (answer.status == 200).then(|| answer.json()) {
                Some(body) if done(&body) => Ok(body),
                _ => Err(format!("{answer:?}")),
            }
        })
    }

    /// Polls the hub's gateways API until every member is listed and `done` accepts each one's
    /// row; returns the rows.
    pub fn wait_gateways(&self, what: &str, done: impl Fn(&serde_json::Value) -> bool) -> Vec<serde_json::Value> {
        let answer = self.wait_for(&format!("every gateway {what}"), "/api/v1/gateways", |answer| {
            answer.as_array().is_some_and(|rows| rows.len() == self.members.len() && rows.iter().all(&done))
        });
        answer.as_array().cloned().unwrap_or_default()
    }

    /// `POST path` with a JSON body as the operator.
    pub fn post(&self, path: &str, body: &serde_json::Value) -> Response {
        self.api().post(path, Some(OPERATOR_TOKEN), &body.to_string())
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

/// Polls `check` until it gives a value; after `timeout`, panics naming `what` with the last
/// reason `check` gave for not yet.
pub fn eventually<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) => assert!(Instant::now() < deadline, "no {what} within {timeout:?}; last: {last}"),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A runtime for one blocking call into an async client.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
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
    let output = iotgw_test_support::run(Command::new(iotgw_bin()).args(args).args(more));
    assert!(
        output.status.success(),
        "iotgw {args:?} {more:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
