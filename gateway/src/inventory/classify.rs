//! Device types: the classifier runs again when a device's features changed, and a new guess
//! is written (audited when the type changes).
use rusqlite::params;

use super::{ACTOR_FINGERPRINT, CONFIDENCE_STEP, Inventory, InventoryChange, InventoryError, ledger};
use crate::{device::Mac, fingerprint::Guess};

impl Inventory {
    /// Re-runs the classifier when the device's features changed; writes the guess when the
    /// type changes (audited) or the confidence moved by `CONFIDENCE_STEP`.
    pub(super) fn classify(&mut self, mac: Mac, changes: &mut Vec<InventoryChange>) -> Result<(), InventoryError> {
        let Some(classifier) = &self.classifier else { return Ok(()) };
        let Some(tracked) = self.tracked.get_mut(&mac) else { return Ok(()) };
        if !tracked.features.take_changed() {
            return Ok(());
        }
        let Some(guess) = classifier.guess(&tracked.features) else { return Ok(()) };
        let previous = match tracked.guess.take() {
            Some(previous) => Some(previous),
            // First guess since start: compare with what the store holds.
            None => self
                .conn
                .query_row(
                    "SELECT device_type, type_confidence FROM inventory_devices WHERE mac = ?1",
                    [mac.to_string()],
                    |row| Ok((row.get::<_, Option<String>>(0)?, row.get::<_, Option<f64>>(1)?)),
                )?
                .0
                .zip(Some(0.0))
                .map(|(device_type, confidence)| Guess { device_type, confidence }),
        };
        let type_changed = previous.as_ref().is_none_or(|p| p.device_type != guess.device_type);
        let moved = previous.as_ref().is_none_or(|p| (p.confidence - guess.confidence).abs() >= CONFIDENCE_STEP);
        if type_changed || moved {
            self.conn.execute(
                "UPDATE inventory_devices SET device_type = ?2, type_confidence = ?3 WHERE mac = ?1",
                params![mac.to_string(), guess.device_type, guess.confidence],
            )?;
        }
        if type_changed {
            let was = previous.as_ref().map(|p| p.device_type.clone());
            ledger::append(
                &self.conn,
                ACTOR_FINGERPRINT,
                Some(mac),
                "type_changed",
                &format!(
                    "{} -> {} ({:.0}%)",
                    was.as_deref().unwrap_or("-"),
                    guess.device_type,
                    100.0 * guess.confidence
                ),
            )?;
            changes.push(InventoryChange::TypeChanged {
                mac,
                device_type: guess.device_type.clone(),
                confidence: guess.confidence,
                previous: was,
            });
        }
        // Remember what is stored, so small moves accumulate against the stored value.
        let stored = if type_changed || moved { guess } else { previous.unwrap_or(guess) };
        if let Some(tracked) = self.tracked.get_mut(&mac) {
            tracked.guess = Some(stored);
        }
        Ok(())
    }
}
