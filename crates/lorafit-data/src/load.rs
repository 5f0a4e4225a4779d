//! A run's data as LLaMA-Factory's `get_dataset` makes it: each named dataset read and sampled
//! (`num_samples`, then `max_samples`), aligned, merged (`mix_strategy`), and encoded by the
//! stage's processor with the template and tokenizer; or a pre-tokenized `.jsonl`.

use std::path::{Path, PathBuf};

use crate::convert::{self, Aligned};
use crate::error::{Error, Result};
use crate::example::{self, Example};
use crate::info::{DatasetAttr, read_info};
use crate::json::Json;
use crate::process::{self, Feedback, Masking, Pair};
use crate::template::Template;
use crate::tokenizer::TextTokenizer;

/// Which processor encodes the data (LLaMA-Factory's `stage`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Pt,
    Sft,
    /// rm and dpo: pairwise.
    Pairwise,
    Kto,
}

impl Stage {
    pub fn from_name(stage: &str) -> Result<Stage> {
        Ok(match stage {
            "pt" => Stage::Pt,
            "sft" => Stage::Sft,
            "rm" | "dpo" => Stage::Pairwise,
            "kto" => Stage::Kto,
            other => {
                return Err(Error::Invalid(format!(
                    "`stage: {other}`: lorafit-data encodes pt, sft, rm, dpo and kto data"
                )));
            }
        })
    }
}

/// `mix_strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mix {
    #[default]
    Concat,
    /// Round-robin until the first dataset runs out (`interleave_under`).
    InterleaveUnder,
    /// Round-robin until every dataset has been seen, the shorter ones repeated (`interleave_over`).
    InterleaveOver,
}

impl Mix {
    pub fn from_name(s: &str) -> Result<Mix> {
        Ok(match s {
            "concat" => Mix::Concat,
            "interleave_under" => Mix::InterleaveUnder,
            "interleave_over" => Mix::InterleaveOver,
            other => {
                return Err(Error::Invalid(format!(
                    "`mix_strategy: {other}` is not one of concat, interleave_under, interleave_over"
                )));
            }
        })
    }
}

/// The data keys of a run.
#[derive(Debug, Clone)]
pub struct DataArgs {
    /// `dataset`, split at commas: names in dataset_dir/dataset_info.json or a pre-tokenized .jsonl.
    pub dataset: Vec<String>,
    pub dataset_dir: PathBuf,
    /// The directory with tokenizer.json (the model).
    pub tokenizer_dir: PathBuf,
    pub template: Option<String>,
    pub stage: Stage,
    pub cutoff_len: usize,
    pub max_samples: Option<usize>,
    /// `packing` as given (None: on for pt, off otherwise, as LLaMA-Factory decides).
    pub packing: Option<bool>,
    pub neat_packing: bool,
    pub masking: Masking,
    pub mix_strategy: Mix,
    pub interleave_probs: Option<Vec<f64>>,
    pub seed: u64,
    pub enable_thinking: bool,
    pub preserve_thinking: bool,
    pub default_system: Option<String>,
    pub tool_format: Option<String>,
    /// `preprocessing_batch_size`: LLaMA-Factory's `datasets.map` batch. Packing (pt blocks, sft
    /// knapsacks) happens within a batch, and KTO's KL answers rotate within one.
    pub preprocessing_batch_size: usize,
}

impl DataArgs {
    /// Whether packing is on, and whether LLaMA-Factory shortened cutoff_len by one for it
    /// (`DataArguments.__post_init__` does that only for packing given as true or neat_packing).
    pub fn packing(&self) -> (bool, bool) {
        let given = self.packing == Some(true) || self.neat_packing;
        (
            given || (self.packing.is_none() && self.stage == Stage::Pt),
            given,
        )
    }

    /// cutoff_len as the processors see it.
    pub fn effective_cutoff(&self) -> usize {
        let (_, shortened) = self.packing();
        if shortened {
            self.cutoff_len.saturating_sub(1).max(1)
        } else {
            self.cutoff_len
        }
    }
}

/// The encoded data of a run.
#[derive(Debug, Clone)]
pub enum Encoded {
    /// pt and sft examples (packed when packing is on).
    Examples(Vec<Example>),
    Pairs(Vec<Pair>),
    Feedback(Vec<Feedback>),
}

impl Encoded {
    pub fn len(&self) -> usize {
        match self {
            Encoded::Examples(v) => v.len(),
            Encoded::Pairs(v) => v.len(),
            Encoded::Feedback(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The examples, for the stages trained on single sequences.
    pub fn into_examples(self) -> Result<Vec<Example>> {
        match self {
            Encoded::Examples(v) => Ok(v),
            Encoded::Pairs(_) => Err(Error::Invalid(
                "the data is pairwise (rm / dpo); it has no single examples".into(),
            )),
            Encoded::Feedback(_) => Err(Error::Invalid(
                "the data is KTO feedback; it has no single examples".into(),
            )),
        }
    }
}

/// A row LLaMA-Factory would drop, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Dropped {
    pub dataset: String,
    pub row: usize,
    pub reason: String,
}

/// What happened on the way: rows read per dataset, rows dropped, the pad token.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub rows: Vec<(String, usize)>,
    pub dropped: Vec<Dropped>,
    pub pad_id: u32,
    pub template: Option<String>,
    pub notes: Vec<String>,
}

/// Datasets' `interleave_datasets` without probabilities (round-robin), or with them: each next
/// row from a source numpy draws with the given probabilities, as `datasets` draws it (the same
/// rows in the same order).
fn interleave(
    sets: Vec<Vec<(usize, Aligned)>>,
    mix: Mix,
    probs: Option<&[f64]>,
    seed: u64,
) -> Vec<(usize, Aligned)> {
    let lens: Vec<usize> = sets.iter().map(Vec::len).collect();
    let mut out = Vec::new();
    match probs {
        None => {
            let rounds = match mix {
                Mix::InterleaveUnder => lens.iter().copied().min().unwrap_or(0),
                _ => lens.iter().copied().max().unwrap_or(0),
            };
            for i in 0..rounds {
                for (j, s) in sets.iter().enumerate() {
                    if !s.is_empty() && (mix != Mix::InterleaveUnder || i < lens[j]) {
                        out.push(s[i % lens[j]].clone());
                    }
                }
            }
        }
        Some(p) => {
            // datasets' `_interleave_map_style_datasets`: sources drawn by numpy's
            // `default_rng(seed).choice(n, p=p)`; stop once any (under) / every (over) source has
            // been used up, a used-up source starting again from its first row.
            let mut cdf: Vec<f64> = p
                .iter()
                .scan(0.0, |acc, x| {
                    *acc += x;
                    Some(*acc)
                })
                .collect();
            let last = cdf.last().copied().unwrap_or(1.0);
            for c in &mut cdf {
                *c /= last;
            }
            let mut rng = crate::rng::NumpyRng::new(seed);
            let mut current = vec![0usize; sets.len()];
            // A source that is never drawn (probability 0) cannot be used up; numpy would draw
            // forever waiting for it, so it counts as done.
            let mut exhausted: Vec<bool> = p.iter().map(|x| *x <= 0.0).collect();
            loop {
                let stop = if mix == Mix::InterleaveUnder {
                    exhausted.iter().zip(p).any(|(e, x)| *e && *x > 0.0)
                } else {
                    exhausted.iter().all(|e| *e)
                };
                if stop {
                    break;
                }
                let j = rng.choice(&cdf);
                if lens[j] == 0 {
                    break;
                }
                out.push(sets[j][current[j]].clone());
                current[j] += 1;
                if current[j] >= lens[j] {
                    exhausted[j] = true;
                    current[j] = 0;
                }
            }
        }
    }
    out
}

/// `num_samples` as LLaMA-Factory draws it from numpy's global generator (seeded by
/// transformers' `set_seed`, shared by the datasets in load order): `permutation(len)[:n]`, then
/// `choice(len, n - len)` repeats when `n` exceeds the rows.
fn sample(rows: Vec<Json>, n: usize, legacy: &mut crate::rng::Mt19937) -> Vec<Json> {
    let len = rows.len();
    let mut order = legacy.permutation(len);
    order.truncate(n);
    while order.len() < n && len > 0 {
        order.push(legacy.interval((len - 1) as u32) as usize);
    }
    order.into_iter().map(|i| rows[i].clone()).collect()
}

/// The aligned rows of the named datasets, merged; each row with its 1-based number in its file.
pub fn aligned_rows(args: &DataArgs, report: &mut Report) -> Result<Vec<(String, usize, Aligned)>> {
    let mut sets: Vec<Vec<(usize, Aligned)>> = Vec::new();
    let mut names = Vec::new();
    let mut legacy = crate::rng::Mt19937::new(args.seed as u32);
    for name in &args.dataset {
        let (info_path, info) = read_info(&args.dataset_dir, name)?;
        let attr = DatasetAttr::from_info(&info_path, &info, name)?;
        let mut rows = attr.rows()?;
        let read = rows.len();
        if let Some(n) = attr.num_samples {
            rows = sample(rows, n, &mut legacy);
        }
        if let Some(m) = args.max_samples {
            rows.truncate(m);
        }
        report.rows.push((name.clone(), read));
        let mut set = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let a = convert::convert(&attr, row, i + 1)?;
            set.push((i + 1, a));
        }
        names.push(name.clone());
        sets.push(set);
    }
    let tagged: Vec<Vec<(usize, Aligned)>> = sets
        .into_iter()
        .enumerate()
        .map(|(k, s)| {
            s.into_iter()
                .map(|(r, a)| (k * 1_000_000_000 + r, a))
                .collect()
        })
        .collect();
    let merged: Vec<(usize, Aligned)> = if tagged.len() == 1 || args.mix_strategy == Mix::Concat {
        tagged.into_iter().flatten().collect()
    } else {
        if let Some(p) = &args.interleave_probs {
            if p.len() != tagged.len() || p.iter().any(|x| x.is_nan() || *x < 0.0) {
                return Err(Error::Invalid(format!(
                    "`interleave_probs` has {} values for {} datasets; it needs one non-negative probability per dataset",
                    p.len(),
                    tagged.len()
                )));
            }
            // numpy's `choice` (through `datasets`) refuses probabilities that do not sum to 1.
            let sum: f64 = p.iter().sum();
            if (sum - 1.0).abs() > f64::EPSILON.sqrt() {
                return Err(Error::Invalid(format!(
                    "`interleave_probs` sum to {sum}, not 1 (numpy's choice, which datasets' interleave_datasets calls, refuses that)"
                )));
            }
            if let Some(k) = (0..p.len()).find(|&k| p[k] > 0.0 && tagged[k].is_empty()) {
                return Err(Error::Invalid(format!(
                    "`interleave_probs` gives dataset `{}` a probability, but it has no rows",
                    args.dataset.get(k).map(String::as_str).unwrap_or("?")
                )));
            }
        }
        interleave(
            tagged,
            args.mix_strategy,
            args.interleave_probs.as_deref(),
            args.seed,
        )
    };
    Ok(merged
        .into_iter()
        .map(|(tag, a)| (names[tag / 1_000_000_000].clone(), tag % 1_000_000_000, a))
        .collect())
}

/// The template of a run, with the data keys that change it applied.
pub fn template_for(args: &DataArgs) -> Result<Option<Template>> {
    let Some(name) = &args.template else {
        return Ok(None);
    };
    let mut t = Template::get(name)?;
    if args.masking.train_on_prompt && t.efficient_eos {
        return Err(Error::Invalid(format!(
            "template `{name}` does not support `train_on_prompt` (its eos is efficient_eos, as LLaMA-Factory says)"
        )));
    }
    if let Some(f) = &args.tool_format {
        t.set_tool_format(f);
    }
    if let Some(s) = &args.default_system {
        t.default_system = s.clone();
    }
    if t.is_reasoning() {
        t.enable_thinking = Some(args.enable_thinking);
        t.preserve_thinking = args.preserve_thinking;
    }
    Ok(Some(t))
}

fn pretokenized_file(args: &DataArgs) -> Option<PathBuf> {
    let name = args.dataset.first()?;
    if !name.ends_with(".jsonl") || args.dataset.len() != 1 {
        return None;
    }
    [PathBuf::from(name), args.dataset_dir.join(name)]
        .into_iter()
        .find(|p| p.is_file())
}

/// Read and encode a run's data.
pub fn load(args: &DataArgs) -> Result<(Encoded, Report)> {
    load_with(args, |_| {})
}

/// [`load`], with `adjust` applied to the template first (tests pin the llama3 tool prompt's date).
pub fn load_with(args: &DataArgs, adjust: impl FnOnce(&mut Template)) -> Result<(Encoded, Report)> {
    let mut report = Report::default();
    let (packing, _) = args.packing();
    let cutoff = args.effective_cutoff();
    if let Some(p) = pretokenized_file(args) {
        let mut examples = example::load_pretokenized(&p)?;
        if let Some(m) = args.max_samples {
            examples.truncate(m);
        }
        report.rows.push((p.display().to_string(), examples.len()));
        example::truncate(&mut examples, cutoff);
        if packing {
            examples = example::pack(examples, cutoff, 0, args.neat_packing);
        }
        return Ok((Encoded::Examples(examples), report));
    }
    let mut template = template_for(args)?;
    if let Some(t) = template.as_mut() {
        adjust(t);
    }
    if template.is_none() && args.stage != Stage::Pt {
        return Err(Error::Invalid(
            "`template` is needed to encode a chat dataset (e.g. `template: qwen3`); lorafit does not parse the tokenizer's jinja chat template".into(),
        ));
    }
    report.template = template.as_ref().map(|t| t.name.clone());
    let tok = TextTokenizer::load(&args.tokenizer_dir, template.as_ref())?;
    report.pad_id = tok.pad_id.unwrap_or(0);
    let rows = aligned_rows(args, &mut report)?;
    let mut keep: Vec<Aligned> = Vec::with_capacity(rows.len());
    // LLaMA-Factory preprocesses in `datasets.map` batches of `preprocessing_batch_size` rows of
    // the merged dataset (dropped rows included), and packs within each batch.
    let batch_rows = args.preprocessing_batch_size.max(1);
    let mut batch_of: Vec<usize> = Vec::with_capacity(rows.len());
    let ok: fn(&Aligned) -> bool = match args.stage {
        Stage::Pt => |_| true,
        Stage::Sft => process::supervised_ok,
        Stage::Pairwise | Stage::Kto => process::pairwise_ok,
    };
    for (index, (dataset, row, a)) in rows.into_iter().enumerate() {
        if args.stage == Stage::Kto && (a.broken.is_some() || !ok(&a)) {
            // KTO's KL answers rotate over the whole batch, dropped rows included.
            report.dropped.push(Dropped {
                dataset,
                row,
                reason: a
                    .broken
                    .clone()
                    .unwrap_or_else(|| "a KTO row needs a `kto_tag` and one answer".into()),
            });
            keep.push(a);
            batch_of.push(index / batch_rows);
            continue;
        }
        if let Some(reason) = &a.broken {
            report.dropped.push(Dropped {
                dataset,
                row,
                reason: reason.clone(),
            });
        } else if !ok(&a) {
            report.dropped.push(Dropped {
                dataset,
                row,
                reason: format!(
                    "{} prompt messages and {} responses: the {} stage needs an odd number of prompt messages and {}",
                    a.prompt.len(),
                    a.response.len(),
                    match args.stage {
                        Stage::Pt => "pt",
                        Stage::Sft => "sft",
                        Stage::Pairwise => "rm / dpo",
                        Stage::Kto => "kto",
                    },
                    if args.stage == Stage::Sft {
                        "one response"
                    } else {
                        "a chosen and a rejected response (ranking: true in dataset_info.json)"
                    }
                ),
            });
        } else {
            keep.push(a);
            batch_of.push(index / batch_rows);
        }
    }
    let encoded = match (args.stage, &template) {
        (Stage::Pt, _) => {
            let mut out = Vec::new();
            for batch in map_batches(&keep, &batch_of) {
                out.extend(process::pretrain(
                    &tok,
                    args.template.as_deref().unwrap_or(""),
                    batch,
                    cutoff,
                    packing,
                )?);
            }
            Encoded::Examples(out)
        }
        (Stage::Sft, Some(t)) => {
            let mut out = Vec::new();
            for batch in map_batches(&keep, &batch_of) {
                let encoded = batch
                    .iter()
                    .map(|a| process::supervised(&tok, t, a, cutoff, args.masking))
                    .collect::<Result<Vec<_>>>()?;
                out.extend(if packing {
                    example::pack(encoded, cutoff, report.pad_id, args.neat_packing)
                } else {
                    encoded
                });
            }
            Encoded::Examples(out)
        }
        (Stage::Pairwise, Some(t)) => Encoded::Pairs(
            keep.iter()
                .map(|a| process::pairwise(&tok, t, a, cutoff))
                .collect::<Result<Vec<_>>>()?,
        ),
        (Stage::Kto, Some(t)) => {
            let mut out = Vec::new();
            for batch in keep.chunks(args.preprocessing_batch_size.max(1)) {
                out.extend(
                    process::feedback(&tok, t, batch, cutoff)?
                        .into_iter()
                        .flatten(),
                );
            }
            Encoded::Feedback(out)
        }
        (_, None) => return Err(Error::Invalid("`template` is needed for this stage".into())),
    };
    if encoded.is_empty() {
        let why = report
            .dropped
            .first()
            .map(|d| format!(" (e.g. {} row {}: {})", d.dataset, d.row, d.reason))
            .unwrap_or_default();
        return Err(Error::Invalid(format!(
            "no example is left of `dataset: {}`{why}",
            args.dataset.join(",")
        )));
    }
    Ok((encoded, report))
}

/// The kept rows cut where their `datasets.map` batch changes (`batch_of`: each row's batch).
fn map_batches<'a, T>(rows: &'a [T], batch_of: &[usize]) -> Vec<&'a [T]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=rows.len() {
        if i == rows.len() || batch_of[i] != batch_of[start] {
            if i > start {
                out.push(&rows[start..i]);
            }
            start = i;
        }
    }
    out
}

/// `dataset` as LLaMA-Factory splits it.
pub fn dataset_names(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

/// A path relative to the config's directory when it is not one relative to the working directory.
pub fn resolve(base: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() || path.exists() || !base.join(path).exists() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// LLaMA-Factory's `val_size` split of the encoded dataset: `datasets`' `train_test_split` with
/// the run's seed — a count when `val_size` > 1, else a fraction rounded up — and numpy's
/// permutation, so the same rows in the same order: `(train, eval)` = the permutation's tail and
/// head.
pub fn split_val<T>(items: Vec<T>, val_size: f64, seed: u64) -> Result<(Vec<T>, Vec<T>)> {
    let n = items.len();
    let k = if val_size > 1.0 {
        val_size as usize
    } else {
        (val_size * n as f64).ceil() as usize
    };
    if val_size == 1.0 || val_size <= 0.0 || k == 0 || k >= n {
        return Err(Error::Invalid(format!(
            "`val_size: {val_size}` leaves {} of {n} examples for training and {k} for evaluation \
             (a fraction below 1, or a count above 1)",
            n.saturating_sub(k)
        )));
    }
    let perm = crate::rng::NumpyRng::new(seed).permutation(n);
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    let mut take = |i: usize| slots[i].take().expect("a permutation visits each row once");
    let eval: Vec<T> = perm[..k].iter().map(|&i| take(i)).collect();
    let train: Vec<T> = perm[k..].iter().map(|&i| take(i)).collect();
    Ok((train, eval))
}
