//! The simulated fleet: GATEWAYS gateways at SITES sites, each reporting DEVICES device
//! snapshots, EVENTS events and one health report, as `fleet::wire` reports with the message
//! ids a real gateway sets. Every value is derived from the indices, so two runs publish the
//! same reports.
use std::net::{IpAddr, Ipv4Addr};

use iotgw::{
    device::{Access, Mac},
    event::{EventKind, GatewayEvent, Severity},
    fleet::wire::{Health, Report, ReportBody},
    inventory::records::{DeviceRecord, TrafficTotals},
};
use time::OffsetDateTime;

/// Start of the simulated day (unix ms).
pub const NOW_MS: i64 = 1_780_000_000_000;
const VENDORS: [&str; 4] = ["Espressif Inc.", "Philips Lighting BV", "Hangzhou Hikvision", "Tuya Smart Inc."];
const TYPES: [&str; 4] = ["smart-plug", "bulb", "ip-camera", "sensor"];
const MINUTE_MS: i64 = 60_000;
/// Events per inventory snapshot in the steady mix (`steady_reports`). A gateway's inventory
/// feed sends a device that only went on being seen once a minute at most (its `last_seen`
/// changes are coalesced to that; a state or address change goes out within 2 s, and is rarer):
/// at the size, 1,000,000 devices, that is at most ~16,700 snapshots/s against the goal's
/// 50,000 events/s, one snapshot per three events, nearly all of known devices. The first round
/// (`reports`, one new device per event) is a fleet's first hour, not its steady state.
pub const STEADY_EVENTS_PER_SNAPSHOT: usize = 3;

/// The shape of the fleet.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub gateways: usize,
    pub gateways_per_site: usize,
    pub devices: usize,
    pub events: usize,
}

impl Shape {
    pub fn site(&self, gateway: usize) -> String {
        format!("site-{:04}", gateway / self.gateways_per_site)
    }

    pub fn gateway(&self, gateway: usize) -> String {
        format!("gw-{:05}", gateway)
    }

    /// Every report of one gateway, in the order it would send them.
    pub fn reports(&self, gateway: usize) -> Vec<Report> {
        let (site, name) = (self.site(gateway), self.gateway(gateway));
        let mut reports = Vec::with_capacity(self.devices + self.events + 1);
        for device in 0..self.devices {
            let record = device_record(gateway, device);
            let changed_ms = NOW_MS + device as i64;
            reports.push(Report::new(&site, &name, changed_ms, ReportBody::Inventory { changed_ms, device: record }));
        }
        for seq in 0..self.events {
            reports.push(self.event_report(gateway, seq, NOW_MS + seq as i64));
        }
        let health = Health { version: "bench".into(), devices: self.devices as u64, ..Health::default() };
        reports.push(Report::new(&site, &name, NOW_MS, ReportBody::Health { health }));
        reports
    }

    /// The reports of `gateway` a minute after `reports`, in the steady mix: EVENTS new events
    /// (those after the first EVENTS) and one device seen again for every
    /// STEADY_EVENTS_PER_SNAPSHOT of them, interleaved.
    pub fn steady_reports(&self, gateway: usize) -> Vec<Report> {
        let (site, name) = (self.site(gateway), self.gateway(gateway));
        let mut reports = Vec::with_capacity(self.events + self.events / STEADY_EVENTS_PER_SNAPSHOT);
        for seq in self.events..2 * self.events {
            reports.push(self.event_report(gateway, seq, NOW_MS + MINUTE_MS + seq as i64));
            let nth = seq - self.events;
            if nth % STEADY_EVENTS_PER_SNAPSHOT == STEADY_EVENTS_PER_SNAPSHOT - 1 && self.devices > 0 {
                let device = (nth / STEADY_EVENTS_PER_SNAPSHOT) % self.devices;
                let mut record = device_record(gateway, device);
                record.last_seen = time_ms(NOW_MS + MINUTE_MS);
                let changed_ms = NOW_MS + MINUTE_MS + device as i64;
                reports.push(Report::new(
                    &site,
                    &name,
                    changed_ms,
                    ReportBody::Inventory { changed_ms, device: record },
                ));
            }
        }
        reports
    }

    /// The `seq`th event of `gateway` (outbox sequence `seq + 1`), sent and dated `sent_ms`:
    /// one in four an alert, the rest audit records.
    pub fn event_report(&self, gateway: usize, seq: usize, sent_ms: i64) -> Report {
        let mut event = event(gateway, seq % self.devices.max(1), seq);
        event.time = time_ms(sent_ms);
        Report::new(
            &self.site(gateway),
            &self.gateway(gateway),
            sent_ms,
            ReportBody::Event { seq: seq as i64 + 1, event },
        )
    }
}

/// A locally administered MAC unique per (gateway, device).
pub fn mac(gateway: usize, device: usize) -> Mac {
    let g = (gateway as u32).to_be_bytes();
    let d = (device as u16).to_be_bytes();
    Mac([0x02, g[1], g[2], g[3], d[0], d[1]])
}

pub fn device_record(gateway: usize, device: usize) -> DeviceRecord {
    let seen = time_ms(NOW_MS);
    DeviceRecord {
        mac: mac(gateway, device),
        first_seen: seen,
        last_seen: seen,
        vendor: Some(VENDORS[device % VENDORS.len()].to_owned()),
        locally_administered: true,
        hostname: Some(format!("dev-{gateway}-{device}")),
        device_type: Some(TYPES[device % TYPES.len()].to_owned()),
        type_confidence: Some(0.9),
        type_vendor: None,
        type_vendor_confidence: None,
        generic_type: None,
        generic_confidence: None,
        access: if device.is_multiple_of(50) { Access::Quarantined } else { Access::Enrolled },
        lifecycle: Some("enrolled".to_owned()),
        class: Some("sensor".to_owned()),
        firmware_version: Some("1.0.0".to_owned()),
        cert_subject: Some(format!("CN=dev-{gateway}-{device}")),
        device_id: None,
        ips: vec![IpAddr::V4(Ipv4Addr::new(10, (device >> 8) as u8, device as u8, 2))],
        flows_total: device as u64,
        traffic: TrafficTotals { tx_bytes: 1_000, tx_packets: 10, rx_bytes: 2_000, rx_packets: 12 },
    }
}

fn event(gateway: usize, device: usize, seq: usize) -> GatewayEvent {
    let kind = if seq.is_multiple_of(4) {
        EventKind::Alert {
            incident_id: format!("inc-{gateway}-{device}"),
            detector: "new_destination".to_owned(),
            score: 0.8,
            expected: "known destinations".to_owned(),
            observed: "203.0.113.7:443".to_owned(),
            flows: vec!["tcp 10.0.0.2:40000 -> 203.0.113.7:443".to_owned()],
            resolved: false,
        }
    } else {
        EventKind::Audit { action: "seen".to_owned(), detail: format!("report {seq}") }
    };
    let severity = if seq.is_multiple_of(4) { Severity::High } else { Severity::Info };
    let mut event = GatewayEvent::new(severity, Some(mac(gateway, device)), "bench", kind);
    event.id = format!("{gateway}-{seq}");
    event
}

fn time_ms(unix_ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000).expect("time")
}
