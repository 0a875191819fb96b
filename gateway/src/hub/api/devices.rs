//! Fleet devices: `GET /api/v1/devices` (one row per MAC, as the gateway that saw it last has
//! it: searched, filtered, newest first, paged by (last_seen, mac)) and
//! `GET /api/v1/devices/{mac}` (that record, every gateway's view of it, where it has been and
//! its latest events).
use axum::{
    Json, Router,
    extract::{Path, Query, State, rejection::QueryRejection},
    response::Response,
    routing::get,
};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use time::OffsetDateTime;

use super::{HubApi, events::EventView, query, store_error};
use crate::{
    api::{
        ApiError,
        auth::Caller,
        handlers::parse_mac,
        model::{DeviceRecord, DeviceSummary},
        paging::paged,
        search::{filter_text, page_size},
    },
    device::{Access, Mac},
    inventory::search::MAX_FILTER_TEXT,
};

/// Events shown with a device.
pub const EVENTS_SHOWN: i64 = 50;

/// One fleet device, as listed: the gateway API's summary with where it was seen last.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetDevice {
    #[serde(flatten)]
    pub summary: DeviceSummary,
    pub hostname: Option<String>,
    pub site: String,
    pub gateway: String,
}

/// One gateway's view of a device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GatewayView {
    pub site: String,
    pub gateway: String,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    pub state: Access,
    pub record: DeviceRecord,
}

/// A gateway a device has been seen at, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub site: String,
    pub gateway: String,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
}

/// `GET /api/v1/devices/{mac}`: the record of the gateway that saw it last (flattened, as the
/// gateway API shows a device), with every view, its locations and latest events.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetDeviceDetail {
    #[serde(flatten)]
    pub record: DeviceRecord,
    pub site: String,
    pub gateway: String,
    /// Every gateway's latest record of it, most recently seen first.
    pub views: Vec<GatewayView>,
    /// Where it has been, most recent first.
    pub locations: Vec<Location>,
    /// Its latest events at any gateway, newest first.
    pub events: Vec<EventView>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicesParams {
    site: Option<String>,
    gateway: Option<String>,
    /// Access state, as the gateway that saw it last enforces it.
    state: Option<String>,
    /// A device-type name at any level of the guess: product, its vendor or its generic type.
    #[serde(rename = "type")]
    device_type: Option<String>,
    vendor: Option<String>,
    /// A MAC prefix (`98:90:96`, `98-90-96`), or part of the host name, vendor or type.
    q: Option<String>,
    /// `last_seen` (the only sort: newest first).
    sort: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

pub fn routes() -> Router<HubApi> {
    Router::new().route("/api/v1/devices", get(list)).route("/api/v1/devices/{mac}", get(detail))
}

/// The columns of a device row: where, when, and the record as that gateway sent it (a
/// literal for `concat!`: sqlx takes only static SQL).
macro_rules! select_devices {
    () => {
        "SELECT f.site, f.gateway, f.last_seen, g.record FROM fleet_devices f \
         JOIN gateway_devices g ON g.site = f.site AND g.gateway = f.gateway AND g.mac = f.mac"
    };
}

type DeviceRow = (String, String, OffsetDateTime, sqlx::types::Json<crate::inventory::DeviceRecord>);

/// A device list's request, checked: the filters given and where the page starts.
#[derive(Clone, Debug, Default)]
pub struct DeviceFilter {
    pub site: Option<String>,
    pub gateway: Option<String>,
    pub access: Option<Access>,
    /// Matches the product, its vendor or its generic type.
    pub device_type: Option<String>,
    pub vendor: Option<String>,
    /// A MAC prefix, or part of the host name, vendor or type (trimmed, not empty).
    pub search: Option<String>,
    /// The sort key of the last device of the previous page.
    pub after: Option<(OffsetDateTime, String)>,
    pub limit: usize,
}

impl DeviceFilter {
    fn from_params(params: DevicesParams) -> Result<Self, ApiError> {
        if let Some(sort) = params.sort.as_deref().filter(|sort| *sort != "last_seen") {
            return Err(ApiError::BadRequest(format!(
                "sort must be last_seen, not {:?}",
                crate::untrusted::escape(sort)
            )));
        }
        let access = params
            .state
            .map(|text| {
                text.parse::<Access>().map_err(|_| {
                    ApiError::BadRequest(format!(
                        "state must be an access state, not {:?}",
                        crate::untrusted::escape(&text)
                    ))
                })
            })
            .transpose()?;
        let search = params.q.map(|q| q.trim().to_owned()).filter(|q| !q.is_empty());
        if search.as_ref().is_some_and(|q| q.len() > MAX_FILTER_TEXT) {
            return Err(ApiError::BadRequest(format!("q is longer than {MAX_FILTER_TEXT} bytes")));
        }
        let after = match query::after::<(i64, String)>(params.cursor)? {
            Some((micros, mac)) => Some((query::from_micros(micros)?, mac)),
            None => None,
        };
        Ok(Self {
            site: query::name("site", params.site)?,
            gateway: query::name("gateway", params.gateway)?,
            access,
            device_type: filter_text("type", params.device_type)?,
            vendor: filter_text("vendor", params.vendor)?,
            search,
            after,
            limit: page_size(params.limit)?,
        })
    }

    /// The statement the list runs: the filters given, newest first, the page after `after`.
    pub fn query(&self) -> QueryBuilder<Postgres> {
        let mut select = query::Select::new(select_devices!());
        select
            .equal("f.site", self.site.clone())
            .equal("f.gateway", self.gateway.clone())
            .equal("f.access", self.access.map(Access::as_str))
            .equal("g.vendor", self.vendor.clone());
        if let Some(name) = &self.device_type {
            // Any level of the guess (product, its vendor, its generic type), as the expression
            // `gateway_devices_by_type_level` holds.
            select
                .and()
                .push("ARRAY[g.device_type, g.type_vendor, g.generic_type] @> ARRAY[")
                .push_bind(name.clone())
                .push("]");
        }
        if let Some(text) = &self.search {
            // A MAC prefix is the range of the stored spelling (lower case, colons) that starts
            // with it, in binary order as `gateway_devices_by_mac_prefix` holds it; the rest
            // are trigram matches on `g`, so that one table's indexes serve the whole OR.
            let prefix = text.to_ascii_lowercase().replace('-', ":");
            let below = format!("{prefix}\u{10FFFF}");
            let contains = format!("%{}%", query::like_literal(text));
            select
                .and()
                .push("(g.mac COLLATE \"C\" >= ")
                .push_bind(prefix)
                .push(" AND g.mac COLLATE \"C\" < ")
                .push_bind(below)
                .push(" OR g.hostname ILIKE ")
                .push_bind(contains.clone())
                .push(" OR g.vendor ILIKE ")
                .push_bind(contains.clone())
                .push(" OR g.device_type ILIKE ")
                .push_bind(contains)
                .push(")");
        }
        if let Some((time, mac)) = &self.after {
            // `last_seen <= time` is implied by the condition after it, and written apart so
            // that the index on (last_seen DESC, mac) starts the page there instead of
            // filtering up to it.
            select
                .and()
                .push("f.last_seen <= ")
                .push_bind(*time)
                .push(" AND (f.last_seen < ")
                .push_bind(*time)
                .push(" OR (f.last_seen = ")
                .push_bind(*time)
                .push(" AND f.mac > ")
                .push_bind(mac.clone())
                .push("))");
        }
        select.page("f.last_seen DESC, f.mac", self.limit)
    }

    /// Whether PostgreSQL may keep a generic plan of the statement: only when every filter has
    /// an index in the list's order (site, gateway, state, the cursor), so that any plan walks
    /// it. How many devices a search, type or vendor matches, which only the value tells (a
    /// quarter are bulbs), decides between walking the newest devices and reading that
    /// filter's index: such a statement is planned for each request.
    pub fn plan_may_be_kept(&self) -> bool {
        self.search.is_none() && self.device_type.is_none() && self.vendor.is_none()
    }
}

async fn list(
    State(state): State<HubApi>,
    _caller: Caller,
    params: Result<Query<DevicesParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params?;
    let filter = DeviceFilter::from_params(params)?;
    let mut sql = filter.query();
    let rows: Vec<DeviceRow> = sql
        .build_query_as()
        .persistent(filter.plan_may_be_kept())
        .fetch_all(state.pool())
        .await
        .map_err(store_error)?;
    let (rows, next) = query::page(rows, filter.limit, |row| (query::micros(row.2), row.3.mac.to_string()));
    let devices: Vec<FleetDevice> = rows
        .into_iter()
        .map(|(site, gateway, _, record)| FleetDevice {
            summary: DeviceSummary::from(&record.0),
            hostname: record.0.hostname.clone(),
            site,
            gateway,
        })
        .collect();
    Ok(paged(devices, next))
}

async fn detail(
    State(state): State<HubApi>,
    _caller: Caller,
    Path(mac): Path<String>,
) -> Result<Json<FleetDeviceDetail>, ApiError> {
    let mac: Mac = parse_mac(&mac)?;
    let key = mac.to_string();
    let pool = state.pool();
    let latest: Option<DeviceRow> = sqlx::query_as(concat!(select_devices!(), " WHERE f.mac = $1"))
        .bind(&key)
        .fetch_optional(pool)
        .await
        .map_err(store_error)?;
    let (site, gateway, _, record) = latest.ok_or(ApiError::UnknownDevice(mac))?;
    let views: Vec<(String, String, OffsetDateTime, sqlx::types::Json<crate::inventory::DeviceRecord>)> =
        sqlx::query_as(
            "SELECT site, gateway, last_seen, record FROM gateway_devices WHERE mac = $1 \
             ORDER BY last_seen DESC, site, gateway",
        )
        .bind(&key)
        .fetch_all(pool)
        .await
        .map_err(store_error)?;
    let locations: Vec<(String, String, OffsetDateTime, OffsetDateTime)> = sqlx::query_as(
        "SELECT site, gateway, first_seen, last_seen FROM device_locations WHERE mac = $1 \
         ORDER BY last_seen DESC, site, gateway",
    )
    .bind(&key)
    .fetch_all(pool)
    .await
    .map_err(store_error)?;
    let events = super::events::of_device(pool, &key, EVENTS_SHOWN).await?;
    Ok(Json(FleetDeviceDetail {
        record: DeviceRecord::from(&record.0),
        site,
        gateway,
        views: views
            .into_iter()
            .map(|(site, gateway, last_seen, record)| GatewayView {
                site,
                gateway,
                last_seen,
                state: record.0.access,
                record: DeviceRecord::from(&record.0),
            })
            .collect(),
        locations: locations
            .into_iter()
            .map(|(site, gateway, first_seen, last_seen)| Location { site, gateway, first_seen, last_seen })
            .collect(),
        events,
    }))
}
