//! One way to reach the broker, for gateways and the hub: NKey credentials, extra TLS roots,
//! reconnecting for ever (a gateway's broker may be gone for hours; the outbox keeps what it
//! cannot send meanwhile).
use std::path::Path;

use async_nats::{Client, ConnectOptions};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    #[error("cannot read the NKey seed {path}: {source}")]
    Seed { path: String, source: std::io::Error },
    #[error("the NKey seed in {path} is not a user seed: {reason}")]
    BadSeed { path: String, reason: String },
    #[error("cannot connect to {url}: {source}")]
    Connect { url: String, source: async_nats::ConnectError },
}

/// Who connects, and with what.
pub struct Endpoint<'a> {
    pub url: &'a str,
    /// Client name the broker shows (`iotgw-gw.<site>.<gateway>`, `iotgw-hub`).
    pub name: &'a str,
    pub credentials: Option<&'a Path>,
    pub tls_ca: Option<&'a Path>,
    /// Where replies arrive, instead of `_INBOX`: a gateway's credentials allow it to subscribe
    /// to its own prefix only (`subjects::inbox_prefix`).
    pub inbox_prefix: Option<&'a str>,
}

/// Connects, retrying in the background when the broker is not up yet: the first publish
/// waits for the connection instead of start-up failing.
pub async fn connect(endpoint: &Endpoint<'_>) -> Result<Client, ConnectError> {
    let mut options = ConnectOptions::new().name(endpoint.name).retry_on_initial_connect().max_reconnects(None);
    if let Some(path) = endpoint.credentials {
        let seed = read_seed(path)?;
        options = options.nkey(seed);
    }
    if let Some(prefix) = endpoint.inbox_prefix {
        options = options.custom_inbox_prefix(prefix);
    }
    if let Some(ca) = endpoint.tls_ca {
        options = options.add_root_certificates(ca.to_owned()).require_tls(true);
    }
    options.connect(endpoint.url).await.map_err(|source| ConnectError::Connect { url: endpoint.url.to_owned(), source })
}

/// A gateway's connection (`[fleet]` enabled): named `iotgw-gw.<site>.<gateway>`, with its
/// credentials, TLS roots and its own inbox prefix, the one its credentials allow.
pub async fn connect_gateway(fleet: &super::Config) -> Result<Client, ConnectError> {
    let (site, gateway) = (&fleet.site, &fleet.gateway);
    let name = format!("iotgw-gw.{site}.{gateway}");
    let inbox = super::subjects::inbox_prefix(site, gateway);
    connect(&Endpoint {
        url: fleet.nats_url.as_deref().unwrap_or_default(),
        name: &name,
        credentials: fleet.credentials.as_deref(),
        tls_ca: fleet.tls_ca.as_deref(),
        inbox_prefix: Some(&inbox),
    })
    .await
}

/// Reads an NKey user seed (`SU...`), refusing anything else so a wrong file fails at start.
pub fn read_seed(path: &Path) -> Result<String, ConnectError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConnectError::Seed { path: path.display().to_string(), source })?;
    let seed = text.trim().to_owned();
    let pair = nkeys::KeyPair::from_seed(&seed)
        .map_err(|e| ConnectError::BadSeed { path: path.display().to_string(), reason: e.to_string() })?;
    if !pair.public_key().starts_with('U') {
        return Err(ConnectError::BadSeed { path: path.display().to_string(), reason: "not a user key".into() });
    }
    Ok(seed)
}
