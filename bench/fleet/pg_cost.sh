#!/bin/sh
# What PostgreSQL alone spends storing the bench's rows with the hub's statements: CPU seconds
# of its backend (user + system, /proc/PID/stat), table by table, which wall time on a shared
# machine cannot tell. No client, no JSON, no NATS: the rows are built in the server first.
#
#   first:  DEVICES new devices and as many events (the bench's first round, the old 1:1 mix)
#   steady: DEVICES new events and one last_seen-only snapshot of a known device per three
#           (`sim::STEADY_EVENTS_PER_SNAPSHOT`, the realistic mix)
#
# Each in batches of BATCH devices (or events), one transaction per batch, as ingest stores them.
# Run as root from the workspace: `sh bench/fleet/pg_cost.sh [SQL run after the migrations]`.
set -eu
DEVICES=${DEVICES:-100000}
BATCH=${BATCH:-500}
EXTRA=${1:-}
bin=/usr/lib/postgresql/15/bin
dir=$(mktemp -d /tmp/iotgw-postgres-pgcost-XXXXXX)
port=$((20000 + $$ % 20000))
chown postgres:postgres "$dir"
as_postgres() { su postgres -s /bin/sh -c "$1"; }
as_postgres "$bin/initdb -D $dir/data -A trust -U postgres --no-sync >/dev/null"
as_postgres "$bin/pg_ctl -D $dir/data -l $dir/server.log -w -o '-p $port -k $dir -c listen_addresses= -c fsync=off' start >/dev/null"
trap 'as_postgres "$bin/pg_ctl -D $dir/data -m immediate stop" >/dev/null; rm -rf "$dir"' EXIT
psql_run() { su postgres -s /bin/sh -c "psql -X -q -h $dir -p $port -d postgres -v ON_ERROR_STOP=1 $*"; }
for migration in gateway/migrations/hub/*.sql; do
    psql_run -f "$PWD/$migration" >/dev/null
done
[ -z "$EXTRA" ] || psql_run -c "\"$EXTRA\"" >/dev/null

cat >"$dir/cost.sql" <<'SQL'
SELECT pg_backend_pid() AS pid \gset
\setenv BACKEND :pid
-- The bench's devices (sim.rs): 100 per gateway, 10 gateways a site, one in 50 quarantined.
CREATE UNLOGGED TABLE seed_devices AS
SELECT n, 'site-' || lpad((n / 1000)::text, 4, '0') AS site, 'gw-' || lpad((n / 100)::text, 5, '0') AS gateway,
       '02:' || substr(h, 1, 2) || ':' || substr(h, 3, 2) || ':' || substr(h, 5, 2) || ':' || substr(h, 7, 2) || ':00' AS mac,
       CASE WHEN n % 50 = 0 THEN 'quarantined' ELSE 'enrolled' END AS access,
       (ARRAY['smart-plug', 'bulb', 'ip-camera', 'sensor'])[n % 4 + 1] AS device_type,
       (ARRAY['Espressif Inc.', 'Philips Lighting BV', 'Hangzhou Hikvision', 'Tuya Smart Inc.'])[n % 4 + 1] AS vendor,
       'dev-' || n / 100 || '-' || n % 100 AS hostname, 'CN=dev-' || n AS cert_subject,
       timestamptz '2026-06-01 00:00:00Z' AS seen
FROM generate_series(0, :devices - 1) n, lpad(to_hex(n), 8, '0') h;
CREATE UNLOGGED TABLE seed_events AS
SELECT n, site, gateway, n % 100 + 1 AS seq, mac, n % 4 = 0 AS alert, seen + make_interval(secs => n % 100) AS time
FROM seed_devices;
CREATE UNIQUE INDEX ON seed_devices (n);
CREATE UNIQUE INDEX ON seed_events (n);
ANALYZE seed_devices, seed_events;
CREATE FUNCTION record_of(d seed_devices, seen timestamptz) RETURNS jsonb LANGUAGE sql AS $$
  SELECT jsonb_build_object('mac', d.mac, 'first_seen', d.seen, 'last_seen', seen, 'vendor', d.vendor,
    'locally_administered', true, 'hostname', d.hostname, 'device_type', d.device_type, 'type_confidence', 0.9,
    'access', d.access, 'lifecycle', 'enrolled', 'class', 'sensor', 'firmware_version', '1.0.0',
    'cert_subject', d.cert_subject, 'device_id', null, 'ips', jsonb_build_array('10.0.0.2'), 'flows_total', 3,
    'traffic', jsonb_build_object('tx_bytes', 1000, 'tx_packets', 10, 'rx_bytes', 2000, 'rx_packets', 12)) $$;

-- One batch of snapshots (devices lo..hi, seen at `at`), table by table, with ingest's statements
-- (hub/ingest/inventory.rs).
CREATE PROCEDURE store_gateway_devices(lo int, hi int, at timestamptz) LANGUAGE sql AS $$
  INSERT INTO gateway_devices (site, gateway, mac, changed_ms, last_seen, access, device_type, vendor, hostname,
                               cert_subject, record)
  SELECT site, gateway, mac, (extract(epoch FROM at) * 1000)::bigint + n % 100, at, access, device_type, vendor,
         hostname, cert_subject, record_of(d, at) FROM seed_devices d WHERE n BETWEEN lo AND hi ORDER BY site, gateway, mac
  ON CONFLICT (site, gateway, mac) DO UPDATE SET
    changed_ms = excluded.changed_ms, last_seen = excluded.last_seen, access = excluded.access,
    device_type = excluded.device_type, vendor = excluded.vendor, hostname = excluded.hostname,
    cert_subject = excluded.cert_subject, record = excluded.record
  WHERE excluded.changed_ms > gateway_devices.changed_ms $$;
CREATE PROCEDURE store_fleet_devices(lo int, hi int, at timestamptz) LANGUAGE sql AS $$
  INSERT INTO fleet_devices (mac, first_seen, last_seen, site, gateway, cert_subject, access)
  SELECT mac, d.seen, at, site, gateway, cert_subject, access FROM seed_devices d WHERE n BETWEEN lo AND hi ORDER BY mac
  ON CONFLICT (mac) DO UPDATE SET
    first_seen = LEAST(fleet_devices.first_seen, excluded.first_seen),
    site = CASE WHEN excluded.last_seen > fleet_devices.last_seen THEN excluded.site ELSE fleet_devices.site END,
    gateway = CASE WHEN excluded.last_seen > fleet_devices.last_seen THEN excluded.gateway ELSE fleet_devices.gateway END,
    access = CASE WHEN excluded.last_seen > fleet_devices.last_seen THEN excluded.access ELSE fleet_devices.access END,
    cert_subject = CASE WHEN excluded.last_seen >= fleet_devices.last_seen
                        THEN COALESCE(excluded.cert_subject, fleet_devices.cert_subject) ELSE fleet_devices.cert_subject END,
    last_seen = GREATEST(fleet_devices.last_seen, excluded.last_seen)
  WHERE excluded.first_seen < fleet_devices.first_seen OR excluded.last_seen > fleet_devices.last_seen
     OR (excluded.last_seen = fleet_devices.last_seen AND excluded.cert_subject IS DISTINCT FROM fleet_devices.cert_subject
         AND excluded.cert_subject IS NOT NULL);
  UPDATE fleet_devices f SET access = g.access FROM gateway_devices g
  WHERE f.mac = ANY (ARRAY(SELECT mac FROM seed_devices WHERE n BETWEEN lo AND hi))
    AND g.site = f.site AND g.gateway = f.gateway AND g.mac = f.mac AND f.access <> g.access $$;
CREATE PROCEDURE store_locations(lo int, hi int, at timestamptz) LANGUAGE sql AS $$
  INSERT INTO device_locations (mac, site, gateway, first_seen, last_seen)
  SELECT mac, site, gateway, d.seen, at FROM seed_devices d WHERE n BETWEEN lo AND hi ORDER BY mac, site, gateway
  ON CONFLICT (mac, site, gateway) DO UPDATE SET
    first_seen = LEAST(device_locations.first_seen, excluded.first_seen),
    last_seen = GREATEST(device_locations.last_seen, excluded.last_seen)
  WHERE excluded.first_seen < device_locations.first_seen OR excluded.last_seen > device_locations.last_seen $$;
-- One batch of events (hub/ingest/events.rs): round r's events lo..hi, each alert into its incident.
CREATE PROCEDURE store_events(lo int, hi int, r int) LANGUAGE sql AS $$
  WITH new AS (
    INSERT INTO events (site, gateway, seq, event_id, kind, severity, time, mac, actor, body)
    SELECT site, gateway, seq + r * 100, n || '-' || r, CASE WHEN alert THEN 'alert' ELSE 'audit' END,
           CASE WHEN alert THEN 3 ELSE 0 END, time, mac, 'bench',
           jsonb_build_object('id', n, 'kind', 'audit', 'action', 'seen', 'detail', 'report ' || n)
    FROM seed_events WHERE n BETWEEN lo AND hi ORDER BY site, gateway, seq
    ON CONFLICT (site, gateway, seq) DO NOTHING RETURNING site, gateway, seq, mac, time, kind)
  INSERT INTO alerts (site, gateway, incident_id, mac, detector, severity, first_seen, last_seen, count, ended, latest)
  SELECT site, gateway, 'inc-' || mac, mac, 'new_destination', 3, time, time, 1, false, '{}' FROM new
  WHERE kind = 'alert' ORDER BY 1, 2, 3
  ON CONFLICT (site, gateway, incident_id) DO UPDATE SET count = alerts.count + excluded.count,
    last_seen = GREATEST(alerts.last_seen, excluded.last_seen) $$;

CREATE PROCEDURE in_batches(what text, upto int, step int, at timestamptz, r int) LANGUAGE plpgsql AS $$
DECLARE lo int := 0;
BEGIN
  WHILE lo < upto LOOP
    CASE what
      WHEN 'gateway_devices' THEN CALL store_gateway_devices(lo, lo + step - 1, at);
      WHEN 'fleet_devices' THEN CALL store_fleet_devices(lo, lo + step - 1, at);
      WHEN 'device_locations' THEN CALL store_locations(lo, lo + step - 1, at);
      ELSE CALL store_events(lo, lo + step - 1, r);
    END CASE;
    COMMIT;
    lo := lo + step;
  END LOOP;
END $$;
CHECKPOINT;

\! echo "cpu start $(awk '{print $14 + $15}' /proc/$BACKEND/stat)"
CALL in_batches('gateway_devices', :devices, :batch, '2026-06-01 00:00:00Z', 0);
\! echo "cpu first gateway_devices $(awk '{print $14 + $15}' /proc/$BACKEND/stat)"
CALL in_batches('fleet_devices', :devices, :batch, '2026-06-01 00:00:00Z', 0);
\! echo "cpu first fleet_devices $(awk '{print $14 + $15}' /proc/$BACKEND/stat)"
CALL in_batches('device_locations', :devices, :batch, '2026-06-01 00:00:00Z', 0);
\! echo "cpu first device_locations $(awk '{print $14 + $15}' /proc/$BACKEND/stat)"
CALL in_batches('events', :devices, :batch, NULL, 0);
\! echo "cpu first events $(awk '{print $14 + $15}' /proc/$BACKEND/stat)"
VACUUM ANALYZE;
\! echo "cpu vacuum $(awk '{print $14 + $15}' /proc/$BACKEND/stat)"
-- Steady: a third of the devices seen a minute later (batches of BATCH/3 snapshots beside
-- BATCH events: one batch of the mix), then as many events as in the first round.
CALL in_batches('gateway_devices', :devices / 3, :batch / 3, '2026-06-01 00:01:00Z', 0);
\! echo "cpu steady gateway_devices $(awk '{print $14 + $15}' /proc/$BACKEND/stat)"
CALL in_batches('fleet_devices', :devices / 3, :batch / 3, '2026-06-01 00:01:00Z', 0);
\! echo "cpu steady fleet_devices $(awk '{print $14 + $15}' /proc/$BACKEND/stat)"
CALL in_batches('device_locations', :devices / 3, :batch / 3, '2026-06-01 00:01:00Z', 0);
\! echo "cpu steady device_locations $(awk '{print $14 + $15}' /proc/$BACKEND/stat)"
CALL in_batches('events', :devices, :batch, NULL, 1);
\! echo "cpu steady events $(awk '{print $14 + $15}' /proc/$BACKEND/stat)"
SELECT pg_stat_force_next_flush();
SELECT pg_sleep(1);
SELECT 'rows ' || relname || ': ' || n_tup_ins || ' inserted, ' || n_tup_upd || ' updated, ' || n_tup_hot_upd || ' of them HOT' FROM pg_stat_user_tables
WHERE relname IN ('gateway_devices', 'fleet_devices', 'device_locations') ORDER BY relname;
SELECT 'last seen ' || max(last_seen) FROM fleet_devices;
SELECT 'counts exact ' || ((SELECT sum(devices) FROM fleet_device_counts) = (SELECT count(*) FROM fleet_devices));
SQL
chown postgres "$dir/cost.sql"
psql_run -t -A -v devices=$DEVICES -v batch=$BATCH -f "$dir/cost.sql" | awk -v ticks="$(getconf CLK_TCK)" '
    /^cpu / { now = $NF; $NF = ""; sub(/^cpu /, ""); if (last != "") printf "%-28s %6.2f CPU s\n", $0, (now - last) / ticks; last = now; next }
    { print }'
