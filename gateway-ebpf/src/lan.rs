//! The LAN program: frames from the devices, through every step in order.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use gateway_ebpf::{
    ABI_VERSION, DeviceEntry, GatewayConfig, MacKey, SynFingerprint, counter, device_state, proto, reason, sample_kind,
    verdict,
};

use crate::{
    CONFIG, PARSED, classify, count, events, flow,
    parse::{self, ETH_P_ARP, ETH_P_IPV4, ETH_P_IPV6},
    policy::{self, Decision},
    verdict as apply,
};

const DHCP_SERVER_PORT: u16 = 67;
const DHCP_CLIENT_PORT: u16 = 68;
const DNS_PORT: u16 = 53;
const TLS_HANDSHAKE: u8 = 0x16;

#[inline(always)]
pub fn ingress(ctx: &XdpContext) -> u32 {
    count(counter::LAN_PACKETS);
    // Until the controller writes a configuration of this ABI, pass everything: loading the
    // programs must never cut the network by itself.
    let Some(config) = CONFIG.get(0) else { return xdp_action::XDP_PASS };
    if config.abi_version != ABI_VERSION {
        crate::rare::wrong_abi(config.abi_version, ABI_VERSION);
        return xdp_action::XDP_PASS;
    }
    let now = flow::now();
    let frame_bytes = (ctx.data_end() - ctx.data()) as u64;

    let link = match parse::link(ctx) {
        Ok(link) => link,
        Err(why) => {
            // A bad VLAN stack still has a source MAC: count it against that device.
            let mac = parse::src_mac(ctx).map(MacKey::new);
            if let Some(mac) = &mac {
                flow::count_tx(mac, 0, frame_bytes, now);
            }
            return malformed(ctx, mac.as_ref(), why, config);
        }
    };
    let mac = MacKey::new(link.src_mac);
    let device = classify::device(&mac);

    if link.ether_type == ETH_P_ARP {
        flow::count_tx(&mac, 0, frame_bytes, now);
        if device.state == device_state::BLOCKED {
            return blocked(ctx, &mac, config);
        }
        if config.sample_packets != 0 {
            events::sample(ctx, &mac, sample_kind::ARP, link.l3_offset, link.l3_offset, device.state, &PASS, now);
        }
        return xdp_action::XDP_PASS;
    }
    if link.ether_type != ETH_P_IPV4 && link.ether_type != ETH_P_IPV6 {
        // Other link-layer protocols (LLDP, EAPOL for 802.1X onboarding) stay on the LAN.
        flow::count_tx(&mac, 0, frame_bytes, now);
        if device.state == device_state::BLOCKED {
            return blocked(ctx, &mac, config);
        }
        return xdp_action::XDP_PASS;
    }

    let parsed = match parse::ip(ctx, &link) {
        Ok(ip) => ip,
        Err(why) => {
            flow::count_tx(&mac, 0, frame_bytes, now);
            return malformed(ctx, Some(&mac), why, config);
        }
    };
    // Through the per-CPU slot (see `PARSED`): from here on every parse path is one state.
    let Some(slot) = PARSED.get_ptr_mut(0) else { return xdp_action::XDP_PASS };
    // SAFETY: this CPU's slot, used only by this program run (XDP does not nest on a CPU).
    let ip = unsafe {
        *slot = parsed;
        &*slot
    };
    flow::count_tx(&mac, ip.proto, frame_bytes, now);

    let seen = Seen { mac: &mac, device: &device, ip, frame_bytes, now };
    let decision = flow_then_policy(ctx, &seen, config);

    if config.sample_packets != 0 {
        if let Some(kind) = sample_kind_of(ctx, ip) {
            events::sample(ctx, &mac, kind, link.l3_offset, ip.payload_offset, device.state, &decision, now);
        }
    }
    apply::apply(ctx, Some(&mac), &decision, config)
}

const PASS: Decision = Decision { verdict: verdict::PASS, reason: reason::NONE };

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
/// policy decides and the flow caches the result, and a new flow is reported.
// A BPF subprogram, not inlined: its paths (cached or not, new flow or not, event or not) all
// end in one return value, so the verifier checks the steps after it once, not once per path.
#[inline(never)]
fn flow_then_policy(ctx: &XdpContext, seen: &Seen, config: &GatewayConfig) -> Decision {
    let (ip, device) = (seen.ip, seen.device);
    let key = flow::key(seen.mac, ip);
    let generation = config.policy_generation;
    let known = flow::find(&key);
    if let Some(stats) = known {
        if let Some(decision) = flow::cached_decision(stats, device, generation, ip) {
            flow::add(stats, ip, seen.frame_bytes, decision.verdict, None, seen.now);
            return decision;
        }
    }
    let decision = policy::from_device(device, ip, config);
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
            if ports.contains(&DHCP_SERVER_PORT) || ports.contains(&DHCP_CLIENT_PORT) {
                Some(sample_kind::DHCP)
            } else if ports.contains(&DNS_PORT) {
                Some(sample_kind::DNS)
            } else {
                None
            }
        }
        proto::TCP => {
            // A TLS handshake record (ClientHello) starts with 0x16 0x03.
            let first = parse::ptr_at::<[u8; 2]>(ctx, ip.payload_offset)?;
            // SAFETY: bounds checked by ptr_at.
            let first = unsafe { *first };
            (first[0] == TLS_HANDSHAKE && first[1] == 0x03).then_some(sample_kind::TLS)
        }
        _ => None,
    }
}

#[inline(always)]
fn malformed(ctx: &XdpContext, mac: Option<&MacKey>, why: u32, config: &GatewayConfig) -> u32 {
    let decision = Decision { verdict: config.malformed_verdict, reason: why };
    if decision.verdict == verdict::PASS {
        // Passed on, but still counted: malformed frames are worth knowing about.
        flow::count_drop(mac, why);
        return xdp_action::XDP_PASS;
    }
    // Redirecting garbage makes no sense: anything but pass is a drop.
    apply::apply(ctx, mac, &Decision { verdict: verdict::DROP, reason: why }, config)
}

#[inline(always)]
fn blocked(ctx: &XdpContext, mac: &MacKey, config: &GatewayConfig) -> u32 {
    apply::apply(ctx, Some(mac), &Decision { verdict: verdict::DROP, reason: reason::BLOCKED }, config)
}
