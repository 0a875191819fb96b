//! Signed OTA updates over the real kernel datapath: a quarantined device, in its own
//! namespace with an IP stack, runs the real `iotgw ota simulate-device` against the real
//! `iotgw run` (update service on the gateway's LAN address), downloads, verifies and reports
//! the new firmware through the quarantine lane's update rule, while everything else it sends
//! is redirected to the quarantine host and never reaches upstream.
//!
//! The repository, vendor key, release and canary campaign are made beforehand with the `iotgw
//! ota` CLI from the host namespace, in the controller's folder and store; the certificates
//! (device CA, server, device) with `openssl`. The device certificate comes from a lab CA, not
//! from the identity registry, so the service runs with `require_enrollment = false`
//! (enrollment itself is covered by the identity lab test).
//!
//! Run as root through `cargo xtask test`; needs `openssl` on PATH. One test at a time.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use gateway_ebpf::lane;
use iotgw::{
    datapath::{DeviceAccess, DeviceControl as _},
    device::{Access, Mac},
};
use iotgw_test_support::{checked, stdout};
use netns_tests::{
    controller::{Controller, iotgw_bin},
    lab::{self, Lab, UPSTREAM_IP, ip},
    packets::{self, Endpoints},
    policies::{LANES, defaults},
    raw::RawSocket,
};

/// The update lane: quarantined devices may still reach the update service on the gateway.
const UPDATE_LANE: &str = r#"
[[lanes.quarantine.allow]]
nets = ["10.77.0.1/32"]
protocol = "tcp"
ports = [8444]
"#;

/// A camera class: its cloud over HTTPS, upstream.
const CAM_CLASS: &str = r#"
[[class]]
name = "cam"
id = 21
[[class.allow]]
nets = ["10.78.0.2/32"]
protocol = "tcp"
ports = [443]
"#;
const CAM_CLASS_ID: u32 = 21;

const DEVICE_CIDR: &str = "10.77.0.10/16";
const GATEWAY_LAN: &str = "10.77.0.1";
const OTA_URL: &str = "https://10.77.0.1:8444";
const HTTPS_PORT: u16 = 443;

/// The release: vendor role, target path, versions, image size.
const VENDOR: &str = "acme";
const TARGET: &str = "acme/cam-2.0.bin";
const SHIPPED_VERSION: &str = "1.0";
const NEW_VERSION: &str = "2.0";
const IMAGE_BYTES: usize = 256 * 1024;

/// How often, and how far apart, the device retries while the campaign has not started yet.
const UPDATE_ATTEMPTS: u32 = 20;
const UPDATE_RETRY: Duration = Duration::from_millis(500);
/// SYNs in the escape probe, and how long the sniffers listen.
const PROBE_SYNS: u16 = 4;
const SETTLE: Duration = Duration::from_millis(700);

/// Removes a folder on drop, for the files made before the controller (which removes its
/// folder itself) exists.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// openssl: a P-256 key and a certificate for `subject` with extensions `ext` (config lines),
/// signed by the CA in `pki` (or self-signed when `ca` is None). Returns (cert, key).
fn issue(pki: &Path, name: &str, subject: &str, ext: &str, ca: bool) -> (PathBuf, PathBuf) {
    let (key, csr, cert, ext_file) = (
        pki.join(format!("{name}.key")),
        pki.join(format!("{name}.csr")),
        pki.join(format!("{name}.pem")),
        pki.join(format!("{name}.ext")),
    );
    std::fs::write(&ext_file, ext).expect("extension file");
    checked(
        Command::new("openssl")
            .args([
                "req",
                "-new",
                "-nodes",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-subj",
                subject,
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&csr),
    );
    let mut sign = Command::new("openssl");
    sign.args(["x509", "-req", "-days", "2", "-in"]).arg(&csr).arg("-out").arg(&cert).arg("-extfile").arg(&ext_file);
    if ca {
        sign.arg("-signkey").arg(&key);
    } else {
        sign.arg("-CA").arg(pki.join("ca.pem")).arg("-CAkey").arg(pki.join("ca.key")).arg("-CAcreateserial");
    }
    checked(&mut sign);
    (cert, key)
}

/// `iotgw ota ARGS --repo REPO --store STORE` from the host namespace.
fn ota(repo: &Path, store: &Path, args: &[&str]) -> String {
    stdout(&checked(Command::new(iotgw_bin()).arg("ota").args(args).arg("--repo").arg(repo).arg("--store").arg(store)))
}

/// Raw SYNs from the device to `dst`:`port`; returns (arrivals at the quarantine host,
/// arrivals upstream).
fn escape_probe(lab: &Lab, tx: &RawSocket, endpoints: Endpoints, first_port: u16, port: u16) -> (usize, usize) {
    let quarantine = RawSocket::open(&lab.quar, "eth0");
    let upstream = RawSocket::open(&lab.up, "eth0");
    let to_port = |frame: &[u8]| packets::tcp(frame).is_some_and(|t| t.destination_port() == port && t.syn());
    std::thread::scope(|scope| {
        let q = scope.spawn(|| quarantine.collect(SETTLE, to_port).len());
        let u = scope.spawn(|| upstream.collect(SETTLE, to_port).len());
        std::thread::sleep(Duration::from_millis(100));
        for n in 0..PROBE_SYNS {
            tx.send(&packets::tcp_syn(endpoints, first_port + n, port));
        }
        (q.join().expect("sniffer"), u.join().expect("sniffer"))
    })
}

#[test]
fn quarantined_device_updates_through_the_update_lane_and_nothing_else() {
    let lab = Lab::new(1);
    let lab_device = &lab.devices[0];
    let mac = Mac(lab_device.mac);
    let mac_text = lab::format_mac(lab_device.mac);
    assert_eq!(lab_device.ip, [10, 77, 0, 10], "DEVICE_CIDR is the lab's address for device 0");
    // This device speaks TLS: it needs an address and a route of its own.
    ip(&lab_device.ns, &["addr", "add", DEVICE_CIDR, "dev", lab_device.interface]);
    ip(&lab_device.ns, &["route", "add", "default", "via", GATEWAY_LAN]);

    // Everything the gateway will read, prepared before it starts, in its own folder.
    let dir = Controller::dir_for(&lab);
    let _ = std::fs::remove_dir_all(&dir);
    let cleanup = RemoveOnDrop(dir.clone());
    let (pki, repo, store) = (dir.join("pki"), dir.join("ota"), dir.join("iotgw.db"));
    std::fs::create_dir_all(&pki).expect("pki folder");

    // Device CA, the update service's certificate (for the LAN address), the device's
    // certificate in the form identity issues (device id and MAC in SAN URIs).
    let (ca_pem, _) = issue(
        &pki,
        "ca",
        "/CN=iotgw lab device CA",
        "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n",
        true,
    );
    let (server_pem, server_key) = issue(
        &pki,
        "server",
        "/CN=ota.gateway",
        &format!("basicConstraints=CA:FALSE\nsubjectAltName=IP:{GATEWAY_LAN}\nextendedKeyUsage=serverAuth\n"),
        false,
    );
    let device_id = format!("d-{}", mac_text.replace(':', ""));
    let (device_pem, device_key) = issue(
        &pki,
        "device",
        &format!("/CN={device_id}"),
        &format!(
            "basicConstraints=CA:FALSE\nsubjectAltName=URI:urn:iotgw:device:{device_id},URI:urn:iotgw:mac:{mac_text}\nextendedKeyUsage=clientAuth\n"
        ),
        false,
    );

    // The repository, a vendor delegation, a signed release and a canary campaign for the device.
    ota(&repo, &store, &["init", "--root-keys", "1", "--root-threshold", "1"]);
    let vendor_key = pki.join("vendor.pem");
    checked(Command::new(iotgw_bin()).args(["ota", "key", "generate", "--out"]).arg(&vendor_key));
    let vendor_pub = pki.join("vendor.pub.pem");
    ota(&repo, &store, &["delegate", "--role", VENDOR, "--key", vendor_pub.to_str().expect("utf-8 path")]);
    let keys: serde_json::Value = serde_json::from_str(&ota(&repo, &store, &["keys", "--json"])).expect("JSON");
    assert_eq!(
        (keys["root"]["roles"]["root"]["threshold"].as_u64(), keys["targets"]["delegations"][0]["name"].as_str()),
        (Some(1), Some(VENDOR)),
        "root threshold and the vendor's delegation: {keys}"
    );
    let image: Vec<u8> = (0..IMAGE_BYTES).map(|i| (i as u8).wrapping_mul(31).wrapping_add(7)).collect();
    let image_file = dir.join("cam-2.0.bin");
    std::fs::write(&image_file, &image).expect("image");
    ota(
        &repo,
        &store,
        &[
            "publish",
            image_file.to_str().expect("utf-8 path"),
            "--version",
            NEW_VERSION,
            "--device-class",
            "cam",
            "--key",
            vendor_key.to_str().expect("utf-8 path"),
            "--role",
            VENDOR,
        ],
    );
    let listed = ota(&repo, &store, &["list"]);
    assert!(listed.contains(TARGET) && listed.contains(NEW_VERSION), "published: {listed}");
    let listed: serde_json::Value = serde_json::from_str(&ota(&repo, &store, &["list", "--json"])).expect("JSON");
    assert_eq!(
        (listed[0]["path"].as_str(), listed[0]["firmware_version"].as_str(), listed[0]["released"].as_str()),
        (Some(TARGET), Some(NEW_VERSION), Some("campaign")),
        "published, offered by campaign only: {listed}"
    );
    ota(&repo, &store, &["campaign", "create", "--target", TARGET, "--canary", &mac_text]);
    let campaigns: serde_json::Value =
        serde_json::from_str(&ota(&repo, &store, &["campaign", "status", "--json"])).expect("JSON");
    assert_eq!(
        (campaigns[0]["target"].as_str(), campaigns[0]["state"].as_str()),
        (Some(TARGET), Some("draft")),
        "{campaigns}"
    );

    let lanes = format!("{LANES}{UPDATE_LANE}");
    let defaults = defaults("drop");
    let ota_config = format!(
        "[ota]\nenabled = true\nrepo_dir = \"{}\"\ndevice_ca = \"{}\"\n\
         server_cert = \"{}\"\nserver_key = \"{}\"\ntick_secs = 1\nrequire_enrollment = false\n",
        repo.display(),
        ca_pem.display(),
        server_pem.display(),
        server_key.display(),
    );
    let mut ctl = Controller::start_in_prepared_dir(
        &lab,
        &[("lanes.toml", &lanes), ("cam.toml", CAM_CLASS), ("defaults.toml", &defaults)],
        "",
        &ota_config,
    );
    // The controller removes its folder from here on.
    std::mem::forget(cleanup);
    ctl.wait_for_log("ota update service listening", Duration::from_secs(10));
    // Without `listen`, the update service binds the LAN interface's address only.
    ctl.wait_for_log(&format!("address={GATEWAY_LAN}:8444"), Duration::from_secs(1));

    // The device is quarantined (its class policy kept for later), at its address.
    let maps = ctl.maps();
    maps.set_access(
        mac,
        DeviceAccess {
            access: Access::Quarantined,
            policy_id: lane::FIRST_CLASS_POLICY + CAM_CLASS_ID,
            class_id: CAM_CLASS_ID as u16,
        },
    )
    .expect("device entry");
    maps.set_device_ipv4(mac, Ipv4Addr::from(lab_device.ip)).expect("device address");

    // Quarantined: its camera cloud (upstream 443) is out of reach; every SYN goes to the
    // quarantine host.
    let tx = RawSocket::open(&lab_device.ns, lab_device.interface);
    let to_cloud = Endpoints {
        src_mac: lab_device.mac,
        dst_mac: lab.mac_of(&lab.gw, "lan0"),
        src_ip: lab_device.ip,
        dst_ip: UPSTREAM_IP,
    };
    let (at_quarantine, at_upstream) = escape_probe(&lab, &tx, to_cloud, 46_000, HTTPS_PORT);
    assert_eq!(at_upstream, 0, "a quarantined device must not reach upstream");
    assert_eq!(at_quarantine, usize::from(PROBE_SYNS), "every non-update SYN goes to the quarantine host");

    // The device (shipped with root v1 and firmware 1.0) updates over the update lane. Until
    // the rollout loop has started the campaign, the service offers nothing: retry, bounded.
    let state_dir = dir.join("device-state");
    let root_v1 = repo.join("metadata").join("1.root.json");
    let simulate = |provision: bool| {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &lab_device.ns])
            .arg(iotgw_bin())
            .args(["ota", "simulate-device", "--url", OTA_URL, "--device-class", "cam", "--server-ca"])
            .arg(&ca_pem)
            .arg("--cert")
            .arg(&device_pem)
            .arg("--key")
            .arg(&device_key)
            .arg("--state-dir")
            .arg(&state_dir);
        if provision {
            command.arg("--root").arg(&root_v1).args(["--version", SHIPPED_VERSION]);
        }
        checked(&mut command)
    };
    let started = Instant::now();
    let mut outcome = stdout(&simulate(true));
    for _ in 1..UPDATE_ATTEMPTS {
        if !outcome.starts_with("up to date") {
            break;
        }
        assert_eq!(outcome, format!("up to date: {SHIPPED_VERSION}"), "before the campaign offers anything");
        std::thread::sleep(UPDATE_RETRY);
        outcome = stdout(&simulate(false));
    }
    println!("device updated {:?} after the service listened: {outcome}", started.elapsed());
    assert_eq!(
        outcome,
        format!("installed {TARGET}: {SHIPPED_VERSION} -> {NEW_VERSION} (1 download attempt(s))"),
        "the device downloads, verifies and installs the release"
    );
    assert_eq!(
        std::fs::read(state_dir.join("flash.bin")).expect("flashed image"),
        image,
        "the flashed image is the release"
    );
    // The gateway recorded the device's report: its firmware version and a success.
    let devices = ota(&repo, &store, &["devices"]);
    let row =
        devices.lines().find(|l| l.contains(&mac_text)).unwrap_or_else(|| panic!("{mac_text} not in:\n{devices}"));
    assert!(row.contains(NEW_VERSION) && row.contains("success"), "device row: {row}");
    let devices: serde_json::Value = serde_json::from_str(&ota(&repo, &store, &["devices", "--json"])).expect("JSON");
    let row = devices.as_array().expect("a list").iter().find(|d| d["mac"] == mac_text.as_str()).expect("the device");
    assert_eq!((row["firmware_version"].as_str(), row["last_status"].as_str()), (Some(NEW_VERSION), Some("success")));
    // Its next check-in: nothing newer once installed.
    assert_eq!(stdout(&simulate(false)), format!("up to date: {NEW_VERSION}"), "nothing newer once installed");

    // Still quarantined after the update: the update lane opened nothing else.
    assert_eq!(maps.access(mac).expect("device table").map(|e| e.access), Some(Access::Quarantined));
    let (at_quarantine, at_upstream) = escape_probe(&lab, &tx, to_cloud, 47_000, HTTPS_PORT);
    assert_eq!(
        (at_quarantine, at_upstream),
        (usize::from(PROBE_SYNS), 0),
        "after the update, still only the update lane"
    );
}
