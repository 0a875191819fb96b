//! The WAN program: frames from upstream towards the devices. Isolated (quarantined or
//! blocked) devices receive only replies their lane allows; DNS answers are sampled so the
//! controller can keep DNS-name rules true.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use gateway_ebpf::{ABI_VERSION, counter, proto, sample_kind, verdict};

use crate::{
    CONFIG, DEVICE_IPV4, classify, count, events, flow,
    parse::{self, ETH_P_IPV4},
    policy, verdict as apply,
};

const DNS_PORT: u16 = 53;

#[inline(always)]
pub fn ingress(ctx: &XdpContext) -> u32 {
    count(counter::WAN_PACKETS);
    let Some(config) = CONFIG.get(0) else { return xdp_action::XDP_PASS };
    if config.abi_version != ABI_VERSION {
        crate::rare::wrong_abi(config.abi_version, ABI_VERSION);
        return xdp_action::XDP_PASS;
    }
    let link = match parse::link(ctx) {
        Ok(link) => link,
        Err(why) => return upstream_malformed(ctx, why, config.malformed_verdict),
    };
    // Devices are tracked by IPv4 address upstream; other traffic is not ours to judge here.
    if link.ether_type != ETH_P_IPV4 {
        return xdp_action::XDP_PASS;
    }
    let ip = match parse::ip(ctx, &link) {
        Ok(ip) => ip,
        Err(why) => return upstream_malformed(ctx, why, config.malformed_verdict),
    };
    let dst = [ip.dst[0], ip.dst[1], ip.dst[2], ip.dst[3]];
    // SAFETY: copied out at once.
    let Some(mac) = (unsafe { DEVICE_IPV4.get(&dst) }).copied() else {
        return xdp_action::XDP_PASS;
    };
    let device = classify::device(&mac);
    let decision = policy::towards_device(&device, &ip);
    if decision.verdict == verdict::PASS {
        flow::count_rx(&mac, (ctx.data_end() - ctx.data()) as u64);
        if config.sample_packets != 0 && ip.proto == proto::UDP && ip.src_port == DNS_PORT && ip.payload_offset != 0 {
            events::sample(
                ctx,
                &mac,
                sample_kind::DNS_ANSWER,
                link.l3_offset,
                ip.payload_offset,
                device.state,
                &decision,
                flow::now(),
            );
        }
    }
    apply::apply(ctx, Some(&mac), &decision, config)
}

#[inline(always)]
fn upstream_malformed(_ctx: &XdpContext, why: u32, malformed_verdict: u8) -> u32 {
    flow::count_drop(None, why);
    if malformed_verdict == verdict::PASS { xdp_action::XDP_PASS } else { xdp_action::XDP_DROP }
}
