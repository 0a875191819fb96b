//! Vendor names from the IEEE registration authority's public listings (MA-L, MA-M, MA-S,
//! IAB), as Debian's `ieee-data` package installs them (`/usr/share/ieee-data/*.csv`).
//! Reads those files once at start; writes nothing. Without them every vendor is unknown.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use crate::device::Mac;

/// Where Debian's `ieee-data` puts the registry.
pub const DEFAULT_IEEE_DATA_DIR: &str = "/usr/share/ieee-data";
/// Registry files and the prefix length (bits) of their assignments, most specific first.
const REGISTRIES: [(&str, u32); 4] = [("oui36.csv", 36), ("iab.csv", 36), ("mam.csv", 28), ("oui.csv", 24)];

/// Why a registry file cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VendorError {
    #[error("cannot read the IEEE registry {path}: {source}")]
    Read { path: PathBuf, source: csv::Error },
    #[error("no IEEE registry file (oui.csv, mam.csv, oui36.csv, iab.csv) in {dir}")]
    Missing { dir: PathBuf },
}

/// MAC prefix → organisation name.
#[derive(Clone, Debug, Default)]
pub struct Vendors {
    /// Keyed by (prefix length in bits, prefix value).
    prefixes: HashMap<(u32, u64), String>,
}

impl Vendors {
    /// No registry: every lookup answers `None`.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Loads every registry file present in `dir`; fails if none is.
    pub fn load(dir: &Path) -> Result<Self, VendorError> {
        let mut vendors = Self::default();
        let mut found = false;
        for (file, bits) in REGISTRIES {
            let path = dir.join(file);
            if !path.is_file() {
                continue;
            }
            found = true;
            let read_error = |source| VendorError::Read { path: path.clone(), source };
            let mut reader = csv::Reader::from_path(&path).map_err(read_error)?;
            for record in reader.records() {
                let record = record.map_err(read_error)?;
                // Columns: Registry, Assignment (hex, 6/7/9 digits), Organization Name, Address.
                let (Some(assignment), Some(name)) = (record.get(1), record.get(2)) else { continue };
                let Ok(prefix) = u64::from_str_radix(assignment.trim(), 16) else { continue };
                vendors.prefixes.insert((bits, prefix), name.trim().to_owned());
            }
        }
        if !found {
            return Err(VendorError::Missing { dir: dir.to_owned() });
        }
        Ok(vendors)
    }

    /// The registry at `DEFAULT_IEEE_DATA_DIR`, or an empty one (with a warning) if missing.
    pub fn load_default() -> Self {
        match Self::load(Path::new(DEFAULT_IEEE_DATA_DIR)) {
            Ok(vendors) => vendors,
            Err(error) => {
                tracing::warn!(%error, "vendor names unavailable (install Debian's ieee-data); every vendor will be unknown");
                Self::empty()
            }
        }
    }

    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// The organisation the MAC's prefix is assigned to. Locally administered MACs (random or
    /// set by software) have none.
    pub fn lookup(&self, mac: &Mac) -> Option<&str> {
        if mac.is_locally_administered() {
            return None;
        }
        let value = mac.0.iter().fold(0u64, |acc, byte| acc << 8 | u64::from(*byte));
        [36u32, 28, 24]
            .into_iter()
            .find_map(|bits| self.prefixes.get(&(bits, value >> (48 - bits))))
            .map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_registry(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("oui.csv"),
            "Registry,Assignment,Organization Name,Organization Address\n\
             MA-L,001788,Philips Lighting BV,\"High Tech Campus 45, Eindhoven NL\"\n\
             MA-L,70B3D5,IEEE Registration Authority,Piscataway US\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("oui36.csv"),
            "Registry,Assignment,Organization Name,Organization Address\nMA-S,70B3D5123,\"Small Maker, Inc.\",Somewhere\n",
        )
        .unwrap();
    }

    #[test]
    fn vendor_lookup_prefers_the_longest_assignment() {
        let dir = iotgw_test_support::services::scratch("vendor");
        write_registry(&dir);
        let vendors = Vendors::load(&dir).unwrap();
        assert_eq!(vendors.lookup(&"00:17:88:24:76:ff".parse().unwrap()), Some("Philips Lighting BV"));
        assert_eq!(vendors.lookup(&"70:b3:d5:12:3f:00".parse().unwrap()), Some("Small Maker, Inc."));
        assert_eq!(vendors.lookup(&"70:b3:d5:99:00:00".parse().unwrap()), Some("IEEE Registration Authority"));
        assert_eq!(vendors.lookup(&"02:17:88:24:76:ff".parse().unwrap()), None, "locally administered");
    }

    #[test]
    fn vendor_registry_missing_is_a_clear_error() {
        let error = Vendors::load(Path::new("/nonexistent/ieee-data")).unwrap_err();
        assert!(error.to_string().contains("no IEEE registry file"));
        assert_eq!(Vendors::empty().lookup(&"00:17:88:24:76:ff".parse().unwrap()), None);
    }

    #[test]
    fn vendor_debian_registry_knows_the_dataset_vendors() {
        let dir = Path::new(DEFAULT_IEEE_DATA_DIR);
        assert!(
            dir.join("oui.csv").is_file(),
            "{DEFAULT_IEEE_DATA_DIR} is missing: Debian's ieee-data (installed by `cargo xtask setup`)"
        );
        let vendors = Vendors::load(dir).unwrap();
        assert!(vendors.len() > 30_000);
        assert!(vendors.lookup(&"00:17:88:24:76:ff".parse().unwrap()).unwrap().contains("Philips"));
    }
}
