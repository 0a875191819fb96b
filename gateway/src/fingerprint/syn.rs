//! TCP SYN signature: turns the `SynFingerprint` XDP records from a flow's first SYN into a
//! p0f-style text (`ittl:window:mss:wscale:options:df`), stable across connections of one
//! TCP/IP stack.
use gateway_ebpf::SynFingerprint;

/// Initial TTLs stacks use; the observed TTL is rounded up to one of these, since hops
/// between the device and the gateway decrement it.
const INITIAL_TTLS: [u8; 4] = [32, 64, 128, 255];

/// The smallest common initial TTL at or above `ttl`.
pub fn initial_ttl(ttl: u8) -> u8 {
    INITIAL_TTLS.into_iter().find(|initial| ttl <= *initial).unwrap_or(u8::MAX)
}

/// TCP option kinds as p0f names them.
fn option_name(kind: u8) -> String {
    match kind {
        0x00 => "eol".into(),
        0x01 => "nop".into(),
        0x02 => "mss".into(),
        0x03 => "ws".into(),
        0x04 => "sok".into(),
        0x05 => "sack".into(),
        0x08 => "ts".into(),
        other => format!("?{other}"),
    }
}

/// `ittl:window:mss:wscale:options:df`, e.g. `64:14600:1460:4:mss,sok,ts,nop,ws:df`.
pub fn signature(syn: &SynFingerprint) -> String {
    let count = usize::from(syn.option_count).min(syn.option_kinds.len());
    let options: Vec<String> = syn.option_kinds[..count].iter().map(|k| option_name(*k)).collect();
    let scale = if syn.window_scale == u8::MAX { "*".to_owned() } else { syn.window_scale.to_string() };
    let df = if syn.dont_fragment != 0 { "df" } else { "-" };
    format!("{}:{}:{}:{scale}:{}:{df}", initial_ttl(syn.ttl), syn.window, syn.mss, options.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syn_signature_rounds_ttl_and_names_options() {
        let mut syn = SynFingerprint {
            window: 14600,
            mss: 1460,
            ttl: 62,
            window_scale: 4,
            option_count: 5,
            dont_fragment: 1,
            ..Default::default()
        };
        syn.option_kinds[..5].copy_from_slice(&[2, 4, 8, 1, 3]);
        assert_eq!(signature(&syn), "64:14600:1460:4:mss,sok,ts,nop,ws:df");
    }

    #[test]
    fn syn_signature_tolerates_bogus_option_count() {
        let syn = SynFingerprint { ttl: 200, window_scale: u8::MAX, option_count: 200, ..Default::default() };
        assert!(signature(&syn).starts_with("255:0:0:*:"));
    }
}
