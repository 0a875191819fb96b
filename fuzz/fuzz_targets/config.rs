//! The gateway's configuration file: `config::parse`, every section and its semantic checks
//! (what `iotgw run` reads before anything is attached).
#![no_main]
use std::path::Path;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(error) = iotgw::config::parse(Path::new("fuzz.toml"), text) {
        let _ = error.to_string();
    }
});
