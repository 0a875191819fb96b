//! RFC 8520 MUD files: `policy::mud::import` (`iotgw policy import-mud`; MUD files come from
//! vendors' URLs). Invariant: an imported class passes the policy check and compiles.
#![no_main]
use std::path::PathBuf;

use iotgw::policy::{compile, mud, parse_sources};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(json) = std::str::from_utf8(data) else { return };
    let Ok(imported) = mud::import(json, "fuzzed", 100) else { return };
    let policy = parse_sources(&[(PathBuf::from("fuzzed.toml"), imported.toml.clone())])
        .unwrap_or_else(|errors| panic!("imported MUD refused by the policy check: {errors:?}\n{}", imported.toml));
    if let Err(errors) = compile(&policy) {
        // Too many entries for the datapath's maps is a fair refusal; anything else is a bug.
        let text = format!("{errors:?}");
        assert!(text.contains("TooMany") || text.contains("too many"), "imported MUD does not compile: {text}");
    }
});
