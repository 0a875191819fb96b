//! A forged syslog record and the checks every entry point's test makes of it: pushed in
//! through the real entry point, no rendering of the resulting event may hold a line break,
//! control or bidi character, and each must still show the text, escaped.
#![allow(dead_code, reason = "each test file uses a different subset")]

use iotgw::{
    event::GatewayEvent,
    integrations::render::{Origin, renderings},
};

/// A second RFC 5424 record after a line feed, a Unicode line separator and a right-to-left
/// override that would show `exe.jpg` as `gpj.exe`.
pub const HOSTILE: &str =
    "flash write failed\n<13>1 2026-01-01T00:00:00Z gw iotgw - - - forged\u{2028}x\u{202e}gpj.exe";
/// `HOSTILE` as `iotgw::untrusted::escape` writes it.
pub const ESCAPED: &str = "flash write failed\\n<13>1 2026-01-01T00:00:00Z gw iotgw - - - forged\\u2028x\\u202egpj.exe";

pub fn origin() -> Origin {
    Origin { hostname: "gw-1".into(), app_name: "iotgw".into(), enterprise_id: 32_473, procid: 1, version: "0.1.0" }
}

/// Every wire form of `event` (syslog in each format, CEF, JSON bodies) is safe and shows
/// `escaped`, as such or with its backslashes escaped once more.
pub fn assert_renders_safely(event: &GatewayEvent, escaped: &str) {
    let doubled = escaped.replace('\\', "\\\\");
    for (form, text) in renderings(&origin(), event) {
        assert!(iotgw::untrusted::is_safe(&text), "{form} holds an unsafe character: {text:?}");
        assert!(!text.contains(['\n', '\r']), "{form}: {text:?}");
        assert!(text.contains(escaped) || text.contains(&doubled), "{form} lost {escaped:?}: {text}");
    }
}
