//! SSDP (UPnP discovery, UDP 1900), HTTP over UDP read with `httparse`: what a device says
//! about itself in its announcements (`NOTIFY`) and search answers (`HTTP/1.1 200 OK`): its
//! UPnP device type (`urn:Belkin:device:insight:1`), the product part of its unique service
//! name (`uuid:Insight-1_0-<serial>` → `insight-1_0`) and its `SERVER` string. Service
//! types are left out (a vendor's products share most of them), and so are searches
//! (`M-SEARCH`: what a device looks for, not what it is). Serials and UUIDs are unit identity
//! and are dropped. A sample cut at `SAMPLE_BYTES` keeps its complete header lines.
use super::FingerprintError;

/// Headers read from one message.
const MAX_HEADERS: usize = 32;
/// Longest name kept (a type URN or a `SERVER` string is far shorter).
const MAX_NAME: usize = 128;

/// The names one SSDP message gives, prefixed by where they came from: `type:` (a device
/// type URN the device announces or answers with), `usn:` (the product part of its USN),
/// `server:`. Lower case; none for a search.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SsdpMessage {
    pub names: Vec<String>,
}

/// Parses an SSDP message (the UDP payload).
pub fn parse(payload: &[u8]) -> Result<SsdpMessage, FingerprintError> {
    let error = |reason: &str| FingerprintError::Ssdp(reason.to_owned());
    // Complete header lines only, closed by an empty line, so a cut sample still parses.
    let end = payload.windows(2).rposition(|w| w == b"\r\n").ok_or_else(|| error("no complete line"))?;
    let mut message = payload[..end + 2].to_vec();
    if !message.ends_with(b"\r\n\r\n") {
        message.extend_from_slice(b"\r\n");
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let headers = if message.starts_with(b"HTTP/") {
        let mut response = httparse::Response::new(&mut headers);
        response.parse(&message).map_err(|e| error(&e.to_string()))?;
        response.headers
    } else {
        let mut request = httparse::Request::new(&mut headers);
        request.parse(&message).map_err(|e| error(&e.to_string()))?;
        match request.method {
            Some("NOTIFY") => request.headers,
            Some("M-SEARCH") => return Ok(SsdpMessage::default()),
            _ => return Err(error("neither NOTIFY, M-SEARCH nor a search answer")),
        }
    };
    let mut names = Vec::new();
    for header in headers.iter() {
        let Ok(value) = std::str::from_utf8(header.value) else { continue };
        let value = value.trim().to_ascii_lowercase();
        let name = match header.name.to_ascii_uppercase().as_str() {
            "NT" | "ST" if value.starts_with("urn:") && value.contains(":device:") => Some(format!("type:{value}")),
            "USN" => usn_product(&value).map(|product| format!("usn:{product}")),
            "SERVER" => Some(format!("server:{value}")),
            _ => None,
        };
        names.extend(name.filter(|n| n.len() <= MAX_NAME && !n.ends_with(':')));
    }
    names.sort();
    names.dedup();
    Ok(SsdpMessage { names })
}

/// The product part of a USN's UUID: its leading `-` parts up to the first that looks like a
/// serial or a UUID field (six characters or more with a digit). `uuid:socket-1_0-221519k11`
/// → `socket-1_0`; a plain UUID has none.
fn usn_product(usn: &str) -> Option<String> {
    let uuid = usn.strip_prefix("uuid:")?.split("::").next()?;
    let unit_like = |part: &&str| part.len() >= 6 && part.bytes().any(|b| b.is_ascii_digit());
    let product: Vec<&str> = uuid.split('-').take_while(|part| !unit_like(part)).collect();
    (!product.is_empty() && product.iter().all(|p| !p.is_empty())).then(|| product.join("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEMO_NOTIFY: &[u8] = b"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nCACHE-CONTROL: max-age=86400\r\n\
LOCATION: http://10.10.10.252:49153/setup.xml\r\nNT: urn:Belkin:device:controllee:1\r\nNTS: ssdp:alive\r\n\
SERVER: Unspecified, UPnP/1.0, Unspecified\r\nX-User-Agent: redsonic\r\n\
USN: uuid:Socket-1_0-221519K1100F55::urn:Belkin:device:controllee:1\r\n\r\n";

    #[test]
    fn an_announcement_gives_its_types_product_and_server_without_the_serial() {
        let message = parse(WEMO_NOTIFY).unwrap();
        assert_eq!(
            message.names,
            ["server:unspecified, upnp/1.0, unspecified", "type:urn:belkin:device:controllee:1", "usn:socket-1_0"]
        );
        assert!(!message.names.iter().any(|n| n.contains("221519")));
    }

    #[test]
    fn a_cut_sample_keeps_its_complete_lines_and_a_plain_uuid_names_no_product() {
        let cut = &WEMO_NOTIFY[..WEMO_NOTIFY.len() - 30];
        assert_eq!(
            parse(cut).unwrap().names,
            ["server:unspecified, upnp/1.0, unspecified", "type:urn:belkin:device:controllee:1"]
        );
        let hue = b"HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\nSERVER: Linux/3.14.0 UPnP/1.0 IpBridge/1.9.0\r\n\
USN: uuid:2f402f80-da50-11e1-9b23-0017882476ff::upnp:rootdevice\r\n\r\n";
        assert_eq!(parse(hue).unwrap().names, ["server:linux/3.14.0 upnp/1.0 ipbridge/1.9.0"]);
    }

    #[test]
    fn services_and_searches_name_nothing_and_garbage_is_an_error() {
        let service =
            String::from_utf8(WEMO_NOTIFY.to_vec()).unwrap().replace("device:controllee", "service:basicevent");
        assert!(!parse(service.as_bytes()).unwrap().names.iter().any(|n| n.contains("basicevent")));
        let search = b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 2\r\n\
ST: urn:Belkin:service:basicevent:1\r\n\r\n";
        assert!(parse(search).unwrap().names.is_empty());
        assert!(parse(b"\x00\x01\x02 not ssdp").is_err());
        assert!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_err());
    }
}
