//! Dataset-aware estimates: when the config names a dataset and the model's tokenizer is at hand
//! (the model directory or its hub-cache snapshot), read the data through lorafit-data — the
//! same pipeline `lorafit train` uses — and size the run by it: the lengths, the longest
//! micro-batch (LLaMA-Factory pads each batch to its longest sequence, to a multiple of 8, not to
//! cutoff_len), and the padded tokens of an epoch for time and cost.

use std::path::Path;

use anyhow::{Context, Result};
use lorafit_core::Settings;
use lorafit_core::plan::Plan;
use lorafit_data::Schedule;
use lorafit_data::load::Encoded;
use serde::Serialize;

/// What the data says.
#[derive(Debug, Clone, Serialize)]
pub struct DataStats {
    pub dataset: String,
    pub tokenizer: String,
    /// Examples after encoding (packs when packing is on; pairs for rm / dpo).
    pub examples: usize,
    pub dropped_rows: usize,
    /// Sequence lengths after truncation (a pair: its longer side).
    pub p50_tokens: usize,
    pub p95_tokens: usize,
    pub max_tokens: usize,
    /// Examples cut by cutoff_len.
    pub truncated: usize,
    pub cutoff_len: usize,
    /// The longest micro-batch's padded length: what the peak is computed at.
    pub longest_batch_tokens: usize,
    /// Tokens the model sees in one epoch, padding included (lorafit train's batch order).
    pub padded_tokens_per_epoch: u64,
    /// Tokens without padding.
    pub tokens_per_epoch: u64,
}

fn round8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

fn percentile(sorted: &[usize], p: f64) -> usize {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The stats of the config's dataset, or why there are none (no dataset, no tokenizer).
pub fn read(
    config: &Path,
    s: &Settings,
    plan: &Plan,
    model_config: Option<&Path>,
) -> Result<std::result::Result<DataStats, String>> {
    let Some(ds) = s.str("dataset") else {
        return Ok(Err("the config names no dataset".into()));
    };
    let Some(tok_dir) = model_config
        .and_then(Path::parent)
        .filter(|d| d.join("tokenizer.json").is_file())
    else {
        return Ok(Err(format!(
            "no tokenizer.json beside the model's config.json, so `dataset: {ds}` is not read"
        )));
    };
    let base = config.parent().unwrap_or(Path::new("."));
    let dataset_dir = lorafit_data::load::resolve(base, s.str("dataset_dir").unwrap_or("data"));
    let mut args = lorafit_train::config::data_args(s, plan, dataset_dir, tok_dir.to_path_buf())?;
    eprintln!(
        "reading `dataset: {ds}` with {} to size the run (--no-data skips this)",
        tok_dir.join("tokenizer.json").display()
    );
    let started = std::time::Instant::now();
    let (enc, report) =
        lorafit_data::load(&args).with_context(|| format!("reading `dataset: {ds}`"))?;
    let lens: Vec<usize> = match &enc {
        Encoded::Examples(v) => v.iter().map(|e| e.input_ids.len()).collect(),
        Encoded::Pairs(v) => v
            .iter()
            .map(|p| p.chosen.input_ids.len().max(p.rejected.input_ids.len()))
            .collect(),
        Encoded::Feedback(v) => v
            .iter()
            .map(|f| f.example.input_ids.len().max(f.kl.input_ids.len()))
            .collect(),
    };
    let (packing, _) = args.packing();
    // Truncation: the same data without a length limit (not meaningful for packs).
    let truncated = if packing {
        0
    } else {
        args.cutoff_len = 1 << 30;
        let (full, _) = lorafit_data::load(&args)?;
        let full_lens: Vec<usize> = match &full {
            Encoded::Examples(v) => v.iter().map(|e| e.input_ids.len()).collect(),
            Encoded::Pairs(v) => v
                .iter()
                .map(|p| p.chosen.input_ids.len().max(p.rejected.input_ids.len()))
                .collect(),
            Encoded::Feedback(v) => v.iter().map(|f| f.example.input_ids.len()).collect(),
        };
        full_lens
            .iter()
            .filter(|&&l| l > plan.cutoff_len as usize)
            .count()
    };
    if started.elapsed().as_secs_f64() > 2.0 {
        eprintln!(
            "read {} examples in {:.1} s",
            lens.len(),
            started.elapsed().as_secs_f64()
        );
    }
    let mut sorted = lens.clone();
    sorted.sort_unstable();
    // The batches lorafit train forms (seeded shuffle), each padded to its longest, to a multiple
    // of 8 as LLaMA-Factory's collator pads for training.
    let sched = Schedule {
        batch_size: plan.batch_size.max(1) as usize,
        grad_accum: 1,
        shuffle: s.bool("shuffle", true),
        seed: s.int("seed").unwrap_or(42) as u64,
        num_examples: lens.len(),
    };
    let mut padded = 0u64;
    let mut longest = 0usize;
    for mb in sched.epoch_batches(0) {
        let l = round8(mb.iter().map(|&i| lens[i]).max().unwrap_or(0));
        longest = longest.max(l);
        padded += (l * mb.len()) as u64;
    }
    Ok(Ok(DataStats {
        dataset: ds.to_string(),
        tokenizer: tok_dir.join("tokenizer.json").display().to_string(),
        examples: lens.len(),
        dropped_rows: report.dropped.len(),
        p50_tokens: percentile(&sorted, 0.5),
        p95_tokens: percentile(&sorted, 0.95),
        max_tokens: sorted.last().copied().unwrap_or(0),
        truncated,
        cutoff_len: plan.cutoff_len as usize,
        longest_batch_tokens: longest,
        padded_tokens_per_epoch: padded,
        tokens_per_epoch: lens.iter().map(|&l| l as u64).sum(),
    }))
}

/// Time and cost from the data's padded tokens instead of full-length batches.
pub fn apply_time(e: &mut lorafit_core::Estimate, plan: &Plan, st: &DataStats) {
    if e.tokens_per_second <= 0.0 || st.examples == 0 {
        return;
    }
    let per_step = plan.batch_size.max(1) * plan.grad_accum.max(1) * plan.num_gpus.max(1);
    let steps_per_epoch = (st.examples as u64).div_ceil(per_step).max(1);
    let epochs = match plan.max_steps {
        Some(m) => m as f64 / steps_per_epoch as f64,
        None => plan.num_train_epochs,
    };
    let secs = st.padded_tokens_per_epoch as f64 * epochs / e.tokens_per_second;
    if let Some(old) = e.total_seconds.filter(|o| *o > 0.0) {
        let f = secs / old;
        e.cost_usd = e.cost_usd.map(|c| c * f);
        for c in &mut e.costs {
            c.cost_usd *= f;
        }
    }
    e.total_seconds = Some(secs);
    e.warnings.push(format!(
        "sized by the data: the peak at its longest micro-batch ({} tokens, not cutoff_len {}), time from {} padded tokens per epoch",
        st.longest_batch_tokens, st.cutoff_len, st.padded_tokens_per_epoch
    ));
}

/// The data section of the table.
pub fn print(st: &DataStats) {
    out!(
        "data          {} examples of `{}` ({} rows dropped), tokenizer {}",
        st.examples,
        st.dataset,
        st.dropped_rows,
        st.tokenizer
    );
    out!(
        "  lengths     p50 {} · p95 {} · max {} tokens; {} truncated at cutoff_len {}",
        st.p50_tokens,
        st.p95_tokens,
        st.max_tokens,
        st.truncated,
        st.cutoff_len
    );
    out!(
        "  per epoch   {} tokens, {} with padding; longest micro-batch {} tokens",
        st.tokens_per_epoch,
        st.padded_tokens_per_epoch,
        st.longest_batch_tokens
    );
}
