//! Step 6: apply the verdict. Redirects rewrite the Ethernet addresses for the quarantine
//! segment and go out through the `REDIRECT_PORTS` devmap; a missing port means drop.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use gateway_ebpf::{GatewayConfig, MacKey, QUARANTINE_SLOT, counter, reason, verdict};
use network_types::eth::EthHdr;

use crate::{REDIRECT_PORTS, count, flow, parse::ptr_at, policy::Decision, rare};

/// Turns a decision into an XDP action, counting what is not passed.
#[inline(always)]
pub fn apply(ctx: &XdpContext, mac: Option<&MacKey>, decision: &Decision, config: &GatewayConfig) -> u32 {
    match decision.verdict {
        verdict::PASS => xdp_action::XDP_PASS,
        verdict::REDIRECT => {
            flow::count_drop(mac, decision.reason);
            redirect(ctx, mac, config)
        }
        _ => {
            flow::count_drop(mac, decision.reason);
            xdp_action::XDP_DROP
        }
    }
}

#[inline(always)]
fn redirect(ctx: &XdpContext, mac: Option<&MacKey>, config: &GatewayConfig) -> u32 {
    let Some(eth) = ptr_at::<EthHdr>(ctx, 0) else { return xdp_action::XDP_DROP };
    let eth = eth as *mut EthHdr;
    // SAFETY: bounds checked by ptr_at; XDP frames are writable.
    unsafe {
        (*eth).dst_addr = config.quarantine_dst_mac;
        (*eth).src_addr = config.quarantine_src_mac;
    }
    match REDIRECT_PORTS.redirect(QUARANTINE_SLOT, 0) {
        Ok(action) if action == xdp_action::XDP_REDIRECT => {
            count(counter::REDIRECTED);
            action
        }
        _ => {
            flow::count_drop(mac, reason::NO_REDIRECT_PORT);
            rare::no_redirect_port();
            xdp_action::XDP_DROP
        }
    }
}
