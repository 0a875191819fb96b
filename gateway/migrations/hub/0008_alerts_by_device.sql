-- A device's page lists its alerts (`GET /api/v1/alerts?device=MAC`, the console's device view):
-- without an index of its own that list read the whole alerts table (50,000 rows in
-- gateway/tests/hub_api_plans.rs, every row at a million devices). Same order as the other
-- alert lists, so a page is an index walk from the cursor. Costs one more index entry per
-- alert row written (the four others cost ~8 % of ingest's per-event work together,
-- bench/fleet/RESULTS.md).
CREATE INDEX alerts_by_device ON alerts (mac, last_seen DESC, id DESC);
