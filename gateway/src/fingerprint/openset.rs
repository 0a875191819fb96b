//! Open-set recognition: when is a device none of the known types. Two scores per taxonomy
//! level, each with a threshold chosen on held-out folds of the training data
//! (`model::fit_open_set`), never on the captures an evaluation reports:
//!
//! - a calibrated confidence: the forest's vote share for the best group at that level,
//!   mapped to the probability of being right by isotonic regression on out-of-fold votes;
//! - a novelty: the share of the device's own names (DHCP options and vendor class, host name,
//!   DNS domains, JA3, SYN options) that the training captures of that group never showed. A
//!   smart TV asking for netflix.com is novel to every plug, however the forest votes.
//!
//! Pure data and arithmetic; reads nothing, writes nothing.
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A device's names, by kind (`domain`, `hostname`, ...). What the open-set gate compares.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tokens(pub BTreeMap<String, BTreeSet<String>>);

impl Tokens {
    pub fn insert(&mut self, kind: &str, value: impl Into<String>) {
        self.0.entry(kind.to_owned()).or_default().insert(value.into());
    }

    pub fn extend(&mut self, other: &Tokens) {
        for (kind, values) in &other.0 {
            self.0.entry(kind.clone()).or_default().extend(values.iter().cloned());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.values().all(BTreeSet::is_empty)
    }

    /// Share of this device's names that none of `known` showed: per kind, the fraction of
    /// values unseen, averaged over the kinds the device showed (so twenty DNS names do not
    /// outweigh one DHCP fingerprint). `None` for a device that showed no names at all (a
    /// capture that starts mid-connection, a bridge that only answers): whether such a device
    /// passes on its confidence alone is part of the gate (`Gate::nameless`).
    pub fn novelty_against(&self, known: &[&Tokens]) -> Option<f64> {
        let mut sum = 0.0;
        let mut kinds = 0usize;
        for (kind, values) in self.0.iter().filter(|(_, v)| !v.is_empty()) {
            let unseen = values
                .iter()
                .filter(|value| !known.iter().any(|k| k.0.get(kind).is_some_and(|set| set.contains(*value))))
                .count();
            sum += unseen as f64 / values.len() as f64;
            kinds += 1;
        }
        (kinds > 0).then(|| sum / kinds as f64)
    }
}

/// A monotone map from vote share to the probability that the vote is right (isotonic
/// regression, pool-adjacent-violators). Empty = identity.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// (highest vote share of the step, probability), shares ascending.
    pub steps: Vec<(f64, f64)>,
}

impl Calibration {
    /// Fits on (vote share, was the vote right) pairs.
    pub fn fit(pairs: &[(f64, bool)]) -> Self {
        let mut sorted: Vec<(f64, bool)> = pairs.iter().copied().filter(|(s, _)| s.is_finite()).collect();
        sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Blocks of (highest share, sum of outcomes, count), merged while not increasing.
        let mut blocks: Vec<(f64, f64, f64)> = Vec::new();
        for (share, right) in sorted {
            blocks.push((share, if right { 1.0 } else { 0.0 }, 1.0));
            while blocks.len() >= 2 {
                let (a, b) = (blocks[blocks.len() - 2], blocks[blocks.len() - 1]);
                if a.1 / a.2 < b.1 / b.2 {
                    break;
                }
                blocks.truncate(blocks.len() - 2);
                blocks.push((b.0, a.1 + b.1, a.2 + b.2));
            }
        }
        Self { steps: blocks.into_iter().map(|(share, sum, count)| (share, sum / count)).collect() }
    }

    /// The calibrated probability of a vote share: the step it falls in (the last step above
    /// the highest share seen).
    pub fn probability(&self, share: f64) -> f64 {
        if self.steps.is_empty() {
            return share;
        }
        self.steps.iter().find(|(upper, _)| share <= *upper).or(self.steps.last()).map_or(share, |(_, p)| *p)
    }
}

/// When a level's best group is kept rather than answered `unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    pub min_confidence: f64,
    pub max_novelty: f64,
    /// Whether a device that showed no names passes on its confidence alone.
    pub nameless: bool,
}

impl Gate {
    /// Keeps nothing out: the closed-set answer.
    pub const OPEN: Gate = Gate { min_confidence: 0.0, max_novelty: 1.0, nameless: true };

    pub fn admits(&self, confidence: f64, novelty: Option<f64>) -> bool {
        confidence >= self.min_confidence && novelty.map_or(self.nameless, |novelty| novelty <= self.max_novelty)
    }
}

/// One held-out answer at one level, used to choose a gate: the best group, its calibrated
/// confidence and novelty, and whether it was the truth (`None` when the truth is a group the
/// training data lacked, so `unknown` is the right answer).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeldOut {
    pub confidence: f64,
    pub novelty: Option<f64>,
    pub right: Option<bool>,
}

/// Rates of a gate on held-out answers: known ones kept with the right name, and unseen ones
/// answered `unknown`.
pub fn rates(gate: &Gate, answers: &[HeldOut]) -> (f64, f64) {
    let (mut kept, mut known, mut refused, mut unseen) = (0usize, 0usize, 0usize, 0usize);
    for answer in answers {
        let admitted = gate.admits(answer.confidence, answer.novelty);
        match answer.right {
            Some(right) => {
                known += 1;
                kept += usize::from(admitted && right);
            }
            None => {
                unseen += 1;
                refused += usize::from(!admitted);
            }
        }
    }
    (kept as f64 / known.max(1) as f64, refused as f64 / unseen.max(1) as f64)
}

/// The gate with the best mean of the two rates on `answers` (ties: more known kept, then the
/// laxer gate). Candidate thresholds are a 0.05 grid.
pub fn choose_gate(answers: &[HeldOut]) -> Gate {
    let grid: Vec<f64> = (0..=20).map(|i| f64::from(i) * 0.05).collect();
    let mut best = (Gate::OPEN, f64::MIN, f64::MIN);
    for (&min_confidence, nameless) in grid.iter().flat_map(|c| [(c, true), (c, false)]) {
        for &max_novelty in grid.iter().rev() {
            let gate = Gate { min_confidence, max_novelty, nameless };
            let (kept, refused) = rates(&gate, answers);
            let score = (kept + refused) / 2.0;
            if score > best.1 + 1e-9 || ((score - best.1).abs() <= 1e-9 && kept > best.2 + 1e-9) {
                best = (gate, score, kept);
            }
        }
    }
    best.0
}

/// Everything the open-set answer needs, stored in the model file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpenSet {
    /// Per class (model class index): the names its training captures showed.
    pub vocabulary: Vec<Tokens>,
    /// Per level (`taxonomy::Level::index`).
    pub calibration: [Calibration; 3],
    pub gates: [Gate; 3],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(pairs: &[(&str, &str)]) -> Tokens {
        let mut tokens = Tokens::default();
        for (kind, value) in pairs {
            tokens.insert(kind, *value);
        }
        tokens
    }

    #[test]
    fn novelty_averages_unseen_shares_over_kinds() {
        let known = tokens(&[("domain", "wemo.com"), ("hostname", "wemo")]);
        let same = tokens(&[("domain", "wemo.com"), ("hostname", "wemo")]);
        assert_eq!(same.novelty_against(&[&known]), Some(0.0));
        let half = tokens(&[("domain", "wemo.com"), ("domain", "netflix.com"), ("hostname", "wemo")]);
        assert_eq!(half.novelty_against(&[&known]), Some(0.25));
        let tv = tokens(&[("domain", "netflix.com")]);
        assert_eq!(tv.novelty_against(&[&known]), Some(1.0));
        assert_eq!(Tokens::default().novelty_against(&[&known]), None, "no names: nothing to compare");
    }

    #[test]
    fn calibration_is_monotone_and_follows_the_outcomes() {
        let mut pairs = Vec::new();
        for i in 0..100 {
            let share = f64::from(i) / 100.0;
            // Right above 0.5 nine times in ten, below it one time in three.
            let right = if share > 0.5 { i % 10 != 0 } else { i % 3 == 0 };
            pairs.push((share, right));
        }
        let calibration = Calibration::fit(&pairs);
        let low = calibration.probability(0.2);
        let high = calibration.probability(0.9);
        assert!(low < 0.5 && high > 0.8, "{low} {high}");
        let mut last = 0.0;
        for (_, p) in &calibration.steps {
            assert!(*p >= last);
            last = *p;
        }
        assert_eq!(Calibration::default().probability(0.3), 0.3);
    }

    #[test]
    fn chosen_gate_separates_known_from_unseen() {
        let known = HeldOut { confidence: 0.9, novelty: Some(0.1), right: Some(true) };
        let unseen = HeldOut { confidence: 0.8, novelty: Some(0.9), right: None };
        let nameless_known = HeldOut { confidence: 0.95, novelty: None, right: Some(true) };
        let nameless_unseen = HeldOut { confidence: 0.5, novelty: None, right: None };
        let answers = [known, known, unseen, nameless_known, nameless_unseen];
        let gate = choose_gate(&answers);
        assert!(gate.admits(0.9, Some(0.1)) && !gate.admits(0.8, Some(0.9)), "{gate:?}");
        assert!(gate.admits(0.95, None) && !gate.admits(0.5, None), "{gate:?}");
        assert_eq!(rates(&gate, &answers), (1.0, 1.0));
        assert_eq!(rates(&Gate::OPEN, &[known, unseen]), (1.0, 0.0));
    }
}
