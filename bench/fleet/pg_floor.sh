#!/bin/sh
# The least PostgreSQL can spend per event: CPU seconds of its backend (user + system,
# /proc/PID/stat) to store EVENTS (default 100,000) of the bench's events (sim.rs: an audit
# record's JSON body) into the hub's `events` table, in batches of BATCH (default 1,000), one
# transaction each, by ways from what ingest does down to what no hub could do with less:
#
#   insert-select:  ingest's statement (INSERT .. ON CONFLICT DO NOTHING RETURNING the keys) from
#                   rows already in the server (no parameters to decode: less than ingest's UNNEST)
#   copy-staged:    COPY of the batch (text, from a file) into a temporary table, then the same
#                   INSERT .. SELECT .. ON CONFLICT DO NOTHING RETURNING (idempotent: the COPY way)
#   copy-direct:    COPY straight into `events` (not idempotent: a redelivery would fail the batch)
#   copy-pk-only:   the same into a copy of `events` with its primary key and no other index
#   copy-no-index:  the same into a copy with no index at all (the row and its WAL alone)
#
# Each into a table of its own, empty at the start, on a private cluster (fsync off, as the
# bench's) with the hub's migrations. Then ingest's insert by 1, 2 and 4 sessions at once (each
# its own sites, as ingest's writers): events/s and CPU (below). Run as root from the workspace: `sh bench/fleet/pg_floor.sh`.
set -eu
EVENTS=${EVENTS:-100000}
BATCH=${BATCH:-1000}
bin=/usr/lib/postgresql/15/bin
dir=$(mktemp -d /tmp/iotgw-postgres-pgfloor-XXXXXX)
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
mkdir "$dir/batches"
chown postgres "$dir/batches"

cat >"$dir/floor.sql" <<'SQL'
SET client_min_messages = warning;
SELECT pg_backend_pid() AS pid \gset
\setenv BACKEND :pid
-- The bench's events: 1,000 gateways at 100 sites, each event's body an audit record's JSON.
CREATE UNLOGGED TABLE seed AS
SELECT n, 'site-' || lpad((n % 1000 / 10)::text, 4, '0') AS site, 'gw-' || lpad((n % 1000)::text, 5, '0') AS gateway,
       (n / 1000 + 1)::int8 AS seq, (n % 1000) || '-' || n / 1000 AS event_id, 'audit' AS kind, 0::int2 AS severity,
       timestamptz '2026-06-01 00:00:00Z' + make_interval(secs => n / 10000.0) AS time,
       '02:00:' || substr(h, 1, 2) || ':' || substr(h, 3, 2) || ':00:' || substr(h, 5, 2) AS mac, 'bench' AS actor,
       jsonb_build_object('id', (n % 1000) || '-' || n / 1000, 'time', '2026-06-01T00:00:00Z', 'severity', 'info',
         'device', '02:00:' || substr(h, 1, 2) || ':' || substr(h, 3, 2) || ':00:' || substr(h, 5, 2),
         'actor', 'bench', 'kind', jsonb_build_object('audit', jsonb_build_object('action', 'seen', 'detail', 'report ' || n))) AS body
FROM generate_series(0, :events - 1) n, lpad(to_hex(n % 1000000), 6, '0') h;
CREATE UNIQUE INDEX ON seed (n);
CREATE TABLE events_copy_direct (LIKE events INCLUDING ALL);
CREATE TABLE events_insert_select (LIKE events INCLUDING ALL);
CREATE TABLE events_copy_staged (LIKE events INCLUDING ALL);
CREATE TABLE events_pk_only (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE events_pk_only ADD PRIMARY KEY (site, gateway, seq);
CREATE TABLE events_no_index (LIKE events INCLUDING DEFAULTS);
CREATE PROCEDURE write_batch_files(upto int, step int, dir text) LANGUAGE plpgsql AS $$
DECLARE lo int := 0;
BEGIN
  WHILE lo < upto LOOP
    EXECUTE format('COPY (SELECT site, gateway, seq, event_id, kind, severity, time, mac, actor, body FROM seed
                          WHERE n BETWEEN %s AND %s ORDER BY n) TO %L', lo, lo + step - 1, dir || '/' || lo);
    lo := lo + step;
  END LOOP;
END $$;
CALL write_batch_files(:events, :batch, :'dir');
-- One way of storing, batch by batch, one transaction each.
CREATE PROCEDURE store(how text, upto int, step int, dir text) LANGUAGE plpgsql AS $$
DECLARE lo int := 0; returned int;
BEGIN
  WHILE lo < upto LOOP
    CASE how
      WHEN 'insert-select' THEN
        WITH new AS (
          INSERT INTO events_insert_select SELECT site, gateway, seq, event_id, kind, severity, time, mac, actor, body
          FROM seed WHERE n BETWEEN lo AND lo + step - 1 ON CONFLICT (site, gateway, seq) DO NOTHING
          RETURNING site, gateway, seq)
        SELECT count(*) INTO returned FROM new;
      WHEN 'copy-staged' THEN
        CREATE TEMP TABLE IF NOT EXISTS staged (LIKE events) ON COMMIT DELETE ROWS;
        EXECUTE format('COPY staged FROM %L', dir || '/' || lo);
        WITH new AS (
          INSERT INTO events_copy_staged SELECT * FROM staged ON CONFLICT (site, gateway, seq) DO NOTHING
          RETURNING site, gateway, seq)
        SELECT count(*) INTO returned FROM new;
      WHEN 'copy-direct' THEN EXECUTE format('COPY events_copy_direct FROM %L', dir || '/' || lo);
      WHEN 'copy-pk-only' THEN EXECUTE format('COPY events_pk_only FROM %L', dir || '/' || lo);
      ELSE EXECUTE format('COPY events_no_index FROM %L', dir || '/' || lo);
    END CASE;
    COMMIT;
    lo := lo + step;
  END LOOP;
END $$;
CHECKPOINT;
\! echo "cpu start $(awk '{print $14 + $15}' /proc/$BACKEND/stat)"
CALL store('insert-select', :events, :batch, :'dir');
\! echo "cpu insert-select $(awk '{print $14 + $15}' /proc/$BACKEND/stat)"
CHECKPOINT;
\! echo "cpu (checkpoint) $(awk '{print $14 + $15}' /proc/$BACKEND/stat)"
CALL store('copy-staged', :events, :batch, :'dir');
\! echo "cpu copy-staged $(awk '{print $14 + $15}' /proc/$BACKEND/stat)"
CHECKPOINT;
\! echo "cpu (checkpoint) $(awk '{print $14 + $15}' /proc/$BACKEND/stat)"
CALL store('copy-direct', :events, :batch, :'dir');
\! echo "cpu copy-direct $(awk '{print $14 + $15}' /proc/$BACKEND/stat)"
CHECKPOINT;
\! echo "cpu (checkpoint) $(awk '{print $14 + $15}' /proc/$BACKEND/stat)"
CALL store('copy-pk-only', :events, :batch, :'dir');
\! echo "cpu copy-pk-only $(awk '{print $14 + $15}' /proc/$BACKEND/stat)"
CHECKPOINT;
\! echo "cpu (checkpoint) $(awk '{print $14 + $15}' /proc/$BACKEND/stat)"
CALL store('copy-no-index', :events, :batch, :'dir');
\! echo "cpu copy-no-index $(awk '{print $14 + $15}' /proc/$BACKEND/stat)"
SELECT 'rows ' || (SELECT count(*) FROM events_insert_select) || ' ' || (SELECT count(*) FROM events_copy_staged) || ' '
       || (SELECT count(*) FROM events_copy_direct) || ' ' || (SELECT count(*) FROM events_pk_only) || ' '
       || (SELECT count(*) FROM events_no_index);
SQL
chown postgres "$dir/floor.sql"
psql_run -t -A -v events=$EVENTS -v batch=$BATCH -v dir="$dir/batches" -f "$dir/floor.sql" | awk -v ticks="$(getconf CLK_TCK)" -v events="$EVENTS" '
    /^cpu / { now = $NF; $NF = ""; sub(/^cpu /, ""); if (last != "" && $0 !~ /^\(/) printf "%-16s %6.2f CPU s, %5.1f us per event\n", $0, (now - last) / ticks, (now - last) / ticks / events * 1e6; last = now; next }
    { print }'

# Then the same insert (ingest's statement, from rows in the server) by WRITERS sessions at once
# (default "1 2 4": one run each), each the batches of its own sites (as ingest's writers), into
# an empty table of its own: wall time and each backend's CPU, so events/s for N writers here.
cat >"$dir/parallel.sql" <<'SQL'
SET client_min_messages = warning;
-- Part `part` of `parts` (its sites: site number modulo parts), batches of about `step` rows.
CREATE PROCEDURE store_part(tbl text, part int, parts int, upto int, step int) LANGUAGE plpgsql AS $$
DECLARE lo int := 0;
BEGIN
  WHILE lo < upto LOOP
    EXECUTE format('INSERT INTO %I SELECT site, gateway, seq, event_id, kind, severity, time, mac, actor, body FROM seed
                    WHERE n BETWEEN %s AND %s AND (n %% 1000 / 10) %% %s = %s
                    ON CONFLICT (site, gateway, seq) DO NOTHING', tbl, lo, lo + step * parts - 1, parts, part);
    COMMIT;
    lo := lo + step * parts;
  END LOOP;
END $$;
SQL
chown postgres "$dir/parallel.sql"
psql_run -f "$dir/parallel.sql"
part_sql() { # table part parts
    printf 'SELECT pg_backend_pid() AS pid \\gset\n\\setenv BACKEND :pid\n\\! echo "cpu $(awk %s /proc/$BACKEND/stat)"\nCALL store_part(%s, %s, %s, %s, %s);\n\\! echo "cpu $(awk %s /proc/$BACKEND/stat)"\n' \
        "'{print \$14 + \$15}'" "'$1'" "$2" "$3" "$EVENTS" "$BATCH" "'{print \$14 + \$15}'" >"$dir/part-$1-$2.sql"
    chown postgres "$dir/part-$1-$2.sql"
}
cpu_of() { awk -v ticks="$(getconf CLK_TCK)" '/^cpu / { if (n++) printf "%.2f", ($2 - first) / ticks; else first = $2 }' "$1"; }
for writers in ${WRITERS:-1 2 4}; do
    table=events_by_$writers
    echo "CREATE TABLE $table (LIKE events INCLUDING ALL);" >"$dir/table.sql"
    chown postgres "$dir/table.sql"
    psql_run -f "$dir/table.sql"
    part=0
    while [ $part -lt "$writers" ]; do part_sql "$table" $part "$writers"; part=$((part + 1)); done
    start=$(date +%s.%N)
    part=0
    while [ $part -lt "$writers" ]; do
        psql_run -t -A -f "$dir/part-$table-$part.sql" >"$dir/$table-$part.out" &
        part=$((part + 1))
    done
    wait
    end=$(date +%s.%N)
    cpus=$(for out in "$dir/$table"-*.out; do printf '%s ' "$(cpu_of "$out")"; done)
    echo "SELECT count(*) FROM $table;" >"$dir/rows.sql"
    chown postgres "$dir/rows.sql"
    echo "$writers writer(s): $(psql_run -t -A -f "$dir/rows.sql") events in $(echo "$end - $start" | bc) s wall = $(echo "$EVENTS / ($end - $start)" | bc) events/s; backend CPU s: $cpus"
done
