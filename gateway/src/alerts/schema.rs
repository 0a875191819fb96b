//! The alert store's tables: one row per alert record, its evidence flows, the responses it
//! triggered, the analysts' notes and what the detectors observed. Times are unix
//! milliseconds; severity is stored as its rank (`integrations::outbox::severity_rank`'s
//! order) so it sorts and filters in SQL.
//!
//! Every list order is a keyset on (sort key, id) with an index of its own, and each filter
//! (state, severity, device, detector; the time range is the default order's own) has one in
//! the default order, so no page of `GET /api/v1/alerts` scans or sorts the whole table.
use crate::store::Migration;

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        component: "alerts",
        version: 1,
        sql: "
    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        incident_id TEXT NOT NULL,
        detector TEXT NOT NULL,
        actor TEXT NOT NULL,
        severity INTEGER NOT NULL,
        score REAL NOT NULL,
        expected TEXT NOT NULL,
        observed TEXT NOT NULL,
        device TEXT,
        device_ip TEXT,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        count INTEGER NOT NULL,
        calm_since INTEGER,
        state TEXT NOT NULL,
        resolution TEXT,
        assignee TEXT,
        updated INTEGER NOT NULL
    );
    CREATE INDEX alerts_incident ON alerts (incident_id, id);
    CREATE INDEX alerts_last_seen ON alerts (last_seen, id);
    CREATE INDEX alerts_first_seen ON alerts (first_seen, id);
    CREATE INDEX alerts_score ON alerts (score, id);
    CREATE INDEX alerts_severity ON alerts (severity, id);
    CREATE INDEX alerts_state_last_seen ON alerts (state, last_seen, id);
    CREATE INDEX alerts_device_last_seen ON alerts (device, last_seen, id);
    CREATE INDEX alerts_detector_last_seen ON alerts (detector, last_seen, id);
    CREATE TABLE alert_flows (
        alert_id INTEGER NOT NULL REFERENCES alerts (id),
        flow TEXT NOT NULL,
        PRIMARY KEY (alert_id, flow)
    );
    CREATE TABLE alert_responses (
        id INTEGER PRIMARY KEY,
        alert_id INTEGER NOT NULL REFERENCES alerts (id),
        event_id TEXT NOT NULL,
        time INTEGER NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE INDEX alert_responses_alert ON alert_responses (alert_id, id);
    CREATE TABLE alert_notes (
        id INTEGER PRIMARY KEY,
        alert_id INTEGER NOT NULL REFERENCES alerts (id),
        time INTEGER NOT NULL,
        author TEXT NOT NULL,
        text TEXT NOT NULL
    );
    CREATE INDEX alert_notes_alert ON alert_notes (alert_id, id);
    ",
    },
    // The console's summary (`summary`) over a million records: counts by state and severity
    // kept by triggers (read in one short scan of at most 15 rows), and the records over time
    // read from a covering index on (first_seen, severity), never from the table.
    Migration {
        component: "alerts",
        version: 2,
        sql: "
    CREATE TABLE alert_counts (
        state TEXT NOT NULL,
        severity INTEGER NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (state, severity)
    );
    INSERT INTO alert_counts (state, severity, count)
        SELECT state, severity, COUNT(*) FROM alerts GROUP BY state, severity;
    CREATE TRIGGER alert_counts_insert AFTER INSERT ON alerts BEGIN
        INSERT OR IGNORE INTO alert_counts (state, severity, count) VALUES (NEW.state, NEW.severity, 0);
        UPDATE alert_counts SET count = count + 1 WHERE state = NEW.state AND severity = NEW.severity;
    END;
    CREATE TRIGGER alert_counts_update AFTER UPDATE OF state, severity ON alerts
        WHEN OLD.state != NEW.state OR OLD.severity != NEW.severity BEGIN
        UPDATE alert_counts SET count = count - 1 WHERE state = OLD.state AND severity = OLD.severity;
        INSERT OR IGNORE INTO alert_counts (state, severity, count) VALUES (NEW.state, NEW.severity, 0);
        UPDATE alert_counts SET count = count + 1 WHERE state = NEW.state AND severity = NEW.severity;
    END;
    CREATE TRIGGER alert_counts_delete AFTER DELETE ON alerts BEGIN
        UPDATE alert_counts SET count = count - 1 WHERE state = OLD.state AND severity = OLD.severity;
    END;
    CREATE INDEX alerts_first_seen_severity ON alerts (first_seen, severity);
    ",
    },
    // What the detectors observed (`GatewayEvent::observations`, JSON), for learning a false
    // positive as normal (`learn`).
    Migration {
        component: "alerts",
        version: 3,
        sql: "
    CREATE TABLE alert_observations (
        alert_id INTEGER NOT NULL REFERENCES alerts (id),
        observation TEXT NOT NULL,
        PRIMARY KEY (alert_id, observation)
    );
    ",
    },
    // The severity filter in the default order (`bench/console/RESULTS.md`): without it a
    // page of critical alerts walked the whole `last_seen` index or sorted every critical one.
    Migration {
        component: "alerts",
        version: 4,
        sql: "CREATE INDEX alerts_severity_last_seen ON alerts (severity, last_seen, id);",
    },
];
