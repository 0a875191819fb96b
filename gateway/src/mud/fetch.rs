//! Fetches a MUD file or its signature over HTTPS (reqwest over rustls): `https` only, the
//! TLS roots from `[mud] tls_roots` (or the built-in Mozilla roots), connect and total
//! timeouts, a size cap enforced while the body streams in, and redirects followed only to
//! URLs `url::check` accepts, at most `max_redirects`. Reads the network; writes nothing.
use reqwest::{Client, Url, redirect};

use super::{config::Config, url};
use crate::error_chain::error_chain;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error("TLS roots: {0}")]
    Roots(String),
    #[error("HTTPS client: {0}")]
    Client(String),
    /// Connection, TLS, timeout or a refused redirect, with the causes reqwest gives.
    #[error("fetching {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("fetching {url}: HTTP status {status}")]
    Status { url: String, status: u16 },
    #[error("fetching {url}: larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
}

/// The HTTPS client for MUD servers.
#[derive(Clone, Debug)]
pub struct Fetcher {
    client: Client,
}

impl Fetcher {
    /// A client with `config`'s roots, timeouts and redirect rules.
    pub fn new(config: &Config) -> Result<Self, FetchError> {
        let allowed = config.clone();
        let max_redirects = config.max_redirects;
        let policy = redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > max_redirects {
                return attempt.error(format!("more than {max_redirects} redirects"));
            }
            match url::check(attempt.url().as_str().as_bytes(), &allowed) {
                Ok(_) => attempt.follow(),
                Err(error) => attempt.error(format!("redirect refused: {error}")),
            }
        });
        let mut builder = Client::builder()
            .use_rustls_tls()
            .https_only(true)
            .redirect(policy)
            .connect_timeout(config.connect_timeout())
            .timeout(config.fetch_timeout());
        if let Some(path) = &config.tls_roots {
            let pem = std::fs::read(path).map_err(|e| FetchError::Roots(format!("{}: {e}", path.display())))?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| FetchError::Roots(format!("{}: {e}", path.display())))?;
            if roots.is_empty() {
                return Err(FetchError::Roots(format!("{}: no certificate", path.display())));
            }
            builder = builder.tls_built_in_root_certs(false);
            for root in roots {
                builder = builder.add_root_certificate(root);
            }
        }
        let client = builder.build().map_err(|e| FetchError::Client(error_chain(&e)))?;
        Ok(Self { client })
    }

    /// The body at `url` (already checked by `url::check`), at most `limit` bytes.
    pub async fn fetch(&self, url: &Url, limit: usize) -> Result<Vec<u8>, FetchError> {
        let transport =
            |error: reqwest::Error| FetchError::Transport { url: url.to_string(), reason: error_chain(&error) };
        let too_large = || FetchError::TooLarge { url: url.to_string(), limit };
        let mut response = self.client.get(url.clone()).send().await.map_err(transport)?;
        if !response.status().is_success() {
            return Err(FetchError::Status { url: url.to_string(), status: response.status().as_u16() });
        }
        if response.content_length().is_some_and(|len| len > limit as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}
