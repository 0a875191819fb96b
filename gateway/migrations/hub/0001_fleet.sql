-- The hub's fleet store. Every row that comes from a gateway report is keyed on the report's
-- identity (site, gateway, and seq / mac / command id), so a redelivered report changes nothing.
-- Times are timestamptz; raw reports are kept as JSONB beside the columns queries filter on.

-- Gateways, as their health reports describe them.
CREATE TABLE gateways (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    first_seen TIMESTAMPTZ NOT NULL,
    last_seen TIMESTAMPTZ NOT NULL,
    -- sent_ms of the health report in `health`; an older report never replaces a newer one.
    health_ms BIGINT,
    health JSONB,
    PRIMARY KEY (site, gateway)
);

-- One device as one gateway sees it: the latest inventory snapshot it sent.
CREATE TABLE gateway_devices (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    mac TEXT NOT NULL,
    changed_ms BIGINT NOT NULL,
    last_seen TIMESTAMPTZ NOT NULL,
    access TEXT NOT NULL,
    device_type TEXT,
    vendor TEXT,
    hostname TEXT,
    cert_subject TEXT,
    record JSONB NOT NULL,
    PRIMARY KEY (site, gateway, mac)
);
CREATE INDEX gateway_devices_by_mac ON gateway_devices (mac);
CREATE INDEX gateway_devices_by_cert ON gateway_devices (cert_subject) WHERE cert_subject IS NOT NULL;

-- One fleet device per MAC, wherever it is: where it was seen last.
CREATE TABLE fleet_devices (
    mac TEXT PRIMARY KEY,
    first_seen TIMESTAMPTZ NOT NULL,
    last_seen TIMESTAMPTZ NOT NULL,
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    cert_subject TEXT
);
CREATE INDEX fleet_devices_by_last_seen ON fleet_devices (last_seen DESC, mac);

-- Where a device has been: one row per gateway that has seen it.
CREATE TABLE device_locations (
    mac TEXT NOT NULL,
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    first_seen TIMESTAMPTZ NOT NULL,
    last_seen TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (mac, site, gateway)
);

-- Every event every gateway reported (alerts, actions, lifecycle, policy, audit).
CREATE TABLE events (
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    seq BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity SMALLINT NOT NULL,
    time TIMESTAMPTZ NOT NULL,
    mac TEXT,
    actor TEXT NOT NULL,
    body JSONB NOT NULL,
    PRIMARY KEY (site, gateway, seq)
);
CREATE INDEX events_by_time ON events (time DESC, site, gateway, seq);
CREATE INDEX events_by_mac ON events (mac, time DESC) WHERE mac IS NOT NULL;

-- The fleet alert queue: one row per incident per gateway, state kept by the hub's analysts.
CREATE TABLE alerts (
    id BIGSERIAL UNIQUE,
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    mac TEXT,
    detector TEXT NOT NULL,
    severity SMALLINT NOT NULL,
    -- open | acknowledged | resolved
    state TEXT NOT NULL DEFAULT 'open',
    assignee TEXT,
    first_seen TIMESTAMPTZ NOT NULL,
    last_seen TIMESTAMPTZ NOT NULL,
    count BIGINT NOT NULL DEFAULT 1,
    -- the gateway reported the incident over
    ended BOOLEAN NOT NULL DEFAULT FALSE,
    latest JSONB NOT NULL,
    PRIMARY KEY (site, gateway, incident_id)
);
CREATE INDEX alerts_queue ON alerts (state, severity DESC, last_seen DESC, id);

-- Commands the hub sent to gateways, and what came of them.
CREATE TABLE commands (
    id UUID PRIMARY KEY,
    site TEXT NOT NULL,
    gateway TEXT NOT NULL,
    mac TEXT NOT NULL,
    action TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT NOT NULL,
    issued_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    -- NULL while pending; then done | refused | expired | unknown_device
    outcome TEXT,
    detail TEXT,
    done_at TIMESTAMPTZ
);
CREATE INDEX commands_by_mac ON commands (mac, issued_at DESC);

-- Signed policy bundles the hub published, per scope (`site.<site>`, `group.<group>`).
CREATE TABLE policy_bundles (
    scope TEXT NOT NULL,
    version BIGINT NOT NULL,
    actor TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    bundle JSONB NOT NULL,
    PRIMARY KEY (scope, version)
);

-- What people and the hub itself did at the hub.
CREATE TABLE hub_audit (
    id BIGSERIAL PRIMARY KEY,
    time TIMESTAMPTZ NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    site TEXT,
    gateway TEXT,
    mac TEXT,
    detail TEXT NOT NULL
);
