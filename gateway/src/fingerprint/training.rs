//! Training the device-type model from labelled captures: finding them, turning each into
//! features through `datapath::replay` (the live code path), growing the forest and fitting the
//! open-set gates on held-out folds of the training data only. Reads capture folders; writes
//! nothing (`iotgw fingerprint train` writes the model).
//!
//! Labelled captures are laid out as the IoT Sentinel dataset: one folder per device, named
//! for its type, holding `*.pcap` files and `_iotdevice-mac.txt` (the device's MAC). Folders
//! that differ only by a trailing digit (`EdimaxCam1`, `EdimaxCam2`) are two units of one
//! type and share the label `EdimaxCam`.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

use rand::{SeedableRng as _, rngs::StdRng, seq::SliceRandom as _};

use super::{
    features::{DIMENSIONS, DeviceFeatures},
    forest::{Forest, ForestParams},
    model::{MODEL_FORMAT, Model, ModelError},
    openset::{self, Calibration, Gate, HeldOut, OpenSet, Tokens},
    sample,
    taxonomy::{Level, Taxonomy},
};
use crate::{
    datapath::events::DatapathEvent,
    datapath::replay::{CaptureReplay, DEFAULT_INTERVAL, ReplayItem},
    device::Mac,
};

/// The file naming a labelled folder's device.
pub const MAC_FILE: &str = "_iotdevice-mac.txt";
/// Rounds of the open-set fit: each holds out a fifth of the products entirely (as stand-ins
/// for products never seen) and a fifth of the other products' files.
pub const OPEN_SET_ROUNDS: usize = 5;

/// One labelled capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelledCapture {
    pub path: PathBuf,
    /// Device type (the folder name, trailing unit digit removed when it has siblings).
    pub label: String,
    /// The folder: one physical unit.
    pub unit: String,
    pub mac: Mac,
}

/// Finds labelled captures under each of `dirs`: a folder holding `_iotdevice-mac.txt` is one
/// unit; any other folder is searched one level down.
pub fn discover(dirs: &[PathBuf]) -> Result<Vec<LabelledCapture>, ModelError> {
    let mut units = Vec::new();
    for dir in dirs {
        if dir.join(MAC_FILE).is_file() {
            units.push(dir.clone());
            continue;
        }
        for entry in read_dir(dir)? {
            if entry.join(MAC_FILE).is_file() {
                units.push(entry);
            }
        }
    }
    if units.is_empty() {
        let path = dirs.first().cloned().unwrap_or_default();
        return Err(ModelError::Dataset { path, reason: format!("no folder with {MAC_FILE} found") });
    }
    let names: Vec<String> = units.iter().map(|u| unit_name(u)).collect();
    let mut captures = Vec::new();
    for (unit, name) in units.iter().zip(&names) {
        let mac_path = unit.join(MAC_FILE);
        let text = fs::read_to_string(&mac_path).map_err(|source| ModelError::Io { path: mac_path.clone(), source })?;
        let mac: Mac = text.trim().parse().map_err(|e: crate::device::ParseMacError| ModelError::Dataset {
            path: mac_path.clone(),
            reason: e.to_string(),
        })?;
        let label = type_label(name, &names);
        let mut files: Vec<PathBuf> =
            read_dir(unit)?.into_iter().filter(|p| p.extension().is_some_and(|e| e == "pcap")).collect();
        files.sort();
        for path in files {
            captures.push(LabelledCapture { path, label: label.clone(), unit: name.clone(), mac });
        }
    }
    Ok(captures)
}

fn read_dir(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
    let io = |source| ModelError::Io { path: dir.to_owned(), source };
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        paths.push(entry.map_err(io)?.path());
    }
    paths.sort();
    Ok(paths)
}

fn unit_name(dir: &Path) -> String {
    dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// `EdimaxCam1` → `EdimaxCam` when another unit shares the stem (`EdimaxCam2`, or a bare
/// `WeMoSwitch` next to `WeMoSwitch2`); `iKettle2` and `TP-LinkPlugHS100` stay as they are.
pub fn type_label(unit: &str, all_units: &[String]) -> String {
    match stem_of(unit) {
        Some(stem)
            if all_units.iter().any(|other| other != unit && (other == stem || stem_of(other) == Some(stem))) =>
        {
            stem.to_owned()
        }
        _ => unit.to_owned(),
    }
}

/// The name without a trailing unit digit (`EdimaxCam1` → `EdimaxCam`; not `HS100` → `HS10`).
fn stem_of(name: &str) -> Option<&str> {
    let mut chars = name.chars().rev();
    let (last, before) = (chars.next()?, chars.next()?);
    (last.is_ascii_digit() && !before.is_ascii_digit()).then(|| &name[..name.len() - 1])
}

/// Replays one capture through the live code path and gathers what `mac` showed.
pub fn capture_features(path: &Path, mac: Mac) -> Result<DeviceFeatures, ModelError> {
    let mut features = DeviceFeatures::new();
    for item in CaptureReplay::open(path, DEFAULT_INTERVAL)? {
        observe(&mut features, mac, &item);
    }
    Ok(features)
}

/// Feeds one replayed item to `features` if it concerns `mac`.
pub fn observe(features: &mut DeviceFeatures, mac: Mac, item: &ReplayItem) {
    match item {
        ReplayItem::Event(DatapathEvent::Flow(flow)) if flow.mac == mac => features.add_flow(flow),
        ReplayItem::Event(DatapathEvent::Sample(sampled)) if sampled.mac == mac => {
            if let Ok(parsed) = sample::parse(sampled) {
                features.add_sample(&parsed);
            }
        }
        ReplayItem::Interval(interval) => {
            if let Some(counters) = interval.devices.get(&mac) {
                features.add_traffic(counters);
            }
        }
        ReplayItem::Event(_) => {}
    }
}

/// A capture turned into a training example.
#[derive(Clone, Debug)]
pub struct Example {
    pub capture: LabelledCapture,
    pub vector: Vec<f64>,
    pub tokens: Tokens,
}

/// Extracts every capture's features (the slow part, done once).
pub fn examples(captures: &[LabelledCapture]) -> Result<Vec<Example>, ModelError> {
    captures
        .iter()
        .map(|capture| {
            let features = capture_features(&capture.path, capture.mac)?;
            Ok(Example { capture: capture.clone(), vector: features.vector(), tokens: features.tokens() })
        })
        .collect()
}

/// Zeroes the named feature groups in every example (to measure what a group brings).
pub fn without_groups(examples: &mut [Example], groups: &[String]) -> Result<(), ModelError> {
    for group in groups {
        let range = super::features::group_range(group).ok_or_else(|| ModelError::Dataset {
            path: PathBuf::new(),
            reason: format!(
                "unknown feature group {group:?} (known: {})",
                super::features::GROUPS.iter().map(|g| g.0).collect::<Vec<_>>().join(", ")
            ),
        })?;
        for example in examples.iter_mut() {
            example.vector[range.clone()].iter_mut().for_each(|x| *x = 0.0);
        }
    }
    Ok(())
}

/// Trains the forest on `examples` and records each class's names, with the closed-set
/// answer (identity calibration, open gates). `train_open` adds the open-set fit.
pub fn train(examples: &[&Example], params: &ForestParams, taxonomy: &Taxonomy) -> Result<Model, ModelError> {
    let classes: Vec<String> =
        examples.iter().map(|e| e.capture.label.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    if let Some(missing) = classes.iter().find(|class| !taxonomy.products.contains_key(*class)) {
        return Err(ModelError::Dataset {
            path: examples
                .iter()
                .find(|e| &e.capture.label == missing)
                .map(|e| e.capture.path.clone())
                .unwrap_or_default(),
            reason: format!("type {missing:?} is not in the taxonomy; add its vendor and generic type"),
        });
    }
    let index: BTreeMap<&str, usize> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    let vectors: Vec<Vec<f64>> = examples.iter().map(|e| e.vector.clone()).collect();
    let labels: Vec<usize> = examples.iter().map(|e| index[e.capture.label.as_str()]).collect();
    let forest = Forest::train(&vectors, &labels, classes.len(), params)?;
    let mut trained_on = BTreeMap::new();
    let mut vocabulary = vec![Tokens::default(); classes.len()];
    for (example, &class) in examples.iter().zip(&labels) {
        *trained_on.entry(example.capture.label.clone()).or_default() += 1;
        vocabulary[class].extend(&example.tokens);
    }
    let taxonomy = Taxonomy {
        generic_types: taxonomy.generic_types.clone(),
        products: classes.iter().map(|c| (c.clone(), taxonomy.products[c].clone())).collect(),
    };
    let open_set = OpenSet { vocabulary, calibration: Default::default(), gates: [Gate::OPEN; 3] };
    Ok(Model {
        format: MODEL_FORMAT,
        dimensions: DIMENSIONS,
        classes,
        trained_on,
        params: *params,
        forest,
        taxonomy,
        open_set,
    })
}

/// Trains on `examples` and fits the open-set calibration and gates on held-out rounds of
/// the same examples and on `background` devices (none of the products: `fit_open_set`).
pub fn train_open(
    examples: &[&Example],
    background: &[&Example],
    params: &ForestParams,
    taxonomy: &Taxonomy,
) -> Result<Model, ModelError> {
    let (calibration, gates) = fit_open_set(examples, background, params, taxonomy)?;
    let mut model = train(examples, params, taxonomy)?;
    model.open_set.calibration = calibration;
    model.open_set.gates = gates;
    Ok(model)
}

/// Chooses each level's calibration and gate on `examples` alone: in each of
/// `OPEN_SET_ROUNDS` rounds a model is trained without a fifth of the products (dealt at
/// random with the forest's seed) and without a fifth of the other files, then answers both.
/// A held-out product's level is "right" as `unknown` unless another trained product shares
/// its group (an unseen camera may rightly be called `ip-camera`). Each round also answers the
/// `background` devices (phones, routers, computers: none of the products, `unknown` at every
/// level), so the gates see what a network holds besides IoT products.
pub fn fit_open_set(
    examples: &[&Example],
    background: &[&Example],
    params: &ForestParams,
    taxonomy: &Taxonomy,
) -> Result<([Calibration; 3], [Gate; 3]), ModelError> {
    let mut products: Vec<&str> =
        examples.iter().map(|e| e.capture.label.as_str()).collect::<BTreeSet<_>>().into_iter().collect();
    products.shuffle(&mut StdRng::seed_from_u64(params.seed));
    let fold = folds_of(examples, OPEN_SET_ROUNDS);
    let mut raw: Vec<[RawAnswer; 3]> = Vec::new();
    for round in 0..OPEN_SET_ROUNDS {
        let unseen: BTreeSet<&str> =
            products.iter().enumerate().filter(|(i, _)| i % OPEN_SET_ROUNDS == round).map(|(_, p)| *p).collect();
        let is_unseen = |e: &Example| unseen.contains(e.capture.label.as_str());
        let train_set: Vec<&Example> =
            examples.iter().zip(&fold).filter(|(e, f)| !is_unseen(e) && **f != round).map(|(e, _)| *e).collect();
        let test_set: Vec<&Example> =
            examples.iter().zip(&fold).filter(|(e, f)| is_unseen(e) || **f == round).map(|(e, _)| *e).collect();
        if train_set.is_empty() || test_set.is_empty() {
            continue;
        }
        let model = train(&train_set, params, taxonomy)?;
        for example in test_set.into_iter().chain(background.iter().copied()) {
            let candidates = model.candidates(&example.vector, &example.tokens);
            raw.push(Level::ALL.map(|level| {
                // `None` for a background device: a label the taxonomy does not hold.
                let truth = taxonomy.group(&example.capture.label, level);
                let trained = truth.is_some() && model.classes.iter().any(|c| model.taxonomy.group(c, level) == truth);
                let candidate = &candidates[level.index()];
                (candidate.share, candidate.novelty, trained.then(|| Some(candidate.name.as_str()) == truth))
            }));
        }
    }
    let calibration = Level::ALL.map(|level| {
        let pairs: Vec<(f64, bool)> =
            raw.iter().filter_map(|answer| Some((answer[level.index()].0, answer[level.index()].2?))).collect();
        Calibration::fit(&pairs)
    });
    let held_out = |answer: &[RawAnswer; 3], level: Level| {
        let (share, novelty, right) = answer[level.index()];
        HeldOut { confidence: calibration[level.index()].probability(share), novelty, right }
    };
    let product: Vec<HeldOut> = raw.iter().map(|answer| held_out(answer, Level::Product)).collect();
    let product_gate = openset::choose_gate(&product);
    // A kept product fixes its vendor and generic type (`Model::answer`), so those gates only
    // decide for devices whose product was refused: they are fitted on those alone.
    let refused: Vec<_> = raw
        .iter()
        .zip(&product)
        .filter(|(_, p)| !product_gate.admits(p.confidence, p.novelty))
        .map(|(answer, _)| answer)
        .collect();
    let gate =
        |level: Level| openset::choose_gate(&refused.iter().map(|answer| held_out(answer, level)).collect::<Vec<_>>());
    let gates = [product_gate, gate(Level::Vendor), gate(Level::Generic)];
    Ok((calibration, gates))
}

/// One held-out answer at one level: vote share, novelty, and whether it was right (`None`:
/// the truth is a group the round's model never saw).
type RawAnswer = (f64, Option<f64>, Option<bool>);

/// The fold (0..folds) of each example: captures of each unit, sorted by file name, are
/// dealt round-robin, so every fold holds captures of every unit and each file is in exactly
/// one fold.
pub fn folds_of(examples: &[&Example], folds: usize) -> Vec<usize> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    examples
        .iter()
        .map(|e| {
            let n = seen.entry(e.capture.unit.as_str()).or_default();
            *n += 1;
            (*n - 1) % folds.max(1)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_label_merges_only_numbered_siblings() {
        let units: Vec<String> = [
            "EdimaxCam1",
            "EdimaxCam2",
            "WeMoSwitch",
            "WeMoSwitch2",
            "iKettle2",
            "TP-LinkPlugHS100",
            "TP-LinkPlugHS110",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(type_label("EdimaxCam1", &units), "EdimaxCam");
        assert_eq!(type_label("EdimaxCam2", &units), "EdimaxCam");
        assert_eq!(type_label("WeMoSwitch2", &units), "WeMoSwitch");
        assert_eq!(type_label("WeMoSwitch", &units), "WeMoSwitch");
        assert_eq!(type_label("iKettle2", &units), "iKettle2");
        assert_eq!(type_label("TP-LinkPlugHS100", &units), "TP-LinkPlugHS100");
    }
}
