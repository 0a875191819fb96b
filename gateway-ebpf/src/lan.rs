//! The LAN program: frames from the devices, through every step in order. `ingress` is the
//! entry and `verdict::exit` the one exit; `try_ingress` runs the steps and returns the
//! decision, or why the frame could not be judged.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use gateway_ebpf::{
    DeviceEntry, DropReason, GatewayConfig, MacKey, SynFingerprint, counter, device_state, opener, proto, sample_kind,
};

use crate::{
    PARSED, budget, classify, count,
    decision::Decision,
    events, flow, parse, policy, verdict,
    wire::{ether_type, port, tls},
};

/// The LAN program's entry: the frame's sender, then the steps, then the one exit.
#[inline(always)]
pub fn ingress(ctx: &XdpContext) -> u32 {
    count(counter::LAN_PACKETS);
    let Some(config) = crate::configured() else { return xdp_action::XDP_PASS };
    let sender = parse::src_mac(ctx);
    // Zeros stand in for a runt's missing address, never counted against (`sender` is None).
    let mac = MacKey::new(sender.unwrap_or_default());
    let judged = match sender {
        Some(_) => {
            let (frame_bytes, now) = ((ctx.data_end() - ctx.data()) as u64, flow::now());
            // A frame that is not what its headers claim still counts against its sender.
            try_ingress(ctx, &mac, frame_bytes, now, config).inspect_err(|_| flow::count_tx(&mac, 0, frame_bytes, now))
        }
        None => Err(DropReason::Runt),
    };
    verdict::exit(ctx, sender.is_some().then_some(&mac), judged, config)
}

/// Steps 1 to 5 for a frame with an Ethernet header: its decision, or why it cannot be judged.
#[inline(always)]
fn try_ingress(
    ctx: &XdpContext,
    mac: &MacKey,
    frame_bytes: u64,
    now: u64,
    config: &GatewayConfig,
) -> Result<Decision, DropReason> {
    let link = parse::link(ctx)?;
    let device = classify::device(mac);
    budget::account(mac, device.state, frame_bytes, now);

    if !parse::is_ip(&link) {
        // ARP, and the link-layer protocols that stay on the LAN (LLDP, EAPOL for 802.1X
        // onboarding).
        flow::count_tx(mac, 0, frame_bytes, now);
        if device.state == device_state::BLOCKED {
            return Ok(Decision::drop(DropReason::Blocked));
        }
        if config.sample_packets != 0 {
            let kind = match link.ether_type {
                ether_type::ARP => Some(sample_kind::ARP),
                // The MUD URL TLV (RFC 8520 §10).
                ether_type::LLDP => Some(sample_kind::LLDP),
                _ => None,
            };
            if let Some(kind) = kind {
                let (l3, state) = (link.l3_offset, device.state);
                events::sample(ctx, mac, kind, l3, l3, state, &Decision::PASS, now);
            }
        }
        return Ok(Decision::PASS);
    }

    let parsed = parse::ip(ctx, &link)?;
    // Through the per-CPU slot (see `PARSED`): from here on every parse path is one state.
    let Some(slot) = PARSED.get_ptr_mut(0) else { return Ok(Decision::PASS) };
    // SAFETY: this CPU's slot, used only by this program run (XDP does not nest on a CPU).
    let ip = unsafe {
        *slot = parsed;
        &*slot
    };
    flow::count_tx(mac, ip.proto, frame_bytes, now);

    let seen = Seen { mac, device: &device, ip, frame_bytes, now };
    let decision = flow_then_policy(ctx, &seen, config);

    if config.sample_packets != 0 {
        if let Some(kind) = sample_kind_of(ctx, ip) {
            events::sample(ctx, mac, kind, link.l3_offset, ip.payload_offset, device.state, &decision, now);
        }
    }
    Ok(decision)
}

/// An IP packet as the flow step sees it (by reference: a BPF call takes five arguments).
struct Seen<'a> {
    mac: &'a MacKey,
    device: &'a DeviceEntry,
    ip: &'a parse::Ip,
    frame_bytes: u64,
    now: u64,
}

/// Steps 3 and 4 for an IP packet: the flow first, then the policy. An established flow
/// whose cached decision is still valid skips the LPM lookups (see `flow`); otherwise the
/// policy decides, for the opener the packet or its flow names, and the flow caches the
/// result, and a new flow is reported.
// A BPF subprogram, not inlined: its paths (cached or not, new flow or not, event or not) all
// end in one return value, so the verifier checks the steps after it once, not once per path.
#[inline(never)]
fn flow_then_policy(ctx: &XdpContext, seen: &Seen, config: &GatewayConfig) -> Decision {
    let (ip, device) = (seen.ip, seen.device);
    let key = flow::key(seen.mac, ip);
    let generation = config.policy_generation;
    let known = flow::find(&key);
    // A SYN or SYN-ACK tells who opens: never answered from the cache (see `flow`).
    let told = parse::opener_from_device(ip);
    if let Some(stats) = known {
        if told == opener::EITHER {
            if let Some(decision) = flow::cached_decision(stats, device, generation, ip) {
                flow::add(stats, ip, seen.frame_bytes, decision.verdict, None, seen.now);
                return decision;
            }
        }
    }
    let opened_by = match known {
        Some(stats) if told == opener::EITHER => flow::opener(stats),
        _ => told,
    };
    let decision = policy::from_device(device, ip, opened_by, config);
    let cache = flow::to_cache(&decision, device, generation, ip);
    match known {
        Some(stats) => {
            flow::add(stats, ip, seen.frame_bytes, decision.verdict, Some((cache, device.policy_id)), seen.now)
        }
        None => {
            let syn = if parse::is_syn(ip) { parse::syn_fingerprint(ctx, ip) } else { SynFingerprint::default() };
            let opened =
                flow::open(&key, ip, &syn, seen.frame_bytes, decision.verdict, cache, device.policy_id, seen.now);
            if opened && config.flow_events != 0 {
                events::new_flow(&key, &syn, ip.tcp_flags, seen.frame_bytes as u32, device.state, &decision, seen.now);
            }
        }
    }
    decision
}

/// Which sample, if any, the packet is worth to userspace.
#[inline(always)]
fn sample_kind_of(ctx: &XdpContext, ip: &parse::Ip) -> Option<u8> {
    if ip.payload_offset == 0 {
        return None;
    }
    match ip.proto {
        proto::UDP => {
            let ports = [ip.src_port, ip.dst_port];
            if ports.contains(&port::DHCP_SERVER) || ports.contains(&port::DHCP_CLIENT) {
                Some(sample_kind::DHCP)
            } else if ports.contains(&port::DHCPV6_SERVER) || ports.contains(&port::DHCPV6_CLIENT) {
                Some(sample_kind::DHCPV6)
            } else if ports.contains(&port::DNS) {
                Some(sample_kind::DNS)
            } else {
                None
            }
        }
        proto::TCP => {
            // A TLS handshake record (ClientHello) starts with its content type and version.
            let first = parse::ptr_at::<[u8; 2]>(ctx, ip.payload_offset)?;
            // SAFETY: bounds checked by ptr_at.
            let [content_type, major_version] = unsafe { *first };
            (content_type == tls::HANDSHAKE && major_version == tls::MAJOR_VERSION).then_some(sample_kind::TLS)
        }
        _ => None,
    }
}
