//! Between `classify` and `flow`: source-address validation (IP Source Guard, SAVI). An IP
//! frame whose source address the controller bound, in `SOURCE_BINDINGS_V4` or
//! `SOURCE_BINDINGS_V6`, to another device is counted against its sender in
//! `SOURCE_VIOLATIONS` and, under `source_guard::ENFORCE`, dropped
//! (`DropReason::SpoofedSource`), so a device cannot hide behind another's address. An
//! address bound to nobody passes: 0.0.0.0 of a DHCP client and `::` of duplicate address
//! detection (never bound), and addresses not yet claimed (the controller binds them from
//! DHCP, DHCPv6, ARP and neighbour discovery). Link-local addresses are bound like any other.
//!
//! Reads `SOURCE_BINDINGS_V4` and `SOURCE_BINDINGS_V6`; writes `SOURCE_VIOLATIONS` and
//! `GLOBAL_STATS`.
use aya_ebpf::bindings::BPF_NOEXIST;
use gateway_ebpf::{GatewayConfig, MacKey, SourceViolation, counter, source_guard};

use crate::{SOURCE_BINDINGS_V4, SOURCE_BINDINGS_V6, SOURCE_VIOLATIONS, count, parse::Ip};

/// A first violation's counters, inserted from .rodata.
static NO_VIOLATION: SourceViolation = SourceViolation { frames: 0, last_source: [0; 16] };

/// Whether the frame `mac` sent must be dropped: from another device's address under
/// `ENFORCE`. False when it goes on (its own or an unbound address, the check off, logged
/// only).
// A BPF subprogram, not inlined: its paths end in one return value, so the verifier walks
// the steps after it once, not once per path (see `lan::flow_then_policy`).
#[inline(never)]
pub fn drops(mac: &MacKey, ip: &Ip, config: &GatewayConfig) -> bool {
    // The caller skips the call when the check is off; kept for any other caller.
    if config.source_guard == source_guard::OFF {
        return false;
    }
    // SAFETY (both lookups): the 8-byte owner is compared at once; the controller replaces
    // it whole.
    let owner = if ip.version == 4 {
        let source = [ip.src[0], ip.src[1], ip.src[2], ip.src[3]];
        unsafe { SOURCE_BINDINGS_V4.get(&source) }
    } else {
        // `ip` lives in the per-CPU `PARSED` slot: the key is read from there, not copied.
        unsafe { SOURCE_BINDINGS_V6.get(&ip.src) }
    };
    let Some(owner) = owner else { return false };
    if owner.addr == mac.addr {
        return false;
    }
    record(mac, ip);
    if config.source_guard == source_guard::ENFORCE {
        return true;
    }
    count(counter::SPOOFED_SOURCE_PASSED);
    false
}

/// Counts the violation against `mac` (this CPU's entry, created on the first), with the
/// source as IPv6 (IPv4 mapped, `::ffff:a.b.c.d`).
#[inline(always)]
fn record(mac: &MacKey, ip: &Ip) {
    if SOURCE_VIOLATIONS.get_ptr_mut(mac).is_none() {
        let _ = SOURCE_VIOLATIONS.insert(mac, &NO_VIOLATION, u64::from(BPF_NOEXIST));
    }
    let Some(violation) = SOURCE_VIOLATIONS.get_ptr_mut(mac) else { return };
    // SAFETY: per-CPU value, only touched by this CPU's program instance.
    unsafe {
        (*violation).frames += 1;
        (*violation).last_source = if ip.version == 4 {
            let [a, b, c, d, ..] = ip.src;
            [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a, b, c, d]
        } else {
            ip.src
        };
    }
}
