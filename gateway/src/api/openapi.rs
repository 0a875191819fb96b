//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]` annotations and the
//! model types, served at `GET /api/v1/openapi.json`.
use utoipa::{
    Modify, OpenApi,
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use super::{alerts, handlers, model};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "iotgw API",
        description = "Status, inventory and enforcement actions of an iotgw gateway. Every \
            endpoint except this document needs `Authorization: Bearer <token>`: a viewer token \
            reads, an operator token also acts. /metrics is open when `metrics_public = true`. \
            SOAR playbooks act through /api/v1/soar/actions with their own credentials. A source \
            presenting bad credentials too often gets 429 with Retry-After; every error carries \
            an ErrorBody."
    ),
    paths(
        handlers::status,
        handlers::device,
        handlers::flows,
        handlers::policies,
        handlers::quarantine,
        handlers::release,
        handlers::block,
        handlers::metrics,
        crate::api::soar::action,
        // The searchable inventory.
        super::search::devices,
        super::search::audit,
        super::search::summary,
        // Alert records.
        alerts::list,
        alerts::show,
        alerts::change,
        alerts::learn,
        alerts::unlearn,
    ),
    components(schemas(
        model::Status,
        model::DatapathStatus,
        model::AttachedInterface,
        model::CountersSummary,
        model::DeviceSummary,
        model::DeviceRecord,
        model::TrafficTotals,
        model::DeviceDetail,
        model::Fingerprint,
        model::Enforcement,
        model::AuditEntry,
        model::FlowRecord,
        model::PolicySnapshot,
        model::PolicyClass,
        model::ActionRequest,
        model::ActionResponse,
        model::ErrorBody,
        model::InventorySummary,
        crate::api::soar::ActionRequest,
        crate::api::soar::ActionResponse,
        crate::api::soar::SoarAction,
        alerts::AlertSummary,
        alerts::AlertDetail,
        alerts::AlertResponse,
        alerts::AlertNote,
        alerts::AlertChange,
    )),
    modifiers(&BearerScheme),
    tags(
        (name = "status"), (name = "devices"), (name = "policies"),
        (name = "actions", description = "Operator role"), (name = "metrics"),
        (name = "alerts", description = "Alert records: viewer role reads, operator role changes"),
        (name = "soar", description = "SOAR playbooks ([[integrations.soar.callers]]): bearer token or HMAC signature"),
    )
)]
struct ApiDoc;

/// Declares the `bearer` security scheme the paths refer to.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token; the config stores its SHA-256 (`[api] tokens`)."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "soar_bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A SOAR caller's token (`[[integrations.soar.callers]] token`)."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "soar_signature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Iotgw-Signature",
                "HMAC-SHA256 with the caller's `secret`, with X-Iotgw-Caller and X-Iotgw-Timestamp.",
            ))),
        );
    }
}

/// The document, with this build's version.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut document = ApiDoc::openapi();
    document.info.version = env!("CARGO_PKG_VERSION").to_owned();
    document
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The document as committed, for readers of the repository and client generators.
    const COMMITTED: &str = include_str!("openapi.json");

    #[test]
    fn committed_openapi_json_matches_the_code() {
        let generated = document().to_pretty_json().expect("the document serializes");
        if std::env::var_os("IOTGW_UPDATE_OPENAPI").is_some() {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api/openapi.json");
            std::fs::write(&path, format!("{generated}\n")).unwrap();
            return;
        }
        // Not assert_eq: a diff of two 30 kB documents helps no one.
        assert!(
            COMMITTED.trim_end() == generated,
            "gateway/src/api/openapi.json is stale: rerun this test with IOTGW_UPDATE_OPENAPI=1"
        );
    }
}
