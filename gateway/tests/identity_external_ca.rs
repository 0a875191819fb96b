//! The identity service with an external intermediate CA and a manufacturer CA, both made by
//! `openssl`: a factory certificate (IDevID) bootstraps enrollment without a token, the
//! issued certificate chains to the external root for `openssl verify`, and a short-lived
//! certificate's expiry sends the device back to onboarding within a second.
//!
//! Needs `curl` and `openssl` on PATH; fails (does not skip) without them.
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::Arc,
    time::{Duration, Instant},
};

use iotgw::{
    datapath::{Control, DeviceControl, MemoryDatapath},
    device::{Access, Mac},
    event::EventBus,
    identity,
};
use iotgw_test_support::{checked, run};

const FACTORY_MAC: &str = "02:00:00:00:00:07";

fn openssl(dir: &Path, args: &[&str]) -> Output {
    checked(Command::new("openssl").current_dir(dir).args(args))
}

/// A self-signed root and, when `issuer` is given, a CA signed by it. Returns (cert, key).
fn make_ca(dir: &Path, name: &str, issuer: Option<&str>) -> (PathBuf, PathBuf) {
    let subject = format!("/O=Acme/CN={name}");
    match issuer {
        None => {
            openssl(
                dir,
                &[
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-days",
                    "2",
                    "-subj",
                    &subject,
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.crt"),
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            );
        }
        Some(issuer) => {
            std::fs::write(dir.join("ca.ext"), "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n").unwrap();
            openssl(
                dir,
                &[
                    "req",
                    "-new",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-subj",
                    &subject,
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                ],
            );
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    &format!("{issuer}.crt"),
                    "-CAkey",
                    &format!("{issuer}.key"),
                    "-CAcreateserial",
                    "-days",
                    "2",
                    "-out",
                    &format!("{name}.crt"),
                    "-extfile",
                    "ca.ext",
                ],
            );
        }
    }
    (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")))
}

fn curl(dir: &Path, url: &str, ca: &Path, args: &[&str], out: &str) -> u16 {
    let output = run(Command::new("curl")
        .current_dir(dir)
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["-o", out, "-w", "%{http_code}"])
        .args(args)
        .arg(url));
    let code = String::from_utf8_lossy(&output.stdout).trim().parse().unwrap_or(0);
    if code == 0 {
        eprintln!("curl {url} failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    code
}

fn access(datapath: &MemoryDatapath, mac: &str) -> Option<Access> {
    datapath.access(mac.parse::<Mac>().unwrap()).unwrap().map(|d| d.access)
}

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn factory_certificate_enrolls_under_an_external_intermediate_and_expiry_revokes_access() {
    let dir = Dir(std::env::temp_dir().join(format!("iotgw-extca-{}", std::process::id())));
    let d = dir.0.as_path();
    let _ = std::fs::remove_dir_all(d);
    std::fs::create_dir_all(d).unwrap();

    // The operator's PKI: root → intermediate given to the gateway. The maker's PKI: a root
    // that signed the device's factory certificate, its MAC as subject serialNumber.
    let (root, _) = make_ca(d, "root", None);
    let (inter, inter_key) = make_ca(d, "inter", Some("root"));
    let (maker, _) = make_ca(d, "maker", None);
    openssl(
        d,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            &format!("/CN=sensor/serialNumber={FACTORY_MAC}"),
            "-keyout",
            "idevid.key",
            "-out",
            "idevid.csr",
        ],
    );
    // X.509 v3 as IEEE 802.1AR requires (webpki, under rustls, refuses v1 certificates).
    std::fs::write(d.join("idevid.ext"), "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n")
        .unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "idevid.csr",
            "-CA",
            "maker.crt",
            "-CAkey",
            "maker.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "idevid.crt",
            "-extfile",
            "idevid.ext",
        ],
    );

    let config = identity::Config {
        state_dir: d.join("unused-state"),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        ca_cert: Some(inter.clone()),
        ca_key: Some(inter_key),
        ca_chain: Some(root.clone()),
        manufacturer_cas: vec![maker],
        cert_validity_secs: 3,
        reconcile_interval_ms: 100,
        resolve_macs: false,
        ..Default::default()
    };
    assert!(config.problems().is_empty(), "{:?}", config.problems());
    let datapath = Arc::new(MemoryDatapath::default());
    let control: Control = datapath.clone();
    let (trigger, shutdown) = iotgw::shutdown::channel();
    let running = identity::spawn(&config, &d.join("iotgw.db"), control, EventBus::default(), shutdown).await.unwrap();
    let url = |path: &str| format!("https://127.0.0.1:{}{path}", running.local_addr.port());
    assert!(!config.state_dir.exists(), "an external CA generates nothing");

    // cacerts: the intermediate and the root.
    assert_eq!(curl(d, &url("/.well-known/est/cacerts"), &root, &[], "cacerts.b64"), 200);
    openssl(d, &["base64", "-d", "-in", "cacerts.b64", "-out", "cacerts.der"]);
    let bundle =
        String::from_utf8_lossy(&openssl(d, &["pkcs7", "-inform", "DER", "-in", "cacerts.der", "-print_certs"]).stdout)
            .to_string();
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2, "{bundle}");

    // The device enrolls with its factory certificate (no token) for a fresh key.
    openssl(
        d,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=ldevid",
            "-keyout",
            "dev.key",
            "-outform",
            "DER",
            "-out",
            "dev.csr.der",
        ],
    );
    openssl(d, &["base64", "-in", "dev.csr.der", "-out", "dev.csr.b64"]);
    let code = curl(
        d,
        &url("/.well-known/est/simpleenroll"),
        &root,
        &[
            "--cert",
            "idevid.crt",
            "--key",
            "idevid.key",
            "-H",
            "Content-Type: application/pkcs10",
            "--data-binary",
            "@dev.csr.b64",
        ],
        "dev.p7.b64",
    );
    assert_eq!(code, 200, "{}", std::fs::read_to_string(d.join("dev.p7.b64")).unwrap_or_default());
    openssl(d, &["base64", "-d", "-in", "dev.p7.b64", "-out", "dev.p7.der"]);
    openssl(d, &["pkcs7", "-inform", "DER", "-in", "dev.p7.der", "-print_certs", "-out", "dev.crt"]);
    openssl(d, &["verify", "-purpose", "sslclient", "-CAfile", "root.crt", "-untrusted", "inter.crt", "dev.crt"]);
    let san =
        String::from_utf8_lossy(&openssl(d, &["x509", "-noout", "-ext", "subjectAltName", "-in", "dev.crt"]).stdout)
            .to_string();
    assert!(san.contains(&format!("urn:iotgw:mac:{FACTORY_MAC}")), "{san}");

    // A factory certificate from an unlisted maker is refused.
    make_ca(d, "stranger", None);
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "idevid.csr",
            "-CA",
            "stranger.crt",
            "-CAkey",
            "stranger.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "fake.crt",
            "-extfile",
            "idevid.ext",
        ],
    );
    let code = curl(
        d,
        &url("/.well-known/est/simpleenroll"),
        &root,
        &[
            "--cert",
            "fake.crt",
            "--key",
            "idevid.key",
            "-H",
            "Content-Type: application/pkcs10",
            "--data-binary",
            "@dev.csr.b64",
        ],
        "fake.txt",
    );
    assert_eq!(code, 403, "{}", std::fs::read_to_string(d.join("fake.txt")).unwrap_or_default());

    // mTLS with the new certificate: enrolled; then it expires and access goes back.
    assert_eq!(
        curl(d, &url("/api/identity/hello"), &root, &["--cert", "dev.crt", "--key", "dev.key"], "hello.json"),
        200
    );
    let not_after =
        String::from_utf8_lossy(&openssl(d, &["x509", "-noout", "-enddate", "-in", "dev.crt"]).stdout).to_string();
    let deadline = Instant::now() + Duration::from_secs(1);
    while access(&datapath, FACTORY_MAC) != Some(Access::Enrolled) {
        assert!(Instant::now() < deadline, "not enrolled after hello");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let not_after = time::PrimitiveDateTime::parse(
        not_after.trim().trim_start_matches("notAfter=").trim_end_matches(" GMT"),
        time::macros::format_description!("[month repr:short] [day padding:space] [hour]:[minute]:[second] [year]"),
    )
    .unwrap()
    .assume_utc();
    let limit = Instant::now() + Duration::from_secs(6);
    while access(&datapath, FACTORY_MAC) != Some(Access::Onboarding) {
        assert!(Instant::now() < limit, "still {:?} long after expiry", access(&datapath, FACTORY_MAC));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let late = time::OffsetDateTime::now_utc() - not_after;
    println!("expiry enforced {late} after notAfter");
    assert!(late < time::Duration::seconds(1), "expiry enforced {late} after notAfter");
    assert_eq!(
        curl(d, &url("/api/identity/hello"), &root, &["--cert", "dev.crt", "--key", "dev.key"], "expired.txt"),
        403
    );

    trigger.trigger();
    tokio::time::timeout(Duration::from_secs(5), running.join()).await.expect("service stops on shutdown");
}
