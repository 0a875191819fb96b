//! Certificate-gated access over the real kernel datapath: a device in its own namespace
//! enrolls with a one-time token against the real `iotgw` (EST over TLS, with `openssl` and
//! `curl` inside the device's namespace), authenticates over mTLS, gains its class policy in
//! XDP, and loses it within a second of a revocation made with `iotgw pki` on the store file.
//!
//! Run as root through `cargo xtask test`; needs `curl` and `openssl` on PATH (fails, does not
//! skip, without them). One test at a time (`--test-threads=1`).
use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use gateway_ebpf::{lane, reason};
use iotgw::{
    datapath::{DeviceAccess, DeviceControl as _},
    device::{Access, Mac},
};
use iotgw_test_support::{certificate_serial, checked, run, stdout, text};
use netns_tests::{
    controller::{Controller, iotgw_bin},
    lab::{self, Lab, ip},
    packets::{self, Endpoints},
    policies::LANES,
    raw::RawSocket,
};

/// A meter class: its head-end, nothing else.
const METER_CLASS: &str = r#"
[[class]]
name = "meter"
id = 13
[[class.allow]]
nets = ["10.78.0.40/32"]
protocol = "tcp"
ports = [4059]
"#;
const METER_CLASS_ID: u32 = 13;
/// The policy identity gives an enrolled device: the meter class's.
const ENROLLED_POLICY: u32 = lane::FIRST_CLASS_POLICY + METER_CLASS_ID;

/// The meter's head-end, upstream; only the meter policy reaches it.
const HEAD_END: &str = "10.78.0.40";
const HEAD_END_IP: [u8; 4] = [10, 78, 0, 40];
const HEAD_END_PORT: u16 = 4059;
/// The device's own address (it needs an IP stack to speak TLS).
const DEVICE_CIDR: &str = "10.77.0.10/16";
/// The EST server, on the gateway's LAN address.
const EST_URL: &str = "https://10.77.0.1:8443";

/// The promise of the issue: revocation enforced in XDP within one second.
const ENFORCEMENT_DEADLINE: Duration = Duration::from_secs(1);
/// How long to keep polling for a change that must happen (failures report what was seen).
const POLL_LIMIT: Duration = Duration::from_secs(5);
/// SYNs per probe, and how long the upstream sniffer listens for them.
const PROBE_SYNS: u16 = 3;
const SETTLE: Duration = Duration::from_millis(700);

/// The device: a namespace with an IP stack and its files (key, CSR, certificate) in a folder
/// of its own (inside the controller's, removed with it).
struct Device {
    ns: String,
    mac: [u8; 6],
    dir: PathBuf,
    ca_pem: PathBuf,
}

impl Device {
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `program args...` inside the device's namespace.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.ns, program]);
        command
    }

    /// `curl` against the EST server, trusting the gateway's CA; returns (HTTP status, body file).
    fn curl(&self, path: &str, extra: &[&str], out: &str) -> (u16, PathBuf) {
        let out = self.path(out);
        let output = run(self
            .command("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&self.ca_pem)
            .arg("-o")
            .arg(&out)
            .args(["-w", "%{http_code}"])
            .args(extra)
            .arg(format!("{EST_URL}{path}")));
        let code = stdout(&output).parse().unwrap_or(0);
        if code == 0 {
            eprintln!("curl {path}: {}", String::from_utf8_lossy(&output.stderr));
        }
        (code, out)
    }

    /// openssl: a P-256 key (it never leaves this folder) and a base64 DER CSR asking for the
    /// SAN that binds the certificate to this device's MAC.
    fn make_csr(&self) -> (PathBuf, PathBuf) {
        let (key, der, b64) = (self.path("device.key"), self.path("device.csr.der"), self.path("device.csr.b64"));
        let san = format!("subjectAltName=URI:urn:iotgw:mac:{}", lab::format_mac(self.mac));
        checked(
            self.command("openssl")
                .args(["req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
                .args(["-subj", "/CN=meter", "-addext", &san, "-outform", "DER", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&der),
        );
        checked(self.command("openssl").args(["base64", "-in"]).arg(&der).arg("-out").arg(&b64));
        (key, b64)
    }

    /// openssl: the base64 PKCS#7 answer of simpleenroll → PEM certificate.
    fn read_pkcs7(&self, answer: &Path) -> PathBuf {
        let (der, pem) = (self.path("device.p7.der"), self.path("device.crt"));
        checked(self.command("openssl").args(["base64", "-d", "-in"]).arg(answer).arg("-out").arg(&der));
        checked(
            self.command("openssl")
                .args(["pkcs7", "-inform", "DER", "-print_certs", "-in"])
                .arg(&der)
                .arg("-out")
                .arg(&pem),
        );
        pem
    }
}

/// `iotgw pki ...` from the host namespace, on the controller's store and CA (via its config).
fn pki(ctl: &Controller, args: &[&str]) -> Output {
    checked(Command::new(iotgw_bin()).arg("pki").args(args).arg("--config").arg(&ctl.config))
}

/// What XDP enforces for `mac` now.
fn entry(ctl: &Controller, mac: Mac) -> Option<DeviceAccess> {
    ctl.maps().access(mac).expect("device table")
}

/// Polls the pinned device table until `done` holds; returns the entry and how long it took.
fn wait_until(
    ctl: &Controller,
    mac: Mac,
    what: &str,
    done: impl Fn(Option<DeviceAccess>) -> bool,
) -> (Option<DeviceAccess>, Duration) {
    let maps = ctl.maps();
    let start = Instant::now();
    loop {
        let now = maps.access(mac).expect("device table");
        if done(now) {
            return (now, start.elapsed());
        }
        assert!(start.elapsed() < POLL_LIMIT, "{mac}: {what} not reached within {POLL_LIMIT:?} (table: {now:?})");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn not_enrolled_drops(ctl: &Controller, mac: Mac) -> u64 {
    ctl.maps()
        .device_counters()
        .into_iter()
        .find(|(m, _)| *m == mac)
        .map_or(0, |(_, c)| c.drops[reason::NOT_ENROLLED as usize])
}

/// `PROBE_SYNS` raw SYNs from the device to the head-end; returns how many reached upstream.
fn probe(tx: &RawSocket, upstream: &RawSocket, endpoints: Endpoints, first_port: u16) -> usize {
    std::thread::scope(|scope| {
        let sniffer = scope.spawn(|| {
            upstream
                .collect(SETTLE, |frame| packets::tcp(frame).is_some_and(|t| t.destination_port() == HEAD_END_PORT))
                .len()
        });
        std::thread::sleep(Duration::from_millis(100));
        for n in 0..PROBE_SYNS {
            tx.send(&packets::tcp_syn(endpoints, first_port + n, HEAD_END_PORT));
        }
        sniffer.join().expect("sniffer")
    })
}

#[test]
fn device_enrolls_with_a_token_gains_its_policy_and_loses_it_on_revocation_within_a_second() {
    let lab = Lab::new(1);
    let lab_device = &lab.devices[0];
    let mac = Mac(lab_device.mac);
    // Unlike the other lab devices, this one speaks TLS: it needs an address of its own. The
    // head-end is an address of the upstream host, so a forwarded SYN arrives there.
    ip(&lab_device.ns, &["addr", "add", DEVICE_CIDR, "dev", lab_device.interface]);
    ip(&lab.up, &["addr", "add", &format!("{HEAD_END}/24"), "dev", "eth0"]);
    assert_eq!(lab_device.ip, [10, 77, 0, 10], "DEVICE_CIDR is the lab's address for device 0");

    let mut ctl = Controller::start_with_identity(
        &lab,
        &[("lanes.toml", LANES), ("meter.toml", METER_CLASS)],
        &format!("enrolled_policy_id = {ENROLLED_POLICY}\nserver_names = [\"10.77.0.1\"]\n"),
        "",
    );
    ctl.wait_for_log("EST server listening", Duration::from_secs(10));
    // Without `listen`, EST binds the LAN interface's address only: the WAN side never
    // reaches enrollment.
    ctl.wait_for_log("addr=10.77.0.1:8443", Duration::from_secs(1));

    let dir = ctl.dir.join("device");
    std::fs::create_dir_all(&dir).expect("device folder");
    let device = Device {
        ns: lab_device.ns.clone(),
        mac: lab_device.mac,
        dir,
        ca_pem: ctl.dir.join("identity").join(iotgw::identity::ca::CA_CERT_FILE),
    };
    let tx = RawSocket::open(&lab_device.ns, lab_device.interface);
    let upstream = RawSocket::open(&lab.up, "eth0");
    let to_head_end = Endpoints {
        src_mac: lab_device.mac,
        dst_mac: lab.mac_of(&lab.gw, "lan0"),
        src_ip: lab_device.ip,
        dst_ip: HEAD_END_IP,
    };

    // Before enrollment: onboarding lane, the head-end is out of reach.
    let unknown = entry(&ctl, mac);
    assert!(unknown.is_none_or(|e| e.access == Access::Onboarding), "a device nobody knows: {unknown:?}");
    assert_eq!(probe(&tx, &upstream, to_head_end, 41_000), 0, "an unenrolled device must not reach the head-end");
    assert_eq!(not_enrolled_drops(&ctl, mac), u64::from(PROBE_SYNS), "each probe dropped as not enrolled");

    // The operator makes a one-time token for the device's MAC.
    let token = stdout(&pki(&ctl, &["token", "create", "--mac", &lab::format_mac(device.mac), "--ttl", "600"]));
    assert!(!token.is_empty(), "the token is printed once");

    // The device makes its key and CSR, enrolls with the token over the onboarding lane.
    let (key, csr) = device.make_csr();
    let data = format!("@{}", csr.display());
    let (code, answer) = device.curl(
        "/.well-known/est/simpleenroll",
        &["-u", &format!("meter:{token}"), "-H", "Content-Type: application/pkcs10", "--data-binary", &data],
        "enroll.b64",
    );
    assert_eq!(code, 200, "simpleenroll: {}", text(&answer));
    let cert = device.read_pkcs7(&answer);
    let san =
        stdout(&checked(Command::new("openssl").args(["x509", "-noout", "-ext", "subjectAltName", "-in"]).arg(&cert)));
    assert!(san.contains(&format!("URI:urn:iotgw:mac:{}", lab::format_mac(device.mac))), "{san}");

    // Issued but not yet used: still the onboarding lane.
    let (now, _) = wait_until(&ctl, mac, "onboarding entry", |e| e.is_some());
    assert_eq!(now.map(|e| (e.access, e.policy_id)), Some((Access::Onboarding, lane::ONBOARDING)));
    assert_eq!(probe(&tx, &upstream, to_head_end, 42_000), 0, "a certificate not yet used opens nothing");

    // The device proves it holds the certificate (mTLS): enrolled, with the meter policy.
    let mtls = ["--cert", cert.to_str().expect("utf-8 path"), "--key", key.to_str().expect("utf-8 path")];
    let (code, answer) = device.curl("/api/identity/hello", &mtls, "hello.json");
    assert_eq!(code, 200, "hello: {}", text(&answer));
    let hello = text(&answer);
    assert!(hello.contains("\"lifecycle\":\"active\"") && hello.contains(&lab::format_mac(device.mac)), "{hello}");
    let (now, took) = wait_until(&ctl, mac, "enrolled", |e| e.is_some_and(|e| e.access == Access::Enrolled));
    // The hello handler wakes the access task, so the entry is usually there before curl exits.
    println!("enrolled in the device table {took:?} after hello returned");
    assert_eq!(now.map(|e| e.policy_id), Some(ENROLLED_POLICY), "the enrolled policy: {now:?}");
    assert_eq!(
        probe(&tx, &upstream, to_head_end, 43_000),
        usize::from(PROBE_SYNS),
        "an enrolled meter reaches its head-end"
    );

    // Revocation by the operator (CLI on the store file): enforced in XDP within a second.
    let serial = certificate_serial(&cert);
    let drops_before = not_enrolled_drops(&ctl, mac);
    let revoked_at = Instant::now();
    pki(&ctl, &["revoke", &serial, "--reason", "key_compromise"]);
    let cli_took = revoked_at.elapsed();
    let (now, _) = wait_until(&ctl, mac, "leaving enrolled", |e| e.is_some_and(|e| e.access != Access::Enrolled));
    let took = revoked_at.elapsed();
    println!("revocation enforced in XDP {took:?} after the CLI started (the CLI itself took {cli_took:?})");
    assert!(took <= ENFORCEMENT_DEADLINE, "revocation took {took:?}, over {ENFORCEMENT_DEADLINE:?}");
    assert_eq!(
        now.map(|e| (e.access, e.policy_id)),
        Some((Access::Onboarding, lane::ONBOARDING)),
        "back to onboarding"
    );
    assert_eq!(probe(&tx, &upstream, to_head_end, 44_000), 0, "a revoked device must not reach the head-end");
    assert_eq!(not_enrolled_drops(&ctl, mac), drops_before + u64::from(PROBE_SYNS), "dropped as not enrolled again");

    // The revoked certificate no longer authenticates, and changes nothing.
    let (code, answer) = device.curl("/api/identity/hello", &mtls, "revoked-hello.txt");
    assert_eq!(code, 403, "hello with a revoked certificate: {}", text(&answer));
    assert!(text(&answer).contains("revoked"), "{}", text(&answer));
    // The EST server bound the request to the MAC on the wire, read from the gateway
    // namespace's neighbour table (only the lab exercises that path for real).
    let seen = format!("peer_mac=Some({})", lab::format_mac(device.mac));
    assert_eq!(ctl.log_count(&seen), 1, "the refusal names the MAC seen on the wire ({seen})");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(entry(&ctl, mac).map(|e| e.access), Some(Access::Onboarding));
}
