//! Value parsers: one string or TOML value of a policy file into its type (networks, ports,
//! DNS names, vendor prefixes, certificate subjects, keywords), each refusing what the
//! datapath could not enforce as written. Pure; `checks` locates their errors.
use std::{net::IpAddr, str::FromStr};

use gateway_ebpf::PortRange;
use ipnet::IpNet;

use super::{error::ErrorKind, model::IcmpMatch};

/// DNS limits (RFC 1035 §2.3.4).
const MAX_DNS_NAME: usize = 253;
const MAX_DNS_LABEL: usize = 63;

/// A DNS name in a rule: exact (`api.example.com`) or wildcard (`*.example.com`, every name
/// strictly below `example.com`). Stored lower-case without the trailing dot.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DnsPattern {
    pub name: String,
    pub wildcard: bool,
}

impl DnsPattern {
    /// Parses and checks a rule's name.
    pub fn parse(input: &str) -> Result<Self, String> {
        let lowered = input.trim_end_matches('.').to_ascii_lowercase();
        let (wildcard, name) = match lowered.strip_prefix("*.") {
            Some(rest) => (true, rest.to_owned()),
            None => (false, lowered),
        };
        if name.is_empty() {
            return Err("empty name".into());
        }
        if name.len() > MAX_DNS_NAME {
            return Err(format!("longer than {MAX_DNS_NAME} characters"));
        }
        for label in name.split('.') {
            if label.is_empty() {
                return Err("empty label (two dots in a row?)".into());
            }
            if label.len() > MAX_DNS_LABEL {
                return Err(format!("label {label:?} longer than {MAX_DNS_LABEL} characters"));
            }
            if label == "*" {
                return Err("a wildcard is only allowed as the whole first label (*.example.com)".into());
            }
            if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(format!("label {label:?} has characters other than a-z, 0-9, '-', '_'"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(format!("label {label:?} starts or ends with '-'"));
            }
        }
        Ok(Self { name, wildcard })
    }

    /// Whether `name` (any case, trailing dot or not) is covered by this pattern.
    pub fn matches(&self, name: &str) -> bool {
        // Bytes, not `str` slices: names from the wire may hold non-ASCII bytes, and a `str`
        // slice at a byte offset inside a character would panic.
        let name = name.trim_end_matches('.').as_bytes();
        let suffix = self.name.as_bytes();
        if self.wildcard {
            name.len() > suffix.len() + 1
                && name[name.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                && name[name.len() - suffix.len() - 1] == b'.'
        } else {
            name.eq_ignore_ascii_case(suffix)
        }
    }
}

impl std::fmt::Display for DnsPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.name)
    }
}

/// A CIDR or a bare address (a host route), refusing host bits after the prefix.
pub fn parse_net(input: &str) -> Result<IpNet, ErrorKind> {
    let trimmed = input.trim();
    if let Ok(net) = IpNet::from_str(trimmed) {
        if net.trunc() != net {
            return Err(ErrorKind::HostBitsSet { input: input.to_owned(), suggestion: net.trunc().to_string() });
        }
        return Ok(net);
    }
    match IpAddr::from_str(trimmed) {
        Ok(addr) => Ok(IpNet::from(addr)),
        Err(_) => Err(ErrorKind::BadNetwork {
            input: input.to_owned(),
            reason: "expected a CIDR like 10.77.0.0/16 or 2001:db8::/32, or an address".into(),
        }),
    }
}

/// A port: `443`, `"443"` or `"8000-8100"`.
pub fn parse_port(value: &toml::Value) -> Result<PortRange, ErrorKind> {
    let in_range = |number: i64| u16::try_from(number).map_err(|_| ErrorKind::PortOutOfRange(number));
    match value {
        toml::Value::Integer(number) => {
            let port = in_range(*number)?;
            Ok(PortRange { first: port, last: port })
        }
        toml::Value::String(text) => {
            let bad = || ErrorKind::BadPort { input: text.clone() };
            let number = |part: &str| -> Result<u16, ErrorKind> {
                let parsed: i64 = part.trim().parse().map_err(|_| bad())?;
                in_range(parsed)
            };
            let (first, last) = match text.split_once('-') {
                Some((first, last)) => (number(first)?, number(last)?),
                None => {
                    let port = number(text)?;
                    (port, port)
                }
            };
            if first > last {
                return Err(ErrorKind::ReversedPortRange { first, last });
            }
            Ok(PortRange { first, last })
        }
        other => Err(ErrorKind::BadPort { input: other.to_string() }),
    }
}

/// An ICMP type: `8`, `"8"` (any code) or `"3/4"` (type 3, code 4), each in 0..=255.
pub fn parse_icmp_type(value: &toml::Value) -> Result<IcmpMatch, ErrorKind> {
    let bad = |input: String, reason: &str| ErrorKind::BadIcmpType { input, reason: reason.into() };
    let byte = |input: &str, part: &str, what: &str| -> Result<u8, ErrorKind> {
        let number: i64 = part.trim().parse().map_err(|_| bad(input.into(), "expected \"T\" or \"T/C\" (numbers)"))?;
        u8::try_from(number).map_err(|_| bad(input.into(), &format!("{what} {number} out of range 0..=255")))
    };
    match value {
        toml::Value::Integer(number) => {
            let kind = u8::try_from(*number).map_err(|_| bad(number.to_string(), "type out of range 0..=255"))?;
            Ok(IcmpMatch { kind, code: None })
        }
        toml::Value::String(text) => match text.split_once('/') {
            Some((kind, code)) => {
                Ok(IcmpMatch { kind: byte(text, kind, "type")?, code: Some(byte(text, code, "code")?) })
            }
            None => Ok(IcmpMatch { kind: byte(text, text, "type")?, code: None }),
        },
        other => Err(bad(other.to_string(), "expected \"T\" or \"T/C\"")),
    }
}

/// Sorts ICMP matches, dropping duplicates and codes whose whole type is also listed.
pub fn merge_icmp(mut matches: Vec<IcmpMatch>) -> Vec<IcmpMatch> {
    matches.sort();
    matches.dedup();
    let whole: Vec<u8> = matches.iter().filter(|m| m.code.is_none()).map(|m| m.kind).collect();
    matches.retain(|m| m.code.is_none() || !whole.contains(&m.kind));
    matches
}

/// Sorts ranges and merges overlapping or adjacent ones.
pub fn merge_ranges(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort_by_key(|range| (range.first, range.last));
    let mut merged: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if u32::from(range.first) <= u32::from(last.last) + 1 => {
                last.last = last.last.max(range.last);
            }
            _ => merged.push(range),
        }
    }
    merged
}

/// `00:1a:2b`, `00-1A-2B`, `001a2b` (3 to 5 bytes).
pub fn parse_oui(input: &str) -> Option<Vec<u8>> {
    let digits: String = input.chars().filter(|c| !matches!(c, ':' | '-' | '.')).collect();
    if !digits.len().is_multiple_of(2) || !(6..=10).contains(&digits.len()) {
        return None;
    }
    hex::decode(digits).ok()
}

/// `bytes` as `00:1a:2b`, for messages.
pub fn hex_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// A certificate subject (or pattern) in one canonical RFC 4514 spelling: no spaces around
/// `,` and `=`, attribute types upper-case. `CN = cam-1, o=Lab` → `CN=cam-1,O=Lab`.
pub fn normalize_subject(subject: &str) -> String {
    subject
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(|part| match part.split_once('=') {
            Some((kind, value)) => format!("{}={}", kind.trim().to_ascii_uppercase(), value.trim()),
            None => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The one of `all` named `text` (ignoring ASCII case) by `as_str`: how the files' keywords
/// (protocol, direction, verdict) are read, so each keyword is spelled in one place.
pub fn parse_keyword<T: Copy>(all: &[T], as_str: fn(T) -> &'static str, text: &str) -> Option<T> {
    all.iter().copied().find(|value| as_str(*value).eq_ignore_ascii_case(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_patterns_match_exact_and_strictly_below_wildcards() {
        let exact = DnsPattern::parse("API.Example.com.").expect("valid");
        assert!(exact.matches("api.example.com"));
        assert!(!exact.matches("x.api.example.com"));
        let wildcard = DnsPattern::parse("*.example.com").expect("valid");
        assert!(wildcard.matches("a.b.EXAMPLE.com."));
        assert!(!wildcard.matches("example.com"));
        assert!(!wildcard.matches("badexample.com"));
        // Multi-byte characters right before the suffix must not panic (hostile wire names).
        assert!(!wildcard.matches("\u{e9}xample.com"));
        assert!(!wildcard.matches("\u{1F600}example.com"));
        assert!(wildcard.matches("\u{e9}.example.com"));
    }

    #[test]
    fn icmp_types_parse_as_type_or_type_and_code() {
        let parse = |text: &str| parse_icmp_type(&toml::Value::String(text.into()));
        assert_eq!(parse("8"), Ok(IcmpMatch { kind: 8, code: None }));
        assert_eq!(parse("3/4"), Ok(IcmpMatch { kind: 3, code: Some(4) }));
        assert_eq!(parse_icmp_type(&toml::Value::Integer(0)), Ok(IcmpMatch { kind: 0, code: None }));
        for bad in ["256", "8/256", "-1", "echo", "8/", "/0", "8/0/1", ""] {
            assert!(matches!(parse(bad), Err(ErrorKind::BadIcmpType { .. })), "{bad:?}");
        }
        assert!(matches!(parse_icmp_type(&toml::Value::Integer(300)), Err(ErrorKind::BadIcmpType { .. })));
        assert!(matches!(parse_icmp_type(&toml::Value::Boolean(true)), Err(ErrorKind::BadIcmpType { .. })));
    }

    #[test]
    fn icmp_codes_covered_by_their_whole_type_are_dropped() {
        let merged = merge_icmp(vec![
            IcmpMatch { kind: 3, code: Some(4) },
            IcmpMatch { kind: 8, code: Some(0) },
            IcmpMatch { kind: 3, code: None },
            IcmpMatch { kind: 8, code: Some(0) },
        ]);
        assert_eq!(merged, vec![IcmpMatch { kind: 3, code: None }, IcmpMatch { kind: 8, code: Some(0) }]);
    }

    #[test]
    fn ranges_merge_when_overlapping_or_adjacent() {
        let merged = merge_ranges(vec![
            PortRange { first: 80, last: 80 },
            PortRange { first: 10, last: 20 },
            PortRange { first: 21, last: 30 },
            PortRange { first: 25, last: 40 },
            PortRange { first: 65_535, last: 65_535 },
        ]);
        assert_eq!(
            merged,
            vec![
                PortRange { first: 10, last: 40 },
                PortRange { first: 80, last: 80 },
                PortRange { first: 65_535, last: 65_535 },
            ]
        );
    }
}
