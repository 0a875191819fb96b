//! `iotgw fingerprint`: train the device-type model from labelled captures, and evaluate it
//! (nested cross-validation split by capture file, leave-one-unit-out, an existing model on
//! captures it never saw, or on devices of products it was never trained on).
use std::{path::PathBuf, process::ExitCode, time::Instant};

use anyhow::Context as _;

use crate::fingerprint::{
    evaluation::{self, Evaluation, GRID},
    forest::{DEFAULT_PARAMS, ForestParams},
    model::Classifier,
    taxonomy::{Level, Taxonomy},
    training::{self, Example},
};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Train a model on labelled capture folders (one folder per device, named for its type,
    /// with `_iotdevice-mac.txt`) and write it as JSON. Forest settings are chosen by
    /// cross-validation on the same captures, the open-set gates on held-out folds of them.
    Train(TrainArgs),
    /// Evaluate: nested cross-validation split by capture file, or `--model` on held-out captures.
    Eval(EvalArgs),
    /// Evaluate a model on devices of products it was never trained on (labels in a TOML file,
    /// e.g. bench/fingerprint/unseen-devices.toml): how many it calls unknown.
    Unseen(UnseenArgs),
}

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Where to write the model (JSON).
    #[arg(long)]
    pub out: PathBuf,
    /// Trees in the forest.
    #[arg(long, default_value_t = DEFAULT_PARAMS.trees)]
    pub trees: usize,
    /// Product → vendor → generic type (TOML, as gateway/models/taxonomy.toml); default: the
    /// shipped one.
    #[arg(long)]
    pub taxonomy: Option<PathBuf>,
    /// Devices that are none of the products (phones, routers, ...; a labels file as
    /// bench/fingerprint/background-devices.toml), as development examples for the gates.
    #[arg(long)]
    pub background: Option<PathBuf>,
    /// Labelled capture folders (a dataset root or device folders).
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Evaluate this model file instead of cross-validating fresh models. Only meaningful on
    /// captures the model was not trained on.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Outer folds of the cross-validation (each capture file is tested exactly once).
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Inner folds that choose the forest settings in each outer training part.
    #[arg(long, default_value_t = 3)]
    pub inner_folds: usize,
    /// Trees in each forest.
    #[arg(long, default_value_t = DEFAULT_PARAMS.trees)]
    pub trees: usize,
    /// Use the default forest settings instead of choosing among the grid (faster).
    #[arg(long)]
    pub no_select: bool,
    /// Also answer each unit of a type with two units by a model that never saw it.
    #[arg(long)]
    pub leave_one_unit_out: bool,
    /// Print the per-type table as Markdown.
    #[arg(long)]
    pub markdown: bool,
    /// Leave out a feature group (dhcp, hostname, dns, ssdp, syn, tls, flows, volume); repeatable.
    #[arg(long)]
    pub without: Vec<String>,
    #[arg(long)]
    pub taxonomy: Option<PathBuf>,
    /// As for `train`: development examples of devices that are none of the products.
    #[arg(long)]
    pub background: Option<PathBuf>,
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct UnseenArgs {
    /// The model to evaluate; default: the shipped one.
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[arg(long)]
    pub markdown: bool,
    /// The labels file of unseen devices.
    pub labels: PathBuf,
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Train(args) => train(args),
        Command::Eval(args) => eval(args),
        Command::Unseen(args) => unseen(args),
    }
}

fn taxonomy(path: Option<&PathBuf>) -> anyhow::Result<Taxonomy> {
    match path {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Ok(Taxonomy::parse(&text, &path.display().to_string())?)
        }
        None => Ok(Taxonomy::shipped().clone()),
    }
}

fn background(path: Option<&PathBuf>) -> anyhow::Result<Vec<Example>> {
    let Some(path) = path else { return Ok(Vec::new()) };
    let (root, devices) = evaluation::read_unseen(path).context("reading the background devices")?;
    evaluation::background_examples(&root, &devices).context("extracting the background devices' features")
}

fn with_trees(trees: usize) -> Vec<ForestParams> {
    GRID.iter().map(|params| ForestParams { trees, ..*params }).collect()
}

fn train(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let taxonomy = taxonomy(args.taxonomy.as_ref())?;
    let captures = training::discover(&args.dirs).context("finding labelled captures")?;
    let examples = training::examples(&captures).context("extracting features from the captures")?;
    let refs: Vec<&Example> = examples.iter().collect();
    let params =
        evaluation::select_params(&refs, 5, &with_trees(args.trees), &taxonomy).context("choosing settings")?;
    let background = background(args.background.as_ref())?;
    let background: Vec<&Example> = background.iter().collect();
    let trained = training::train_open(&refs, &background, &params, &taxonomy).context("training")?;
    let json = serde_json::to_string(&trained).context("serialising the model")?;
    std::fs::write(&args.out, json).with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "trained on {} captures of {} types with {params:?}; gates {:?}; model written to {}",
        examples.len(),
        trained.classes.len(),
        trained.open_set.gates,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn eval(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let taxonomy = taxonomy(args.taxonomy.as_ref())?;
    let started = Instant::now();
    let captures = training::discover(&args.dirs).context("finding labelled captures")?;
    let mut examples = training::examples(&captures).context("extracting features from the captures")?;
    training::without_groups(&mut examples, &args.without).context("--without")?;
    let mut background = background(args.background.as_ref())?;
    training::without_groups(&mut background, &args.without).context("--without")?;
    println!("features of {} captures in {:.1} s", examples.len(), started.elapsed().as_secs_f64());
    let evaluation = match &args.model {
        Some(path) => {
            let classifier = Classifier::load(path).with_context(|| format!("loading {}", path.display()))?;
            evaluation::evaluate(&classifier, &examples)
        }
        None => {
            let grid = if args.no_select {
                vec![ForestParams { trees: args.trees, ..DEFAULT_PARAMS }]
            } else {
                with_trees(args.trees)
            };
            let (evaluation, chosen) = evaluation::nested_cross_validate(
                &examples,
                &background,
                args.folds,
                args.inner_folds,
                &grid,
                &taxonomy,
            )
            .context("cross-validating")?;
            for (fold, params) in chosen.iter().enumerate() {
                println!(
                    "outer fold {fold}: max_depth {}, features per split {}",
                    params.max_depth, params.features_per_split
                );
            }
            evaluation
        }
    };
    print_evaluation(&evaluation, &taxonomy, args.markdown);
    println!("(nested cross-validation: {:.1} s)", started.elapsed().as_secs_f64());
    if args.leave_one_unit_out {
        let params = ForestParams { trees: args.trees, ..DEFAULT_PARAMS };
        let louo =
            evaluation::leave_one_unit_out(&examples, &background, &params, &taxonomy).context("leave-one-unit-out")?;
        println!("\nleave-one-unit-out (types with two units, default settings):");
        print_evaluation(&louo, &taxonomy, args.markdown);
    }
    println!("(total: {:.1} s)", started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

/// Types that share one MAC in the IoT Sentinel dataset: the sensor's setup is relayed by
/// the hub, so both folders hold the hub's traffic.
pub const SHARED_MAC_PAIRS: [&[&str]; 2] = [&["D-LinkDoorSensor", "D-LinkHomeHub"], &["HueBridge", "HueSwitch"]];

fn print_evaluation(evaluation: &Evaluation, taxonomy: &Taxonomy, markdown: bool) {
    let confusions = evaluation.confusions();
    if markdown {
        println!("| type | captures | recall | precision | kept (open set) | unknown | mistaken for |");
        println!("|---|---:|---:|---:|---:|---:|---|");
    }
    for (label, counts) in evaluation.per_type().into_iter().filter(|(_, c)| c.captures > 0) {
        let wrong = confusions
            .get(&label)
            .map(|c| c.iter().map(|(guess, n)| format!("{guess} ×{n}")).collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        let (recall, precision) = (100.0 * counts.recall(), 100.0 * counts.precision());
        let (captures, kept, unknown) = (counts.captures, counts.kept, counts.unknown);
        if markdown {
            println!(
                "| {label} | {captures} | {recall:.1}% | {precision:.1}% | {kept}/{captures} | {unknown} | {wrong} |"
            );
        } else {
            println!(
                "{label:<22} {captures:>3}  recall {recall:>5.1}%  precision {precision:>5.1}%  kept {kept:>3}  unknown {unknown:>3}  {wrong}"
            );
        }
    }
    println!();
    println!(
        "closed set: {:.1}% of {} captures ({:.1}% counting the shared-MAC pairs {} as one type each)",
        100.0 * evaluation.accuracy(),
        evaluation.predictions.len(),
        100.0 * evaluation.accuracy_merging(&SHARED_MAC_PAIRS),
        SHARED_MAC_PAIRS.iter().map(|p| p.join("/")).collect::<Vec<_>>().join(" and "),
    );
    println!(
        "open set: product kept {:.1}%, vendor {:.1}%, generic type {:.1}%; product called unknown {:.1}%",
        100.0 * evaluation.kept(),
        100.0 * evaluation.kept_at(taxonomy, Level::Vendor),
        100.0 * evaluation.kept_at(taxonomy, Level::Generic),
        100.0 * evaluation.called_unknown(),
    );
}

fn unseen(args: UnseenArgs) -> anyhow::Result<ExitCode> {
    let classifier = match &args.model {
        Some(path) => Classifier::load(path).with_context(|| format!("loading {}", path.display()))?,
        None => Classifier::shipped().context("loading the shipped model")?,
    };
    let (root, devices) = evaluation::read_unseen(&args.labels).context("reading the labels")?;
    let answers = evaluation::unseen(&classifier, &root, &devices).context("answering the unseen devices")?;
    if args.markdown {
        println!("| capture | device | really | answer: product | vendor | generic | novelty | acceptable |");
        println!("|---|---|---|---|---|---|---:|---|");
    }
    for answer in &answers {
        let device = &answer.device;
        let shown = |level: Level| {
            answer.answer.as_ref().map_or("-".to_owned(), |guess| {
                let level = guess.level(level);
                format!("{} ({:.2})", level.name, level.confidence)
            })
        };
        let novelty = answer.answer.as_ref().and_then(|g| g.novelty).map_or("-".to_owned(), |n| format!("{n:.2}"));
        let ok = if answer.acceptable() { "yes" } else { "no" };
        let (capture, mac) = (device.capture.display(), device.mac);
        let really = format!("{} ({}, {})", device.product, device.vendor, device.generic);
        let (product, vendor, generic) = (shown(Level::Product), shown(Level::Vendor), shown(Level::Generic));
        if args.markdown {
            println!("| {capture} | {mac} | {really} | {product} | {vendor} | {generic} | {novelty} | {ok} |");
        } else {
            println!("{capture} {mac}: {really} -> {product} / {vendor} / {generic}, novelty {novelty}: {ok}");
        }
    }
    let n = answers.len().max(1) as f64;
    println!();
    println!(
        "{} unseen devices: called unknown {:.1}%, unknown or the right generic type {:.1}%",
        answers.len(),
        100.0 * answers.iter().filter(|a| a.unknown()).count() as f64 / n,
        100.0 * answers.iter().filter(|a| a.acceptable()).count() as f64 / n,
    );
    Ok(ExitCode::SUCCESS)
}
