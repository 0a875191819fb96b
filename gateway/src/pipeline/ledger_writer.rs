//! The pipeline's access changes and audit records, written to the store's ledger
//! (`inventory::Ledger`) on a thread of their own. A SQLite write waits for the store's write
//! lock (the inventory writes every flow to the same file) and fsyncs; the detection loop
//! must not wait for it before it judges the next input: in the lab, a scan's threshold flow
//! waited 2.6 s behind the audit record of the alert its first SYN raised. Records keep their
//! order; the queue is bounded, and a full queue makes the loop wait rather than lose one.
//! Dropping the writer drains the queue and waits for the thread.
use std::{
    sync::mpsc::{SyncSender, sync_channel},
    thread::JoinHandle,
};

use crate::{datapath::DeviceAccess, device::Mac, inventory::Ledger};

/// Records waiting for the store at most.
pub const LEDGER_QUEUE: usize = 4_096;

enum Record {
    Access { mac: Mac, enforced: DeviceAccess, actor: String, reason: String },
    Audit { actor: String, device: Option<Mac>, action: String, detail: String },
}

/// The handle the loop writes through.
pub struct LedgerWriter {
    sender: Option<SyncSender<Record>>,
    thread: Option<JoinHandle<()>>,
}

impl LedgerWriter {
    pub fn spawn(mut ledger: Ledger) -> std::io::Result<Self> {
        let (sender, records) = sync_channel::<Record>(LEDGER_QUEUE);
        let thread = std::thread::Builder::new().name("iotgw-ledger".to_owned()).spawn(move || {
            for record in records {
                match record {
                    Record::Access { mac, enforced, actor, reason } => {
                        if let Err(error) = ledger.record_access(mac, enforced, &actor, &reason) {
                            // Enforced all the same; a restart before the next change would not restore it.
                            tracing::error!(%error, device = %mac, "access changed but not recorded in the store");
                        }
                    }
                    Record::Audit { actor, device, action, detail } => {
                        if let Err(error) = ledger.audit(&actor, device, &action, &detail) {
                            // The event still reached the bus (and the integrations outbox).
                            tracing::error!(%error, "cannot write the audit log");
                        }
                    }
                }
            }
        })?;
        Ok(Self { sender: Some(sender), thread: Some(thread) })
    }

    /// Records what the datapath now enforces for `mac` (`Ledger::record_access`).
    pub fn record_access(&self, mac: Mac, enforced: DeviceAccess, actor: &str, reason: &str) {
        self.send(Record::Access { mac, enforced, actor: actor.to_owned(), reason: reason.to_owned() });
    }

    /// Appends an audit record (`Ledger::audit`).
    pub fn audit(&self, actor: &str, device: Option<Mac>, action: &str, detail: &str) {
        self.send(Record::Audit {
            actor: actor.to_owned(),
            device,
            action: action.to_owned(),
            detail: detail.to_owned(),
        });
    }

    fn send(&self, record: Record) {
        let sent = self.sender.as_ref().is_some_and(|sender| sender.send(record).is_ok());
        if !sent {
            tracing::error!("the ledger writer stopped: a record was not stored");
        }
    }
}

impl Drop for LedgerWriter {
    fn drop(&mut self) {
        drop(self.sender.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the ledger writer panicked");
        }
    }
}
