//! The inventory's tables, as versioned store migrations. Times are Unix milliseconds; MACs
//! and IPs are text. `inventory_audit` is the gateway's audit trail (`ledger`).
/// Schema of the inventory tables.
pub const MIGRATIONS: &[crate::store::Migration] = &[
    crate::store::Migration {
        component: "inventory",
        version: 1,
        sql: "
CREATE TABLE inventory_devices (
    mac TEXT PRIMARY KEY,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    vendor TEXT,
    locally_administered INTEGER NOT NULL,
    hostname TEXT,
    device_type TEXT,
    type_confidence REAL,
    access TEXT NOT NULL DEFAULT 'unknown',
    lifecycle TEXT,
    class TEXT,
    firmware_version TEXT,
    cert_subject TEXT,
    device_id TEXT,
    flows_total INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE inventory_addresses (
    mac TEXT NOT NULL REFERENCES inventory_devices(mac) ON DELETE CASCADE,
    ip TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (mac, ip)
);
CREATE TABLE inventory_fingerprints (
    mac TEXT NOT NULL REFERENCES inventory_devices(mac) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    detail TEXT,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    count INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (mac, kind, value)
);
CREATE TABLE inventory_flows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mac TEXT NOT NULL REFERENCES inventory_devices(mac) ON DELETE CASCADE,
    time INTEGER NOT NULL,
    src TEXT NOT NULL,
    dst TEXT NOT NULL,
    src_port INTEGER NOT NULL,
    dst_port INTEGER NOT NULL,
    proto INTEGER NOT NULL,
    frame_bytes INTEGER NOT NULL,
    verdict INTEGER NOT NULL,
    reason INTEGER NOT NULL
);
CREATE INDEX inventory_flows_by_mac ON inventory_flows (mac, id);
CREATE TABLE inventory_traffic (
    mac TEXT NOT NULL REFERENCES inventory_devices(mac) ON DELETE CASCADE,
    start INTEGER NOT NULL,
    seconds INTEGER NOT NULL,
    tx_bytes INTEGER NOT NULL,
    tx_packets INTEGER NOT NULL,
    rx_bytes INTEGER NOT NULL,
    rx_packets INTEGER NOT NULL,
    PRIMARY KEY (mac, start)
);
CREATE TABLE inventory_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time INTEGER NOT NULL,
    actor TEXT NOT NULL,
    mac TEXT,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX inventory_audit_by_mac ON inventory_audit (mac, id);
",
    },
    // What the datapath enforces beyond the access state: the store is the device table's
    // source of truth, rebuilt from these columns at every start (`query::enforced`).
    crate::store::Migration {
        component: "inventory",
        version: 2,
        sql: "
ALTER TABLE inventory_devices ADD COLUMN policy_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE inventory_devices ADD COLUMN class_id INTEGER NOT NULL DEFAULT 0;
",
    },
    // The console's searches (`search`): one index per device sort key, ending in the MAC the
    // cursor breaks ties with (nullable keys as the `IFNULL(.., '')` the queries sort on), the
    // GROUP BY columns of the summary, addresses by IP, and the audit log by time under each
    // filter (an index ends in the rowid, `id`, which breaks ties between equal times).
    crate::store::Migration {
        component: "inventory",
        version: 3,
        sql: "
CREATE INDEX inventory_devices_by_last_seen ON inventory_devices (last_seen, mac);
CREATE INDEX inventory_devices_by_first_seen ON inventory_devices (first_seen, mac);
CREATE INDEX inventory_devices_by_vendor ON inventory_devices (IFNULL(vendor, ''), mac);
CREATE INDEX inventory_devices_by_type ON inventory_devices (IFNULL(device_type, ''), mac);
CREATE INDEX inventory_devices_by_class ON inventory_devices (IFNULL(class, ''));
CREATE INDEX inventory_devices_by_access ON inventory_devices (access);
CREATE INDEX inventory_addresses_by_ip ON inventory_addresses (ip);
CREATE INDEX inventory_audit_by_time ON inventory_audit (time);
CREATE INDEX inventory_audit_by_mac_time ON inventory_audit (mac, time);
CREATE INDEX inventory_audit_by_actor ON inventory_audit (actor, time);
CREATE INDEX inventory_audit_by_action ON inventory_audit (action, time);
",
    },
    // Which names the addresses a device connects to were resolved from, out of the DNS
    // answers sent to it (`ingest`), so its destinations show names (`destinations`).
    crate::store::Migration {
        component: "inventory",
        version: 4,
        sql: "
CREATE TABLE inventory_resolutions (
    mac TEXT NOT NULL REFERENCES inventory_devices(mac) ON DELETE CASCADE,
    ip TEXT NOT NULL,
    name TEXT NOT NULL,
    last_seen INTEGER NOT NULL,
    PRIMARY KEY (mac, ip, name)
);
",
    },
    // Host names searched by any part of 3 characters or more (`search`): an FTS5 trigram
    // index over each device's lower-case host name, kept in step by triggers, so every writer
    // of `hostname` keeps it without knowing of it. The names sit in `inventory_hostnames` (the
    // index's external content) under a key of their own: the index refers to rows by integer
    // key, and `inventory_devices` has none VACUUM would keep.
    crate::store::Migration {
        component: "inventory",
        version: 5,
        sql: "
CREATE TABLE inventory_hostnames (
    id INTEGER PRIMARY KEY,
    mac TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL
);
CREATE VIRTUAL TABLE inventory_hostnames_fts USING fts5(
    name, content = 'inventory_hostnames', content_rowid = 'id', tokenize = 'trigram case_sensitive 1'
);
CREATE TRIGGER inventory_hostnames_added AFTER INSERT ON inventory_hostnames BEGIN
    INSERT INTO inventory_hostnames_fts (rowid, name) VALUES (new.id, new.name);
END;
CREATE TRIGGER inventory_hostnames_removed AFTER DELETE ON inventory_hostnames BEGIN
    INSERT INTO inventory_hostnames_fts (inventory_hostnames_fts, rowid, name) VALUES ('delete', old.id, old.name);
END;
CREATE TRIGGER inventory_devices_hostname_added AFTER INSERT ON inventory_devices
WHEN new.hostname IS NOT NULL BEGIN
    INSERT INTO inventory_hostnames (mac, name) VALUES (new.mac, lower(new.hostname));
END;
CREATE TRIGGER inventory_devices_hostname_changed AFTER UPDATE OF mac, hostname ON inventory_devices
WHEN old.mac IS NOT new.mac OR old.hostname IS NOT new.hostname BEGIN
    DELETE FROM inventory_hostnames WHERE mac = old.mac;
    INSERT INTO inventory_hostnames (mac, name) SELECT new.mac, lower(new.hostname) WHERE new.hostname IS NOT NULL;
END;
CREATE TRIGGER inventory_devices_hostname_removed AFTER DELETE ON inventory_devices BEGIN
    DELETE FROM inventory_hostnames WHERE mac = old.mac;
END;
INSERT INTO inventory_hostnames (mac, name)
    SELECT mac, lower(hostname) FROM inventory_devices WHERE hostname IS NOT NULL;
",
    },
    // What changed since a reader last looked (`fleet::inventory_feed`): every write that
    // changes what a `DeviceRecord` shows gives the device the next `change_seq` and a newer
    // `changed_ms`, kept by triggers so every writer keeps them without knowing of them. SQLite
    // runs one write transaction at a time, so `change_seq` grows in commit order: a reader past
    // sequence n has seen every change up to n. Traffic only moves `last_seen` and counters,
    // which count as a change at most once a minute per device, or every packet would be one.
    // Devices known before this migration get sequences in insertion order.
    crate::store::Migration {
        component: "inventory",
        version: 6,
        sql: "
ALTER TABLE inventory_devices ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
ALTER TABLE inventory_devices ADD COLUMN changed_ms INTEGER NOT NULL DEFAULT 0;
UPDATE inventory_devices SET change_seq = rowid, changed_ms = last_seen;
CREATE INDEX inventory_devices_by_change ON inventory_devices (change_seq);
CREATE TRIGGER inventory_devices_changed_added AFTER INSERT ON inventory_devices BEGIN
    UPDATE inventory_devices SET
        change_seq = (SELECT MAX(change_seq) FROM inventory_devices) + 1,
        changed_ms = MAX(CAST(unixepoch('subsec') * 1000 AS INTEGER), new.last_seen)
    WHERE mac = new.mac;
END;
CREATE TRIGGER inventory_devices_changed AFTER UPDATE OF
    vendor, locally_administered, hostname, device_type, type_confidence, access, lifecycle, class,
    firmware_version, cert_subject, device_id, first_seen, last_seen, flows_total ON inventory_devices
WHEN old.vendor IS NOT new.vendor OR old.locally_administered IS NOT new.locally_administered
    OR old.hostname IS NOT new.hostname OR old.device_type IS NOT new.device_type
    OR old.type_confidence IS NOT new.type_confidence OR old.access IS NOT new.access
    OR old.lifecycle IS NOT new.lifecycle OR old.class IS NOT new.class
    OR old.firmware_version IS NOT new.firmware_version OR old.cert_subject IS NOT new.cert_subject
    OR old.device_id IS NOT new.device_id OR old.first_seen IS NOT new.first_seen
    OR ((old.last_seen IS NOT new.last_seen OR old.flows_total IS NOT new.flows_total)
        AND CAST(unixepoch('subsec') * 1000 AS INTEGER) >= old.changed_ms + 60000)
BEGIN
    UPDATE inventory_devices SET
        change_seq = (SELECT MAX(change_seq) FROM inventory_devices) + 1,
        changed_ms = MAX(CAST(unixepoch('subsec') * 1000 AS INTEGER), old.changed_ms + 1)
    WHERE mac = new.mac;
END;
CREATE TRIGGER inventory_addresses_changed AFTER INSERT ON inventory_addresses BEGIN
    UPDATE inventory_devices SET
        change_seq = (SELECT MAX(change_seq) FROM inventory_devices) + 1,
        changed_ms = MAX(CAST(unixepoch('subsec') * 1000 AS INTEGER), changed_ms + 1)
    WHERE mac = new.mac;
END;
",
    },
    // The MUD URL each device announced and what came of it (`mud`): the latest check
    // (`announced_url` .. `checked`) and the file in force (`applied_url` .. `signer`), which a
    // refused check leaves as it was.
    crate::store::Migration {
        component: "inventory",
        version: 7,
        sql: "
CREATE TABLE inventory_mud (
    mac TEXT PRIMARY KEY REFERENCES inventory_devices(mac) ON DELETE CASCADE,
    announced_url TEXT NOT NULL,
    channel TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT NOT NULL,
    checked INTEGER NOT NULL,
    applied_url TEXT,
    class TEXT,
    class_id INTEGER,
    file_sha256 TEXT,
    valid_until INTEGER,
    signer TEXT
);
",
    },
    // The type guess's other levels (`fingerprint::taxonomy`): the vendor and generic type the
    // model answered, each with its confidence; `device_type` holds the product or `unknown`.
    crate::store::Migration {
        component: "inventory",
        version: 8,
        sql: "
ALTER TABLE inventory_devices ADD COLUMN type_vendor TEXT;
ALTER TABLE inventory_devices ADD COLUMN type_vendor_confidence REAL;
ALTER TABLE inventory_devices ADD COLUMN generic_type TEXT;
ALTER TABLE inventory_devices ADD COLUMN generic_confidence REAL;
CREATE TRIGGER inventory_devices_type_levels_changed AFTER UPDATE OF
    type_vendor, type_vendor_confidence, generic_type, generic_confidence ON inventory_devices
WHEN old.type_vendor IS NOT new.type_vendor OR old.type_vendor_confidence IS NOT new.type_vendor_confidence
    OR old.generic_type IS NOT new.generic_type OR old.generic_confidence IS NOT new.generic_confidence
BEGIN
    UPDATE inventory_devices SET
        change_seq = (SELECT MAX(change_seq) FROM inventory_devices) + 1,
        changed_ms = MAX(CAST(unixepoch('subsec') * 1000 AS INTEGER), old.changed_ms + 1)
    WHERE mac = new.mac;
END;
",
    },
];
