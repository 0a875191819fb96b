//! Checks a MUD URL before anything is fetched from it: the announced one (device-controlled
//! bytes), the signature's (`mud-signature`, from the file) and every redirect target. Parsed
//! by the `url` crate (through reqwest); reads nothing else.
use reqwest::Url;

use super::config::{Config, MIN_URL_BYTES};
use crate::untrusted;

/// Why a URL is not fetched. Messages hold the URL escaped (it is device-controlled text).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum UrlError {
    #[error("URL of {len} bytes is outside {min}..={max}")]
    Length { len: usize, min: usize, max: usize },
    #[error("URL {0:?} is not printable ASCII")]
    NotAscii(String),
    #[error("URL {url:?} does not parse: {reason}")]
    Parse { url: String, reason: String },
    #[error("URL {0:?} is not https")]
    NotHttps(String),
    #[error("URL {0:?} carries a user name or password")]
    Credentials(String),
    #[error("URL {url:?}: authority {authority:?} is not in mud.authorities")]
    NotAllowed { url: String, authority: String },
}

/// `bytes` as a URL the gateway may fetch: `https`, no credentials, its authority (`host` or
/// `host:port`, the port only when not 443) on `config.authorities`, within the length bounds.
pub fn check(bytes: &[u8], config: &Config) -> Result<Url, UrlError> {
    if !(MIN_URL_BYTES..=config.max_url_bytes).contains(&bytes.len()) {
        return Err(UrlError::Length { len: bytes.len(), min: MIN_URL_BYTES, max: config.max_url_bytes });
    }
    let text = String::from_utf8_lossy(bytes);
    if !bytes.iter().all(|b| b.is_ascii_graphic()) {
        return Err(UrlError::NotAscii(untrusted::escape(&text).into_owned()));
    }
    let url =
        Url::parse(&text).map_err(|error| UrlError::Parse { url: text.to_string(), reason: error.to_string() })?;
    if url.scheme() != "https" {
        return Err(UrlError::NotHttps(text.into_owned()));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::Credentials(text.into_owned()));
    }
    let authority = authority(&url);
    if !config.authorities.contains(&authority) {
        return Err(UrlError::NotAllowed { url: text.into_owned(), authority });
    }
    Ok(url)
}

/// `host` or `host:port` as `config.authorities` spells it (the url crate lower-cases hosts and
/// drops the default port).
pub fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config { authorities: vec!["mud.example.com".into(), "127.0.0.1:8443".into()], ..Config::default() }
    }

    #[test]
    fn allowed_https_urls_pass() {
        let url = check(b"https://mud.example.com/bulb.json", &config()).unwrap();
        assert_eq!(url.as_str(), "https://mud.example.com/bulb.json");
        assert!(check(b"https://MUD.Example.com:443/bulb.json", &config()).is_ok(), "case and default port");
        assert!(check(b"https://127.0.0.1:8443/bulb.json", &config()).is_ok());
    }

    #[test]
    fn every_other_url_is_refused_with_its_reason() {
        let refused = |bytes: &[u8]| check(bytes, &config()).unwrap_err();
        assert!(matches!(refused(b"http://mud.example.com/bulb.json"), UrlError::NotHttps(_)));
        assert!(matches!(refused(b"ftp://mud.example.com/bulb.json"), UrlError::NotHttps(_)));
        assert!(matches!(refused(b"https://evil.example.com/bulb.json"), UrlError::NotAllowed { .. }));
        assert!(matches!(refused(b"https://mud.example.com.evil.net/x"), UrlError::NotAllowed { .. }));
        assert!(matches!(refused(b"https://mud.example.com:8443/bulb.json"), UrlError::NotAllowed { .. }));
        assert!(matches!(refused(b"https://127.0.0.1/bulb.json"), UrlError::NotAllowed { .. }));
        assert!(matches!(refused(b"https://user:pw@mud.example.com/x"), UrlError::Credentials(_)));
        assert!(matches!(refused(b"https://mud.example.com/a b"), UrlError::NotAscii(_)));
        assert!(matches!(refused(b"https://[::1/bulb.json"), UrlError::Parse { .. }));
        assert!(matches!(refused(b"https://a"), UrlError::Length { len: 9, .. }));
        let long = format!("https://mud.example.com/{}", "a".repeat(300));
        assert!(matches!(refused(long.as_bytes()), UrlError::Length { .. }));
    }

    #[test]
    fn refusals_hold_the_url_escaped() {
        let error = check(b"https://mud.example.com/\n\x1b[31mforged", &config()).unwrap_err();
        let text = error.to_string();
        assert!(crate::untrusted::is_safe(&text), "{text}");
        assert!(text.contains("\\n"), "{text}");
        let error = check(b"https://mud.example.com/\xff\xfe", &config()).unwrap_err();
        assert!(crate::untrusted::is_safe(&error.to_string()));
    }
}
