-- The fleet API at a million devices (bench/fleet/RESULTS.md). Device search matches part of
-- a host name, vendor or type (`ILIKE '%q%'`) and a MAC prefix: only trigram indexes serve
-- those (pg_trgm is a trusted extension: the database's owner may create it). The device list
-- by site or gateway, the unfiltered alert queue and the event list get indexes in their order.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX gateway_devices_mac_trgm ON gateway_devices USING gin (mac gin_trgm_ops);
CREATE INDEX gateway_devices_hostname_trgm ON gateway_devices USING gin (hostname gin_trgm_ops);
CREATE INDEX gateway_devices_vendor_trgm ON gateway_devices USING gin (vendor gin_trgm_ops);
CREATE INDEX gateway_devices_type_trgm ON gateway_devices USING gin (device_type gin_trgm_ops);

CREATE INDEX fleet_devices_by_site ON fleet_devices (site, last_seen DESC, mac);
CREATE INDEX fleet_devices_by_gateway ON fleet_devices (gateway, last_seen DESC, mac);

CREATE INDEX alerts_by_last_seen ON alerts (last_seen DESC, id DESC);

-- The event list is newest first with every key descending; events_by_time mixed directions.
CREATE INDEX events_newest ON events (time DESC, site DESC, gateway DESC, seq DESC);
DROP INDEX events_by_time;

-- A fleet device is where its gateway saw it last: its gateway_devices row is always there.
-- Declared, it also tells the planner the device list's three-column join finds one row per
-- device (not ~none), so the list walks fleet_devices_by_last_seen instead of sorting it all.
ALTER TABLE fleet_devices ADD CONSTRAINT fleet_devices_seen_at
    FOREIGN KEY (site, gateway, mac) REFERENCES gateway_devices (site, gateway, mac);
