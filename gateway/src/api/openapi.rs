//! The OpenAPI 3 document, generated from the handlers' `#[utoipa::path]` annotations and the
//! model types, served at `GET /api/v1/openapi.json`.
use utoipa::{
    Modify, OpenApi,
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
};

use super::{alerts, handlers, model, signin};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "iotgw API",
        description = "Status, inventory and enforcement actions of an iotgw gateway. Every \
            endpoint except this document and sign-in needs `Authorization: Bearer <token>` or \
            the console's session cookie `iotgw_session` (from POST /api/v1/session): a viewer \
            reads, an operator also acts, an admin also manages sessions. With the cookie, every \
            request but GET and HEAD needs `X-CSRF-Token: <csrf_token>`, and a present Origin \
            must be the API's host (else 403, code `csrf`). Sessions live in memory: a restart \
            signs everyone out. /metrics is open when `metrics_public = true`. \
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
        // The console's pages.
        super::alert_summary::summary,
        super::device_pages::traffic,
        super::device_pages::destinations,
        super::device_pages::baseline,
        super::ota::campaigns,
        super::ota::campaign_by_id,
        super::stream::stream,
        // Console sign-in.
        signin::sign_in,
        signin::current,
        signin::sign_out,
        signin::list,
        signin::revoke,
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
        model::PolicyRule,
        model::PolicyPorts,
        model::PolicyLane,
        model::PolicyVerdicts,
        model::PolicyResponse,
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
        model::PolicyReload,
        super::alert_summary::AlertsSummary,
        super::alert_summary::AlertBucket,
        super::device_pages::TrafficPoint,
        super::device_pages::Destination,
        super::device_pages::BaselineView,
        super::ota::Campaign,
        super::ota::CampaignStage,
        super::stream::AlertEvent,
        super::stream::DeviceEvent,
        super::stream::AuditEvent,
        signin::SignIn,
        signin::SessionInfo,
        signin::SessionEntry,
        crate::api::auth::CallerKind,
    )),
    modifiers(&BearerScheme, &SessionCookie),
    tags(
        (name = "status"), (name = "devices"), (name = "policies"),
        (name = "actions", description = "Operator role"), (name = "metrics"),
        (name = "alerts", description = "Alert records: viewer role reads, operator role changes"),
        (name = "ota", description = "Firmware rollout campaigns (read only)"),
        (name = "session", description = "Console sign-in (session cookie); listing and revoking sessions needs the admin role"),
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

/// Declares the `session` cookie scheme and offers it wherever a bearer token is accepted: the
/// router accepts either on every endpoint (`ApiState::authenticate`).
struct SessionCookie;

impl Modify for SessionCookie {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        openapi.components.get_or_insert_with(Default::default).add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                signin::COOKIE,
                "The console's session (POST /api/v1/session). Requests other than GET and HEAD also \
                 send X-CSRF-Token.",
            ))),
        );
        let bearer = SecurityRequirement::new("bearer", Vec::<String>::new());
        let session = SecurityRequirement::new("session", Vec::<String>::new());
        for item in openapi.paths.paths.values_mut() {
            let operations = [&mut item.get, &mut item.post, &mut item.put, &mut item.patch, &mut item.delete];
            for operation in operations.into_iter().flatten() {
                if let Some(security) = &mut operation.security
                    && security.contains(&bearer)
                    && !security.contains(&session)
                {
                    security.push(session.clone());
                }
            }
        }
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
