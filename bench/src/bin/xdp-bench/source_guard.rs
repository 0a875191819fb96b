//! Section 4: what the source-address check (`source_guard`) adds per packet, on the
//! established allowed frame of section 1: the check off, then on with the frame's source
//! bound to its own device (a lookup that hits), and unbound (a lookup that misses); and the
//! spoofed frame's drop (another MAC with that bound address). Then the same for IPv6 (a
//! 16-byte key in `SOURCE_BINDINGS_V6`), on an established IPv6 TCP frame the sensor class
//! does not allow (the lab policy has no IPv6 rule; its cached drop comes after the check
//! either way, so the difference is the check's). Rounds alternate off and on so a change of
//! load shifts both; the minimum of the rounds is printed, as the least noisy. Leaves the
//! check off and the bindings removed, as the other sections expect.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddrV6};

use gateway_ebpf::source_guard;
use iotgw::{datapath::maps::Maps, device::Mac};
use netns_tests::packets;

use super::{
    DEVICE_IP, ENROLLED_MAC, GATEWAY_MAC, Programs, UNKNOWN_MAC, XDP_DROP, XDP_PASS, endpoints, test_run,
    time_per_packet,
};

/// Alternating rounds per row.
const ROUNDS: usize = 5;
/// The device's IPv6 address and the remote's.
const DEVICE_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0x77ff, 0xfe00, 0, 0x10);
const BROKER_V6: Ipv6Addr = Ipv6Addr::new(0xfd78, 0, 0, 0, 0, 0, 0, 2);

/// An established IPv6 TCP segment (64 bytes) from `src_mac` at `DEVICE_V6` to the broker.
fn tcp6_data(src_mac: [u8; 6], src_port: u16) -> Vec<u8> {
    let (src, dst) =
        (SocketAddrV6::new(DEVICE_V6, src_port, 0, 0), SocketAddrV6::new(BROKER_V6, packets::MQTT_PORT, 0, 0));
    packets::tcp6_data((src_mac, GATEWAY_MAC), src, dst, 2, 64)
}

/// One family's four rows: off, bound to the device, bound to nobody, another device's.
struct Rows {
    label: &'static str,
    allowed: Vec<u8>,
    spoofed: Vec<u8>,
    address: IpAddr,
    /// What the LAN program gives `allowed` whatever the check says.
    verdict: u32,
    min: [f64; 4],
}

pub fn run(p: &Programs, maps: &Maps) -> anyhow::Result<()> {
    let mut families = [
        Rows {
            label: "IPv4, established allowed frame",
            allowed: packets::tcp_data(endpoints(ENROLLED_MAC), 40_000, packets::MQTT_PORT, 2, 64),
            spoofed: packets::tcp_data(endpoints(UNKNOWN_MAC), 40_100, packets::MQTT_PORT, 2, 64),
            address: Ipv4Addr::from(DEVICE_IP).into(),
            verdict: XDP_PASS,
            min: [f64::MAX; 4],
        },
        Rows {
            label: "IPv6, established denied frame",
            allowed: tcp6_data(ENROLLED_MAC, 40_200),
            spoofed: tcp6_data(UNKNOWN_MAC, 40_300),
            address: DEVICE_V6.into(),
            verdict: XDP_DROP,
            min: [f64::MAX; 4],
        },
    ];
    let set_mode = |mode| -> anyhow::Result<()> {
        Ok(maps.write_config(&gateway_ebpf::GatewayConfig { source_guard: mode, ..maps.read_config()? })?)
    };
    let time = |frame: &[u8], expected| -> anyhow::Result<f64> {
        let verdict = test_run(p.lan, frame, 1)?.return_value;
        anyhow::ensure!(verdict == expected, "source guard bench: verdict {verdict}, expected {expected}");
        Ok(time_per_packet(p.lan, frame)?.as_nanos() as f64)
    };
    let spoofed_drops =
        || maps.global_counter(gateway_ebpf::counter::DROPS_BASE + gateway_ebpf::reason::SPOOFED_SOURCE);
    for _ in 0..ROUNDS {
        for rows in &mut families {
            set_mode(source_guard::OFF)?;
            rows.min[0] = rows.min[0].min(time(&rows.allowed, rows.verdict)?);
            set_mode(source_guard::ENFORCE)?;
            maps.bind_source(rows.address, Mac(ENROLLED_MAC))?;
            rows.min[1] = rows.min[1].min(time(&rows.allowed, rows.verdict)?);
            // The IPv6 flow is dropped anyway: only the counter tells the check dropped it.
            let before = spoofed_drops();
            rows.min[3] = rows.min[3].min(time(&rows.spoofed, XDP_DROP)?);
            anyhow::ensure!(spoofed_drops() > before, "{}: the spoofed frame was not dropped as spoofed", rows.label);
            maps.unbind_source(rows.address)?;
            rows.min[2] = rows.min[2].min(time(&rows.allowed, rows.verdict)?);
        }
    }
    set_mode(source_guard::OFF)?;
    println!();
    println!("4. source-address check (established flow, repeat, min of {ROUNDS} alternating rounds, ns/packet)");
    for rows in &families {
        let [off, bound, unbound, spoofed] = rows.min;
        println!("{}", rows.label);
        println!("  {:<42} {off:>8.1}", "check off");
        println!("  {:<42} {bound:>8.1} ({:+.1})", "enforce, source bound to the device", bound - off);
        println!("  {:<42} {unbound:>8.1} ({:+.1})", "enforce, source bound to nobody", unbound - off);
        println!("  {:<42} {spoofed:>8.1}", "enforce, another device's address (drop)");
    }
    Ok(())
}
