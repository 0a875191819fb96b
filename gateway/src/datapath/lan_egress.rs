//! Attaches the LAN egress observer: `gateway-ebpf`'s TC program on the LAN interface's
//! egress, which samples the answers a DNS resolver on the gateway itself sends the devices
//! (XDP sees only what arrives, never what the gateway sends). Attached through a tcx link
//! pinned beside the XDP links (`links/iotgw_lan_egress@{interface}:tcx`): it keeps running
//! through a controller restart, the next controller swaps its program in atomically, and
//! `iotgw detach` removes it with the other pins. tcx needs Linux 6.6; the caller goes on
//! without the observer where it cannot be attached (it only observes: nothing is enforced
//! by it, and without it DNS-name rules follow answers from upstream only).
use std::{path::Path, time::Instant};

use aya::{
    Ebpf,
    programs::{
        LinkOrder, SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
    },
};
use gateway_ebpf::programs;

use super::loader::{Attachment, LoadError, tagged_link_pin};
use crate::error_chain::error_chain;

/// The attachment's mode name, in logs and in its link pin's name.
pub const TCX: &str = "tcx";

/// Loads the observer and attaches it to `interface`'s egress, reusing (atomically
/// replacing) the pinned link a previous controller left.
pub fn attach(ebpf: &mut Ebpf, interface: &str, pin_path: &Path) -> Result<Attachment, LoadError> {
    let program = programs::LAN_EGRESS;
    let classifier: &mut SchedClassifier = ebpf
        .program_mut(program)
        .ok_or(LoadError::Program { name: program, source: aya::programs::ProgramError::NotLoaded })?
        .try_into()
        .map_err(|source| LoadError::Program { name: program, source })?;
    let loading = Instant::now();
    classifier.load().map_err(|source| LoadError::Program { name: program, source })?;
    let load_time = loading.elapsed();
    let attach_error = |message: String| LoadError::Attach { interface: interface.to_owned(), message };
    let attachment = |replaced| Attachment { interface: interface.to_owned(), program, mode: TCX, replaced, load_time };

    let pin = tagged_link_pin(pin_path, program, interface, TCX);
    if pin.exists() {
        let pinned_link = |e: &dyn std::fmt::Display| attach_error(format!("pinned link {}: {e}", pin.display()));
        let pinned = PinnedLink::from_pin(&pin).map_err(|e| pinned_link(&e))?;
        let link = SchedClassifierLink::try_from(FdLink::from(pinned)).map_err(|e| pinned_link(&e))?;
        classifier.attach_to_link(link).map_err(|e| attach_error(format!("replacing pinned link: {e}")))?;
        // As for XDP: the pin keeps the link; dropping `Ebpf` only closes this process's fd.
        return Ok(attachment(true));
    }
    // First among the egress programs: it passes every packet on, and sees the answers even
    // when a later program redirects them.
    let options = TcAttachOptions::TcxOrder(LinkOrder::first());
    let id = classifier
        .attach_with_options(interface, TcAttachType::Egress, options)
        .map_err(|e| attach_error(format!("tcx egress link (Linux 6.6 or later): {}", error_chain(&e))))?;
    let link = classifier.take_link(id).map_err(|e| attach_error(e.to_string()))?;
    let fd_link = FdLink::try_from(link).map_err(|e| attach_error(e.to_string()))?;
    fd_link.pin(&pin).map_err(|e| attach_error(format!("pinning link at {}: {e}", pin.display())))?;
    Ok(attachment(false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_observers_link_pin_sits_beside_the_xdp_links_and_never_contains_a_dot() {
        let root = Path::new("/sys/fs/bpf/iotgw");
        assert_eq!(
            tagged_link_pin(root, programs::LAN_EGRESS, "lan0", TCX),
            root.join("links/iotgw_lan_egress@lan0:tcx")
        );
        let vlan = tagged_link_pin(root, programs::LAN_EGRESS, "eth0.100", TCX);
        assert_eq!(vlan.file_name().and_then(|n| n.to_str()), Some("iotgw_lan_egress@eth0:100:tcx"));
    }
}
