//! MUD URL announcements (`mud::announce`): DHCPv6 options and LLDP TLVs a device sends
//! (untrusted), then the URL check every announced URL goes through (`mud::url::check`).
//! Invariant: a refused URL's message holds no unsafe character (it quotes the device).
#![no_main]
use iotgw::mud::{Config, announce, url};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let config = Config { authorities: vec!["mud.example.com".into()], ..Config::default() };
    let found = [announce::dhcpv6_mud_url(data), announce::lldp_mud_url(data)];
    for announced in found.into_iter().flatten().flatten().chain([data.to_vec()]) {
        if let Err(error) = url::check(&announced, &config) {
            assert!(iotgw::untrusted::is_safe(&error.to_string()), "{error}");
        }
    }
});
