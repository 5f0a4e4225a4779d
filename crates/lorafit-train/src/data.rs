//! A training run's data: lorafit-data's pipeline driven by the run's keys.

pub use lorafit_data::example::{greedy_knapsack, load_pretokenized, pack, truncate};
pub use lorafit_data::load::{DataArgs, Encoded, Mix, Report, Stage};
pub use lorafit_data::process::Feedback;
pub use lorafit_data::{Example, Masking, Pair, Schedule, StepRng, Template, TextTokenizer};

use crate::config::TrainArgs;
use crate::error::{Error, Result};

/// The examples of a run (pt / sft), and what the pipeline reported on the way (rows dropped).
pub fn load_dataset_report(args: &TrainArgs) -> Result<(Vec<Example>, Report)> {
    let (encoded, report) = lorafit_data::load(&args.data_args())?;
    match encoded {
        Encoded::Examples(e) => Ok((e, report)),
        _ => Err(Error::Unsupported(format!(
            "`stage: {}`: lorafit train runs pt and sft; this data is for the {} stage",
            args.stage, args.stage
        ))),
    }
}

/// The eval data of a run and the training data left: `eval_dataset` (read with the run's keys,
/// the same kind as the training data), or `val_size` held out as LLaMA-Factory holds it out
/// (`datasets`' `train_test_split` with the run's seed: the same rows, in the same order, by
/// numpy's permutation — even when `eval_strategy` is `no`). Empty eval data when neither.
pub fn split_eval_data(args: &TrainArgs, train: Encoded) -> Result<(Encoded, Encoded)> {
    let empty = match &train {
        Encoded::Examples(_) => Encoded::Examples(Vec::new()),
        Encoded::Pairs(_) => Encoded::Pairs(Vec::new()),
        Encoded::Feedback(_) => Encoded::Feedback(Vec::new()),
    };
    if let Some(names) = args.eval.as_ref().and_then(|e| e.eval_dataset.as_ref()) {
        let mut a = args.data_args();
        a.dataset = lorafit_data::load::dataset_names(names);
        a.max_samples = None;
        let (enc, _) = lorafit_data::load(&a)?;
        if std::mem::discriminant(&enc) != std::mem::discriminant(&train) {
            return Err(Error::Invalid(format!(
                "`eval_dataset: {names}` is not the same kind of data as `dataset` (stage {})",
                args.stage
            )));
        }
        return Ok((train, enc));
    }
    if args.val_size <= 0.0 {
        return Ok((train, empty));
    }
    use lorafit_data::load::split_val;
    let (v, seed) = (args.val_size, args.seed);
    Ok(match train {
        Encoded::Examples(x) => {
            let (t, e) = split_val(x, v, seed)?;
            (Encoded::Examples(t), Encoded::Examples(e))
        }
        Encoded::Pairs(x) => {
            let (t, e) = split_val(x, v, seed)?;
            (Encoded::Pairs(t), Encoded::Pairs(e))
        }
        Encoded::Feedback(x) => {
            let (t, e) = split_val(x, v, seed)?;
            (Encoded::Feedback(t), Encoded::Feedback(e))
        }
    })
}

/// [`split_eval_data`] for a pt / sft run's examples.
pub fn split_eval(args: &TrainArgs, train: Vec<Example>) -> Result<(Vec<Example>, Vec<Example>)> {
    let (t, e) = split_eval_data(args, Encoded::Examples(train))?;
    Ok((t.into_examples()?, e.into_examples()?))
}

/// The chosen / rejected pairs of a `stage: dpo` run.
pub fn load_pairs_report(args: &TrainArgs) -> Result<(Vec<Pair>, Report)> {
    let (encoded, report) = lorafit_data::load(&args.data_args())?;
    match encoded {
        Encoded::Pairs(p) => Ok((p, report)),
        _ => Err(Error::Invalid(format!(
            "`stage: {}` needs pairwise data (`ranking: true` in dataset_info.json)",
            args.stage
        ))),
    }
}

/// The (target, KL completion, desirable) triples of a `stage: kto` run.
pub fn load_feedback_report(args: &TrainArgs) -> Result<(Vec<Feedback>, Report)> {
    let (encoded, report) = lorafit_data::load(&args.data_args())?;
    match encoded {
        Encoded::Feedback(f) => Ok((f, report)),
        _ => Err(Error::Invalid(
            "`stage: kto` needs feedback data (a `kto_tag` column in dataset_info.json)".into(),
        )),
    }
}

/// The examples of a run (pt / sft).
pub fn load_dataset(args: &TrainArgs) -> Result<Vec<Example>> {
    Ok(load_dataset_report(args)?.0)
}
