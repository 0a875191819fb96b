//! The XDP program's per-packet cost, kernel-timed with BPF_PROG_TEST_RUN.
//!
//! Runs iotgw's LAN program, a bare `XDP_PASS` program (from the same object) and Debian's
//! xdp-filter (xdp-tools' `xdpfilt_dny_all.o`, all features, deny mode) on the same packets,
//! in the same run: allowed, denied, quarantined, unknown-device and malformed frames. Prints
//! ns/packet per packet kind, the mix average, and the ratios to the bare program.
//! Target: the full program ≤ 2.5× the bare one on the mix.
use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use aya::{
    EbpfLoader,
    programs::{ProgramError, TestRun as _, TestRunOptions, Xdp},
};
use gateway_ebpf::{GatewayConfig, lane, programs};
use iotgw::{
    datapath::{DeviceAccess, DeviceControl as _, loader, maps::Maps},
    device::{Access, Mac},
};
use netns_tests::packets::{self, Endpoints};

/// Repetitions per packet kind and program (the kernel times the whole loop).
const REPEAT: u32 = 1_000_000;
const XDP_FILTER_OBJECT: &str = "/usr/lib/x86_64-linux-gnu/bpf/xdpfilt_dny_all.o";
const TARGET_RATIO: f64 = 2.5;

const GATEWAY_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 1];
const ENROLLED_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x10];
const QUARANTINED_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x11];
const UNKNOWN_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x12];
const DEVICE_IP: [u8; 4] = [10, 77, 0, 16];
const BROKER_IP: [u8; 4] = [10, 78, 0, 2];

const POLICY: &str = r#"
[lanes.onboarding]
[[lanes.onboarding.allow]]
nets = ["10.77.0.1/32"]
protocol = "udp"
ports = [53, 67]
[lanes.quarantine]
[[lanes.quarantine.allow]]
nets = ["10.77.0.1/32"]
protocol = "udp"
ports = [53]
[[class]]
name = "sensor"
id = 20
[[class.allow]]
nets = ["10.78.0.0/24"]
protocol = "tcp"
ports = [1883, 8883]
[defaults]
malformed = "drop"
unknown_device = "drop"
policy_miss = "drop"
quarantine = "redirect"
"#;

fn endpoints(src_mac: [u8; 6]) -> Endpoints {
    Endpoints { src_mac, dst_mac: GATEWAY_MAC, src_ip: DEVICE_IP, dst_ip: BROKER_IP }
}

/// The mix: what a gateway sees, each kind weighted equally.
fn packets() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("allowed (enrolled, MQTT)", packets::tcp_syn(endpoints(ENROLLED_MAC), 40_000, packets::MQTT_PORT)),
        ("denied (enrolled, HTTP)", packets::tcp_syn(endpoints(ENROLLED_MAC), 40_001, packets::HTTP_PORT)),
        ("quarantined (redirect)", packets::udp(endpoints(QUARANTINED_MAC), 40_002, 9_000, &[0u8; 64])),
        ("unknown device", packets::udp(endpoints(UNKNOWN_MAC), 40_003, 9_000, &[0u8; 64])),
        ("malformed (IHL 4)", packets::ipv4_with_ihl(endpoints(ENROLLED_MAC), 4)),
    ]
}

/// Mean kernel time of one run over `REPEAT` runs (BPF_PROG_TEST_RUN's `duration`).
fn time_per_packet(program: &Xdp, packet: &[u8]) -> Result<Duration, ProgramError> {
    let mut out = vec![0u8; packet.len() + 256];
    let opts = TestRunOptions { data_in: Some(packet), data_out: Some(&mut out), repeat: REPEAT, ..TestRunOptions::new() };
    let result = program.test_run(opts)?;
    Ok(result.duration)
}

fn main() -> anyhow::Result<()> {
    anyhow::ensure!(!loader::object().is_empty(), "built without the XDP object (AYA_BUILD_SKIP)");
    let pin_dir = PathBuf::from(format!("/sys/fs/bpf/iotgw-bench-{}", std::process::id()));
    loader::prepare_bpffs(&pin_dir)?;
    let result = run(&pin_dir);
    let _ = loader::detach_all(&pin_dir);
    let _ = std::fs::remove_dir_all(&pin_dir);
    result
}

fn run(pin_dir: &std::path::Path) -> anyhow::Result<()> {
    let mut ebpf = EbpfLoader::new().default_map_pin_directory(pin_dir).load(loader::object()).context("loading iotgw's object")?;
    for name in [programs::LAN_INGRESS, programs::PASS] {
        let program: &mut Xdp = ebpf.program_mut(name).context(name)?.try_into()?;
        program.load()?;
    }
    let maps = Maps::take(&mut ebpf)?;
    let policy = iotgw::policy::parse_sources(&[("bench.toml".into(), POLICY.to_owned())]).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let policy = iotgw::policy::compile(&policy).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    maps.sync_policy(&policy.rules)?;
    let v = policy.verdicts;
    maps.write_config(&GatewayConfig {
        malformed_verdict: v.malformed,
        unknown_verdict: v.unknown,
        policy_miss_verdict: v.policy_miss,
        quarantine_verdict: v.quarantine,
        ..GatewayConfig::default()
    })?;
    let class_policy = lane::FIRST_CLASS_POLICY + 20;
    maps.set_access(Mac(ENROLLED_MAC), DeviceAccess { access: Access::Enrolled, policy_id: class_policy, class_id: 20 })?;
    maps.set_access(Mac(QUARANTINED_MAC), DeviceAccess { access: Access::Quarantined, policy_id: class_policy, class_id: 20 })?;
    maps.set_device_ipv4(Mac(ENROLLED_MAC), Ipv4Addr::from(DEVICE_IP))?;

    // xdp-filter pins its maps by name: keep them in our directory, removed at the end.
    let mut filter = EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .load_file(XDP_FILTER_OBJECT).with_context(|| format!("loading {XDP_FILTER_OBJECT} (apt-get install xdp-tools)"))?;
    let filter_name = filter.programs().map(|(name, _)| name.to_owned()).next().context("no program in xdp-filter's object")?;
    let filter_program: &mut Xdp = filter.program_mut(&filter_name).context("xdp-filter program")?.try_into()?;
    filter_program.load().context("loading xdp-filter's program")?;

    let lan: &Xdp = ebpf.program(programs::LAN_INGRESS).context("lan")?.try_into()?;
    let pass: &Xdp = ebpf.program(programs::PASS).context("pass")?.try_into()?;
    let filter_program: &Xdp = filter.program(&filter_name).context("xdp-filter program")?.try_into()?;

    println!("XDP per-packet cost, BPF_PROG_TEST_RUN, repeat {REPEAT}, kernel-timed (ns/packet)");
    println!("{:<28} {:>10} {:>10} {:>12} {:>10} {:>12}", "packet", "iotgw", "bare pass", "xdp-filter", "iotgw/bare", "filter/bare");
    let (mut sum_lan, mut sum_pass, mut sum_filter) = (0.0, 0.0, 0.0);
    let mix = packets();
    for (name, packet) in &mix {
        // The kernel reports the mean time of one repetition.
        let ns = |d: Duration| d.as_nanos() as f64;
        let l = ns(time_per_packet(lan, packet)?);
        let p = ns(time_per_packet(pass, packet)?);
        let f = ns(time_per_packet(filter_program, packet)?);
        println!("{name:<28} {l:>10.1} {p:>10.1} {f:>12.1} {:>10.2} {:>12.2}", l / p, f / p);
        sum_lan += l;
        sum_pass += p;
        sum_filter += f;
    }
    let n = mix.len() as f64;
    let (l, p, f) = (sum_lan / n, sum_pass / n, sum_filter / n);
    println!("{:<28} {l:>10.1} {p:>10.1} {f:>12.1} {:>10.2} {:>12.2}", "mix average", l / p, f / p);
    let ratio = l / p;
    println!("target: iotgw ≤ {TARGET_RATIO}× bare on the mix: {}", if ratio <= TARGET_RATIO { "met" } else { "NOT met" });
    println!("xdp-filter program: {filter_name} from {XDP_FILTER_OBJECT}");
    Ok(())
}
