//! The controller at scale (issue 19), two sections:
//! - `sweep`: the counter sweep's CPU with `DEVICES` devices in the maps and N of them active
//!   per interval (maps and the LAN program only, no controller);
//! - `controller`: a real `iotgw run` in a lab namespace (real XDP on veths) against a store
//!   seeded with `DEVICES` devices and a policy of 10,000 rules: start-up time to full
//!   enforcement, memory, policy recompile and swap, API device lookups, idle CPU.
//!
//! `cargo xtask bench scale` or, as root, `cargo run -p iotgw-bench --bin scale-bench --
//! [sweep|controller|all] [DEVICES [ROUNDS]]` (default: all, 100,000 devices, 10 rounds).
mod controller;
mod sweep;

use anyhow::Context as _;
use iotgw::datapath::loader;

const DEFAULT_DEVICES: u32 = 100_000;
const DEFAULT_ROUNDS: usize = 10;

/// The device maps' size for `DEVICES` devices: an LRU map starts evicting before it is full
/// (per-CPU free lists), so a site is configured with room to spare.
fn capacity_for(devices: u32) -> u32 {
    devices.saturating_add(devices / 4).next_power_of_two()
}

fn main() -> anyhow::Result<()> {
    anyhow::ensure!(!loader::object().is_empty(), "built without the XDP object (AYA_BUILD_SKIP)");
    let mut args = std::env::args().skip(1).peekable();
    let section = match args.peek().map(String::as_str) {
        Some(name @ ("sweep" | "controller" | "all")) => {
            let name = name.to_owned();
            args.next();
            name
        }
        _ => "all".to_owned(),
    };
    let devices: u32 = args.next().map(|a| a.parse()).transpose().context("DEVICES")?.unwrap_or(DEFAULT_DEVICES);
    let rounds: usize = args.next().map(|a| a.parse()).transpose().context("ROUNDS")?.unwrap_or(DEFAULT_ROUNDS);
    if section != "controller" {
        sweep::run(devices, rounds)?;
    }
    if section != "sweep" {
        controller::run(devices)?;
    }
    Ok(())
}
