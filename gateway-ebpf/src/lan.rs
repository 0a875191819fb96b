//! The LAN program: frames from the devices, through every step in order.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use gateway_ebpf::{
    ABI_VERSION, GatewayConfig, MacKey, SynFingerprint, counter, device_state, proto, reason,
    sample_kind, verdict,
};

use crate::{
    CONFIG, classify, count, events, flow,
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

    let ip = match parse::ip(ctx, &link) {
        Ok(ip) => ip,
        Err(why) => {
            flow::count_tx(&mac, 0, frame_bytes, now);
            return malformed(ctx, Some(&mac), why, config);
        }
    };
    flow::count_tx(&mac, ip.proto, frame_bytes, now);

    // The flow first, then the policy: an established flow whose cached decision is still
    // valid skips the LPM lookups (see `flow`).
    let key = flow::key(&mac, &ip);
    let known = flow::find(&key);
    let generation = config.policy_generation;
    let cached = known.and_then(|stats| flow::cached_decision(stats, &device, generation, &ip));
    let decision = match cached {
        Some(decision) => decision,
        None => policy::from_device(&device, &ip, config),
    };
    let recomputed = match cached {
        Some(_) => None,
        None => Some((flow::to_cache(&decision, &device, generation, &ip), device.policy_id)),
    };
    match (known, recomputed) {
        (Some(stats), recomputed) => flow::add(stats, &ip, frame_bytes, decision.verdict, recomputed, now),
        (None, Some((cache, policy_id))) => {
            let syn = if parse::is_syn(&ip) { parse::syn_fingerprint(ctx, &ip) } else { SynFingerprint::default() };
            let opened = flow::open(&key, &ip, &syn, frame_bytes, decision.verdict, cache, policy_id, now);
            if opened && config.flow_events != 0 {
                events::new_flow(&key, &syn, ip.tcp_flags, frame_bytes as u32, device.state, &decision, now);
            }
        }
        // A decision is only cached in a known flow.
        (None, None) => {}
    }

    if config.sample_packets != 0 {
        if let Some(kind) = sample_kind_of(ctx, &ip) {
            events::sample(ctx, &mac, kind, link.l3_offset, ip.payload_offset, device.state, &decision, now);
        }
    }
    apply::apply(ctx, Some(&mac), &decision, config)
}

const PASS: Decision = Decision { verdict: verdict::PASS, reason: reason::NONE };

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
