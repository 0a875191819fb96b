//! Policy files: `policy::parse_sources` (what `iotgw policy check`, start-up and every reload
//! run on the TOML ops edit), `policy::compile`, and the `[[response]]` rules
//! (`respond::rules::from_policy`). Invariant: an accepted policy re-checks the same from the
//! source it keeps (`CompiledPolicy::source`, used by reloads and `/policies`).
#![no_main]
use std::path::PathBuf;

use iotgw::policy::{compile, parse_sources};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(policy) = parse_sources(&[(PathBuf::from("fuzz.toml"), text.to_owned())]) else { return };
    let _ = iotgw::respond::rules::from_policy(&policy);
    let Ok(compiled) = compile(&policy) else { return };
    let again = compile(&compiled.source).expect("an accepted policy compiles again from its kept source");
    assert_eq!(compiled.rules, again.rules);
    assert_eq!(compiled.classes, again.classes);
    assert_eq!(compiled.verdicts, again.verdicts);
    for rule in &compiled.rules {
        let _ = rule.to_abi();
    }
});
