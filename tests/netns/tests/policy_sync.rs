//! A policy sync (`datapath::maps::Maps::sync_policy`) writes the policy tries in batches and
//! diffs against what it wrote last instead of reading them back: after every sync the
//! kernel's tries hold exactly the policy, what changed is counted, and the policy generation
//! moved. A second handle (a restarted controller finding the pins filled) reads the kernel's
//! entries once and diffs against those.
//!
//! Runs on the real object's maps (no traffic); needs root (BPF). Pins in the test's own
//! directory, removed on drop.
use std::collections::BTreeSet;

use gateway_ebpf::{POLICY_KEY_FIXED_BITS, PolicyKey, PolicyRule, PortMatch, PortRange, lane, opener, proto};
use iotgw::datapath::maps::{AbiEntry, Maps, SyncReport};
use netns_tests::lan_program::LanProgram;

/// More than one batch (`datapath::batch` writes 4,096 entries a call).
const V4_ENTRIES: u32 = 5_000;

fn rule(port: u16) -> PolicyRule {
    let mut rule = PolicyRule { match_count: 1, ..PolicyRule::default() };
    rule.matches[0] = PortMatch {
        remote: PortRange { first: port, last: port },
        device: PortRange { first: 0, last: u16::MAX },
        openers: opener::DEVICE,
        _pad: [0; 3],
    };
    rule
}

/// Entry `i`: a `/32` towards 10.100.x.y on one of ten class policies, allowed on `port`.
fn v4(i: u32, port: u16) -> AbiEntry {
    let [_, _, hi, lo] = i.to_be_bytes();
    AbiEntry::V4 {
        prefix_len: POLICY_KEY_FIXED_BITS + 32,
        key: PolicyKey {
            policy_id: (lane::FIRST_CLASS_POLICY + 30 + i % 10).to_be_bytes(),
            proto: proto::TCP,
            _pad: [0; 3],
            addr: [10, 100, hi, lo],
        },
        rule: rule(port),
    }
}

fn v6(i: u8) -> AbiEntry {
    let mut addr = [0u8; 16];
    addr[..2].copy_from_slice(&[0x20, 0x01]);
    addr[15] = i;
    AbiEntry::V6 {
        prefix_len: POLICY_KEY_FIXED_BITS + 128,
        key: PolicyKey {
            policy_id: (lane::FIRST_CLASS_POLICY + 30).to_be_bytes(),
            proto: proto::UDP,
            _pad: [0; 3],
            addr,
        },
        rule: rule(123),
    }
}

/// Policy A: every v4 entry on 443, ten v6 entries.
fn policy_a() -> Vec<AbiEntry> {
    (0..V4_ENTRIES).map(|i| v4(i, 443)).chain((0..10).map(v6)).collect()
}

/// Policy B: the first half of A's v4 entries on 8883, the rest as in A, 1,000 more, no v6.
fn policy_b() -> Vec<AbiEntry> {
    (0..V4_ENTRIES + 1_000).map(|i| v4(i, if i < V4_ENTRIES / 2 { 8_883 } else { 443 })).collect()
}

fn as_set(entries: Vec<AbiEntry>) -> BTreeSet<String> {
    entries.into_iter().map(|entry| format!("{entry:?}")).collect()
}

/// Syncs `policy` through `maps`, checks the report and that the kernel holds exactly `policy`
/// (read through `reader`, another handle) and that the generation moved if anything changed.
fn sync_and_check(maps: &Maps, reader: &Maps, policy: Vec<AbiEntry>, expected: SyncReport) {
    let before = reader.read_config().expect("config").policy_generation;
    let report = maps.sync_policy(policy.iter().copied()).expect("sync");
    assert_eq!(report, expected);
    assert_eq!(as_set(reader.policy_entries()), as_set(policy.clone()), "the kernel holds exactly the policy");
    let after = reader.read_config().expect("config").policy_generation;
    // Moved after a change (flows must not keep decisions made from the old entries), and
    // only then.
    assert_eq!(after != before, expected.inserted + expected.removed > 0, "generation {before} -> {after}");
    let fill = maps.fill_levels().expect("fill");
    let held: u64 = fill.iter().filter(|f| f.map.starts_with("POLICY_V")).map(|f| f.entries).sum();
    assert_eq!(held, policy.len() as u64, "the fill counts what the tries hold");
}

#[test]
fn policy_sync_leaves_the_tries_holding_exactly_each_policy() {
    let lan = LanProgram::load("policy-sync", &[]);
    let reader = Maps::open_pinned(lan.pin_dir()).expect("second handle");
    let (a, b) = (policy_a().len(), policy_b().len());
    sync_and_check(&lan.maps, &reader, policy_a(), SyncReport { inserted: a, removed: 0, unchanged: 0 });
    sync_and_check(&lan.maps, &reader, policy_a(), SyncReport { inserted: 0, removed: 0, unchanged: a });
    // Half changed, 1,000 new, the v6 entries stale.
    let changed = V4_ENTRIES as usize / 2;
    sync_and_check(
        &lan.maps,
        &reader,
        policy_b(),
        SyncReport { inserted: changed + 1_000, removed: 10, unchanged: b - changed - 1_000 },
    );
    // A handle that never synced reads the kernel's entries first (a restarted controller).
    let restarted = Maps::open_pinned(lan.pin_dir()).expect("third handle");
    sync_and_check(
        &restarted,
        &reader,
        policy_a(),
        SyncReport { inserted: changed + 10, removed: 1_000, unchanged: a - changed - 10 },
    );
    sync_and_check(&restarted, &reader, Vec::new(), SyncReport { inserted: 0, removed: a, unchanged: 0 });
}
