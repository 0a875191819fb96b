//! Ingestion: datapath events (live or replayed) and traffic counters become devices,
//! addresses, fingerprints, host names, flows and traffic series, each capped per device.
use std::{net::IpAddr, time::SystemTime};

use rusqlite::{OptionalExtension as _, params};

use super::{
    ACTOR_INVENTORY, FingerprintKind, Inventory, InventoryChange, InventoryError, MAX_ADDRESSES_PER_DEVICE,
    MAX_FINGERPRINTS_PER_KIND, MAX_RESOLUTIONS_PER_DEVICE, ledger, millis, sanitize,
};
use crate::{
    datapath::{
        events::{DatapathEvent, FlowObservation, PacketSample, SampleKind},
        replay::IntervalCounters,
        traffic::TrafficCounters,
    },
    device::Mac,
    fingerprint::{
        sample::{self, Parsed},
        syn,
    },
};

/// Whether `ip` can be the device's own address (never broadcast, multicast, unspecified).
fn is_device_address(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() || v4.is_loopback()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast() || v6.is_loopback()),
    }
}

/// Whether a flow's source address is taken as the device's own. A router on the LAN
/// forwards traffic from the whole internet under its own MAC, so from flows only addresses
/// of local scope count (private, shared, link-local, unique-local IPv4/IPv6), plus global
/// IPv6 addresses whose interface id is the device's EUI-64. Other addresses come from ARP,
/// where a device states its own.
pub(super) fn is_flow_source_address(mac: &Mac, ip: &IpAddr) -> bool {
    if !is_device_address(ip) {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => {
            let shared = v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64;
            v4.is_private() || v4.is_link_local() || shared
        }
        IpAddr::V6(v6) => {
            let m = mac.0;
            let eui64 = [m[0] ^ 0x02, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]];
            v6.is_unicast_link_local() || v6.is_unique_local() || v6.octets()[8..] == eui64
        }
    }
}

impl Inventory {
    /// Takes in one datapath event; returns what changed.
    pub fn handle(&mut self, event: &DatapathEvent) -> Result<Vec<InventoryChange>, InventoryError> {
        self.in_transaction(|inventory| {
            let mut changes = Vec::new();
            inventory.handle_in(event, &mut changes)?;
            Ok(changes)
        })
    }

    /// Takes in a batch of events in one transaction (much cheaper than one by one on a file).
    pub fn handle_batch(&mut self, events: &[DatapathEvent]) -> Result<Vec<InventoryChange>, InventoryError> {
        self.in_transaction(|inventory| {
            let mut changes = Vec::new();
            for event in events {
                inventory.handle_in(event, &mut changes)?;
            }
            Ok(changes)
        })
    }

    fn handle_in(&mut self, event: &DatapathEvent, changes: &mut Vec<InventoryChange>) -> Result<(), InventoryError> {
        match event {
            DatapathEvent::Flow(flow) => self.flow(flow, changes)?,
            DatapathEvent::Sample(sample) => self.sample(sample, changes)?,
            // The traffic behind it reaches the inventory through the counter step.
            DatapathEvent::Budget(_) => {}
        }
        Ok(())
    }

    fn flow(&mut self, flow: &FlowObservation, changes: &mut Vec<InventoryChange>) -> Result<(), InventoryError> {
        let time = millis(flow.time);
        self.touch(flow.mac, time, changes)?;
        self.conn.execute(
            "UPDATE inventory_devices SET flows_total = flows_total + 1 WHERE mac = ?1",
            [flow.mac.to_string()],
        )?;
        self.conn.execute(
            "INSERT INTO inventory_flows (mac, time, src, dst, src_port, dst_port, proto, frame_bytes, verdict, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                flow.mac.to_string(),
                time,
                flow.src.to_string(),
                flow.dst.to_string(),
                flow.src_port,
                flow.dst_port,
                flow.proto,
                flow.frame_bytes,
                flow.verdict,
                flow.reason
            ],
        )?;
        // Keep the newest `flows_per_device` flows of this device.
        self.conn.execute(
            "DELETE FROM inventory_flows WHERE mac = ?1 AND id <= (
                SELECT id FROM inventory_flows WHERE mac = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            params![flow.mac.to_string(), self.flows_per_device as i64],
        )?;
        if is_flow_source_address(&flow.mac, &flow.src) {
            self.address(flow.mac, flow.src, time, changes)?;
        }
        if let Some(fingerprint) = &flow.syn {
            self.fingerprint(flow.mac, FingerprintKind::TcpSyn, &syn::signature(fingerprint), None, time, changes)?;
        }
        self.tracked.entry(flow.mac).or_default().features.add_flow(flow);
        self.classify(flow.mac, changes)
    }

    fn sample(&mut self, sample: &PacketSample, changes: &mut Vec<InventoryChange>) -> Result<(), InventoryError> {
        let parsed = match sample::parse(sample) {
            Ok(parsed) => parsed,
            // DHCPv6 and LLDP samples are the MUD step's (`crate::mud`) and neighbour discovery
            // the source guard's (`crate::source_guard`), not unreadable.
            Err(crate::fingerprint::FingerprintError::NotFingerprinted(_)) => return Ok(()),
            Err(error) => {
                self.stats.unparsed_samples += 1;
                tracing::debug!(mac = %sample.mac, %error, "ignored sample");
                return Ok(());
            }
        };
        let mac = sample.mac;
        let time = millis(sample.time);
        self.touch(mac, time, changes)?;
        match &parsed {
            Parsed::Dhcp(dhcp) if dhcp.from_client => {
                if !dhcp.parameter_request_list.is_empty() {
                    self.fingerprint(
                        mac,
                        FingerprintKind::DhcpParameterList,
                        &dhcp.parameter_list_text(),
                        None,
                        time,
                        changes,
                    )?;
                }
                if let Some(vendor_class) = &dhcp.vendor_class {
                    self.fingerprint(
                        mac,
                        FingerprintKind::DhcpVendorClass,
                        &sanitize(vendor_class),
                        None,
                        time,
                        changes,
                    )?;
                }
                if let Some(hostname) = dhcp.hostname.as_deref().map(sanitize).filter(|h| !h.is_empty()) {
                    self.fingerprint(mac, FingerprintKind::DhcpHostname, &hostname, None, time, changes)?;
                    self.hostname(mac, &hostname, time, changes)?;
                }
            }
            Parsed::Dns(dns) if !dns.is_response => {
                for name in &dns.queries {
                    self.fingerprint(mac, FingerprintKind::DnsName, &sanitize(name), None, time, changes)?;
                }
            }
            // Only answers from upstream name this device's destinations: a LAN-side answer's
            // sender is the resolver, not the device.
            Parsed::Dns(dns) if sample.kind == SampleKind::DnsAnswer => {
                for answer in &dns.answers {
                    // The name the device asked for (CNAME targets are the CDN's names).
                    let asked = dns.queries.first().unwrap_or(&answer.name);
                    self.resolution(mac, answer.address, &sanitize(asked), time)?;
                }
            }
            Parsed::Tls(hello) => {
                self.fingerprint(mac, FingerprintKind::TlsJa3, &hello.ja3_hash, Some(&hello.ja3), time, changes)?;
                if let Some(name) = &hello.server_name {
                    self.fingerprint(mac, FingerprintKind::TlsServerName, &sanitize(name), None, time, changes)?;
                }
            }
            Parsed::Arp(arp) => {
                // Only what a device says about itself: its own MAC as the ARP sender.
                let ip = IpAddr::V4(arp.sender_ip);
                if arp.sender_mac == mac && is_device_address(&ip) {
                    self.address(mac, ip, time, changes)?;
                }
            }
            // Server replies (DHCP offers, DNS answers) describe the server's clients, not the
            // server; the policy's DNS tracker reads answers itself.
            _ => {}
        }
        self.tracked.entry(mac).or_default().features.add_sample(&parsed);
        self.classify(mac, changes)
    }

    /// Records one interval of replayed or live per-device counters.
    pub fn record_interval(&mut self, interval: &IntervalCounters) -> Result<Vec<InventoryChange>, InventoryError> {
        self.in_transaction(|inventory| {
            let mut changes = Vec::new();
            for (mac, counters) in &interval.devices {
                // Counters alone (a MAC only ever seen as a destination) do not create a device.
                if inventory.device_exists(*mac)? {
                    inventory.record_traffic_in(*mac, interval.start, counters)?;
                    inventory.tracked.entry(*mac).or_default().features.add_traffic(counters);
                    inventory.classify(*mac, &mut changes)?;
                }
            }
            Ok(changes)
        })
    }

    /// Adds a device's counters for the interval starting at `interval_start` into its traffic
    /// bucket. Creates the device if needed.
    pub fn record_traffic(
        &mut self,
        mac: Mac,
        interval_start: SystemTime,
        counters: &TrafficCounters,
    ) -> Result<(), InventoryError> {
        self.in_transaction(|inventory| {
            inventory.touch(mac, millis(interval_start), &mut Vec::new())?;
            inventory.record_traffic_in(mac, interval_start, counters)
        })
    }

    fn record_traffic_in(
        &mut self,
        mac: Mac,
        interval_start: SystemTime,
        counters: &TrafficCounters,
    ) -> Result<(), InventoryError> {
        let bucket_ms = i64::try_from(self.traffic_bucket.as_millis()).unwrap_or(i64::MAX).max(1);
        let start = millis(interval_start).div_euclid(bucket_ms) * bucket_ms;
        let as_i64 = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
        self.conn.execute(
            "INSERT INTO inventory_traffic (mac, start, seconds, tx_bytes, tx_packets, rx_bytes, rx_packets)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (mac, start) DO UPDATE SET
                tx_bytes = tx_bytes + excluded.tx_bytes, tx_packets = tx_packets + excluded.tx_packets,
                rx_bytes = rx_bytes + excluded.rx_bytes, rx_packets = rx_packets + excluded.rx_packets",
            params![
                mac.to_string(),
                start,
                self.traffic_bucket.as_secs(),
                as_i64(counters.tx_bytes),
                as_i64(counters.tx_packets),
                as_i64(counters.rx_bytes),
                as_i64(counters.rx_packets)
            ],
        )?;
        let retention_ms = i64::try_from(self.traffic_retention.as_millis()).unwrap_or(i64::MAX);
        self.conn.execute(
            "DELETE FROM inventory_traffic WHERE mac = ?1 AND start < ?2",
            params![mac.to_string(), start.saturating_sub(retention_ms)],
        )?;
        Ok(())
    }

    fn device_exists(&self, mac: Mac) -> Result<bool, InventoryError> {
        Ok(self
            .conn
            .query_row("SELECT 1 FROM inventory_devices WHERE mac = ?1", [mac.to_string()], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Creates the device if new (audited as seen by the inventory), and moves `last_seen`.
    fn touch(&mut self, mac: Mac, time: i64, changes: &mut Vec<InventoryChange>) -> Result<(), InventoryError> {
        changes.extend(ledger::touch(&self.conn, self.vendors.lookup(&mac), mac, time, ACTOR_INVENTORY)?);
        Ok(())
    }

    /// Records that `ip` was the answer to `name` for the device, keeping the newest
    /// `MAX_RESOLUTIONS_PER_DEVICE`.
    fn resolution(&mut self, mac: Mac, ip: IpAddr, name: &str, time: i64) -> Result<(), InventoryError> {
        if name.is_empty() {
            return Ok(());
        }
        let (mac, ip) = (mac.to_string(), ip.to_string());
        let updated = self.conn.execute(
            "UPDATE inventory_resolutions SET last_seen = MAX(last_seen, ?4) WHERE mac = ?1 AND ip = ?2 AND name = ?3",
            params![mac, ip, name, time],
        )?;
        if updated > 0 {
            return Ok(());
        }
        self.conn.execute(
            "INSERT INTO inventory_resolutions (mac, ip, name, last_seen) VALUES (?1, ?2, ?3, ?4)",
            params![mac, ip, name, time],
        )?;
        self.conn.execute(
            "DELETE FROM inventory_resolutions WHERE rowid IN (SELECT rowid FROM inventory_resolutions
             WHERE mac = ?1 ORDER BY last_seen DESC LIMIT -1 OFFSET ?2)",
            params![mac, MAX_RESOLUTIONS_PER_DEVICE as i64],
        )?;
        Ok(())
    }

    fn address(
        &mut self,
        mac: Mac,
        ip: IpAddr,
        time: i64,
        changes: &mut Vec<InventoryChange>,
    ) -> Result<(), InventoryError> {
        let updated = self.conn.execute(
            "UPDATE inventory_addresses SET last_seen = MAX(last_seen, ?3) WHERE mac = ?1 AND ip = ?2",
            params![mac.to_string(), ip.to_string(), time],
        )?;
        if updated > 0 {
            return Ok(());
        }
        let count: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM inventory_addresses WHERE mac = ?1",
            [mac.to_string()],
            |row| row.get(0),
        )?;
        if count >= MAX_ADDRESSES_PER_DEVICE as i64 {
            self.stats.capped += 1;
            return Ok(());
        }
        self.conn.execute(
            "INSERT INTO inventory_addresses (mac, ip, first_seen, last_seen) VALUES (?1, ?2, ?3, ?3)",
            params![mac.to_string(), ip.to_string(), time],
        )?;
        ledger::append(&self.conn, ACTOR_INVENTORY, Some(mac), "address_added", &ip.to_string())?;
        changes.push(InventoryChange::NewAddress { mac, ip });
        Ok(())
    }

    fn fingerprint(
        &mut self,
        mac: Mac,
        kind: FingerprintKind,
        value: &str,
        detail: Option<&str>,
        time: i64,
        changes: &mut Vec<InventoryChange>,
    ) -> Result<(), InventoryError> {
        if value.is_empty() {
            return Ok(());
        }
        let updated = self.conn.execute(
            "UPDATE inventory_fingerprints SET last_seen = MAX(last_seen, ?4), count = count + 1
             WHERE mac = ?1 AND kind = ?2 AND value = ?3",
            params![mac.to_string(), kind.as_str(), value, time],
        )?;
        if updated > 0 {
            return Ok(());
        }
        let count: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM inventory_fingerprints WHERE mac = ?1 AND kind = ?2",
            params![mac.to_string(), kind.as_str()],
            |row| row.get(0),
        )?;
        if count >= MAX_FINGERPRINTS_PER_KIND as i64 {
            self.stats.capped += 1;
            return Ok(());
        }
        self.conn.execute(
            "INSERT INTO inventory_fingerprints (mac, kind, value, detail, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![mac.to_string(), kind.as_str(), value, detail, time],
        )?;
        changes.push(InventoryChange::NewFingerprint { mac, kind, value: value.to_owned() });
        Ok(())
    }

    fn hostname(
        &mut self,
        mac: Mac,
        hostname: &str,
        _time: i64,
        changes: &mut Vec<InventoryChange>,
    ) -> Result<(), InventoryError> {
        let previous: Option<String> =
            self.conn.query_row("SELECT hostname FROM inventory_devices WHERE mac = ?1", [mac.to_string()], |row| {
                row.get(0)
            })?;
        if previous.as_deref() == Some(hostname) {
            return Ok(());
        }
        self.conn
            .execute("UPDATE inventory_devices SET hostname = ?2 WHERE mac = ?1", params![mac.to_string(), hostname])?;
        ledger::append(
            &self.conn,
            ACTOR_INVENTORY,
            Some(mac),
            "hostname_changed",
            &format!("{} -> {hostname}", previous.as_deref().unwrap_or("-")),
        )?;
        changes.push(InventoryChange::HostnameChanged { mac, hostname: hostname.to_owned(), previous });
        Ok(())
    }
}
