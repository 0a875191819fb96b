//! The device taxonomy: product (the model's class) → vendor → generic type (`ip-camera`,
//! `smart-plug`, ...), read from `gateway/models/taxonomy.toml` (compiled in) or a file given to
//! `iotgw fingerprint train`. Policy classes match any level, so the names a policy may use are
//! the ones a model with this taxonomy can produce (`producible`), plus `unknown`.
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::LazyLock,
};

use serde::{Deserialize, Serialize};

/// The taxonomy the shipped model was trained with.
pub const SHIPPED_TAXONOMY: &str = include_str!("../../models/taxonomy.toml");
/// What the model answers at a level when the device is unlike every known one there.
pub const UNKNOWN: &str = "unknown";

/// The three levels of a guess, most specific first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Product,
    Vendor,
    Generic,
}

impl Level {
    pub const ALL: [Level; 3] = [Level::Product, Level::Vendor, Level::Generic];

    pub fn index(self) -> usize {
        self as usize
    }
}

/// Where one product sits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    pub vendor: String,
    /// Generic type, one of `Taxonomy::generic_types`.
    #[serde(rename = "type")]
    pub generic: String,
}

/// Product → vendor → generic type.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Taxonomy {
    /// Every generic type a policy may name, produced by the model or not.
    pub generic_types: Vec<String>,
    pub products: BTreeMap<String, Product>,
}

/// Why a taxonomy file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaxonomyError {
    #[error("taxonomy {origin} is not valid: {source}")]
    Toml { origin: String, source: Box<toml::de::Error> },
    #[error("taxonomy {origin}: {reason}")]
    Invalid { origin: String, reason: String },
}

static SHIPPED: LazyLock<Taxonomy> = LazyLock::new(|| {
    Taxonomy::parse(SHIPPED_TAXONOMY, "shipped with iotgw").expect("the shipped taxonomy is checked by tests")
});

impl Taxonomy {
    /// The taxonomy compiled into this binary.
    pub fn shipped() -> &'static Taxonomy {
        &SHIPPED
    }

    /// Reads and checks a taxonomy: every product has a vendor and a listed generic type, and
    /// no name at any level is `unknown`.
    pub fn parse(text: &str, origin: &str) -> Result<Self, TaxonomyError> {
        let taxonomy: Taxonomy = toml::from_str(text)
            .map_err(|source| TaxonomyError::Toml { origin: origin.to_owned(), source: Box::new(source) })?;
        let invalid = |reason: String| TaxonomyError::Invalid { origin: origin.to_owned(), reason };
        let generic: BTreeSet<&str> = taxonomy.generic_types.iter().map(String::as_str).collect();
        for (name, product) in &taxonomy.products {
            for value in [name, &product.vendor, &product.generic] {
                if value.trim().is_empty() || value.eq_ignore_ascii_case(UNKNOWN) {
                    return Err(invalid(format!("product {name:?}: {value:?} is not a usable name")));
                }
            }
            if !generic.contains(product.generic.as_str()) {
                return Err(invalid(format!(
                    "product {name:?} has type {:?}, which is not in generic_types",
                    product.generic
                )));
            }
        }
        if generic.iter().any(|g| g.eq_ignore_ascii_case(UNKNOWN)) {
            return Err(invalid(format!("{UNKNOWN:?} is not a generic type")));
        }
        Ok(taxonomy)
    }

    /// The name of `product`'s group at `level` (`None` for a product the taxonomy lacks).
    pub fn group<'a>(&'a self, product: &'a str, level: Level) -> Option<&'a str> {
        match level {
            Level::Product => self.products.contains_key(product).then_some(product),
            Level::Vendor => self.products.get(product).map(|p| p.vendor.as_str()),
            Level::Generic => self.products.get(product).map(|p| p.generic.as_str()),
        }
    }

    /// Every name a model over `products` can answer, lower-case: the products, their vendors
    /// and generic types, and `unknown`.
    pub fn producible<'a>(&self, products: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = BTreeSet::from([UNKNOWN.to_owned()]);
        for product in products {
            for level in Level::ALL {
                if let Some(name) = self.group(product, level) {
                    names.insert(name.to_ascii_lowercase());
                }
            }
        }
        names
    }

    /// Names the shipped model can produce (its classes are the shipped taxonomy's products,
    /// checked by a test).
    pub fn shipped_producible() -> &'static BTreeSet<String> {
        static NAMES: LazyLock<BTreeSet<String>> = LazyLock::new(|| {
            let taxonomy = Taxonomy::shipped();
            taxonomy.producible(taxonomy.products.keys().map(String::as_str))
        });
        &NAMES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_taxonomy_parses_and_names_every_level() {
        let taxonomy = Taxonomy::shipped();
        assert_eq!(taxonomy.products.len(), 27);
        assert_eq!(taxonomy.group("EdimaxPlug1101W", Level::Vendor), Some("Edimax"));
        assert_eq!(taxonomy.group("EdimaxPlug1101W", Level::Generic), Some("smart-plug"));
        assert_eq!(taxonomy.group("Toaster", Level::Generic), None);
        let names = Taxonomy::shipped_producible();
        for name in ["ip-camera", "smart-plug", "hub", "d-link", "edimaxplug2101w", "unknown"] {
            assert!(names.contains(name), "{name}");
        }
        assert!(!names.contains("tv"), "no product of the shipped model is a TV");
    }

    #[test]
    fn taxonomy_with_an_unlisted_type_or_unknown_name_is_refused() {
        let unlisted = "generic_types = [\"hub\"]\n[products]\nCam = { vendor = \"A\", type = \"ip-camera\" }\n";
        assert!(matches!(Taxonomy::parse(unlisted, "test"), Err(TaxonomyError::Invalid { .. })));
        let unknown = "generic_types = [\"hub\"]\n[products]\nunknown = { vendor = \"A\", type = \"hub\" }\n";
        assert!(matches!(Taxonomy::parse(unknown, "test"), Err(TaxonomyError::Invalid { .. })));
        assert!(matches!(Taxonomy::parse("products = 1", "test"), Err(TaxonomyError::Toml { .. })));
    }
}
