-- The fleet API's lists at a million devices, as `EXPLAIN (ANALYZE)` showed them
-- (bench/fleet/RESULTS.md); each list is now one statement per combination of the filters given
-- (`hub::api::query::Select`), and these are the indexes and statistics they need.

-- The trigram index on the MAC also answers `mac = x`, and the planner costs a probe of it below
-- the btree's: the device list's join to gateway_devices went through it, each probe reading
-- the posting lists of trigrams every MAC shares (~100 ms per device; the list by site took
-- 1.9 s). A MAC search is a prefix: a btree in binary order serves it as a range, in a generic
-- plan too.
DROP INDEX gateway_devices_mac_trgm;
CREATE INDEX gateway_devices_by_mac_prefix ON gateway_devices (mac COLLATE "C");

-- A gateway is at one site: without these the planner multiplies the site's and the gateway's
-- selectivities and expects a thousandth of a gateway's rows for both filters together.
CREATE STATISTICS fleet_devices_site_gateway (dependencies, ndistinct) ON site, gateway FROM fleet_devices;
CREATE STATISTICS gateway_devices_site_gateway (dependencies, ndistinct) ON site, gateway FROM gateway_devices;
CREATE STATISTICS alerts_site_gateway (dependencies, ndistinct) ON site, gateway FROM alerts;
CREATE STATISTICS events_site_gateway (dependencies, ndistinct) ON site, gateway FROM events;

-- The alert queue is newest first, (last_seen, id) descending, under every filter: one index
-- per filter in that order, so a page is the index's next rows. alerts_by_site put the gateway
-- before the time (the queue by site walked every alert in time order, p99 73 ms) and
-- alerts_queue the severity (no query orders by it).
DROP INDEX alerts_by_site;
DROP INDEX alerts_queue;
CREATE INDEX alerts_by_site ON alerts (site, last_seen DESC, id DESC);
CREATE INDEX alerts_by_gateway ON alerts (gateway, last_seen DESC, id DESC);
CREATE INDEX alerts_by_state ON alerts (state, last_seen DESC, id DESC);

-- The device list by access state: a rare state (blocked, quarantined) is found by this index;
-- without it, the list walked every device newest first looking for one (0.7 s for none).
CREATE INDEX gateway_devices_by_access ON gateway_devices (access);
