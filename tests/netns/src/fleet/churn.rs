//! Steady, bounded load from a site's LAN: new devices joining one after another, each a DHCP
//! discover with a hostname from a MAC never seen before. Each is a new device in the gateway's
//! inventory, so its audit events go into the outbox (to the fleet as event reports) and its
//! snapshot to the inventory feed: the gateway keeps publishing while a test breaks the broker or
//! the hub. Frames are sent raw from the lab's first device port, on a thread that stops on drop.
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{
    lab::Lab,
    packets::{self, BROADCAST_IP, BROADCAST_MAC, Endpoints, UNSPECIFIED_IP},
    raw::RawSocket,
};

/// DHCP options the joining devices ask for (subnet, router, DNS, NTP).
const PARAMETERS: [u8; 4] = [1, 3, 6, 42];

/// Devices joining a site's LAN on a thread.
pub struct Churn {
    stop: Arc<AtomicBool>,
    joined: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

/// The `n`-th joining device's MAC at site number `site`: locally administered, distinct across
/// sites and from the lab's own devices.
pub fn device_mac(site: u8, n: usize) -> [u8; 6] {
    [0x02, 0x5e, site, (n >> 16) as u8, (n >> 8) as u8, n as u8]
}

impl Churn {
    /// Starts `per_second` new devices a second on `lab`'s LAN, `max` at most (then it stops on
    /// its own).
    pub fn start(lab: &Lab, site: u8, per_second: u32, max: usize) -> Churn {
        let device = &lab.devices[0];
        let tx = RawSocket::open(&device.ns, device.interface);
        let period = Duration::from_secs(1) / per_second.max(1);
        let (stop, joined) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
        let (stopped, count) = (stop.clone(), joined.clone());
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            for n in 0..max {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let e = Endpoints {
                    src_mac: device_mac(site, n),
                    dst_mac: BROADCAST_MAC,
                    src_ip: UNSPECIFIED_IP,
                    dst_ip: BROADCAST_IP,
                };
                tx.send(&packets::dhcp_discover(e, 0x5e00_0000 | n as u32, &PARAMETERS, &format!("sensor-{site}-{n}")));
                count.store(n + 1, Ordering::Relaxed);
                std::thread::sleep((start + period * (n as u32 + 1)).saturating_duration_since(Instant::now()));
            }
        });
        Churn { stop, joined, thread: Some(thread) }
    }

    /// `start` at each of `labs`, the n-th as site number n.
    pub fn at_every_site(labs: &[Lab], per_second: u32, max: usize) -> Vec<Churn> {
        labs.iter().enumerate().map(|(n, lab)| Churn::start(lab, n as u8, per_second, max)).collect()
    }

    /// Devices that have joined so far.
    pub fn joined(&self) -> usize {
        self.joined.load(Ordering::Relaxed)
    }

    /// Stops the devices joining; returns how many joined.
    pub fn stop(mut self) -> usize {
        self.halt();
        self.joined()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.halt();
    }
}
