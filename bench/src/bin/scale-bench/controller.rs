//! A real controller with `DEVICES` devices: `iotgw run` (the workspace's build, `IOTGW_BIN`)
//! in a lab the bench creates and removes (namespaces and veths, native XDP), against a store
//! seeded with `DEVICES` enforced devices (97 % enrolled on ten classes, 2 % quarantined, 1 %
//! blocked) and a policy of `RULES` rules (ten classes of 1,000 `/32` allow rules). Measures:
//! - start-up: from the process's start to the datapath attached with the device table rebuilt
//!   from the store (the `DEVICES` map then holds every device: checked);
//! - policy recompile and swap: a SIGHUP after every rule's port changed, until the controller
//!   logs the new policy applied (every entry rewritten), `SWAPS` times; meanwhile device
//!   lookups on a kept-alive connection, without pause, from the SIGHUP to `SWAP_TAIL` after
//!   the swap (what follows it on the policy step), p50 and p99 of those; then the first
//!   `GET /api/v1/policies` after the swap (the view of 10,000 rules);
//! - API device lookups: `GET /api/v1/devices/{mac}` of spread devices, `LOOKUPS` times each on
//!   a fresh connection from inside the namespace (a thread that enters it, connects, one
//!   request), then `LOOKUPS` times on one kept-alive connection, as an API client would: p50 and
//!   p99 of both;
//! - memory (resident, and its peak) after each phase, and the process's CPU while idle.
use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use gateway_ebpf::{lane, maps as abi};
use netns_tests::{
    api::{ApiClient, token_entry},
    controller::Controller,
    lab::Lab,
    policies::{DefaultVerdicts, LANES},
};

use crate::capacity_for;

/// Classes and allow rules per class: `CLASSES × RULES_PER_CLASS` rules.
const CLASSES: u32 = 10;
const RULES_PER_CLASS: u32 = 1_000;
const FIRST_CLASS_ID: u32 = 30;
const SWAPS: usize = 3;
const LOOKUPS: usize = 500;
/// How long the idle controller's CPU is measured.
const IDLE: Duration = Duration::from_secs(20);
const START_TIMEOUT: Duration = Duration::from_secs(600);
const SWAP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long lookups go on after a swap was applied: the policy step's work after it (the
/// API's policy view) falls inside.
const SWAP_TAIL: Duration = Duration::from_secs(1);
/// At most this many lookups during one swap (they run back to back).
const MAX_SWAP_LOOKUPS: usize = 200_000;
const TOKEN: &str = "scale-bench-operator-4e1f";
/// The goals.
const GOAL_RSS_MIB: f64 = 512.0;
const GOAL_SWAP: Duration = Duration::from_secs(1);
const GOAL_LOOKUP_P99: Duration = Duration::from_millis(5);

fn mac(n: u32) -> String {
    let [a, b, c, d] = n.to_be_bytes();
    format!("02:5d:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// The classes' policy file: every rule a `/32` towards its own address, on `port`.
fn classes(port: u16) -> String {
    let mut text = String::new();
    for class in 0..CLASSES {
        let id = FIRST_CLASS_ID + class;
        text.push_str(&format!("[[class]]\nname = \"scale-{class}\"\nid = {id}\n"));
        for rule in 0..RULES_PER_CLASS {
            let (hi, lo) = (rule / 250, rule % 250);
            text.push_str(&format!(
                "[[class.allow]]\nnets = [\"10.{}.{hi}.{lo}/32\"]\nprotocol = \"tcp\"\nports = [{port}]\n",
                100 + class
            ));
        }
    }
    text
}

/// (access, class) of device `n`: 97 % enrolled on the ten classes, 2 % quarantined, 1 % blocked.
fn access(n: u32) -> (&'static str, u32) {
    let class = FIRST_CLASS_ID + n % CLASSES;
    match n % 100 {
        0 | 1 => ("quarantined", class),
        2 => ("blocked", class),
        _ => ("enrolled", class),
    }
}

/// Writes `devices` enforced devices into the controller's store, one transaction.
fn seed(store: &std::path::Path, devices: u32) -> anyhow::Result<()> {
    let conn = iotgw::schema::open(store)?;
    conn.execute_batch("BEGIN")?;
    let mut insert = conn.prepare(
        "INSERT INTO inventory_devices (mac, first_seen, last_seen, locally_administered, access, class, policy_id,
         class_id) VALUES (?1, 1780000000000, 1780000000000, 1, ?2, ?3, ?4, ?5)",
    )?;
    for n in 0..devices {
        let (access, class) = access(n);
        let policy = lane::FIRST_CLASS_POLICY + class;
        insert.execute((mac(n), access, format!("scale-{}", class - FIRST_CLASS_ID), policy, class))?;
    }
    drop(insert);
    conn.execute_batch("COMMIT")?;
    Ok(())
}

/// (resident, peak resident) MiB of process `pid`.
fn memory_mib(pid: u32) -> anyhow::Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib = |field: &str| -> anyhow::Result<f64> {
        let line = status.lines().find(|l| l.starts_with(field)).with_context(|| format!("{field} in status"))?;
        Ok(line.split_whitespace().nth(1).context("value")?.parse::<f64>()?)
    };
    Ok((kib("VmRSS:")? / 1024.0, kib("VmHWM:")? / 1024.0))
}

/// CPU time (user + system) process `pid` has used.
fn cpu_time(pid: u32) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces), from field 3 on: utime is 14, stime 15.
    let after = stat.rsplit_once(") ").context("stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    Ok(Duration::from_millis(ticks * 1_000 / USER_HZ))
}

/// Clock ticks per second of /proc's times (the kernel's `USER_HZ`, 100 on Linux).
const USER_HZ: u64 = 100;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `LOOKUPS` device lookups of spread devices through `get`: p50 and p99, and the slowest
/// few with when they were asked (to match against the controller's log).
fn lookups(
    how: &str,
    devices: u32,
    mut get: impl FnMut(&str) -> netns_tests::api::Response,
) -> anyhow::Result<(Duration, Duration)> {
    let started = Instant::now();
    let mut times = Vec::with_capacity(LOOKUPS);
    for i in 0..LOOKUPS as u32 {
        let n = (i * 7_919) % devices;
        let asked = started.elapsed();
        let asking = Instant::now();
        let response = get(&format!("/api/v1/devices/{}", mac(n)));
        times.push((asking.elapsed(), asked));
        anyhow::ensure!(response.status == 200, "device {} answered {}", mac(n), response.status);
    }
    let wall = started.elapsed();
    times.sort_unstable();
    let (p50, p99) = (times[LOOKUPS / 2].0, times[LOOKUPS * 99 / 100].0);
    let slowest: Vec<String> =
        times.iter().rev().take(5).map(|(took, at)| format!("{:.1} ms at +{:.0} ms", ms(*took), ms(*at))).collect();
    println!(
        "API device lookup ({LOOKUPS}, {how}, {:.1} s): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; slowest: {}",
        wall.as_secs_f64(),
        ms(p50),
        ms(p99),
        ms(times[LOOKUPS - 1].0),
        slowest.join(", ")
    );
    Ok((p50, p99))
}

/// Device lookups of spread devices on one kept-alive connection, back to back, until `stop`
/// is set (at most `MAX_SWAP_LOOKUPS`, and no longer than `SWAP_TIMEOUT` and its tail): how
/// long each took.
fn lookups_until(api: &ApiClient, devices: u32, stop: &AtomicBool) -> anyhow::Result<Vec<Duration>> {
    let mut connection = api.keep_alive();
    let started = Instant::now();
    let mut times = Vec::new();
    let mut i = 0u32;
    while !stop.load(Ordering::Relaxed)
        && times.len() < MAX_SWAP_LOOKUPS
        && started.elapsed() < SWAP_TIMEOUT + SWAP_TAIL
    {
        let n = (i * 7_919) % devices;
        i = i.wrapping_add(1);
        let asking = Instant::now();
        let response = connection.get(&format!("/api/v1/devices/{}", mac(n)), Some(TOKEN));
        times.push(asking.elapsed());
        anyhow::ensure!(response.status == 200, "device {} answered {}", mac(n), response.status);
    }
    Ok(times)
}

/// p50, p99 and max of `times` (sorted here); zeros when empty.
fn percentiles(times: &mut [Duration]) -> (Duration, Duration, Duration) {
    times.sort_unstable();
    match times.len() {
        0 => Default::default(),
        n => (times[n / 2], times[n * 99 / 100], times[n - 1]),
    }
}

pub fn run(devices: u32) -> anyhow::Result<()> {
    netns_tests::require_root();
    let lab = Lab::new(1);
    let defaults = DefaultVerdicts::LAB.toml();
    let classes_file = classes(443);
    let files = [("lanes.toml", LANES), ("defaults.toml", defaults.as_str()), ("scale.toml", classes_file.as_str())];
    let api_config = format!("\n[api]\ntokens = [\n  {},\n]\n", token_entry("otto", "operator", TOKEN));
    let mut ctl = Controller::configure(&lab, &files, &api_config);
    let text = std::fs::read_to_string(&ctl.config)?;
    let sized = format!("[datapath]\ndevices_capacity = {}\n", capacity_for(devices));
    let text = text.replacen("[datapath]\n", &sized, 1).replacen("watch = true", "watch = false", 1);
    std::fs::write(&ctl.config, text)?;

    let seeding = Instant::now();
    seed(&ctl.dir.join("iotgw.db"), devices)?;
    println!(
        "\ncontroller, {devices} devices in the store, {} rules ({CLASSES} classes), `iotgw run` {}",
        CLASSES * RULES_PER_CLASS,
        netns_tests::controller::iotgw_bin().display()
    );
    println!("store seeded in {:.1} s", seeding.elapsed().as_secs_f64());

    let starting = Instant::now();
    ctl.spawn_within(START_TIMEOUT);
    let started = starting.elapsed();
    let pid = ctl.pid().context("controller pid")?;
    let enforced =
        ctl.maps().fill_levels()?.into_iter().find(|fill| fill.map == abi::DEVICES).map_or(0, |fill| fill.entries);
    println!(
        "start-up to full enforcement: {:.2} s ({enforced} devices in the DEVICES map: {})",
        started.as_secs_f64(),
        if enforced == u64::from(devices) { "all" } else { "NOT all" }
    );
    let mut peak = 0f64;
    let mut report_memory = |phase: &str| -> anyhow::Result<()> {
        let (rss, hwm) = memory_mib(pid)?;
        peak = peak.max(hwm);
        println!("memory after {phase}: {rss:.0} MiB resident, peak {hwm:.0} MiB");
        Ok(())
    };
    report_memory("start-up")?;

    let cpu_before = cpu_time(pid)?;
    std::thread::sleep(IDLE);
    let idle_share = (cpu_time(pid)? - cpu_before).as_secs_f64() / IDLE.as_secs_f64();
    println!("idle CPU over {IDLE:?} (counter sweeps, metrics, no traffic): {:.1} % of one core", idle_share * 100.0);
    report_memory("idle")?;

    let api = ApiClient::new(&lab.gw);
    let mut swaps = Vec::new();
    let mut during_swaps = Vec::new();
    for swap in 0..SWAPS {
        let port = if swap % 2 == 0 { 8_883 } else { 443 };
        std::fs::write(ctl.policy_dir.join("scale.toml"), classes(port))?;
        let applied = ctl.log_count("policy applied");
        let stop = AtomicBool::new(false);
        let (took, mut times) = std::thread::scope(|scope| -> anyhow::Result<_> {
            let lookups = scope.spawn(|| lookups_until(&api, devices, &stop));
            // The lookups' connection is open and its first requests answered before the SIGHUP.
            std::thread::sleep(Duration::from_millis(200));
            let swapping = Instant::now();
            ctl.hangup();
            while ctl.log_count("policy applied") == applied && swapping.elapsed() < SWAP_TIMEOUT {
                std::thread::sleep(Duration::from_millis(5));
            }
            let took = swapping.elapsed();
            std::thread::sleep(SWAP_TAIL);
            stop.store(true, Ordering::Relaxed);
            let times = lookups.join().map_err(|_| anyhow::anyhow!("the lookup thread panicked"))??;
            anyhow::ensure!(took < SWAP_TIMEOUT, "no policy applied within {SWAP_TIMEOUT:?}");
            Ok((took, times))
        })?;
        swaps.push(took);
        let field = |message: &str, name: &str| -> String {
            let line = ctl.log_lines(message).pop().unwrap_or_default();
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(name)?.strip_prefix('=').map(str::to_owned))
                .unwrap_or_default()
        };
        println!(
            "policy swap {}: {:.0} ms (files read, checked and compiled {} ms; written {} ms: {} entries written, {} unchanged)",
            swap + 1,
            ms(swaps[swap]),
            field("policy files read", "load_ms"),
            field("policy applied", "write_ms"),
            field("policy applied", "inserted"),
            field("policy applied", "unchanged"),
        );
        let (p50, p99, max) = percentiles(&mut times);
        println!(
            "  API device lookups during swap {} and {SWAP_TAIL:?} after (kept-alive, back to back): {} lookups, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            swap + 1,
            times.len(),
            ms(p50),
            ms(p99),
            ms(max)
        );
        during_swaps.extend(times);
        let viewing = Instant::now();
        let view = api.get("/api/v1/policies", Some(TOKEN));
        anyhow::ensure!(view.status == 200, "/api/v1/policies answered {}", view.status);
        println!(
            "  first GET /api/v1/policies after swap {}: {:.0} ms ({} kB)",
            swap + 1,
            ms(viewing.elapsed()),
            view.body.len() / 1_000
        );
    }
    report_memory("policy swaps")?;
    let (during_p50, during_p99, during_max) = percentiles(&mut during_swaps);
    println!(
        "API device lookups during all {SWAPS} swaps: {} lookups, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        during_swaps.len(),
        ms(during_p50),
        ms(during_p99),
        ms(during_max)
    );

    let (p50, p99) = lookups("a connection each", devices, |path| api.get(path, Some(TOKEN)))?;
    let mut connection = api.keep_alive();
    let (kept_p50, kept_p99) = lookups("one kept-alive connection", devices, |path| connection.get(path, Some(TOKEN)))?;
    report_memory("API lookups")?;

    let worst_swap = swaps.iter().max().copied().unwrap_or_default();
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    println!("goal: peak resident ≤ {GOAL_RSS_MIB} MiB: {} ({peak:.0} MiB)", verdict(peak <= GOAL_RSS_MIB));
    println!(
        "goal: policy swap ≤ {GOAL_SWAP:?}: {} (worst {:.0} ms)",
        verdict(worst_swap <= GOAL_SWAP),
        ms(worst_swap)
    );
    println!(
        "goal: API lookup p99 ≤ {GOAL_LOOKUP_P99:?}: kept-alive {} ({:.2} ms, p50 {:.2} ms); a connection each {} ({:.2} ms, p50 {:.2} ms)",
        verdict(kept_p99 <= GOAL_LOOKUP_P99),
        ms(kept_p99),
        ms(kept_p50),
        verdict(p99 <= GOAL_LOOKUP_P99),
        ms(p99),
        ms(p50)
    );
    println!(
        "goal: API lookup p99 ≤ {GOAL_LOOKUP_P99:?} during policy swaps (kept-alive): {} ({:.2} ms)",
        verdict(during_p99 <= GOAL_LOOKUP_P99),
        ms(during_p99)
    );
    Ok(())
}
