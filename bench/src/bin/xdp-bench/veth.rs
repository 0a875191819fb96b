//! The bench's own namespaces: a sender and a gateway joined by a veth pair, for the flood
//! (`flood`), with xdp-filter loaded on the gateway's end the way an operator would load it
//! (xdp-tools' `xdp-filter load`, then one `ip` or `port` command per rule). Its program,
//! pinned by xdp-filter, is what the other sections time beside iotgw. Everything is removed
//! on drop, the namespaces with all they hold.
use std::{net::IpAddr, path::PathBuf, process::Command};

use anyhow::Context as _;
use aya::programs::Xdp;
use aya_obj::programs::XdpAttachType;
use iotgw::datapath::maps::AbiEntry;
use netns_tests::lab::{Lab, format_mac, ip};

/// xdp-filter's program for deny mode with every feature: the object the bench used to load
/// by itself, and the program `xdp-filter load -p deny` picks.
const XDP_FILTER_PROGRAM: &str = "xdpfilt_dny_all";
/// Where xdp-filter pins its maps and programs (fixed by xdp-tools).
const XDP_FILTER_PINS: &str = "/sys/fs/bpf/xdp-filter";

/// Two namespaces and the veth between them: `sender_if` in `sender`, `gateway_if` in `gateway`.
pub struct VethPair {
    pub sender: String,
    pub gateway: String,
    pub sender_if: &'static str,
    pub gateway_if: String,
}

impl VethPair {
    /// Creates the pair; the gateway's end answers to `gateway_mac`.
    pub fn new(gateway_mac: [u8; 6]) -> anyhow::Result<Self> {
        let id = std::process::id();
        let pair = Self {
            sender: format!("iotgw-bench-tx-{id}"),
            gateway: format!("iotgw-bench-gw-{id}"),
            sender_if: "tx0",
            // Unique on the machine: xdp-filter names its pins after the interface.
            gateway_if: format!("xb{}", id % 1_000_000),
        };
        for ns in [&pair.sender, &pair.gateway] {
            run(Command::new("ip").args(["netns", "add", ns]))?;
        }
        ip(&pair.sender, &["link", "add", pair.sender_if, "type", "veth", "peer", "name", &pair.gateway_if]);
        ip(&pair.sender, &["link", "set", &pair.gateway_if, "netns", &pair.gateway]);
        ip(&pair.gateway, &["link", "set", &pair.gateway_if, "address", &format_mac(gateway_mac)]);
        ip(&pair.sender, &["link", "set", pair.sender_if, "up"]);
        ip(&pair.gateway, &["link", "set", &pair.gateway_if, "up"]);
        Ok(pair)
    }

    /// `program args...` run inside the gateway's namespace (nsenter: unlike `ip netns exec`
    /// it keeps /sys, where bpffs is mounted).
    pub fn in_gateway(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let mut command = Command::new("nsenter");
        command.arg(format!("--net={}", Lab::ns_path(&self.gateway))).arg(program).args(args);
        run(&mut command)
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // xdp-filter's pins outlive the interface unless it is unloaded first.
        let _ = self.in_gateway("xdp-filter", &["unload", &self.gateway_if]);
        for ns in [&self.sender, &self.gateway] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// xdp-filter in deny mode on the gateway's end of `pair`, with one `ip` rule per policy entry
/// (its address, as destination) and one `port` rule per single remote port the entries name
/// (TCP or UDP, as destination): its program, and how many rules of each kind it holds.
pub struct XdpFilter {
    pub program: Xdp,
    pub ip_rules: usize,
    pub port_rules: usize,
}

impl XdpFilter {
    pub fn load(pair: &VethPair, entries: &[AbiEntry]) -> anyhow::Result<Self> {
        pair.in_gateway("xdp-filter", &["load", "--policy", "deny", "--mode", "native", &pair.gateway_if])
            .context("xdp-filter load (apt-get install xdp-tools)")?;
        let (mut ip_rules, mut ports) = (0, std::collections::BTreeSet::new());
        for entry in entries {
            let (addr, proto, rule) = match entry {
                AbiEntry::V4 { key, rule, .. } => (IpAddr::from(key.addr), key.proto, rule),
                AbiEntry::V6 { key, rule, .. } => (IpAddr::from(key.addr), key.proto, rule),
            };
            pair.in_gateway("xdp-filter", &["ip", &addr.to_string(), "--mode", "dst"])?;
            ip_rules += 1;
            let proto = match proto {
                gateway_ebpf::proto::TCP => "tcp",
                gateway_ebpf::proto::UDP => "udp",
                _ => continue,
            };
            let matches = &rule.matches[..(rule.match_count as usize).min(rule.matches.len())];
            for m in matches.iter().filter(|m| m.remote.first == m.remote.last) {
                ports.insert((m.remote.first, proto));
            }
        }
        for (port, proto) in &ports {
            pair.in_gateway("xdp-filter", &["port", &port.to_string(), "--mode", "dst", "--proto", proto])?;
        }
        let pin = PathBuf::from(XDP_FILTER_PINS).join("programs").join(&pair.gateway_if).join(XDP_FILTER_PROGRAM);
        let program = Xdp::from_pin(&pin, XdpAttachType::Interface)
            .with_context(|| format!("xdp-filter's program at {}", pin.display()))?;
        Ok(Self { program, ip_rules, port_rules: ports.len() })
    }
}

fn run(command: &mut Command) -> anyhow::Result<String> {
    let out = command.output().with_context(|| format!("{command:?}"))?;
    anyhow::ensure!(out.status.success(), "{command:?}: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
