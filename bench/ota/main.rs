//! OTA serving benchmark: N devices (default 1,000) download one image at the same time from the
//! real update service (rustls mTLS, one client certificate per device) on 127.0.0.1.
//!
//! The server runs in a child process (this binary with `--serve DIR`) so its peak RSS is its
//! own. Every device opens its own connection, reads the first chunk of the body, and waits at
//! a barrier until all N downloads are in flight, then reads the rest and checks the sha256.
//! Prints: downloads in flight at once, completed/failed, wall time, throughput, server RSS.
//!
//! Run: `AYA_BUILD_SKIP=1 cargo run -p gateway --example ota_bench -- [N] [IMAGE_KIB]` (add
//! `--release` for throughput figures; debug is enough for the concurrency and memory ones).
//! Bounded: at most `MAX_DEVICES` devices and a `DEADLINE` for the whole run.
use std::{
    io::BufRead as _,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use iotgw::ota::{
    self, db,
    metadata::SigningKey,
    repo::{InitOptions, Repository, VENDOR_LIFETIME},
};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType};
use sha2::Digest as _;

const DEFAULT_DEVICES: usize = 1_000;
const MAX_DEVICES: usize = 5_000;
const DEFAULT_IMAGE_KIB: usize = 256;
/// The whole run stops after this, finished or not.
const DEADLINE: Duration = Duration::from_secs(50);
const TARGET: &str = "acme/bench-2.0.bin";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve") {
        serve(Path::new(&args[2]));
        return;
    }
    let devices = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(DEFAULT_DEVICES).min(MAX_DEVICES);
    let image_kib = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(DEFAULT_IMAGE_KIB);
    drive(devices, image_kib);
}

fn config(dir: &Path) -> ota::Config {
    ota::Config {
        enabled: true,
        listen: Some("127.0.0.1:0".parse().unwrap()),
        repo_dir: dir.join("repo"),
        keys_dir: None,
        device_ca: dir.join("ca.pem"),
        device_crls: Vec::new(),
        server_cert: Some(dir.join("server.pem")),
        server_key: Some(dir.join("server.key")),
        max_connections: MAX_DEVICES + 100,
        tick_secs: 10,
        // Bench certificates come from a throw-away CA, not the identity registry.
        require_enrollment: false,
    }
}

/// The child: run the update service until stdin closes.
fn serve(dir: &Path) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (trigger, shutdown) = iotgw::shutdown::channel();
        let running = ota::spawn(
            &config(dir),
            &iotgw::identity::Config::default(),
            &dir.join("iotgw.db"),
            iotgw::event::EventBus::default(),
            shutdown,
        )
        .await
        .expect("starting the update service");
        println!("LISTENING {}", running.local_addr);
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).map(|n| n > 0).unwrap_or(false) {}
        })
        .await
        .unwrap();
        trigger.trigger();
        let _ = tokio::time::timeout(Duration::from_secs(5), running.handle).await;
    });
}

struct Ca {
    pem: String,
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn issue(ca: &Ca, cn: &str, server: bool) -> (String, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    if server {
        params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    } else {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn drive(devices: usize, image_kib: usize) {
    let started = Instant::now();
    let dir: PathBuf = std::env::temp_dir().join(format!("iotgw-ota-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Repository with one released image.
    let image: Vec<u8> = (0..image_kib * 1024).map(|i| (i as u8).wrapping_mul(131).wrapping_add(17)).collect();
    let expected = hex::encode(sha2::Sha256::digest(&image));
    {
        let mut conn = iotgw::schema::open(&dir.join("iotgw.db")).unwrap();
        let repo = Repository::open(&dir.join("repo"), None);
        repo.init(&conn, &InitOptions::default()).unwrap();
        let vendor = SigningKey::generate();
        repo.delegate(&conn, "acme", &[vendor.public()], 1, &["acme/*".into()]).unwrap();
        let path = dir.join("image.bin");
        std::fs::write(&path, &image).unwrap();
        let meta = repo
            .prepare_release(&conn, &[&vendor], "acme", &path, TARGET, "2.0", &["bench".into()], VENDOR_LIFETIME)
            .unwrap();
        repo.accept(&mut conn, &meta, &path).unwrap();
        // Released to every device (as a completed campaign would), so each may download.
        db::release_role(&conn, "acme", 1).unwrap();
        db::bump_generation(&conn).unwrap();
    }
    // PKI.
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "bench device CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let ca = Ca { pem: cert.pem(), cert, key };
    let (server_cert, server_key) = issue(&ca, "ota.gateway", true);
    std::fs::write(dir.join("ca.pem"), &ca.pem).unwrap();
    std::fs::write(dir.join("server.pem"), server_cert).unwrap();
    std::fs::write(dir.join("server.key"), server_key).unwrap();

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .arg("--serve")
        .arg(&dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("LISTENING ").expect("server did not start").to_owned();
    let idle_rss = rss_kib(pid, "VmRSS:");

    let identities: Vec<(String, String)> = (0..devices)
        .map(|i| issue(&ca, &format!("02:00:00:{:02x}:{:02x}:{:02x}", (i >> 16) as u8, (i >> 8) as u8, i as u8), false))
        .collect();
    let (sha, name) = (expected.clone(), TARGET.rsplit_once('/').unwrap().1);
    let url = format!("https://{addr}/ota/v1/targets/acme/{sha}.{name}");

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let result = runtime.block_on(async move {
        let in_flight = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let barrier = Arc::new(tokio::sync::Barrier::new(devices));
        let ca_pem = ca.pem.clone();
        let mut tasks = tokio::task::JoinSet::new();
        let load_start = Instant::now();
        for (cert, key) in identities {
            let (url, ca_pem, expected) = (url.clone(), ca_pem.clone(), expected.clone());
            let (in_flight, peak, barrier) = (in_flight.clone(), peak.clone(), barrier.clone());
            let load_start_task = load_start;
            tasks.spawn(async move {
                let client = client(&ca_pem, &cert, &key);
                let outcome = async {
                    let mut response = client.get(&url).send().await.map_err(|e| e.to_string())?;
                    if !response.status().is_success() {
                        return Err(format!("status {}", response.status()));
                    }
                    let mut hasher = sha2::Sha256::new();
                    let first = response.chunk().await.map_err(|e| e.to_string())?.unwrap_or_default();
                    hasher.update(&first);
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    Ok::<_, String>((response, hasher))
                }
                .await;
                // Every device waits here (success or not), so the barrier always opens.
                if barrier.wait().await.is_leader() {
                    eprintln!(
                        "  all {devices} downloads in flight after {:.2} s",
                        load_start_task.elapsed().as_secs_f64()
                    );
                }
                let (mut response, mut hasher) = outcome?;
                while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
                    hasher.update(&chunk);
                }
                in_flight.fetch_sub(1, Ordering::SeqCst);
                if hex::encode(hasher.finalize()) == expected { Ok(()) } else { Err("sha256 mismatch".to_owned()) }
            });
        }
        // Sample the server's RSS while the downloads run.
        let mut max_rss = 0;
        let mut ok = 0usize;
        let mut failed: Vec<String> = Vec::new();
        let deadline = tokio::time::Instant::now() + DEADLINE.saturating_sub(started.elapsed());
        let mut sample = tokio::time::interval(Duration::from_millis(100));
        while !tasks.is_empty() {
            tokio::select! {
                joined = tasks.join_next() => match joined {
                    Some(Ok(Ok(()))) => ok += 1,
                    Some(Ok(Err(e))) => failed.push(e),
                    Some(Err(e)) => failed.push(e.to_string()),
                    None => break,
                },
                _ = sample.tick() => max_rss = max_rss.max(rss_kib(pid, "VmRSS:")),
                () = tokio::time::sleep_until(deadline) => {
                    failed.push(format!("deadline: {} downloads unfinished", tasks.len()));
                    tasks.abort_all();
                    break;
                }
            }
        }
        (ok, failed, peak.load(Ordering::SeqCst), load_start.elapsed(), max_rss)
    });
    let (ok, failed, peak, elapsed, sampled_rss) = result;
    let hwm = rss_kib(pid, "VmHWM:");
    drop(child.stdin.take());
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);

    let megabytes = (ok * image_kib) as f64 / 1024.0;
    println!("ota_bench: devices={devices} image={image_kib} KiB");
    println!("  concurrent downloads in flight (peak): {peak}");
    println!("  completed and sha256-verified: {ok}, failed: {}", failed.len());
    for e in failed.iter().take(5) {
        println!("    e.g. {e}");
    }
    println!(
        "  wall time (handshakes + downloads): {:.2} s, {:.1} MiB/s",
        elapsed.as_secs_f64(),
        megabytes / elapsed.as_secs_f64()
    );
    println!(
        "  server RSS: idle {} MiB, peak (VmHWM) {} MiB, sampled max {} MiB",
        idle_rss / 1024,
        hwm / 1024,
        sampled_rss / 1024
    );
    println!(
        "  server RSS per concurrent download: {:.1} KiB (image size {} KiB: images are streamed, not held)",
        (hwm.saturating_sub(idle_rss)) as f64 / peak.max(1) as f64,
        image_kib
    );
    if ok != devices {
        std::process::exit(1);
    }
}

fn client(ca_pem: &str, cert: &str, key: &str) -> reqwest::Client {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let chain = rustls_pemfile::certs(&mut cert.as_bytes()).collect::<Result<Vec<_>, _>>().unwrap();
    let key = rustls_pemfile::private_key(&mut key.as_bytes()).unwrap().unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    reqwest::Client::builder().use_preconfigured_tls(tls).timeout(DEADLINE).build().unwrap()
}
