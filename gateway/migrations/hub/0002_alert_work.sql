-- What the hub's analysts record on the fleet queue beyond its state: how a resolved alert
-- turned out, and their notes (never edited nor removed).
ALTER TABLE alerts ADD COLUMN resolution TEXT;

CREATE TABLE alert_notes (
    alert_id BIGINT NOT NULL REFERENCES alerts (id),
    time TIMESTAMPTZ NOT NULL,
    author TEXT NOT NULL,
    text TEXT NOT NULL
);
CREATE INDEX alert_notes_by_alert ON alert_notes (alert_id, time);

-- The fleet queue filtered by site, and the hub's audit log by actor.
CREATE INDEX alerts_by_site ON alerts (site, gateway, last_seen DESC, id);
CREATE INDEX hub_audit_by_actor ON hub_audit (actor, id DESC);
