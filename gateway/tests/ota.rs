//! End-to-end OTA tests on 127.0.0.1: a real repository on disk, a real SQLite store, the real
//! update service over rustls with client certificates from a test CA (rcgen), and simulated
//! devices running `ota::client` (they verify everything themselves).
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use iotgw::{
    device::Mac,
    event::{EventBus, EventKind, GatewayEvent, Severity},
    ota::{
        self,
        client::{ClientConfig, ClientError, Device, FileInstaller, Installer, Outcome},
        db,
        metadata::{MetadataError, SigningKey},
        repo::{InitOptions, Repository, VENDOR_LIFETIME, View},
        rollout::{CampaignRequest, Plan, Rollouts, Stage, State},
    },
    shutdown,
};
#[path = "common/forged.rs"]
mod forged;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams, SanType, SerialNumber,
};

/// How long a test waits for the rollout loop to reach a state.
const WAIT: Duration = Duration::from_secs(15);

struct Pki {
    ca_pem: String,
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = params.self_signed(&ca_key).unwrap();
        Self { ca_pem: ca_cert.pem(), ca_cert, ca_key }
    }

    /// (cert PEM, key PEM).
    fn issue(&self, common_name: &str, server: bool) -> (String, String) {
        self.issue_serial(common_name, server, rand::random::<u32>().into())
    }

    fn issue_serial(&self, common_name: &str, server: bool, serial: u64) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.serial_number = Some(SerialNumber::from(serial));
        if server {
            params.distinguished_name.push(DnType::CommonName, common_name);
        } else {
            // The form `identity` issues: CN = device id, SAN URIs naming the device and its MAC.
            let id = format!("d-{}", common_name.replace(':', ""));
            params.distinguished_name.push(DnType::CommonName, id.as_str());
            params.subject_alt_names = vec![
                SanType::URI(format!("urn:iotgw:device:{id}").try_into().unwrap()),
                SanType::URI(format!("urn:iotgw:mac:{common_name}").try_into().unwrap()),
            ];
        }
        if server {
            params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        } else {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

impl Pki {
    fn crl(&self, serials: &[u64]) -> String {
        let now = time::OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - time::Duration::minutes(1),
            next_update: now + time::Duration::days(1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: now - time::Duration::minutes(1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params.signed_by(&self.ca_cert, &self.ca_key).unwrap().pem().unwrap()
    }
}

struct Lab {
    dir: PathBuf,
    store: PathBuf,
    repo: Repository,
    vendor: SigningKey,
    pki: Pki,
    addr: SocketAddr,
    bus: EventBus,
    trigger: shutdown::Trigger,
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.trigger.trigger();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Lab {
    async fn start() -> Self {
        Self::start_with(&[], false).await
    }

    /// A lab whose device CA has revoked (CRL) the certificates with these serial numbers, and
    /// that may require certificates to be in the identity registry.
    async fn start_with(revoked: &[u64], require_enrollment: bool) -> Self {
        let dir =
            std::env::temp_dir().join(format!("iotgw-ota-it-{}-{:08x}", std::process::id(), rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = dir.join("iotgw.db");
        let repo = Repository::open(&dir.join("repo"), None);
        let vendor = SigningKey::generate();
        {
            let conn = iotgw::schema::open(&store).unwrap();
            repo.init(&conn, &InitOptions { root_keys: 2, root_threshold: 2 }).unwrap();
            repo.delegate(&conn, "acme", &[vendor.public()], 1, &["acme/*".into()]).unwrap();
        }
        let pki = Pki::new("iotgw test device CA");
        let (server_cert, server_key) = pki.issue("ota.gateway", true);
        std::fs::write(dir.join("ca.pem"), &pki.ca_pem).unwrap();
        let crl = (!revoked.is_empty()).then(|| pki.crl(revoked));
        if let Some(crl) = &crl {
            std::fs::write(dir.join("crl.pem"), crl).unwrap();
        }
        std::fs::write(dir.join("server.pem"), server_cert).unwrap();
        std::fs::write(dir.join("server.key"), server_key).unwrap();
        let config = ota::Config {
            enabled: true,
            listen: Some("127.0.0.1:0".parse().unwrap()),
            repo_dir: dir.join("repo"),
            keys_dir: None,
            device_ca: dir.join("ca.pem"),
            device_crls: crl.iter().map(|_| dir.join("crl.pem")).collect(),
            server_cert: Some(dir.join("server.pem")),
            server_key: Some(dir.join("server.key")),
            max_connections: 512,
            tick_secs: 1,
            require_enrollment,
        };
        let bus = EventBus::default();
        let (trigger, shutdown) = shutdown::channel();
        let running =
            ota::spawn(&config, &iotgw::identity::Config::default(), &store, bus.clone(), shutdown).await.unwrap();
        Lab { dir, store, repo, vendor, pki, addr: running.local_addr, bus, trigger }
    }

    fn conn(&self) -> rusqlite::Connection {
        iotgw::schema::open(&self.store).unwrap()
    }

    fn image(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Vendor-signs and uploads an image for class `cam`.
    fn publish_with(&self, path: &str, version: &str, bytes: &[u8], lifetime: time::Duration) {
        let mut conn = self.conn();
        let image = self.image(&format!("upload-{version}.bin"), bytes);
        let meta = self
            .repo
            .prepare_release(&conn, &[&self.vendor], "acme", &image, path, version, &["cam".into()], lifetime)
            .unwrap();
        self.repo.accept(&mut conn, &meta, &image).unwrap();
    }

    fn publish(&self, path: &str, version: &str, bytes: &[u8]) {
        self.publish_with(path, version, bytes, VENDOR_LIFETIME);
    }

    fn campaign(&self, target: &str, canary: &[Mac], stages: Vec<Stage>, soak_secs: u64) -> String {
        let conn = self.conn();
        let rollouts = Rollouts { conn: &conn, repo: &self.repo };
        rollouts
            .create(CampaignRequest {
                target: target.into(),
                plan: Plan {
                    canary: canary.to_vec(),
                    stages,
                    windows: vec![],
                    failure_threshold: 0.2,
                    soak_secs,
                    anomaly_devices: 1,
                },
            })
            .unwrap()
            .0
    }

    fn state(&self, id: &str) -> State {
        let conn = self.conn();
        Rollouts { conn: &conn, repo: &self.repo }.get(id).unwrap().state
    }

    async fn wait_state(&self, id: &str, pred: impl Fn(&State) -> bool) -> State {
        let start = Instant::now();
        loop {
            let state = self.state(id);
            if pred(&state) {
                return state;
            }
            assert!(start.elapsed() < WAIT, "campaign {id} stuck in {state}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn device_config(&self, mac: Mac, base: SocketAddr) -> ClientConfig {
        let (cert, key) = self.pki.issue(&mac.to_string(), false);
        let state_dir = self.dir.join(format!("device-{}", mac.to_string().replace(':', "")));
        ClientConfig {
            base_url: format!("https://{base}"),
            server_ca_pem: self.pki.ca_pem.clone().into_bytes(),
            cert_pem: cert.into_bytes(),
            key_pem: key.into_bytes(),
            device_class: "cam".into(),
            state_dir,
        }
    }

    /// A provisioned device (root v1 as shipped, firmware 1.0) talking to `base`.
    fn device_via(&self, mac: Mac, base: SocketAddr, installer: Option<Box<dyn Installer>>) -> (Device, PathBuf) {
        let config = self.device_config(mac, base);
        let root_v1 = std::fs::read(self.repo.metadata_path("root", 1)).unwrap();
        Device::provision(&config.state_dir, &root_v1, "1.0").unwrap();
        let flash = config.state_dir.join("flash.bin");
        let installer = installer.unwrap_or_else(|| Box::new(FileInstaller { dest: flash.clone() }));
        (Device::new(config, installer).unwrap(), flash)
    }

    fn device(&self, mac: Mac) -> (Device, PathBuf) {
        self.device_via(mac, self.addr, None)
    }
}

fn mac(last: u8) -> Mac {
    Mac([2, 0, 0, 0, 0, last])
}

fn firmware(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A raw HTTPS client with an optional client certificate.
fn raw_client(lab: &Lab, identity: Option<(String, String)>) -> reqwest::Client {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut lab.pki.ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let tls = match identity {
        Some((cert, key)) => {
            let chain = rustls_pemfile::certs(&mut cert.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
            let key = rustls_pemfile::private_key(&mut key.as_bytes()).unwrap().unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    reqwest::Client::builder().use_preconfigured_tls(tls).build().unwrap()
}

fn image_url(lab: &Lab, path: &str, bytes: &[u8]) -> String {
    let (dir, name) = path.rsplit_once('/').unwrap();
    format!("https://{}/ota/v1/targets/{dir}/{}.{name}", lab.addr, sha256(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_rollout_devices_download_verify_and_report() {
    let lab = Lab::start().await;
    let image = firmware(300_000, 7);
    lab.publish("acme/cam-2.0.bin", "2.0", &image);
    // Rotate the root after the devices were provisioned: they must walk to v2 themselves.
    lab.repo.rotate_root(&lab.conn(), 2, 1).unwrap();

    let (mut canary, canary_flash) = lab.device(mac(1));
    let (mut b, b_flash) = lab.device(mac(2));
    let (mut c, _) = lab.device(mac(3));
    for d in [&canary, &b, &c] {
        d.check_in().await.unwrap();
    }
    let id = lab.campaign("acme/cam-2.0.bin", &[mac(1)], vec![Stage::Percent(100)], 0);
    lab.wait_state(&id, |s| *s == State::Canary).await;

    // Not in the canary: not offered, and the image itself is refused.
    assert_eq!(b.update().await.unwrap(), Outcome::UpToDate { version: "1.0".into() });
    let (cert, key) = lab.pki.issue(&mac(2).to_string(), false);
    let response =
        raw_client(&lab, Some((cert, key))).get(image_url(&lab, "acme/cam-2.0.bin", &image)).send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::FORBIDDEN);

    let mut events = lab.bus.subscribe();
    let outcome = canary.update().await.unwrap();
    assert!(matches!(&outcome, Outcome::Installed { to, attempts: 1, .. } if to == "2.0"), "{outcome:?}");
    // The new firmware is announced on the bus for the inventory.
    let deadline = Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap();
        if event.device == Some(mac(1))
            && matches!(&event.kind, EventKind::Audit { action, detail } if action == ota::server::FIRMWARE_INSTALLED_ACTION && detail == "2.0")
        {
            break;
        }
        assert!(Instant::now() < deadline, "no firmware event");
    }
    assert_eq!(std::fs::read(&canary_flash).unwrap(), image);

    // The canary's success report advances the campaign to the 100% stage.
    lab.wait_state(&id, |s| matches!(s, State::Rolling { stage: 0 })).await;
    assert!(matches!(b.update().await.unwrap(), Outcome::Installed { .. }));
    assert!(matches!(c.update().await.unwrap(), Outcome::Installed { .. }));
    assert_eq!(std::fs::read(&b_flash).unwrap(), image);
    lab.wait_state(&id, |s| *s == State::Completed).await;

    let conn = lab.conn();
    let devices = db::devices(&conn).unwrap();
    assert_eq!(devices.len(), 3);
    assert!(
        devices.iter().all(|d| d.firmware_version.as_deref() == Some("2.0") && d.last_status == "success"),
        "{devices:?}"
    );
    // Once installed, nothing newer: up to date, and the trusted root is v2.
    assert_eq!(canary.update().await.unwrap(), Outcome::UpToDate { version: "2.0".into() });
}

/// Forwards TCP to `upstream`, but closes each connection after `cut_after` bytes went from
/// the server to the client (mid-body for a large image).
async fn cutting_proxy(upstream: SocketAddr, cut_after: usize) -> SocketAddr {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..200 {
            let Ok((client, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { return };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut sw).await;
                });
                let mut sent = 0usize;
                let mut buf = vec![0u8; 16 * 1024];
                while sent < cut_after {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n.min(cut_after - sent),
                    };
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    sent += n;
                }
                up.abort();
                // Dropping both halves closes the connection abruptly.
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_download_resumes_with_range() {
    let lab = Lab::start().await;
    let image = firmware(1_000_000, 3);
    lab.publish("acme/cam-2.0.bin", "2.0", &image);
    let proxy = cutting_proxy(lab.addr, 300 * 1024).await;
    let (mut device, flash) = lab.device_via(mac(1), proxy, None);
    device.check_in().await.unwrap();
    let id = lab.campaign("acme/cam-2.0.bin", &[mac(1)], vec![], 0);
    lab.wait_state(&id, |s| *s == State::Canary).await;

    let outcome = device.update().await.unwrap();
    let Outcome::Installed { attempts, .. } = outcome else { panic!("{outcome:?}") };
    assert!(attempts >= 3, "a 1 MB image through 300 KiB connections needs several resumes, took {attempts}");
    assert_eq!(sha256(&std::fs::read(&flash).unwrap()), sha256(&image));

    // Range semantics on the server itself.
    let (cert, key) = lab.pki.issue(&mac(1).to_string(), false);
    let client = raw_client(&lab, Some((cert, key)));
    let url = image_url(&lab, "acme/cam-2.0.bin", &image);
    let partial = client.get(&url).header("range", "bytes=10-19").send().await.unwrap();
    assert_eq!(partial.status(), reqwest::StatusCode::PARTIAL_CONTENT);
    assert_eq!(partial.headers()["content-range"], "bytes 10-19/1000000");
    assert_eq!(partial.bytes().await.unwrap().as_ref(), &image[10..20]);
    let bad = client.get(&url).header("range", "bytes=2000000-").send().await.unwrap();
    assert_eq!(bad.status(), reqwest::StatusCode::RANGE_NOT_SATISFIABLE);
    let multi = client.get(&url).header("range", "bytes=0-1,5-6").send().await.unwrap();
    assert_eq!(multi.status(), reqwest::StatusCode::RANGE_NOT_SATISFIABLE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_refuses_tampered_and_truncated_images_and_keeps_its_firmware() {
    let lab = Lab::start().await;
    let image = firmware(200_000, 9);
    lab.publish("acme/cam-2.0.bin", "2.0", &image);
    let (mut device, flash) = lab.device(mac(1));
    device.check_in().await.unwrap();
    // A lenient threshold so the first failure does not halt the campaign mid-test.
    let conn = lab.conn();
    let id = Rollouts { conn: &conn, repo: &lab.repo }
        .create(CampaignRequest {
            target: "acme/cam-2.0.bin".into(),
            plan: Plan {
                canary: vec![mac(1)],
                stages: vec![],
                windows: vec![],
                failure_threshold: 1.0,
                soak_secs: 3600,
                anomaly_devices: 1,
            },
        })
        .unwrap()
        .0;
    lab.wait_state(&id, |s| *s == State::Canary).await;

    // Someone changes the stored image behind the gateway's back (same length).
    let stored = lab.repo.target_path("acme/cam-2.0.bin");
    let mut evil = image.clone();
    evil[1234] ^= 0xff;
    std::fs::write(&stored, &evil).unwrap();
    let err = device.update().await.unwrap_err();
    assert!(matches!(err, ClientError::ImageMismatch { .. }), "{err}");
    assert_eq!(device.installed().unwrap().version, "1.0");
    assert!(!flash.exists());

    // Truncated on disk: the download never reaches the signed length.
    std::fs::write(&stored, &image[..150_000]).unwrap();
    let err = device.update().await.unwrap_err();
    assert!(matches!(err, ClientError::DownloadIncomplete { .. }), "{err}");
    assert_eq!(device.installed().unwrap().version, "1.0");

    // Both failures were reported to the gateway.
    let row = db::device(&lab.conn(), mac(1)).unwrap().unwrap();
    assert_eq!(row.last_status, "failure");
    assert_eq!(row.firmware_version.as_deref(), Some("1.0"));

    // Restored: installs.
    std::fs::write(&stored, &image).unwrap();
    assert!(matches!(device.update().await.unwrap(), Outcome::Installed { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_refuses_rolled_back_and_expired_metadata() {
    let lab = Lab::start().await;
    // Vendor metadata valid at upload, expiring a few seconds later.
    lab.publish_with("acme/cam-2.0.bin", "2.0", &firmware(10_000, 1), time::Duration::seconds(4));
    let (mut device, _) = lab.device(mac(1));
    device.check_in().await.unwrap();
    let id = lab.campaign("acme/cam-2.0.bin", &[mac(1)], vec![], 3600);
    lab.wait_state(&id, |s| *s == State::Canary).await;

    // Rollback: the device already trusts a timestamp newer than what the gateway serves (as
    // after an attacker replays old metadata). Signed with the real timestamp key.
    let (mut other, _) = lab.device(mac(2));
    let future = db::Generation { number: 1_000_000, issued_at: db::now_unix() };
    let signed = lab.repo.sign_view(&View { targets_version: 2, roles: Default::default() }, future).unwrap();
    let state_dir = lab.dir.join("device-020000000002");
    std::fs::write(state_dir.join("metadata").join("timestamp.json"), &signed.timestamp).unwrap();
    let err = other.update().await.unwrap_err();
    assert!(matches!(err, ClientError::Metadata(MetadataError::Rollback { .. })), "{err}");

    // Expired: wait until the vendor role's `expires` has passed.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let err = device.update().await.unwrap_err();
    assert!(matches!(err, ClientError::Metadata(MetadataError::Expired { ref role, .. }) if role == "acme"), "{err}");
    assert_eq!(device.installed().unwrap().version, "1.0");
}

/// Simulates a device that fails to boot the new image.
struct BrokenFlash;

impl Installer for BrokenFlash {
    fn install(&mut self, _image: &Path, _target: &str, _version: &str) -> Result<(), String> {
        Err("simulated boot failure".into())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_canary_halts_the_campaign() {
    let lab = Lab::start().await;
    lab.publish("acme/cam-2.0.bin", "2.0", &firmware(50_000, 5));
    let (mut canary, _) = lab.device_via(mac(1), lab.addr, Some(Box::new(BrokenFlash)));
    let (mut rest, _) = lab.device(mac(2));
    canary.check_in().await.unwrap();
    rest.check_in().await.unwrap();
    let id = lab.campaign("acme/cam-2.0.bin", &[mac(1)], vec![Stage::Percent(100)], 0);
    lab.wait_state(&id, |s| *s == State::Canary).await;

    let mut events = lab.bus.subscribe();
    let err = canary.update().await.unwrap_err();
    assert!(matches!(err, ClientError::Install { .. }), "{err}");
    let state = lab.wait_state(&id, |s| matches!(s, State::Halted { .. })).await;
    assert!(state.to_string().contains("failure rate"), "{state}");
    // The rest of the fleet is never offered the release.
    assert_eq!(rest.update().await.unwrap(), Outcome::UpToDate { version: "1.0".into() });
    // The halt was announced on the bus.
    let deadline = Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap();
        if matches!(&event.kind, EventKind::Audit { detail, .. } if detail.contains("halted")) {
            break;
        }
        assert!(Instant::now() < deadline, "no halt event");
    }
    // An operator resume goes back to the canary stage.
    let conn = lab.conn();
    Rollouts { conn: &conn, repo: &lab.repo }.resume(&id).unwrap();
    assert_eq!(lab.state(&id), State::Canary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomalous_updated_device_halts_the_campaign() {
    let lab = Lab::start().await;
    lab.publish("acme/cam-2.0.bin", "2.0", &firmware(50_000, 6));
    let (mut canary, _) = lab.device(mac(1));
    canary.check_in().await.unwrap();
    // A long soak keeps the campaign in canary while the network watches the updated device.
    let id = lab.campaign("acme/cam-2.0.bin", &[mac(1)], vec![Stage::Percent(100)], 3600);
    lab.wait_state(&id, |s| *s == State::Canary).await;
    assert!(matches!(canary.update().await.unwrap(), Outcome::Installed { .. }));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(lab.state(&id), State::Canary);

    lab.bus.publish(GatewayEvent::new(
        Severity::High,
        Some(mac(1)),
        "detector:new_destination",
        EventKind::Alert {
            incident_id: "inc-1".into(),
            detector: "new_destination".into(),
            score: 0.9,
            expected: "cloud.acme.example only".into(),
            observed: "203.0.113.9:6667".into(),
            flows: vec![],
            resolved: false,
        },
    ));
    let state = lab.wait_state(&id, |s| matches!(s, State::Halted { .. })).await;
    assert!(state.to_string().contains("anomal"), "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_without_a_valid_client_certificate_is_refused() {
    let lab = Lab::start().await;
    let url = format!("https://{}/ota/v1/metadata/timestamp.json", lab.addr);
    // No client certificate: the handshake fails.
    assert!(raw_client(&lab, None).get(&url).send().await.is_err());
    // A certificate from another CA: refused too.
    let stranger = Pki::new("not the gateway");
    let (cert, key) = stranger.issue(&mac(9).to_string(), false);
    assert!(raw_client(&lab, Some((cert, key))).get(&url).send().await.is_err());
    // An enrolled device is served.
    let (cert, key) = lab.pki.issue(&mac(9).to_string(), false);
    let response = raw_client(&lab, Some((cert, key))).get(&url).send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_device_certificate_is_refused() {
    let lab = Lab::start_with(&[4242], false).await;
    let url = format!("https://{}/ota/v1/metadata/timestamp.json", lab.addr);
    let revoked = lab.pki.issue_serial(&mac(7).to_string(), false, 4242);
    assert!(raw_client(&lab, Some(revoked)).get(&url).send().await.is_err());
    let valid = lab.pki.issue_serial(&mac(8).to_string(), false, 4243);
    let response = raw_client(&lab, Some(valid)).get(&url).send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_certificates_of_the_identity_registry_are_served_when_enrollment_is_required() {
    use iotgw::identity::{lifecycle::Lifecycle, names::Serial, registry};
    let lab = Lab::start_with(&[], true).await;
    let url = format!("https://{}/ota/v1/metadata/timestamp.json", lab.addr);
    let (cert, key) = lab.pki.issue_serial(&mac(5).to_string(), false, 5005);
    // Chained to the CA, but never issued through enrollment: refused.
    assert!(raw_client(&lab, Some((cert.clone(), key.clone()))).get(&url).send().await.is_err());

    // Record it as identity does on enrollment.
    let der = rustls_pemfile::certs(&mut cert.as_bytes()).next().unwrap().unwrap();
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).unwrap();
    let serial = Serial::from_bytes(parsed.raw_serial());
    let device: iotgw::identity::names::DeviceId = "d-020000000005".parse().unwrap();
    let now = db::now_unix();
    let conn = lab.conn();
    registry::insert_device(
        &conn,
        &registry::DeviceRecord { device: device.clone(), mac: mac(5), lifecycle: Lifecycle::Active, created_at: now },
    )
    .unwrap();
    let record = registry::CertRecord {
        serial: serial.clone(),
        device,
        mac: mac(5),
        subject: "CN=d-020000000005".into(),
        not_before: now - 60,
        not_after: now + 3600,
        status: registry::CertStatus::Valid,
        bootstrap: "token".into(),
        issued_at: now,
    };
    registry::insert_cert(&conn, &record, &der).unwrap();
    let response = raw_client(&lab, Some((cert.clone(), key.clone()))).get(&url).send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);

    // Revoked in the registry: refused on the next connection.
    registry::revoke(&conn, &serial, rcgen::RevocationReason::KeyCompromise, now).unwrap();
    assert!(raw_client(&lab, Some((cert, key))).get(&url).send().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_detail_forging_a_syslog_line_is_stored_and_rendered_escaped() {
    let lab = Lab::start().await;
    let mut events = lab.bus.subscribe();
    let (cert, key) = lab.pki.issue(&mac(3).to_string(), false);
    let url = format!("https://{}/ota/v1/report", lab.addr);
    let report = serde_json::json!({
        "device_class": "acme/cam",
        "version": "1.0",
        "status": "failure",
        "target": "acme/cam-2.0.bin\r\nforged",
        "detail": forged::HOSTILE,
    });
    let response = raw_client(&lab, Some((cert, key))).post(&url).json(&report).send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::NO_CONTENT);
    let event = tokio::time::timeout(WAIT, events.recv()).await.unwrap().unwrap();
    assert!(matches!(&event.kind, EventKind::Audit { action, .. } if action == ota::server::INSTALL_FAILED_ACTION));
    forged::assert_renders_safely(&event, forged::ESCAPED);
    forged::assert_renders_safely(&event, "acme/cam-2.0.bin\\r\\nforged");
    let row = db::device(&lab.conn(), mac(3)).unwrap().unwrap();
    assert_eq!(row.last_detail, forged::ESCAPED);

    // A device class is an identifier: refused, not rewritten.
    let (cert, key) = lab.pki.issue(&mac(3).to_string(), false);
    let bad = serde_json::json!({ "device_class": "acme/cam\nx", "version": "1.0", "status": "current" });
    let response = raw_client(&lab, Some((cert, key))).post(&url).json(&bad).send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::UNPROCESSABLE_ENTITY);
}
