//! The device-type model as the gateway runs it: the random forest over `DeviceFeatures`
//! vectors, the product names and their taxonomy, and the open-set gates, as shipped in the
//! binary (`gateway/models/device-types.json`) or retrained (`training`). Reads model files;
//! answers a guess at three levels (product, vendor, generic type), each `unknown` when the
//! device is unlike every known one there.
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{
    features::{DIMENSIONS, DeviceFeatures},
    forest::{Forest, ForestParams, TrainError},
    openset::{OpenSet, Tokens},
    taxonomy::{Level, Taxonomy, TaxonomyError, UNKNOWN},
};
use crate::datapath::replay::ReplayError;

/// The model that ships with iotgw, trained on every capture of the IoT Sentinel dataset
/// present at build time (see bench/fingerprint/RESULTS.md).
pub const SHIPPED_MODEL: &str = include_str!("../../models/device-types.json");
/// Version of the model file layout; bumped when `Model` or the feature layout changes
/// (3: the `ssdp` feature group, registrable domains by the public suffix list).
pub const MODEL_FORMAT: u32 = 3;
/// Below this probability a guess is still reported, but flagged as weak by callers.
pub const CONFIDENT: f64 = 0.5;

/// Why a model or a labelled dataset cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("model {origin} is not valid JSON of a model: {source}")]
    Json { origin: String, source: serde_json::Error },
    /// The model was trained on another feature layout or file format.
    #[error(
        "model {origin} has format {format} and {dimensions} features; this build needs format {MODEL_FORMAT} with {DIMENSIONS}"
    )]
    Incompatible { origin: String, format: u32, dimensions: usize },
    /// A class the model's taxonomy does not place, or open-set data of the wrong size.
    #[error("model {origin} is inconsistent: {reason}")]
    Inconsistent { origin: String, reason: String },
    #[error("labelled folder {path}: {reason}")]
    Dataset { path: PathBuf, reason: String },
    #[error(transparent)]
    Taxonomy(#[from] TaxonomyError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error(transparent)]
    Train(#[from] TrainError),
}

/// What a model file holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Model {
    pub format: u32,
    pub dimensions: usize,
    /// Product names, indexed by class.
    pub classes: Vec<String>,
    /// How many captures of each product it was trained on.
    pub trained_on: BTreeMap<String, usize>,
    pub params: ForestParams,
    pub forest: Forest,
    /// Places every class: vendor and generic type.
    pub taxonomy: Taxonomy,
    pub open_set: OpenSet,
}

/// One level of a guess: a product, vendor or generic-type name, or `unknown`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TypeLevel {
    pub name: String,
    /// For a name: the calibrated probability that it is right. For `unknown`: how sure the
    /// model is that the device is none of the known ones (the larger of the novelty and one
    /// minus the best name's probability).
    pub confidence: f64,
}

impl TypeLevel {
    pub fn is_unknown(&self) -> bool {
        self.name == UNKNOWN
    }
}

/// A device-type guess at the three levels of the taxonomy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Guess {
    pub product: TypeLevel,
    pub vendor: TypeLevel,
    pub generic: TypeLevel,
    /// Share of the device's names (DHCP, host name, domains, JA3, SYN) the best product's
    /// training captures never showed: 0 = all seen, 1 = none; `None` when it showed no names.
    pub novelty: Option<f64>,
}

impl Guess {
    pub fn level(&self, level: Level) -> &TypeLevel {
        match level {
            Level::Product => &self.product,
            Level::Vendor => &self.vendor,
            Level::Generic => &self.generic,
        }
    }
}

/// The best group at one level before the open-set gate: its name, vote share and novelty.
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub name: String,
    pub share: f64,
    pub novelty: Option<f64>,
}

impl Model {
    /// Vote shares summed per group of `level` (per product, vendor or generic type).
    fn group_shares(&self, proba: &[f64], level: Level) -> BTreeMap<&str, f64> {
        let mut shares: BTreeMap<&str, f64> = BTreeMap::new();
        for (class, share) in self.classes.iter().zip(proba) {
            let group = self.taxonomy.group(class, level).unwrap_or(class);
            *shares.entry(group).or_default() += share;
        }
        shares
    }

    /// Novelty of `tokens` against the training captures of every class in `group` at `level`.
    fn novelty(&self, tokens: &Tokens, group: &str, level: Level) -> Option<f64> {
        let known: Vec<&Tokens> = self
            .classes
            .iter()
            .zip(&self.open_set.vocabulary)
            .filter(|(class, _)| self.taxonomy.group(class, level).unwrap_or(class) == group)
            .map(|(_, vocabulary)| vocabulary)
            .collect();
        tokens.novelty_against(&known)
    }

    /// The best group at each level, before calibration and gates.
    pub fn candidates(&self, vector: &[f64], tokens: &Tokens) -> [Candidate; 3] {
        self.candidates_of(&self.forest.predict_proba(vector), tokens)
    }

    fn candidates_of(&self, proba: &[f64], tokens: &Tokens) -> [Candidate; 3] {
        Level::ALL.map(|level| {
            let shares = self.group_shares(proba, level);
            let (name, share) =
                shares.into_iter().max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(a.0))).unwrap_or((UNKNOWN, 0.0));
            Candidate { name: name.to_owned(), share, novelty: self.novelty(tokens, name, level) }
        })
    }

    /// The open-set answer: each level's best group if its calibrated confidence and novelty
    /// pass that level's gate, else `unknown`. A kept product fixes its vendor and generic
    /// type (the levels cannot disagree).
    pub fn answer(&self, vector: &[f64], tokens: &Tokens) -> Guess {
        let proba = self.forest.predict_proba(vector);
        let candidates = self.candidates_of(&proba, tokens);
        let [product, vendor, generic] = Level::ALL.map(|level| {
            let candidate = &candidates[level.index()];
            let confidence = self.open_set.calibration[level.index()].probability(candidate.share);
            if self.open_set.gates[level.index()].admits(confidence, candidate.novelty) {
                TypeLevel { name: candidate.name.clone(), confidence }
            } else {
                let novelty = candidate.novelty.unwrap_or(0.0);
                TypeLevel { name: UNKNOWN.to_owned(), confidence: novelty.max(1.0 - confidence) }
            }
        });
        let novelty = candidates[Level::Product.index()].novelty;
        if product.is_unknown() {
            return Guess { product, vendor, generic, novelty };
        }
        let implied = |level: Level| {
            let name = self.taxonomy.group(&product.name, level).unwrap_or(&product.name);
            let share = self.group_shares(&proba, level).get(name).copied().unwrap_or(0.0);
            let confidence = self.open_set.calibration[level.index()].probability(share).max(product.confidence);
            TypeLevel { name: name.to_owned(), confidence }
        };
        Guess { vendor: implied(Level::Vendor), generic: implied(Level::Generic), product, novelty }
    }
}

/// A loaded, checked model.
#[derive(Clone, Debug)]
pub struct Classifier {
    model: Model,
}

impl Classifier {
    /// The model compiled into this binary.
    pub fn shipped() -> Result<Self, ModelError> {
        Self::from_json(SHIPPED_MODEL, "shipped with iotgw")
    }

    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let text = fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.to_owned(), source })?;
        Self::from_json(&text, &path.display().to_string())
    }

    pub fn from_json(text: &str, origin: &str) -> Result<Self, ModelError> {
        let model: Model =
            serde_json::from_str(text).map_err(|source| ModelError::Json { origin: origin.to_owned(), source })?;
        Self::from_model(model, origin)
    }

    pub fn from_model(model: Model, origin: &str) -> Result<Self, ModelError> {
        if model.format != MODEL_FORMAT
            || model.dimensions != DIMENSIONS
            || model.forest.dimensions != DIMENSIONS
            || model.forest.classes != model.classes.len()
        {
            return Err(ModelError::Incompatible {
                origin: origin.to_owned(),
                format: model.format,
                dimensions: model.dimensions,
            });
        }
        let inconsistent = |reason: String| ModelError::Inconsistent { origin: origin.to_owned(), reason };
        if let Some(class) = model.classes.iter().find(|class| !model.taxonomy.products.contains_key(*class)) {
            return Err(inconsistent(format!("class {class:?} is not in its taxonomy")));
        }
        if model.open_set.vocabulary.len() != model.classes.len() {
            return Err(inconsistent(format!(
                "{} vocabularies for {} classes",
                model.open_set.vocabulary.len(),
                model.classes.len()
            )));
        }
        Ok(Self { model })
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The guess at every level, or `None` when nothing identifying was seen yet.
    pub fn guess(&self, features: &DeviceFeatures) -> Option<Guess> {
        if features.is_empty() {
            return None;
        }
        Some(self.model.answer(&features.vector(), &features.tokens()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_model_loads_and_matches_the_shipped_taxonomy() {
        let classifier = Classifier::shipped().expect("the shipped model must load");
        assert_eq!(classifier.model().classes.len(), 27);
        let shipped = Taxonomy::shipped();
        assert_eq!(&classifier.model().taxonomy, shipped, "retrain after editing gateway/models/taxonomy.toml");
        assert!(classifier.model().classes.iter().eq(shipped.products.keys()));
    }

    #[test]
    fn model_with_another_layout_or_an_unplaced_class_is_refused() {
        let shipped = Classifier::shipped().unwrap().model().clone();
        let mut model = shipped.clone();
        model.dimensions += 1;
        assert!(matches!(Classifier::from_model(model, "test"), Err(ModelError::Incompatible { .. })));
        let mut model = shipped.clone();
        model.taxonomy.products.remove("Aria");
        assert!(matches!(Classifier::from_model(model, "test"), Err(ModelError::Inconsistent { .. })));
        let mut model = shipped;
        model.open_set.vocabulary.pop();
        assert!(matches!(Classifier::from_model(model, "test"), Err(ModelError::Inconsistent { .. })));
        assert!(matches!(Classifier::from_json("{", "test"), Err(ModelError::Json { .. })));
    }

    #[test]
    fn a_device_showing_only_names_no_product_ever_showed_is_unknown() {
        let classifier = Classifier::shipped().unwrap();
        let mut features = DeviceFeatures::new();
        features.add_sample(&super::super::sample::Parsed::Dns(super::super::dns::DnsObservation {
            queries: vec!["nrdp.nccp.netflix.com".into(), "api-global.netflix.com".into()],
            ..Default::default()
        }));
        let guess = classifier.guess(&features).expect("a guess");
        assert!(guess.product.is_unknown(), "{guess:?}");
        assert_eq!(guess.novelty, Some(1.0));
    }
}
