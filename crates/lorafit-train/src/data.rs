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

/// The eval examples of a run and the training examples left: `eval_dataset` (same keys), or
/// `val_size` held out of `train` with a seeded shuffle (LLaMA-Factory's `train_test_split` draws
/// with numpy, so the held-out rows differ; the count is the same: a fraction rounds up).
pub fn split_eval(args: &TrainArgs, train: Vec<Example>) -> Result<(Vec<Example>, Vec<Example>)> {
    let Some(ev) = &args.eval else {
        return Ok((train, Vec::new()));
    };
    if let Some(names) = &ev.eval_dataset {
        let mut a = args.data_args();
        a.dataset = lorafit_data::load::dataset_names(names);
        a.max_samples = None;
        let (enc, _) = lorafit_data::load(&a)?;
        return Ok((train, enc.into_examples()?));
    }
    let n = train.len();
    let k = if ev.val_size >= 1.0 {
        ev.val_size as usize
    } else {
        (ev.val_size * n as f64).ceil() as usize
    };
    if k == 0 || k >= n {
        return Err(Error::Invalid(format!(
            "`val_size: {}` leaves {} of {n} examples for training",
            ev.val_size,
            n.saturating_sub(k)
        )));
    }
    let sched = Schedule {
        batch_size: 1,
        grad_accum: 1,
        shuffle: true,
        seed: args.seed,
        num_examples: n,
    };
    let order = sched.epoch_order(usize::MAX / 2);
    let held: std::collections::BTreeSet<usize> = order[..k].iter().copied().collect();
    let (mut tr, mut ev_ex) = (Vec::new(), Vec::new());
    for (i, e) in train.into_iter().enumerate() {
        if held.contains(&i) {
            ev_ex.push(e);
        } else {
            tr.push(e);
        }
    }
    Ok((tr, ev_ex))
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
