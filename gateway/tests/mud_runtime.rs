//! MUD at run time end to end on 127.0.0.1: a real HTTPS server (rustls, certificate from a
//! test CA made with rcgen) serves MUD files and their detached CMS signatures, made by
//! `openssl cms -sign` (the tool MUD makers sign with) with a signer from a test anchor. The
//! real `mud::step::MudStep` checks each announcement against a real store and a real
//! `PolicyStore` over the shipped policy folder. A good file becomes the device's class; every
//! file that fails a check changes nothing and says why. Needs `openssl` on the PATH.
use std::{
    collections::HashMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use iotgw::{
    device::Mac,
    inventory::mud::{self as inventory_mud, MudOutcome, MudRecord},
    mud::{
        self, Resolver,
        announce::{Announcement, Channel},
        step::{MudStep, PolicyGate},
    },
    policy::{ClassId, CompiledPolicy, MatchedBy, PolicyId, PolicyStore, store::Sources},
};
use iotgw_test_support::checked;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose, SanType};

const TEMPLATE: &str = include_str!("mud/bulb.json");
/// Where the bulb's MUD file lets it connect (v1, then v2 of the file).
const CLOUD_V1: &str = "203.0.113.10";
const CLOUD_V2: &str = "203.0.113.20";
/// The first MUD class id (`policy::store::GENERATED_CLASS_IDS`).
const FIRST_MUD_CLASS: u16 = 0xc000;

fn mac(last: u8) -> Mac {
    Mac([0x02, 0, 0x5e, 0, 0, last])
}

/// A CA certificate and key.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        Self { cert: params.self_signed(&key).unwrap(), key }
    }

    /// A certificate for `name` (a server when `sans` are given) and its key.
    fn issue(&self, name: &str, sans: Vec<SanType>) -> (rcgen::Certificate, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = sans;
        (params.signed_by(&key, &self.cert, &self.key).unwrap(), key)
    }
}

/// What the server answers for one path.
#[derive(Clone)]
struct Served {
    status: u16,
    body: Vec<u8>,
    location: Option<String>,
}

/// The HTTPS server: files by path, and how often each was fetched.
struct Server {
    addr: SocketAddr,
    files: Arc<Mutex<HashMap<String, Served>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connections one server accepts before it stops (the tests make a few dozen).
const MAX_CONNECTIONS: usize = 500;

impl Server {
    async fn start(ca: &Ca) -> Self {
        let (cert, key) = ca.issue(
            "mud server",
            vec![SanType::IpAddress([127, 0, 0, 1].into()), SanType::DnsName("localhost".try_into().unwrap())],
        );
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let files: Arc<Mutex<HashMap<String, Served>>> = Arc::default();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (served, counted) = (files.clone(), hits.clone());
        let task = tokio::spawn(async move {
            for _ in 0..MAX_CONNECTIONS {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (acceptor, served, counted) = (acceptor.clone(), served.clone(), counted.clone());
                tokio::spawn(async move {
                    let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(5), acceptor.accept(tcp)).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let path = request.uri().path().to_owned();
                        *counted.lock().unwrap().entry(path.clone()).or_default() += 1;
                        let answer = served.lock().unwrap().get(&path).cloned();
                        let answer = answer.unwrap_or(Served { status: 404, body: Vec::new(), location: None });
                        let mut response = hyper::Response::builder().status(answer.status);
                        if let Some(location) = answer.location {
                            response = response.header("location", location);
                        }
                        let body = http_body_util::Full::new(bytes::Bytes::from(answer.body));
                        async move { response.body(body) }
                    });
                    let io = hyper_util::rt::TokioIo::new(tls);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        Self { addr, files, hits, task }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    fn serve(&self, path: &str, body: Vec<u8>) {
        self.files.lock().unwrap().insert(path.into(), Served { status: 200, body, location: None });
    }

    fn redirect(&self, path: &str, to: &str) {
        self.files
            .lock()
            .unwrap()
            .insert(path.into(), Served { status: 302, body: Vec::new(), location: Some(to.into()) });
    }

    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or_default()
    }
}

/// The policy step, as the step's gate: a `PolicyStore` over the shipped policies.
#[derive(Clone)]
struct Gate(Arc<Mutex<PolicyStore>>);

impl PolicyGate for Gate {
    async fn put_in_force(&self, sources: Sources) -> Result<(), String> {
        let mut store = self.0.lock().unwrap();
        store
            .set_generated(sources)
            .map(|_| ())
            .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
    }
}

impl Gate {
    fn current(&self) -> Arc<CompiledPolicy> {
        self.0.lock().unwrap().current()
    }
}

/// Removes the lab's folder when the test ends, failed or not.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Lab {
    dir: Dir,
    server: Server,
    anchor: Ca,
    gate: Gate,
    step: MudStep<Gate>,
}

impl Lab {
    async fn start(name: &str, tune: impl FnOnce(&mut mud::Config)) -> Self {
        let dir = Dir(std::env::temp_dir().join(format!("iotgw-mud-{name}-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&dir.0);
        std::fs::create_dir_all(&dir.0).unwrap();
        let tls_ca = Ca::new("MUD test TLS CA");
        let anchor = Ca::new("MUD test signing anchor");
        let server = Server::start(&tls_ca).await;
        std::fs::write(dir.0.join("tls-roots.pem"), tls_ca.cert.pem()).unwrap();
        std::fs::write(dir.0.join("anchors.pem"), anchor.cert.pem()).unwrap();
        let mut config = mud::Config {
            authorities: vec![format!("127.0.0.1:{}", server.addr.port())],
            trust_anchors: Some(dir.0.join("anchors.pem")),
            tls_roots: Some(dir.0.join("tls-roots.pem")),
            fetch_timeout_ms: 5_000,
            connect_timeout_ms: 2_000,
            ..mud::Config::default()
        };
        tune(&mut config);
        assert!(config.problems().is_empty(), "{:?}", config.problems());
        let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
        let policy = PolicyStore::open(&policies, iotgw::respond::rules::policy_errors).expect("shipped policies");
        let gate = Gate(Arc::new(Mutex::new(policy)));
        let conn =
            iotgw::store::open(&dir.0.join("iotgw.db"), &[iotgw::inventory::MIGRATIONS, mud::MIGRATIONS]).unwrap();
        let resolver = Resolver::new(&config).unwrap();
        let step = MudStep::new(Some(resolver), conn, gate.clone(), Duration::ZERO);
        Self { dir, server, anchor, gate, step }
    }

    fn store(&self) -> rusqlite::Connection {
        iotgw::store::open(&self.dir.0.join("iotgw.db"), &[iotgw::inventory::MIGRATIONS, mud::MIGRATIONS]).unwrap()
    }

    /// A MUD file for `path` whose signature is at `path` with `.p7s`, allowing `cloud`.
    fn file(&self, path: &str, cloud: &str) -> Vec<u8> {
        TEMPLATE
            .replace("{URL}", &self.server.url(path))
            .replace("{SIGNATURE}", &self.server.url(&signature_path(path)))
            .replace("{CLOUD}", cloud)
            .into_bytes()
    }

    /// The detached signature of `file` by a signer `signing_ca` issued, made by openssl.
    fn sign(&self, file: &[u8], signing_ca: &Ca) -> Vec<u8> {
        let (signer, key) = signing_ca.issue("Example Bulbs MUD signer", Vec::new());
        let at = |name: &str| self.dir.0.join(name);
        std::fs::write(at("file.json"), file).unwrap();
        std::fs::write(at("signer.pem"), signer.pem()).unwrap();
        std::fs::write(at("signer.key"), key.serialize_pem()).unwrap();
        checked(
            Command::new("openssl")
                .args(["cms", "-sign", "-binary", "-md", "sha256", "-outform", "DER"])
                .arg("-in")
                .arg(at("file.json"))
                .arg("-signer")
                .arg(at("signer.pem"))
                .arg("-inkey")
                .arg(at("signer.key"))
                .arg("-out")
                .arg(at("file.p7s")),
        );
        std::fs::read(at("file.p7s")).unwrap()
    }

    /// Serves `file` at `path` and its signature by the lab's anchor beside it.
    fn publish(&self, path: &str, file: Vec<u8>) {
        let signature = self.sign(&file, &self.anchor);
        self.server.serve(&signature_path(path), signature);
        self.server.serve(path, file);
    }

    async fn announce(&mut self, device: Mac, url: &str) -> MudOutcome {
        let announcement = Announcement { mac: device, channel: Channel::Dhcpv4, url: url.as_bytes().to_vec() };
        self.step.handle(announcement).await.expect("checked (no recheck delay in tests)")
    }

    fn record(&self, device: Mac) -> MudRecord {
        inventory_mud::device(&self.store(), device).unwrap().expect("a MUD record")
    }

    /// The device's class as the class step would find it.
    fn class_of(&self, device: Mac) -> Option<(String, MatchedBy)> {
        let mud_class = inventory_mud::class_ids(&self.store()).unwrap().get(&device).copied().map(ClassId);
        self.gate.current().classify(device, &[], None, mud_class).map(|class| (class.name, class.matched_by))
    }

    /// The datapath entries of MUD class `id`, as `net proto matches`.
    fn entries(&self, id: u16) -> Vec<String> {
        let policy = PolicyId::for_class(ClassId(id));
        let compiled = self.gate.current();
        let mut entries: Vec<String> = compiled
            .rules
            .iter()
            .filter(|rule| rule.policy_id == policy)
            .map(|rule| {
                let matches: Vec<String> = rule.matches.iter().map(ToString::to_string).collect();
                format!("{} {} [{}]", rule.net, rule.proto, matches.join(", "))
            })
            .collect();
        entries.sort();
        entries
    }

    /// Everything a refused file must leave as it was.
    fn state(&self) -> (Vec<String>, usize, Vec<(String, String)>) {
        let compiled = self.gate.current();
        let classes = compiled.source.classes.iter().map(|class| format!("{}={}", class.name, class.id.0)).collect();
        let files = mud::store::files(&self.store()).unwrap().into_iter().map(|file| (file.url, file.sha256)).collect();
        (classes, compiled.rules.len(), files)
    }
}

fn signature_path(path: &str) -> String {
    format!("{}.p7s", path.trim_end_matches(".json"))
}

fn refusal(outcome: MudOutcome) -> String {
    match outcome {
        MudOutcome::Refused(reason) => reason,
        MudOutcome::Applied(file) => panic!("applied {file:?}, expected a refusal"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_mud_file_becomes_the_device_class_and_is_cached() {
    let mut lab = Lab::start("good", |_| {}).await;
    let url = lab.server.url("/bulb.json");
    lab.publish("/bulb.json", lab.file("/bulb.json", CLOUD_V1));

    let MudOutcome::Applied(file) = lab.announce(mac(1), &url).await else { panic!("{:?}", lab.record(mac(1))) };
    assert_eq!((file.class.as_str(), file.class_id), ("mud-49152", FIRST_MUD_CLASS));
    assert_eq!(file.signer, "CN=Example Bulbs MUD signer");
    let hours = (file.valid_until - time::OffsetDateTime::now_utc()).whole_hours();
    assert!((47..=48).contains(&hours), "cache-validity 48 h, got {hours}");
    assert_eq!(lab.class_of(mac(1)), Some(("mud-49152".into(), MatchedBy::Mud)));
    assert_eq!(lab.entries(FIRST_MUD_CLASS), [format!("{CLOUD_V1}/32 6 [device 0-65535->443-443]")]);
    let record = lab.record(mac(1));
    assert_eq!((record.outcome.as_str(), record.channel.as_str()), ("applied", "dhcpv4"));
    assert_eq!(record.announced_url, url);
    assert_eq!(record.applied.as_ref().map(|f| f.sha256.len()), Some(64));
    let audit: Vec<String> = {
        let conn = lab.store();
        let mut statement =
            conn.prepare("SELECT action || ' ' || detail FROM inventory_audit WHERE actor = 'mud'").unwrap();
        statement.query_map([], |row| row.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
    };
    assert!(audit.iter().any(|line| line.starts_with(&format!("mud_applied {url}: class mud-49152"))), "{audit:?}");

    // A second bulb of the model: the cached file, nothing fetched, the same class.
    let fetched = (lab.server.hits("/bulb.json"), lab.server.hits("/bulb.p7s"));
    assert!(matches!(lab.announce(mac(2), &url).await, MudOutcome::Applied(_)));
    assert_eq!((lab.server.hits("/bulb.json"), lab.server.hits("/bulb.p7s")), fetched);
    assert_eq!(lab.class_of(mac(2)), Some(("mud-49152".into(), MatchedBy::Mud)));
    assert!(lab.record(mac(2)).detail.contains("cached"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_failing_a_check_change_nothing_and_say_why() {
    let mut lab = Lab::start("refused", |config| config.max_file_bytes = 4_096).await;
    let good = lab.server.url("/bulb.json");
    lab.publish("/bulb.json", lab.file("/bulb.json", CLOUD_V1));
    assert!(matches!(lab.announce(mac(1), &good).await, MudOutcome::Applied(_)));
    let before = lab.state();
    let applied = lab.record(mac(1)).applied;

    // A bad signature: the file changed after it was signed.
    let file = lab.file("/tampered.json", CLOUD_V2);
    let signature = lab.sign(&lab.file("/tampered.json", CLOUD_V1), &lab.anchor);
    lab.server.serve("/tampered.json", file);
    lab.server.serve("/tampered.p7s", signature);
    // A signer from another anchor.
    let stranger = Ca::new("Not our anchor");
    let file = lab.file("/stranger.json", CLOUD_V2);
    lab.server.serve("/stranger.p7s", lab.sign(&file, &stranger));
    lab.server.serve("/stranger.json", file);
    // Larger than max_file_bytes, correctly signed.
    let mut big = lab.file("/big.json", CLOUD_V2);
    big.extend(std::iter::repeat_n(b' ', 8_192));
    lab.publish("/big.json", big);
    // A redirect off the allow-list (localhost is the same server, under another authority).
    let elsewhere = format!("https://localhost:{}/bulb.json", lab.server.addr.port());
    lab.server.redirect("/moved.json", &elsewhere);
    // A signature the importer refuses: no ACL container.
    let unimportable = lab.file("/broken.json", CLOUD_V2);
    let unimportable =
        String::from_utf8(unimportable).unwrap().replace("ietf-access-control-list:acls", "acls-renamed");
    lab.publish("/broken.json", unimportable.into_bytes());

    let http = good.replacen("https://", "http://", 1);
    let cases: [(String, &str); 7] = [
        (lab.server.url("/tampered.json"), "message-digest attribute is not the file's digest"),
        (lab.server.url("/stranger.json"), "does not chain to a trust anchor"),
        (lab.server.url("/big.json"), "larger than 4096 bytes"),
        (lab.server.url("/moved.json"), "redirect refused"),
        (elsewhere.clone(), "is not in mud.authorities"),
        (http, "is not https"),
        (lab.server.url("/broken.json"), "MUD file not imported"),
    ];
    for (url, why) in cases {
        let reason = refusal(lab.announce(mac(1), &url).await);
        assert!(reason.contains(why), "{url}: {reason}");
        assert_eq!(lab.state(), before, "{url} changed something");
        let record = lab.record(mac(1));
        assert_eq!((record.outcome.as_str(), record.announced_url.as_str()), ("refused", url.as_str()));
        assert_eq!(record.applied, applied, "{url}: the file in force changed");
        assert_eq!(lab.class_of(mac(1)), Some(("mud-49152".into(), MatchedBy::Mud)));
    }

    // Device-controlled text reaches the record escaped.
    let forged = format!("{good}\n\u{202e}evil");
    let reason = refusal(lab.announce(mac(1), &forged).await);
    let record = lab.record(mac(1));
    for text in [&reason, &record.announced_url, &record.detail] {
        assert!(iotgw::untrusted::is_safe(text), "{text}");
    }
    assert_eq!(lab.state(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_file_is_fetched_again_and_a_changed_one_moves_the_device() {
    let mut lab = Lab::start("expiry", |_| {}).await;
    let url = lab.server.url("/bulb.json");
    lab.publish("/bulb.json", lab.file("/bulb.json", CLOUD_V1));
    assert!(matches!(lab.announce(mac(1), &url).await, MudOutcome::Applied(_)));
    let expire = |lab: &Lab| {
        lab.store().execute("UPDATE mud_files SET valid_until = 0", []).unwrap();
    };

    // Expired, and the server now has a file whose signature fails: fetched again, refused,
    // and the class in force stays.
    expire(&lab);
    let before = lab.state();
    let fetched = lab.server.hits("/bulb.json");
    let tampered_signature = lab.sign(&lab.file("/bulb.json", CLOUD_V1), &lab.anchor);
    lab.server.serve("/bulb.json", lab.file("/bulb.json", CLOUD_V2));
    lab.server.serve("/bulb.p7s", tampered_signature);
    let reason = refusal(lab.announce(mac(1), &url).await);
    assert!(reason.contains("signature refused"), "{reason}");
    assert_eq!(lab.server.hits("/bulb.json"), fetched + 1, "an expired file is fetched again");
    assert_eq!(lab.state(), before);
    assert_eq!(lab.entries(FIRST_MUD_CLASS), [format!("{CLOUD_V1}/32 6 [device 0-65535->443-443]")]);

    // Properly signed v2: the class keeps its id and takes the new rules.
    lab.publish("/bulb.json", lab.file("/bulb.json", CLOUD_V2));
    let MudOutcome::Applied(file) = lab.announce(mac(1), &url).await else { panic!("{:?}", lab.record(mac(1))) };
    assert_eq!(file.class_id, FIRST_MUD_CLASS);
    assert_eq!(lab.entries(FIRST_MUD_CLASS), [format!("{CLOUD_V2}/32 6 [device 0-65535->443-443]")]);
    assert_ne!(lab.record(mac(1)).applied.unwrap().sha256, before.2[0].1, "the new file's hash is recorded");

    // A device announcing another model's URL moves to that model's class.
    lab.publish("/plug.json", lab.file("/plug.json", CLOUD_V1));
    let MudOutcome::Applied(plug) = lab.announce(mac(1), &lab.server.url("/plug.json")).await else { panic!() };
    assert_eq!(plug.class_id, FIRST_MUD_CLASS + 1);
    assert_eq!(lab.class_of(mac(1)), Some((format!("mud-{}", FIRST_MUD_CLASS + 1), MatchedBy::Mud)));
}
