//! `iotgw fingerprint`: train the device-type model from labelled captures, and evaluate it
//! (cross-validation split by capture file, or an existing model on captures it never saw).
use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;

use crate::fingerprint::{
    forest::{DEFAULT_PARAMS, ForestParams},
    model::{self, Classifier, Evaluation},
};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Train a model on labelled capture folders (one folder per device, named for its type,
    /// with `_iotdevice-mac.txt`) and write it as JSON.
    Train(TrainArgs),
    /// Evaluate: k-fold cross-validation split by capture file, or `--model` on held-out captures.
    Eval(EvalArgs),
}

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Where to write the model (JSON).
    #[arg(long)]
    pub out: PathBuf,
    /// Trees in the forest.
    #[arg(long, default_value_t = DEFAULT_PARAMS.trees)]
    pub trees: usize,
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
    /// Folds of the cross-validation (each capture file is tested exactly once).
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Trees in each fold's forest.
    #[arg(long, default_value_t = DEFAULT_PARAMS.trees)]
    pub trees: usize,
    /// Print the per-type table as Markdown.
    #[arg(long)]
    pub markdown: bool,
    /// Leave out a feature group (dhcp, hostname, dns, syn, tls, flows, volume); repeatable.
    #[arg(long)]
    pub without: Vec<String>,
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
}

pub fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Train(args) => train(args),
        Command::Eval(args) => eval(args),
    }
}

fn train(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let captures = model::discover(&args.dirs).context("finding labelled captures")?;
    let examples = model::examples(&captures).context("extracting features from the captures")?;
    let params = ForestParams { trees: args.trees, ..DEFAULT_PARAMS };
    let refs: Vec<_> = examples.iter().collect();
    let trained = model::train(&refs, &params).context("training")?;
    let json = serde_json::to_string(&trained).context("serialising the model")?;
    std::fs::write(&args.out, json).with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "trained on {} captures of {} types; model written to {}",
        examples.len(),
        trained.classes.len(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn eval(args: EvalArgs) -> anyhow::Result<ExitCode> {
    let captures = model::discover(&args.dirs).context("finding labelled captures")?;
    let mut examples = model::examples(&captures).context("extracting features from the captures")?;
    model::without_groups(&mut examples, &args.without).context("--without")?;
    let evaluation = match &args.model {
        Some(path) => {
            let classifier = Classifier::load(path).with_context(|| format!("loading {}", path.display()))?;
            model::evaluate(&classifier, &examples).context("evaluating")?
        }
        None => {
            let params = ForestParams { trees: args.trees, ..DEFAULT_PARAMS };
            model::cross_validate(&examples, args.folds, &params).context("cross-validating")?
        }
    };
    print_evaluation(&evaluation, args.markdown);
    Ok(ExitCode::SUCCESS)
}

/// Types that share one MAC in the IoT Sentinel dataset: the sensor's setup is relayed by
/// the hub, so both folders hold the hub's traffic.
pub const SHARED_MAC_PAIRS: [&[&str]; 2] = [&["D-LinkDoorSensor", "D-LinkHomeHub"], &["HueBridge", "HueSwitch"]];

fn print_evaluation(evaluation: &Evaluation, markdown: bool) {
    let confusions = evaluation.confusions();
    if markdown {
        println!("| type | captures | correct | accuracy | mistaken for |");
        println!("|---|---:|---:|---:|---|");
    }
    for (label, (correct, total)) in evaluation.per_type() {
        let wrong = confusions
            .get(&label)
            .map(|c| c.iter().map(|(guess, n)| format!("{guess} ×{n}")).collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        let accuracy = 100.0 * correct as f64 / total.max(1) as f64;
        if markdown {
            println!("| {label} | {total} | {correct} | {accuracy:.1}% | {wrong} |");
        } else {
            println!("{label:<22} {correct:>3}/{total:<3} {accuracy:>6.1}%  {wrong}");
        }
    }
    println!();
    println!(
        "overall: {:.1}% of {} captures ({:.1}% counting the shared-MAC pairs {} as one type each)",
        100.0 * evaluation.accuracy(),
        evaluation.predictions.len(),
        100.0 * evaluation.accuracy_merging(&SHARED_MAC_PAIRS),
        SHARED_MAC_PAIRS.iter().map(|p| p.join("/")).collect::<Vec<_>>().join(" and "),
    );
}
