//! A training run's data: lorafit-data's pipeline driven by the run's keys.

pub use lorafit_data::example::{greedy_knapsack, load_pretokenized, pack, truncate};
pub use lorafit_data::load::{DataArgs, Encoded, Mix, Report, Stage};
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

/// The examples of a run (pt / sft).
pub fn load_dataset(args: &TrainArgs) -> Result<Vec<Example>> {
    Ok(load_dataset_report(args)?.0)
}
