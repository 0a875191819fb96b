-- The device list by state and the fleet's status without reading a million rows
-- (bench/fleet/RESULTS.md: 69 ms and 1.07 s at 1,000,000 devices).

-- A fleet device's access state, as the gateway that saw it last has it (that gateway's
-- gateway_devices row), kept by ingest in the transaction that writes either row, so the list by
-- state walks one index in its own order.
ALTER TABLE fleet_devices ADD COLUMN access TEXT;
UPDATE fleet_devices f SET access = g.access FROM gateway_devices g
WHERE g.site = f.site AND g.gateway = f.gateway AND g.mac = f.mac;
ALTER TABLE fleet_devices ALTER COLUMN access SET NOT NULL;
CREATE INDEX fleet_devices_by_access ON fleet_devices (access, last_seen DESC, mac);
-- Only the list by state read it.
DROP INDEX gateway_devices_by_access;

-- Exact counts the status reads instead of count(*): fleet devices by site and state, and alerts
-- not resolved by site and severity. Kept by statement triggers over each statement's transition
-- tables: one set-based upsert per statement (per ingest batch), whoever writes the rows (ingest,
-- analysts, a restore by SQL), in the writer's transaction. Rows are per site, so that writers
-- of different sites never wait on each other's counter row; a count that falls to 0 stays.
CREATE TABLE fleet_device_counts (
    site TEXT NOT NULL,
    access TEXT NOT NULL,
    devices BIGINT NOT NULL,
    PRIMARY KEY (site, access)
);
CREATE TABLE open_alert_counts (
    site TEXT NOT NULL,
    severity SMALLINT NOT NULL,
    alerts BIGINT NOT NULL,
    PRIMARY KEY (site, severity)
);

-- The changes of one statement, as +1 for every new row and -1 for every old one (counter rows
-- locked in key order, so two writers cannot deadlock on them).
CREATE FUNCTION count_fleet_devices() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO fleet_device_counts AS c (site, access, devices)
        SELECT site, access, count(*) FROM new_rows GROUP BY site, access ORDER BY site, access
        ON CONFLICT (site, access) DO UPDATE SET devices = c.devices + excluded.devices;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO fleet_device_counts AS c (site, access, devices)
        SELECT site, access, sum(n) FROM (
            SELECT site, access, 1 AS n FROM new_rows UNION ALL SELECT site, access, -1 FROM old_rows
        ) change GROUP BY site, access HAVING sum(n) <> 0 ORDER BY site, access
        ON CONFLICT (site, access) DO UPDATE SET devices = c.devices + excluded.devices;
    ELSE
        INSERT INTO fleet_device_counts AS c (site, access, devices)
        SELECT site, access, -count(*) FROM old_rows GROUP BY site, access ORDER BY site, access
        ON CONFLICT (site, access) DO UPDATE SET devices = c.devices + excluded.devices;
    END IF;
    RETURN NULL;
END $$;

CREATE FUNCTION count_open_alerts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO open_alert_counts AS c (site, severity, alerts)
        SELECT site, severity, count(*) FROM new_rows WHERE state <> 'resolved'
        GROUP BY site, severity ORDER BY site, severity
        ON CONFLICT (site, severity) DO UPDATE SET alerts = c.alerts + excluded.alerts;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO open_alert_counts AS c (site, severity, alerts)
        SELECT site, severity, sum(n) FROM (
            SELECT site, severity, 1 AS n FROM new_rows WHERE state <> 'resolved'
            UNION ALL SELECT site, severity, -1 FROM old_rows WHERE state <> 'resolved'
        ) change GROUP BY site, severity HAVING sum(n) <> 0 ORDER BY site, severity
        ON CONFLICT (site, severity) DO UPDATE SET alerts = c.alerts + excluded.alerts;
    ELSE
        INSERT INTO open_alert_counts AS c (site, severity, alerts)
        SELECT site, severity, -count(*) FROM old_rows WHERE state <> 'resolved'
        GROUP BY site, severity ORDER BY site, severity
        ON CONFLICT (site, severity) DO UPDATE SET alerts = c.alerts + excluded.alerts;
    END IF;
    RETURN NULL;
END $$;

-- TRUNCATE fires no row or statement DELETE trigger: it empties the counts with the table.
CREATE FUNCTION forget_fleet_device_counts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM fleet_device_counts;
    RETURN NULL;
END $$;
CREATE FUNCTION forget_open_alert_counts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM open_alert_counts;
    RETURN NULL;
END $$;

-- A trigger with transition tables has one event.
CREATE TRIGGER fleet_devices_counted_insert AFTER INSERT ON fleet_devices
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION count_fleet_devices();
CREATE TRIGGER fleet_devices_counted_update AFTER UPDATE ON fleet_devices
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION count_fleet_devices();
CREATE TRIGGER fleet_devices_counted_delete AFTER DELETE ON fleet_devices
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION count_fleet_devices();
CREATE TRIGGER fleet_devices_counted_truncate AFTER TRUNCATE ON fleet_devices
    FOR EACH STATEMENT EXECUTE FUNCTION forget_fleet_device_counts();

CREATE TRIGGER alerts_counted_insert AFTER INSERT ON alerts
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION count_open_alerts();
CREATE TRIGGER alerts_counted_update AFTER UPDATE ON alerts
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION count_open_alerts();
CREATE TRIGGER alerts_counted_delete AFTER DELETE ON alerts
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION count_open_alerts();
CREATE TRIGGER alerts_counted_truncate AFTER TRUNCATE ON alerts
    FOR EACH STATEMENT EXECUTE FUNCTION forget_open_alert_counts();

-- What is stored already.
INSERT INTO fleet_device_counts (site, access, devices)
SELECT site, access, count(*) FROM fleet_devices GROUP BY site, access;
INSERT INTO open_alert_counts (site, severity, alerts)
SELECT site, severity, count(*) FROM alerts WHERE state <> 'resolved' GROUP BY site, severity;
