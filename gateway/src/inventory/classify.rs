//! Device types: the classifier runs again when a device's features changed, and a new guess
//! is written at its three levels (audited when the product or generic type changes).
use rusqlite::params;

use super::{ACTOR_FINGERPRINT, CONFIDENCE_STEP, Inventory, InventoryChange, InventoryError, ledger};
use crate::device::Mac;

impl Inventory {
    /// Re-runs the classifier when the device's features changed; writes the guess when the
    /// product or generic type changes (audited) or the confidence moved by `CONFIDENCE_STEP`.
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
            None => Some(self.conn.query_row(
                "SELECT device_type, generic_type FROM inventory_devices WHERE mac = ?1",
                [mac.to_string()],
                |row| Ok(Stored { product: row.get(0)?, generic: row.get(1)?, confidence: 0.0 }),
            )?),
        }
        .filter(|stored| stored.product.is_some());
        let type_changed = previous.as_ref().is_none_or(|p| {
            p.product.as_deref() != Some(guess.product.name.as_str())
                || p.generic.as_deref() != Some(guess.generic.name.as_str())
        });
        let moved =
            previous.as_ref().is_none_or(|p| (p.confidence - guess.product.confidence).abs() >= CONFIDENCE_STEP);
        if type_changed || moved {
            self.conn.execute(
                "UPDATE inventory_devices SET device_type = ?2, type_confidence = ?3, type_vendor = ?4,
                 type_vendor_confidence = ?5, generic_type = ?6, generic_confidence = ?7 WHERE mac = ?1",
                params![
                    mac.to_string(),
                    guess.product.name,
                    guess.product.confidence,
                    guess.vendor.name,
                    guess.vendor.confidence,
                    guess.generic.name,
                    guess.generic.confidence
                ],
            )?;
        }
        if type_changed {
            let was = previous.as_ref().and_then(|p| p.product.clone());
            ledger::append(
                &self.conn,
                ACTOR_FINGERPRINT,
                Some(mac),
                "type_changed",
                &format!(
                    "{} -> {} ({:.0}%), {} ({:.0}%)",
                    was.as_deref().unwrap_or("-"),
                    guess.product.name,
                    100.0 * guess.product.confidence,
                    guess.generic.name,
                    100.0 * guess.generic.confidence
                ),
            )?;
            changes.push(InventoryChange::TypeChanged {
                mac,
                device_type: guess.product.name.clone(),
                confidence: guess.product.confidence,
                generic_type: guess.generic.name.clone(),
                previous: was,
            });
        }
        // Remember what is stored, so small moves accumulate against the stored value.
        let stored = match previous {
            Some(previous) if !type_changed && !moved => previous,
            _ => Stored {
                product: Some(guess.product.name),
                generic: Some(guess.generic.name),
                confidence: guess.product.confidence,
            },
        };
        if let Some(tracked) = self.tracked.get_mut(&mac) {
            tracked.guess = Some(stored);
        }
        Ok(())
    }
}

/// The guess as last written to the store: what a new guess is compared with.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Stored {
    product: Option<String>,
    generic: Option<String>,
    confidence: f64,
}
