//! `iotgw analyze CAPTURE.pcap...`: builds the inventory from packet captures, offline, with
//! the live code path: `datapath::replay` turns frames into the events and counters XDP
//! would have produced, an in-memory `Inventory` (with the shipped device-type model) takes
//! them in, and the result prints as a table or JSON. The same captures then run through
//! detection (`detect::offline::analyze`): devices learn on the `--learn` captures, and the
//! alerts raised on the others are printed after the devices. With `--config`, the gateway
//! configuration's `[baseline]` and `[detect]` sections apply as `iotgw run` applies them,
//! threat-intelligence lists included, so a capture can be checked against a feed.
use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    datapath::{
        events::DatapathEvent,
        replay::{CaptureReplay, DEFAULT_INTERVAL, ReplayItem, ReplayStats},
    },
    fingerprint::{Classifier, model::CONFIDENT},
    inventory::{DeviceRecord, Inventory, InventoryStats, Vendors},
};

/// Events handed to the inventory per transaction.
const BATCH: usize = 1_024;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Capture files: libpcap (Ethernet) or pcapng (its Ethernet interfaces).
    #[arg(required = true)]
    pub captures: Vec<PathBuf>,
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Device-type model to use instead of the shipped one.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Directory of the IEEE registry CSVs.
    #[arg(long, default_value = crate::inventory::vendor::DEFAULT_IEEE_DATA_DIR)]
    pub ieee_data: PathBuf,
    /// Captures to learn device baselines from (in this order) before the others are checked.
    /// Without them no device is baselined and only scans, floods and ARP spoofing alert.
    #[arg(long = "learn", value_name = "CAPTURE")]
    pub learn: Vec<PathBuf>,
    /// Gateway configuration whose `[baseline]` and `[detect]` sections (threat-intelligence
    /// lists, `[[detect.threat_intel]]`, included) apply as at run time; defaults without it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// What a capture gave, for the JSON report.
#[derive(Debug, Serialize)]
struct CaptureReport {
    path: PathBuf,
    #[serde(skip_serializing_if = "Option::is_none")]
    stats: Option<ReplayStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    captures: Vec<CaptureReport>,
    inventory: InventoryStats,
    devices: Vec<DeviceRecord>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detection: Option<crate::detect::offline::Analysis>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // A bad configuration stops before any capture is read, as it stops `iotgw run`.
    let config = match &args.config {
        Some(path) => match crate::config::load(path) {
            Ok(config) => config,
            Err(error) => {
                eprintln!("iotgw: {error}");
                return Ok(ExitCode::from(crate::cli::EXIT_CONFIG));
            }
        },
        None => crate::config::Config::default(),
    };
    let classifier = match &args.model {
        Some(path) => Classifier::load(path).with_context(|| format!("loading the model {}", path.display()))?,
        None => Classifier::shipped().context("loading the shipped device-type model")?,
    };
    let vendors = Vendors::load(&args.ieee_data).unwrap_or_else(|error| {
        eprintln!("warning: {error}; vendors will show as unknown (install Debian's ieee-data)");
        Vendors::empty()
    });
    let conn = crate::schema::open_in_memory().context("creating the in-memory store")?;
    let mut inventory = Inventory::new(conn, vendors, Some(classifier));
    let mut captures = Vec::new();
    let mut failed = false;
    for path in args.learn.iter().chain(&args.captures) {
        match replay_into(&mut inventory, path) {
            Ok(stats) => captures.push(CaptureReport { path: path.clone(), stats: Some(stats), error: None }),
            Err(error) => {
                failed = true;
                eprintln!("error: {path:?}: {error:#}");
                captures.push(CaptureReport { path: path.clone(), stats: None, error: Some(format!("{error:#}")) });
            }
        }
    }
    let devices = inventory.devices().context("reading the inventory")?;
    // Detection replays the captures once more, through the live detector.
    let detection = if failed {
        None
    } else {
        // The types the inventory gave the devices, as `iotgw run` hands them to the pipeline:
        // what the baselined devices of a type reach exempts the others of that type.
        let types: Vec<(crate::device::Mac, String)> =
            devices.iter().filter_map(|d| Some((d.mac, d.device_type.clone()?))).collect();
        let analysis =
            crate::detect::offline::analyze(&args.learn, &args.captures, &types, config.baseline, config.detect)
                .context("running detection over the captures")?;
        Some(analysis)
    };
    let report = Report { captures, inventory: inventory.stats(), devices, detection };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&report).context("serialising the report")?),
        Format::Table => print_table(&report),
    }
    Ok(if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Replays one capture into `inventory`, keeping events and interval counters in order.
pub fn replay_into(inventory: &mut Inventory, path: &std::path::Path) -> anyhow::Result<ReplayStats> {
    let mut replay = CaptureReplay::open(path, DEFAULT_INTERVAL)?;
    let mut batch: Vec<DatapathEvent> = Vec::with_capacity(BATCH);
    for item in replay.by_ref() {
        match item {
            ReplayItem::Event(event) => {
                batch.push(event);
                if batch.len() >= BATCH {
                    inventory.handle_batch(&batch).context("updating the inventory")?;
                    batch.clear();
                }
            }
            ReplayItem::Interval(interval) => {
                inventory.handle_batch(&batch).context("updating the inventory")?;
                batch.clear();
                inventory.record_interval(&interval).context("recording traffic")?;
            }
        }
    }
    inventory.handle_batch(&batch).context("updating the inventory")?;
    Ok(replay.stats())
}

fn print_table(report: &Report) {
    for capture in &report.captures {
        if let Some(stats) = &capture.stats {
            eprintln!(
                "{}: {} frames, {} flows, {} samples, {} malformed{}{}",
                capture.path.display(),
                stats.frames,
                stats.flows,
                stats.samples,
                stats.malformed,
                if stats.skipped_frames > 0 {
                    format!(", {} skipped (not Ethernet)", stats.skipped_frames)
                } else {
                    String::new()
                },
                if stats.truncated_capture { ", capture truncated" } else { "" }
            );
        }
    }
    println!(
        "{:<17}  {:<31}  {:<28}  {:<40}  {:<20}  {:>6}  {:>11}  {:>11}",
        "MAC", "IPS", "VENDOR", "TYPE / GENERIC (CONFIDENCE)", "HOSTNAME", "FLOWS", "TX BYTES", "RX BYTES"
    );
    for device in &report.devices {
        let ips: Vec<String> = device.ips.iter().map(ToString::to_string).collect();
        let ips = if ips.len() > 2 { format!("{}, +{}", ips[..2].join(", "), ips.len() - 2) } else { ips.join(", ") };
        let vendor = match (&device.vendor, device.locally_administered) {
            (Some(vendor), _) => vendor.clone(),
            (None, true) => "(locally administered)".to_owned(),
            (None, false) => "(unknown)".to_owned(),
        };
        let level = |name: &Option<String>, confidence: Option<f64>| match (name, confidence) {
            (Some(t), Some(c)) if c >= CONFIDENT => format!("{t} ({:.0}%)", 100.0 * c),
            (Some(t), Some(c)) => format!("{t}? ({:.0}%)", 100.0 * c),
            _ => "-".to_owned(),
        };
        let device_type = format!(
            "{} / {}",
            level(&device.device_type, device.type_confidence),
            level(&device.generic_type, device.generic_confidence)
        );
        println!(
            "{:<17}  {:<31}  {:<28}  {:<40}  {:<20}  {:>6}  {:>11}  {:>11}",
            device.mac.to_string(),
            truncate(&ips, 31),
            truncate(&vendor, 28),
            truncate(&device_type, 40),
            truncate(device.hostname.as_deref().unwrap_or("-"), 20),
            device.flows_total,
            device.traffic.tx_bytes,
            device.traffic.rx_bytes,
        );
    }
    if let Some(detection) = &report.detection {
        println!();
        print!("{}", detection.render());
    }
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{device::Mac, test_datasets::dataset};

    #[test]
    fn analyze_finds_the_dataset_devices_with_vendor_ip_and_type() {
        let dir = dataset("iot-sentinel");
        let vendors = Vendors::load(std::path::Path::new(crate::inventory::vendor::DEFAULT_IEEE_DATA_DIR));
        let vendors = vendors.expect("the IEEE registry (Debian's ieee-data, installed by `cargo xtask setup`)");
        let conn = crate::schema::open_in_memory().unwrap();
        let mut inventory = Inventory::new(conn, vendors, Some(Classifier::shipped().unwrap()));
        for capture in ["HueBridge/Setup-A-1-STA.pcap", "Aria/Setup-A-1-STA.pcap"] {
            let stats = replay_into(&mut inventory, &dir.join(capture)).unwrap();
            assert!(stats.flows > 0);
        }
        let hue: Mac = "00:17:88:24:76:ff".parse().unwrap();
        let aria: Mac = "20:f8:5e:ca:91:52".parse().unwrap();
        let devices = inventory.devices().unwrap();
        let hue = devices.iter().find(|d| d.mac == hue).expect("the Hue bridge is in the inventory");
        assert!(hue.vendor.as_deref().unwrap().contains("Philips"), "{:?}", hue.vendor);
        assert!(hue.ips.contains(&"10.10.10.6".parse().unwrap()));
        assert_eq!(hue.hostname.as_deref(), Some("Philips-hue"));
        assert_eq!(hue.device_type.as_deref(), Some("HueBridge"));
        assert_eq!((hue.type_vendor.as_deref(), hue.generic_type.as_deref()), (Some("Philips"), Some("hub")));
        assert!(hue.traffic.tx_bytes > 0 && hue.flows_total > 0);
        let aria = devices.iter().find(|d| d.mac == aria).expect("the Aria scale is in the inventory");
        assert!(aria.vendor.as_deref().unwrap().contains("Delta"), "{:?}", aria.vendor);
        assert_eq!(aria.device_type.as_deref(), Some("Aria"));
        assert_eq!(aria.generic_type.as_deref(), Some("scale"));
        let audit = inventory.audit_log(Some(aria.mac), 10).unwrap();
        assert!(audit.iter().any(|a| a.actor == "fingerprint" && a.action == "type_changed"));
    }
}
