//! The fan-out step: every decoded datapath event goes, in this order, to
//! 1. the device table's address map (a flow's IPv4 source, so the WAN program checks
//!    traffic towards the device),
//! 2. the policy step, when it is DNS (a device's query or an answer from upstream: the
//!    DNS-name rules count only answers to queries),
//! 3. the MUD step, when a DHCP, DHCPv6 or LLDP sample announces a MUD URL,
//! 4. the source guard, when it runs and the sample is ARP, DHCP, DHCPv6 or neighbour
//!    discovery (who holds which address),
//! 5. the inventory (skipped when its queue is full: the next event refreshes it),
//! 6. the pipeline baseline → detect → respond (waited for: detection sees every event).
use std::sync::{Arc, mpsc::SyncSender};

use tokio::sync::mpsc::{Receiver, Sender};

use super::inventory::InventoryInput;
use crate::{
    datapath::{
        DeviceControl as _,
        events::{DatapathEvent, PacketSample, SampleKind},
        maps::Maps,
    },
    mud::announce::{self, Announcement},
    pipeline,
    shutdown::Shutdown,
};

/// Where the fan-out sends.
pub(super) struct Outputs {
    pub maps: Arc<Maps>,
    pub dns_samples: Sender<PacketSample>,
    pub mud: Sender<Announcement>,
    /// `None` when `source_guard.mode` is `off`.
    pub source_guard: Option<Sender<PacketSample>>,
    pub inventory: SyncSender<InventoryInput>,
    pub pipeline: Sender<pipeline::Command>,
}

/// Runs until shutdown or until the ring step or the pipeline is gone.
pub(super) async fn run(mut events: Receiver<DatapathEvent>, out: Outputs, mut shutdown: Shutdown) {
    loop {
        let event = tokio::select! {
            _ = shutdown.wait() => break,
            event = events.recv() => event,
        };
        let Some(event) = event else { break };
        if let DatapathEvent::Flow(flow) = &event
            && let std::net::IpAddr::V4(v4) = flow.src
            && !v4.is_unspecified()
            && !v4.is_broadcast()
        {
            let _ = out.maps.set_device_ipv4(flow.mac, v4);
        }
        if let DatapathEvent::Sample(sample) = &event
            && matches!(sample.kind, SampleKind::Dns | SampleKind::DnsAnswer)
            && out.dns_samples.try_send(sample.clone()).is_err()
        {
            // A query skipped leaves its answer unsolicited: it opens nothing (fails closed).
            tracing::debug!("DNS sample queue full; sample skipped");
        }
        if let DatapathEvent::Sample(sample) = &event {
            match announce::from_sample(sample) {
                Ok(Some(announcement)) => {
                    if out.mud.try_send(announcement).is_err() {
                        tracing::debug!("MUD announcement queue full; announcement skipped");
                    }
                }
                Ok(None) => {}
                Err(error) => tracing::debug!(%error, device = %sample.mac, "unreadable DHCPv6 or LLDP sample"),
            }
        }
        if let (DatapathEvent::Sample(sample), Some(source_guard)) = (&event, &out.source_guard)
            && matches!(sample.kind, SampleKind::Arp | SampleKind::Dhcp | SampleKind::Dhcpv6 | SampleKind::Ndp)
            && source_guard.try_send(sample.clone()).is_err()
        {
            tracing::debug!("source guard queue full; sample skipped");
        }
        if out.inventory.try_send(InventoryInput::Event(event.clone())).is_err() {
            tracing::debug!("inventory queue full; event skipped");
        }
        if out.pipeline.send(pipeline::Command::from(event)).await.is_err() {
            break;
        }
    }
}
