//! The web console: a static single-page app (`gateway/console/`: HTML, CSS and JavaScript
//! modules, no framework, no build step) compiled into the binary and served beside the API,
//! `/` the page and `/console/<file>` its assets.
//!
//! Reads nothing at run time: every file is `include_bytes!`ed here. The page talks only to
//! `/api/v1` with relative URLs, so the fleet hub serves the same files over its own API
//! (`hub::api`); the page reads `scope` from the status and shows the fleet's pages there,
//! and every answer carries a content security policy that lets it load nothing but these
//! files and reach nothing but this origin, so no request leaves the page on an air-gapped box.
//! Files are revalidated on every load (`no-cache` with an `ETag`), so an upgraded gateway never
//! mixes old and new modules.
use axum::{
    Router,
    extract::Path,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use sha2::{Digest as _, Sha256};

use crate::api::ApiError;

/// The policy of every console answer: own files only, no inline script or style, API calls
/// to this origin only, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// An embedded file: its name under `/console/`, its content type and its bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const SVG: &str = "image/svg+xml";

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset { name: $name, content_type: $content_type, body: include_bytes!(concat!("../console/", $name)) }
    };
}

/// Every file of the console; `index.html` is served at `/`.
const ASSETS: &[Asset] = &[
    asset!("index.html", HTML),
    asset!("style.css", CSS),
    asset!("icon.svg", SVG),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("chart.js", JS),
    asset!("live.js", JS),
    asset!("list.js", JS),
    asset!("page-login.js", JS),
    asset!("page-overview.js", JS),
    asset!("page-devices.js", JS),
    asset!("page-device.js", JS),
    asset!("page-alerts.js", JS),
    asset!("page-alert.js", JS),
    asset!("page-policies.js", JS),
    asset!("page-ota.js", JS),
    asset!("page-gateways.js", JS),
];

/// The console's routes, to merge into the API's router (which keeps the fallback).
pub fn router() -> Router {
    Router::new().route("/", get(index)).route("/console/{file}", get(file))
}

async fn index(headers: HeaderMap) -> Response {
    serve(find("index.html"), &headers)
}

async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|asset| asset.name == name && asset.name != "index.html") {
        Some(asset) => serve(asset, &headers),
        None => ApiError::NoRoute(format!("/console/{}", crate::untrusted::escape(&name))).into_response(),
    }
}

fn find(name: &str) -> &'static Asset {
    // Invariant: `name` is one of ASSETS (the tests serve every one).
    ASSETS.iter().find(|asset| asset.name == name).expect("embedded console asset")
}

fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let etag = format!("\"{}\"", hex::encode(&Sha256::digest(asset.body)[..16]));
    let fresh = request.get(header::IF_NONE_MATCH).is_some_and(|tag| tag.as_bytes() == etag.as_bytes());
    let mut response = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { asset.body.into_response() };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Invariant: hex digits and quotes are valid header bytes.
    headers.insert(header::ETAG, HeaderValue::from_str(&etag).expect("hex etag"));
    response
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request};
    use tower::ServiceExt as _;

    use super::*;

    async fn fetch(path: &str, if_none_match: Option<&str>) -> Response {
        let mut request = Request::get(path);
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        router().oneshot(request.body(Body::empty()).unwrap()).await.unwrap()
    }

    fn header_of(response: &Response, name: header::HeaderName) -> &str {
        response.headers().get(&name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    fn text(asset: &Asset) -> &'static str {
        std::str::from_utf8(asset.body).unwrap()
    }

    /// `(file, specifier)` of every `import ... from '<specifier>'` in the JavaScript files.
    fn imports() -> Vec<(&'static str, &'static str)> {
        let mut found = Vec::new();
        for asset in ASSETS.iter().filter(|a| a.content_type == JS) {
            let body = text(asset);
            for (at, pattern) in body.match_indices(" from '") {
                let rest = &body[at + pattern.len()..];
                found.push((asset.name, &rest[..rest.find('\'').unwrap()]));
            }
        }
        found
    }

    #[tokio::test]
    async fn every_asset_is_served_with_its_type_and_the_policy() {
        for asset in ASSETS {
            let path = if asset.name == "index.html" { "/".to_owned() } else { format!("/console/{}", asset.name) };
            let response = fetch(&path, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(header_of(&response, header::CONTENT_TYPE), asset.content_type, "{path}");
            assert_eq!(header_of(&response, header::CONTENT_SECURITY_POLICY), CONTENT_SECURITY_POLICY, "{path}");
            assert_eq!(header_of(&response, header::X_CONTENT_TYPE_OPTIONS), "nosniff", "{path}");
            assert_eq!(header_of(&response, header::REFERRER_POLICY), "no-referrer", "{path}");
            assert_eq!(header_of(&response, header::CACHE_CONTROL), "no-cache", "{path}");
            let etag = header_of(&response, header::ETAG).to_owned();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
            assert_eq!(&body[..], asset.body, "{path}");
            let again = fetch(&path, Some(&etag)).await;
            assert_eq!(again.status(), StatusCode::NOT_MODIFIED, "{path} revalidated with {etag}");
            assert_eq!(header_of(&again, header::CONTENT_SECURITY_POLICY), CONTENT_SECURITY_POLICY);
        }
    }

    #[tokio::test]
    async fn unknown_assets_are_404() {
        for path in ["/console/nope.js", "/console/index.html", "/console/..%2Fconsole.rs"] {
            let response = fetch(path, None).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            assert!(header_of(&response, header::CONTENT_TYPE).starts_with("application/json"), "{path}");
        }
    }

    #[tokio::test]
    async fn the_console_merges_into_the_api_router_which_keeps_its_fallback() {
        let fixture = crate::api::tests::Fixture::new();
        let config = crate::api::tests::test_config(false);
        let datapath = std::sync::Arc::new(crate::datapath::MemoryDatapath::default());
        let state = crate::api::ApiState::new(&config, fixture.directory(), datapath).unwrap();
        let app = crate::api::router(state).merge(router());
        for (path, status) in
            [("/", StatusCode::OK), ("/console/app.js", StatusCode::OK), ("/api/v1/nope", StatusCode::NOT_FOUND)]
        {
            let response = app.clone().oneshot(Request::get(path).body(Body::empty()).unwrap()).await.unwrap();
            assert_eq!(response.status(), status, "{path}");
        }
    }

    #[test]
    fn no_asset_reaches_beyond_the_gateway() {
        // The SVG namespace is an XML name the browser never fetches.
        const SVG_NAMESPACE: &str = "http://www.w3.org/2000/svg";
        for asset in ASSETS {
            let body = text(asset).replace(SVG_NAMESPACE, "");
            for origin in ["http://", "https://", "\"//", "'//", "`//", "(//", "=//"] {
                assert!(!body.contains(origin), "{} refers to an external origin ({origin})", asset.name);
            }
        }
        let index = text(find("index.html"));
        for attribute in ["src=\"", "href=\""] {
            for (at, _) in index.match_indices(attribute) {
                let target = &index[at + attribute.len()..];
                assert!(
                    target.starts_with("/console/") || target.starts_with('#'),
                    "index.html: {attribute}{target:.40}"
                );
            }
        }
    }

    #[test]
    fn every_module_is_embedded_and_imported_by_a_relative_path() {
        let embedded: Vec<&str> = ASSETS.iter().map(|a| a.name).collect();
        let imports = imports();
        for (file, specifier) in &imports {
            let name = specifier.strip_prefix("./").unwrap_or_else(|| panic!("{file} imports {specifier}"));
            assert!(embedded.contains(&name), "{file} imports {specifier}, which is not embedded");
        }
        for asset in ASSETS.iter().filter(|a| a.content_type == JS && a.name != "app.js") {
            let specifier = format!("./{}", asset.name);
            assert!(imports.iter().any(|(_, s)| *s == specifier), "{} is embedded but never imported", asset.name);
        }
    }

    #[test]
    fn the_scripts_never_parse_text_as_markup() {
        for asset in ASSETS.iter().filter(|a| a.content_type == JS) {
            for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"] {
                assert!(!text(asset).contains(sink), "{} uses {sink}", asset.name);
            }
        }
    }
}
