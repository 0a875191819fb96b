//! The ledger: what the store says the datapath enforces for each device, and the audit trail
//! of every change with who or what made it. Every component writes access changes and audit
//! records through here, on its own connection (`Ledger`), or through the `Inventory` that
//! owns the same tables (`Inventory::record_access`, `Inventory::audit`, the `set_*` calls).
//! The controller rebuilds the device table from these rows at every start (`enforced`).
use std::time::SystemTime;

use rusqlite::{Connection, params};

use super::{AuditEntry, InventoryChange, InventoryError, MAX_TEXT, check_text, millis, query, sanitize};
use crate::{
    datapath::DeviceAccess,
    device::{Access, Mac},
};

/// The ledger over a connection of its own (the pipeline's, identity's, the controller's),
/// for components that record access changes and audit records but take in no traffic. A
/// device it creates has no vendor name: the inventory fills it in at the device's next
/// packet.
pub struct Ledger {
    conn: Connection,
}

impl Ledger {
    /// A ledger over `conn` (opened by `crate::store` with `super::MIGRATIONS`).
    pub fn new(conn: Connection) -> Self {
        Self { conn }
    }

    /// Opens the store at `path` with the inventory's tables.
    pub fn open(path: &std::path::Path) -> Result<Self, crate::store::StoreError> {
        crate::store::open(path, &[super::MIGRATIONS]).map(Self::new)
    }

    /// The connection, for read-only queries of other components' tables.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// See `Inventory::record_access`.
    pub fn record_access(
        &mut self,
        mac: Mac,
        enforced: DeviceAccess,
        actor: &str,
        reason: &str,
    ) -> Result<Access, InventoryError> {
        store_access(
            &self.conn,
            None,
            mac,
            enforced.access,
            Some((enforced.policy_id, enforced.class_id)),
            actor,
            reason,
        )
    }

    /// See `Inventory::audit`.
    pub fn audit(&mut self, actor: &str, mac: Option<Mac>, action: &str, detail: &str) -> Result<(), InventoryError> {
        audit(&self.conn, actor, mac, action, detail)
    }

    /// See `Inventory::enforced`.
    pub fn enforced(&self) -> Result<Vec<(Mac, DeviceAccess)>, InventoryError> {
        query::enforced(&self.conn)
    }

    /// See `Inventory::audit_log`.
    pub fn audit_log(&self, mac: Option<Mac>, limit: usize) -> Result<Vec<AuditEntry>, InventoryError> {
        query::audit_log(&self.conn, mac, limit)
    }
}

impl crate::datapath::AccessLedger for Ledger {
    fn record_change(&mut self, mac: Mac, enforced: DeviceAccess, actor: &str, reason: &str) -> Result<(), String> {
        self.record_access(mac, enforced, actor, reason).map(|_| ()).map_err(|error| error.to_string())
    }
}

/// The ledger calls of the inventory, over its own connection; a device they create gets its
/// vendor name from the inventory's registry.
impl super::Inventory {
    /// Sets what the datapath enforces for a device (the caller has changed the device table;
    /// this records it), keeping the stored policy and class. Creates the device if needed.
    /// Returns the previous access.
    pub fn set_access(
        &mut self,
        mac: Mac,
        access: Access,
        actor: &str,
        reason: &str,
    ) -> Result<Access, InventoryError> {
        store_access(&self.conn, self.vendors.lookup(&mac), mac, access, None, actor, reason)
    }

    /// The one audited path for device-table changes: records what the datapath now enforces
    /// for `mac` (access, policy and class) after the caller changed the device table, and
    /// audits an access change as `access_changed` (`"<from> -> <to>: <reason>"`). The
    /// controller rebuilds the device table from these rows at every start
    /// (`query::enforced`). Creates the device if needed. Returns the previous access.
    pub fn record_access(
        &mut self,
        mac: Mac,
        enforced: DeviceAccess,
        actor: &str,
        reason: &str,
    ) -> Result<Access, InventoryError> {
        let policy_class = Some((enforced.policy_id, enforced.class_id));
        store_access(&self.conn, self.vendors.lookup(&mac), mac, enforced.access, policy_class, actor, reason)
    }

    /// What the store says the datapath must enforce: every device with an access other
    /// than `unknown`, with its policy and class.
    pub fn enforced(&self) -> Result<Vec<(Mac, DeviceAccess)>, InventoryError> {
        query::enforced(&self.conn)
    }

    /// Records the identity the device enrolled with. Creates the device if needed.
    pub fn set_identity(
        &mut self,
        mac: Mac,
        cert_subject: &str,
        device_id: &str,
        actor: &str,
    ) -> Result<(), InventoryError> {
        check_text("certificate subject", cert_subject)?;
        check_text("device id", device_id)?;
        self.set_columns(mac, actor, "identity_changed", &[("cert_subject", cert_subject), ("device_id", device_id)])
    }

    /// Records the firmware version the device runs (from OTA). Creates the device if needed.
    pub fn set_firmware(&mut self, mac: Mac, version: &str, actor: &str) -> Result<(), InventoryError> {
        check_text("firmware version", version)?;
        self.set_columns(mac, actor, "firmware_changed", &[("firmware_version", version)])
    }

    /// Records the class (and so the policy) the device is assigned to.
    pub fn set_class(&mut self, mac: Mac, class: &str, actor: &str) -> Result<(), InventoryError> {
        check_text("class", class)?;
        self.set_columns(mac, actor, "class_changed", &[("class", class)])
    }

    /// Records the device's identity lifecycle state (`enrolled`, `revoked`, ...).
    pub fn set_lifecycle(&mut self, mac: Mac, lifecycle: &str, actor: &str) -> Result<(), InventoryError> {
        check_text("lifecycle", lifecycle)?;
        self.set_columns(mac, actor, "lifecycle_changed", &[("lifecycle", lifecycle)])
    }

    fn set_columns(
        &mut self,
        mac: Mac,
        actor: &str,
        action: &str,
        columns: &[(&'static str, &str)],
    ) -> Result<(), InventoryError> {
        set_columns(&self.conn, self.vendors.lookup(&mac), mac, actor, action, columns)
    }

    /// Appends an audit record (for changes made elsewhere: policy reloads, enrollment...).
    pub fn audit(&mut self, actor: &str, mac: Option<Mac>, action: &str, detail: &str) -> Result<(), InventoryError> {
        audit(&self.conn, actor, mac, action, detail)
    }

    /// Audit entries, newest first, at most `limit`: of one device, or all (`None`).
    pub fn audit_log(&self, mac: Option<Mac>, limit: usize) -> Result<Vec<AuditEntry>, InventoryError> {
        query::audit_log(&self.conn, mac, limit)
    }
}

impl crate::datapath::AccessLedger for super::Inventory {
    fn record_change(&mut self, mac: Mac, enforced: DeviceAccess, actor: &str, reason: &str) -> Result<(), String> {
        self.record_access(mac, enforced, actor, reason).map(|_| ()).map_err(|error| error.to_string())
    }
}

/// Runs `work` in one SQLite transaction: all of it is stored, or none.
pub(super) fn in_transaction<T>(
    conn: &Connection,
    work: impl FnOnce() -> Result<T, InventoryError>,
) -> Result<T, InventoryError> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    finish(conn, work())
}

/// Ends the transaction begun before `result` was computed: commits it when `result` is Ok,
/// rolls it back otherwise.
pub(super) fn finish<T>(conn: &Connection, result: Result<T, InventoryError>) -> Result<T, InventoryError> {
    let result = result.and_then(|value| {
        conn.execute_batch("COMMIT")?;
        Ok(value)
    });
    if result.is_err() {
        // Already rolled back if COMMIT itself failed; the error that matters is `result`.
        let _ = conn.execute_batch("ROLLBACK");
    }
    result
}

/// Creates the device if new (audited as `device_added` by `actor`, with `vendor`), and moves
/// `last_seen`. Returns the change when the device is new.
pub(super) fn touch(
    conn: &Connection,
    vendor: Option<&str>,
    mac: Mac,
    time: i64,
    actor: &str,
) -> Result<Option<InventoryChange>, InventoryError> {
    let updated = conn.execute(
        "UPDATE inventory_devices SET last_seen = MAX(last_seen, ?2) WHERE mac = ?1",
        params![mac.to_string(), time],
    )?;
    if updated > 0 {
        return Ok(None);
    }
    conn.execute(
        "INSERT INTO inventory_devices (mac, first_seen, last_seen, vendor, locally_administered) VALUES (?1, ?2, ?2, ?3, ?4)",
        params![mac.to_string(), time, vendor, mac.is_locally_administered()],
    )?;
    let detail = match (vendor, mac.is_locally_administered()) {
        (Some(vendor), _) => format!("vendor {vendor}"),
        (None, true) => "locally administered MAC (no vendor)".to_owned(),
        (None, false) => "vendor unknown".to_owned(),
    };
    append(conn, actor, Some(mac), "device_added", &detail)?;
    Ok(Some(InventoryChange::NewDevice { mac, vendor: vendor.map(str::to_owned) }))
}

/// The one audited path for device-table changes (see `Inventory::record_access`);
/// `policy_class` is `None` to keep the stored policy and class.
pub(super) fn store_access(
    conn: &Connection,
    vendor: Option<&str>,
    mac: Mac,
    access: Access,
    policy_class: Option<(u32, u16)>,
    actor: &str,
    reason: &str,
) -> Result<Access, InventoryError> {
    check_text("actor", actor)?;
    check_text("reason", reason)?;
    in_transaction(conn, || {
        touch(conn, vendor, mac, millis(SystemTime::now()), actor)?;
        let previous: String =
            conn.query_row("SELECT access FROM inventory_devices WHERE mac = ?1", [mac.to_string()], |row| row.get(0))?;
        let previous: Access =
            previous.parse().map_err(|reason| InventoryError::Corrupt { mac: mac.to_string(), reason })?;
        if let Some((policy_id, class_id)) = policy_class {
            conn.execute(
                "UPDATE inventory_devices SET policy_id = ?2, class_id = ?3 WHERE mac = ?1",
                params![mac.to_string(), policy_id, class_id],
            )?;
        }
        if previous != access {
            conn.execute(
                "UPDATE inventory_devices SET access = ?2 WHERE mac = ?1",
                params![mac.to_string(), access.as_str()],
            )?;
            append(conn, actor, Some(mac), "access_changed", &format!("{previous} -> {access}: {reason}"))?;
        }
        Ok(previous)
    })
}

/// Writes text columns of a device (creating it if needed); audits only when a value actually
/// changes, as `action` with every column's old and new value.
pub(super) fn set_columns(
    conn: &Connection,
    vendor: Option<&str>,
    mac: Mac,
    actor: &str,
    action: &str,
    columns: &[(&'static str, &str)],
) -> Result<(), InventoryError> {
    check_text("actor", actor)?;
    in_transaction(conn, || {
        touch(conn, vendor, mac, millis(SystemTime::now()), actor)?;
        let mut details = Vec::new();
        for (column, value) in columns {
            // Column names come from the callers' fixed lists, never from input.
            let previous: Option<String> = conn.query_row(
                &format!("SELECT {column} FROM inventory_devices WHERE mac = ?1"),
                [mac.to_string()],
                |row| row.get(0),
            )?;
            if previous.as_deref() != Some(*value) {
                conn.execute(
                    &format!("UPDATE inventory_devices SET {column} = ?2 WHERE mac = ?1"),
                    params![mac.to_string(), value],
                )?;
                details.push(format!("{column}: {} -> {value}", previous.as_deref().unwrap_or("-")));
            }
        }
        if !details.is_empty() {
            append(conn, actor, Some(mac), action, &details.join("; "))?;
        }
        Ok(())
    })
}

/// Appends a checked audit record (for changes made elsewhere: policy reloads, enrollment...),
/// on the caller's connection, so it commits with the caller's own change (`alerts`).
pub fn audit(
    conn: &Connection,
    actor: &str,
    mac: Option<Mac>,
    action: &str,
    detail: &str,
) -> Result<(), InventoryError> {
    check_text("actor", actor)?;
    check_text("action", action)?;
    if detail.len() > MAX_TEXT {
        return Err(InventoryError::Invalid { field: "detail", reason: format!("longer than {MAX_TEXT} bytes") });
    }
    append(conn, actor, mac, action, detail)
}

/// Appends an audit record; `detail` is escaped (it may quote what a device sent).
pub(super) fn append(
    conn: &Connection,
    actor: &str,
    mac: Option<Mac>,
    action: &str,
    detail: &str,
) -> Result<(), InventoryError> {
    conn.execute(
        "INSERT INTO inventory_audit (time, actor, mac, action, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![millis(SystemTime::now()), actor, mac.map(|m| m.to_string()), action, sanitize(detail)],
    )?;
    Ok(())
}
