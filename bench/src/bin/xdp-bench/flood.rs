//! Section 4: a flood on veth. A quarantined device sends `FRAMES` frames of one UDP flow as
//! fast as one socket can (`sendmmsg`), its sending thread pinned to one CPU; on veth the
//! receiving side (XDP, or the stack with nftables) runs on that same CPU, in the softirq of
//! the send. So frames per second is what one core sustains, sender included, for each of:
//! the stack with nothing to drop the frames early (they die at the IP layer: no route),
//! nftables dropping the device's MAC in a netdev ingress chain, xdp-filter (deny mode, the
//! policy's rules: the flood matches none), and iotgw's LAN program dropping a quarantined
//! device's traffic (quarantine verdict `drop`), with the scale section's site in its maps.
//! Bounded: `FRAMES` per run, `DEADLINE` at most; inside the bench's own namespaces.
use std::time::{Duration, Instant};

use anyhow::Context as _;
use gateway_ebpf::{GatewayConfig, counter, reason, verdict};
use iotgw::datapath::maps::Maps;
use netns_tests::{lab::format_mac, packets, raw::RawSocket};

use super::{QUARANTINED_MAC, endpoints, veth::VethPair};

const FRAMES: usize = 1_000_000;
const DEADLINE: Duration = Duration::from_secs(60);
/// The CPU the sender (and so the receive path) runs on.
const CPU: usize = 0;

pub fn run(pair: &VethPair, lan_program_id: u32, maps: &Maps) -> anyhow::Result<()> {
    println!();
    println!("4. flood on veth: {FRAMES} frames of one UDP flow from a quarantined device, sender pinned to CPU {CPU}");
    println!("{:<34} {:>10} {:>10} {:>12}", "dropped by", "frames", "seconds", "frames/s");
    let frame = packets::udp(endpoints(QUARANTINED_MAC), 41_000, 9_000, &[0u8; 64]);
    let tx = RawSocket::open(&pair.sender, pair.sender_if);
    let flood = || -> anyhow::Result<(usize, f64)> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    pin_to_cpu(CPU)?;
                    let started = Instant::now();
                    let sent = tx.send_repeated(&frame, FRAMES, started + DEADLINE);
                    Ok((sent, started.elapsed().as_secs_f64()))
                })
                .join()
                .map_err(|_| anyhow::anyhow!("the flood's sender panicked"))?
        })
    };
    let row = |name: &str, (sent, seconds): (usize, f64)| {
        println!("{name:<34} {sent:>10} {seconds:>10.2} {:>12.0}", sent as f64 / seconds);
    };

    // xdp-filter is attached since `veth::XdpFilter::load`.
    let filter_drops = || xdp_filter_drops(pair);
    let before = filter_drops()?;
    let result = flood()?;
    anyhow::ensure!(filter_drops()? - before >= result.0 as u64, "xdp-filter did not drop every frame");
    row("xdp-filter (XDP, native)", result);
    pair.in_gateway("xdp-filter", &["unload", &pair.gateway_if])?;

    row("nothing (the stack: no route)", flood()?);

    let mac = format_mac(QUARANTINED_MAC);
    let hook = format!("{{ type filter hook ingress device \"{}\" priority 0; }}", pair.gateway_if);
    let nft = |args: &[&str]| pair.in_gateway("nft", args).context("nft (apt-get install nftables)");
    nft(&["add", "table", "netdev", "iotgw_bench"])?;
    nft(&["add", "chain", "netdev", "iotgw_bench", "ingress", &hook])?;
    nft(&["add", "rule", "netdev", "iotgw_bench", "ingress", "ether", "saddr", &mac, "counter", "drop"])?;
    let result = flood()?;
    let listed = pair.in_gateway("nft", &["list", "table", "netdev", "iotgw_bench"])?;
    anyhow::ensure!(listed.contains(&format!("packets {}", result.0)), "nftables did not drop every frame: {listed}");
    row("nftables (netdev ingress)", result);
    pair.in_gateway("nft", &["delete", "table", "netdev", "iotgw_bench"])?;

    let live = maps.read_config()?;
    maps.write_config(&GatewayConfig { quarantine_verdict: verdict::DROP, ..live })?;
    let id = lan_program_id.to_string();
    pair.in_gateway("bpftool", &["net", "attach", "xdpdrv", "id", &id, "dev", &pair.gateway_if])?;
    let drops = || maps.global_counter(counter::DROPS_BASE + reason::QUARANTINE);
    let before = drops();
    let result = flood();
    pair.in_gateway("bpftool", &["net", "detach", "xdpdrv", "dev", &pair.gateway_if])?;
    maps.write_config(&live)?;
    let result = result?;
    anyhow::ensure!(drops() - before == result.0 as u64, "iotgw did not drop every frame as quarantined");
    row("iotgw (XDP, native; 100k devices)", result);
    Ok(())
}

/// Frames xdp-filter dropped so far, as `xdp-filter status` reports them.
fn xdp_filter_drops(pair: &VethPair) -> anyhow::Result<u64> {
    let status = pair.in_gateway("xdp-filter", &["status"])?;
    status
        .lines()
        .find_map(|line| line.trim().strip_prefix("XDP_DROP")?.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no XDP_DROP count in xdp-filter's status:\n{status}"))
}

/// Pins the calling thread to `cpu`.
fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).context("pinning the sender")
}
