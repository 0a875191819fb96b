//! Section 4: what the source-address check (`source_guard`) adds per packet, on the
//! established allowed frame of section 1: the check off, then on with the frame's source
//! bound to its own device (a lookup that hits), and unbound (a lookup that misses); and the
//! spoofed frame's drop (another MAC with that bound address). Rounds alternate off and on so
//! a change of load shifts both; the minimum of the rounds is printed, as the least noisy.
//! Leaves the check off and the binding removed, as the other sections expect.
use std::net::Ipv4Addr;

use gateway_ebpf::source_guard;
use iotgw::{datapath::maps::Maps, device::Mac};
use netns_tests::packets;

use super::{DEVICE_IP, ENROLLED_MAC, Programs, UNKNOWN_MAC, XDP_DROP, XDP_PASS, endpoints, test_run, time_per_packet};

/// Alternating rounds per row.
const ROUNDS: usize = 5;

pub fn run(p: &Programs, maps: &Maps) -> anyhow::Result<()> {
    let allowed = packets::tcp_data(endpoints(ENROLLED_MAC), 40_000, packets::MQTT_PORT, 2, 64);
    let spoofed = packets::tcp_data(endpoints(UNKNOWN_MAC), 40_100, packets::MQTT_PORT, 2, 64);
    let address = Ipv4Addr::from(DEVICE_IP);
    let set_mode = |mode| -> anyhow::Result<()> {
        Ok(maps.write_config(&gateway_ebpf::GatewayConfig { source_guard: mode, ..maps.read_config()? })?)
    };
    let time = |frame: &[u8], expected| -> anyhow::Result<f64> {
        let verdict = test_run(p.lan, frame, 1)?.return_value;
        anyhow::ensure!(verdict == expected, "source guard bench: verdict {verdict}, expected {expected}");
        Ok(time_per_packet(p.lan, frame)?.as_nanos() as f64)
    };
    let mut rows = [f64::MAX; 4];
    for _ in 0..ROUNDS {
        set_mode(source_guard::OFF)?;
        rows[0] = rows[0].min(time(&allowed, XDP_PASS)?);
        set_mode(source_guard::ENFORCE)?;
        maps.bind_source(address, Mac(ENROLLED_MAC))?;
        rows[1] = rows[1].min(time(&allowed, XDP_PASS)?);
        rows[3] = rows[3].min(time(&spoofed, XDP_DROP)?);
        maps.unbind_source(address)?;
        rows[2] = rows[2].min(time(&allowed, XDP_PASS)?);
    }
    set_mode(source_guard::OFF)?;
    println!();
    println!(
        "4. source-address check (established allowed frame, repeat, min of {ROUNDS} alternating rounds, ns/packet)"
    );
    let [off, bound, unbound, spoofed] = rows;
    println!("{:<44} {off:>8.1}", "check off");
    println!("{:<44} {bound:>8.1} ({:+.1})", "enforce, source bound to the device", bound - off);
    println!("{:<44} {unbound:>8.1} ({:+.1})", "enforce, source bound to nobody", unbound - off);
    println!("{:<44} {spoofed:>8.1}", "enforce, another device's address (drop)");
    Ok(())
}
