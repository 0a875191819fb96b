//! A random forest classifier (Breiman 2001): bagged CART trees split on Gini impurity, each
//! split choosing among a random subset of features. Reads feature vectors and labels; the
//! trained forest is plain serde data so it can ship as JSON. Deterministic for a given seed.
use rand::{Rng as _, SeedableRng as _, rngs::StdRng, seq::SliceRandom as _};
use serde::{Deserialize, Serialize};

/// How a forest is grown.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ForestParams {
    pub trees: usize,
    pub max_depth: usize,
    /// Nodes with fewer samples become leaves.
    pub min_samples_split: usize,
    /// Features tried per split; 0 = the square root of the dimension.
    pub features_per_split: usize,
    pub seed: u64,
}

/// Defaults that reach the accuracy recorded in bench/fingerprint/RESULTS.md.
pub const DEFAULT_PARAMS: ForestParams =
    ForestParams { trees: 150, max_depth: 24, min_samples_split: 2, features_per_split: 0, seed: 0x10_7E57 };

/// One tree node, stored flat: children are indexes into `Tree::nodes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Node {
    /// Go left when `vector[feature] <= threshold`.
    Split { feature: u16, threshold: f64, left: u32, right: u32 },
    /// Class distribution of the training samples that reached the leaf, as (class, share).
    Leaf { classes: Vec<(u16, f32)> },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Forest {
    pub classes: usize,
    pub dimensions: usize,
    pub trees: Vec<Tree>,
}

/// Why a forest cannot be trained.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrainError {
    #[error("no training samples")]
    Empty,
    #[error("sample {index} has {found} features, expected {expected}")]
    Dimensions { index: usize, found: usize, expected: usize },
    #[error("label {label} of sample {index} is not below the class count {classes}")]
    Label { index: usize, label: usize, classes: usize },
}

impl Forest {
    /// Trains on `samples` (equal-length vectors) labelled `labels` (class indexes).
    pub fn train(
        samples: &[Vec<f64>],
        labels: &[usize],
        classes: usize,
        params: &ForestParams,
    ) -> Result<Self, TrainError> {
        let dimensions = samples.first().ok_or(TrainError::Empty)?.len();
        for (index, sample) in samples.iter().enumerate() {
            if sample.len() != dimensions {
                return Err(TrainError::Dimensions { index, found: sample.len(), expected: dimensions });
            }
        }
        for (index, &label) in labels.iter().enumerate() {
            if label >= classes {
                return Err(TrainError::Label { index, label, classes });
            }
        }
        let tries = if params.features_per_split == 0 {
            ((dimensions as f64).sqrt().ceil() as usize).max(1)
        } else {
            params.features_per_split.min(dimensions)
        };
        let mut rng = StdRng::seed_from_u64(params.seed);
        let trees = (0..params.trees)
            .map(|_| {
                let bootstrap: Vec<usize> = (0..samples.len()).map(|_| rng.gen_range(0..samples.len())).collect();
                let mut builder =
                    TreeBuilder { samples, labels, classes, params, tries, rng: &mut rng, nodes: Vec::new() };
                builder.grow(bootstrap, 0);
                Tree { nodes: builder.nodes }
            })
            .collect();
        Ok(Self { classes, dimensions, trees })
    }

    /// Class probabilities: the mean of the leaves' distributions. A vector of the wrong
    /// length (or with NaN) still gets an answer: missing features read as 0.
    pub fn predict_proba(&self, vector: &[f64]) -> Vec<f64> {
        let mut votes = vec![0.0; self.classes];
        for tree in &self.trees {
            if let Some(classes) = tree.leaf(vector) {
                for &(class, share) in classes {
                    if let Some(vote) = votes.get_mut(usize::from(class)) {
                        *vote += f64::from(share);
                    }
                }
            }
        }
        let total: f64 = votes.iter().sum();
        if total > 0.0 {
            votes.iter_mut().for_each(|vote| *vote /= total);
        }
        votes
    }

    /// The most probable class and its probability.
    pub fn predict(&self, vector: &[f64]) -> Option<(usize, f64)> {
        self.predict_proba(vector).into_iter().enumerate().filter(|(_, p)| *p > 0.0).max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

impl Tree {
    fn leaf(&self, vector: &[f64]) -> Option<&[(u16, f32)]> {
        let mut at = 0usize;
        // A well-formed tree reaches a leaf in at most `nodes.len()` steps; a corrupted model
        // file with a cycle must not loop forever.
        for _ in 0..=self.nodes.len() {
            match self.nodes.get(at)? {
                Node::Leaf { classes } => return Some(classes),
                Node::Split { feature, threshold, left, right } => {
                    let value = vector.get(usize::from(*feature)).copied().unwrap_or(0.0);
                    at = if value <= *threshold { *left } else { *right } as usize;
                }
            }
        }
        None
    }
}

struct TreeBuilder<'a> {
    samples: &'a [Vec<f64>],
    labels: &'a [usize],
    classes: usize,
    params: &'a ForestParams,
    tries: usize,
    rng: &'a mut StdRng,
    nodes: Vec<Node>,
}

fn gini(counts: &[usize], total: usize) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let total = total as f64;
    1.0 - counts.iter().map(|&c| (c as f64 / total).powi(2)).sum::<f64>()
}

impl TreeBuilder<'_> {
    fn counts(&self, indexes: &[usize]) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &i in indexes {
            counts[self.labels[i]] += 1;
        }
        counts
    }

    fn leaf(&mut self, indexes: &[usize]) -> u32 {
        let counts = self.counts(indexes);
        let total = indexes.len().max(1) as f32;
        let classes = counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(class, &c)| (class as u16, c as f32 / total))
            .collect();
        self.nodes.push(Node::Leaf { classes });
        (self.nodes.len() - 1) as u32
    }

    /// Grows the subtree for `indexes` and returns its root's index.
    fn grow(&mut self, indexes: Vec<usize>, depth: usize) -> u32 {
        let counts = self.counts(&indexes);
        let pure = counts.iter().filter(|c| **c > 0).count() <= 1;
        if pure || depth >= self.params.max_depth || indexes.len() < self.params.min_samples_split {
            return self.leaf(&indexes);
        }
        let Some((feature, threshold)) = self.best_split(&indexes, &counts) else {
            return self.leaf(&indexes);
        };
        let (left, right): (Vec<usize>, Vec<usize>) =
            indexes.iter().partition(|&&i| self.samples[i][feature] <= threshold);
        // Reserve this node's slot, then fill it once the children have indexes.
        let at = self.nodes.len();
        self.nodes.push(Node::Leaf { classes: Vec::new() });
        let left = self.grow(left, depth + 1);
        let right = self.grow(right, depth + 1);
        self.nodes[at] = Node::Split { feature: feature as u16, threshold, left, right };
        at as u32
    }

    fn best_split(&mut self, indexes: &[usize], counts: &[usize]) -> Option<(usize, f64)> {
        let dimensions = self.samples[0].len();
        let parent = gini(counts, indexes.len());
        let mut features: Vec<usize> = (0..dimensions).collect();
        features.shuffle(self.rng);
        let mut best: Option<(f64, usize, f64)> = None;
        let mut tried = 0;
        for feature in features {
            // Like common implementations, keep drawing past constant features until `tries`
            // informative ones were examined.
            if tried >= self.tries && best.is_some() {
                break;
            }
            let mut values: Vec<(f64, usize)> =
                indexes.iter().map(|&i| (self.samples[i][feature], self.labels[i])).collect();
            values.sort_by(|a, b| a.0.total_cmp(&b.0));
            if values.first().map(|v| v.0) == values.last().map(|v| v.0) {
                continue;
            }
            tried += 1;
            let mut left = vec![0usize; self.classes];
            let mut right = counts.to_vec();
            for split in 1..values.len() {
                let (value, label) = values[split - 1];
                left[label] += 1;
                right[label] -= 1;
                if value == values[split].0 {
                    continue;
                }
                let n = values.len() as f64;
                let impurity = (split as f64 / n) * gini(&left, split)
                    + ((n - split as f64) / n) * gini(&right, values.len() - split);
                let gain = parent - impurity;
                if best.is_none_or(|(g, _, _)| gain > g) {
                    best = Some((gain, feature, (value + values[split].0) / 2.0));
                }
            }
        }
        best.filter(|(gain, _, _)| *gain > 0.0).map(|(_, feature, threshold)| (feature, threshold))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two noisy clusters per class along different features.
    fn toy() -> (Vec<Vec<f64>>, Vec<usize>) {
        let mut rng = StdRng::seed_from_u64(1);
        let mut samples = Vec::new();
        let mut labels = Vec::new();
        for i in 0..300 {
            let class = i % 3;
            let mut v: Vec<f64> = (0..6).map(|_| rng.gen_range(0.0..1.0)).collect();
            v[class] += 2.0;
            samples.push(v);
            labels.push(class);
        }
        (samples, labels)
    }

    #[test]
    fn forest_separates_separable_classes() {
        let (samples, labels) = toy();
        let params = ForestParams { trees: 20, ..DEFAULT_PARAMS };
        let forest = Forest::train(&samples[..200], &labels[..200], 3, &params).unwrap();
        let correct = (200..300).filter(|&i| forest.predict(&samples[i]).map(|p| p.0) == Some(labels[i])).count();
        assert!(correct >= 95, "{correct}/100");
        let (_, confidence) = forest.predict(&[3.0, 0.5, 0.5, 0.5, 0.5, 0.5]).unwrap();
        assert!(confidence > 0.8);
    }

    #[test]
    fn forest_round_trips_through_json_and_is_deterministic() {
        let (samples, labels) = toy();
        let params = ForestParams { trees: 5, ..DEFAULT_PARAMS };
        let a = Forest::train(&samples, &labels, 3, &params).unwrap();
        let b = Forest::train(&samples, &labels, 3, &params).unwrap();
        assert_eq!(a, b);
        let json = serde_json::to_string(&a).unwrap();
        let back: Forest = serde_json::from_str(&json).unwrap();
        assert_eq!(back.predict(&samples[0]), a.predict(&samples[0]));
    }

    #[test]
    fn forest_refuses_bad_training_input_and_survives_bad_vectors() {
        assert_eq!(Forest::train(&[], &[], 2, &DEFAULT_PARAMS), Err(TrainError::Empty));
        assert!(matches!(
            Forest::train(&[vec![1.0], vec![1.0, 2.0]], &[0, 1], 2, &DEFAULT_PARAMS),
            Err(TrainError::Dimensions { .. })
        ));
        assert!(matches!(Forest::train(&[vec![1.0]], &[5], 2, &DEFAULT_PARAMS), Err(TrainError::Label { .. })));
        let (samples, labels) = toy();
        let forest = Forest::train(&samples, &labels, 3, &ForestParams { trees: 3, ..DEFAULT_PARAMS }).unwrap();
        let _ = forest.predict(&[]);
        let _ = forest.predict(&[f64::NAN; 6]);
        // A corrupted tree with a cycle gives no vote instead of hanging.
        let looping = Tree { nodes: vec![Node::Split { feature: 0, threshold: 0.0, left: 0, right: 0 }] };
        assert_eq!(looping.leaf(&[0.0]), None);
    }
}
