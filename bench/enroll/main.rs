//! Enrollments per second: CSR check (parse, signature, key strength), certificate signing,
//! and storing (token consumed, certificate recorded, audit row) in a real SQLite file (WAL),
//! through the same `Identity::enroll` the EST server calls. TLS and HTTP are left out: they
//! measure rustls, not enrollment.
//!
//! Run: `AYA_BUILD_SKIP=1 cargo bench -p gateway --bench enroll` (`ENROLL_BENCH_N` sets the
//! number of enrollments, default 2000). Prints one line per phase and the total.
use std::time::{Duration, Instant};

use iotgw::{
    device::Mac,
    identity::{self, check, core::Bootstrap},
};
use time::OffsetDateTime;

/// Enrollments measured unless `ENROLL_BENCH_N` says otherwise.
const DEFAULT_ENROLLMENTS: usize = 2_000;
/// The issue's target.
const TARGET_PER_SECOND: f64 = 1_000.0;

fn main() {
    let n: usize = std::env::var("ENROLL_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_ENROLLMENTS);
    let dir = std::env::temp_dir().join(format!("iotgw-bench-enroll-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = identity::Config { state_dir: dir.join("identity"), ..Default::default() };
    let mut identity = identity::open(&config, &dir.join("iotgw.db")).expect("open store and CA");
    let now = OffsetDateTime::now_utc();

    // Devices' side, not timed: keys, CSRs, and one token per device.
    let mut requests = Vec::with_capacity(n);
    for i in 0..n {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let csr = rcgen::CertificateParams::default().serialize_request(&key).expect("csr").der().to_vec();
        let index = u32::try_from(i).expect("n fits u32").to_be_bytes();
        let mac = Mac([0x02, 0x00, index[0], index[1], index[2], index[3]]);
        let token = identity.create_token(mac, time::Duration::hours(1), "bench", now).expect("token");
        requests.push((csr, token.secret, mac));
    }

    let verify = time_it(|| {
        for (csr, _, _) in &requests {
            check::csr(csr).expect("valid CSR");
        }
    });
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let sign = time_it(|| {
        for (_, _, mac) in &requests {
            identity
                .ca()
                .issue_device(
                    check::KeyKind::EcP256,
                    ca_key.public_key_raw(),
                    &"d-bench".parse().expect("id"),
                    *mac,
                    now,
                    time::Duration::days(30),
                )
                .expect("issue");
        }
    });
    let total = time_it(|| {
        for (csr, token, mac) in &requests {
            let enrolled = identity.enroll(csr, Bootstrap::Token(token), Some(*mac), now).expect("enroll");
            assert_eq!(enrolled.mac, *mac);
        }
    });
    let stored: i64 =
        identity.connection().query_row("SELECT COUNT(*) FROM identity_certificates", [], |r| r.get(0)).expect("count");
    assert_eq!(stored as usize, n, "every enrollment stored");

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!("enroll bench: {n} enrollments, EC P-256 CSRs, CA EC P-256, SQLite file in WAL mode");
    println!("  CSR check only (parse + signature + key):  {:>8.0}/s  {:>6.1} us each", rate(verify), per(verify, n));
    println!("  signing only (rcgen):                      {:>8.0}/s  {:>6.1} us each", rate(sign), per(sign, n));
    println!("  full enrollment (check + sign + store):    {:>8.0}/s  {:>6.1} us each", rate(total), per(total, n));
    println!("  target {TARGET_PER_SECOND:.0}/s: {}", if rate(total) >= TARGET_PER_SECOND { "met" } else { "NOT met" });
    let _ = std::fs::remove_dir_all(&dir);
}

fn time_it(work: impl FnOnce()) -> Duration {
    let start = Instant::now();
    work();
    start.elapsed()
}

fn per(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}
