//! LLaMA-Factory datasets by name: `dataset_info.json`, alpaca and sharegpt formats, chat
//! templates and prompt masking.

use crate::config::TrainArgs;
use crate::data::Example;
use crate::error::{Error, Result};

/// Load `dataset` from `dataset_dir/dataset_info.json`.
pub fn load_named(args: &TrainArgs) -> Result<Vec<Example>> {
    Err(Error::Invalid(format!(
        "`dataset: {}` is neither a file nor (yet) supported as a dataset_info.json name in {}",
        args.dataset,
        args.dataset_dir.display()
    )))
}
