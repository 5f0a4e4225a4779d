//! The training loop of Contract 3: token-weighted gradient accumulation, clipping, AdamW with a
//! schedule, logging (`trainer_log.jsonl`), atomic `checkpoint-N/` saves, exact resume, stop on
//! request (Ctrl-C) with a checkpoint, and a stop with nothing lost on a non-finite loss.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use burn::tensor::{Device, Tensor};
use serde_json::{Value, json};

use crate::config::{Backend, Resume, TrainArgs};
use crate::data::{Encoded, Example, Feedback, Pair, Schedule};
use crate::error::{Error, Result};
use crate::lora::{Adapter, LoraSpec, host_of};
use crate::model::{Model, StepRng};
use crate::optim::{AdamW, clip, lr_at};
use crate::quant_tune::Choice;
use crate::value_head::ValueHead;
use crate::weights::{HostTensor, Weights, save_f32, write_atomic};

/// What happened at one optimizer step (for progress bars and tests).
#[derive(Debug, Clone, PartialEq)]
pub struct StepInfo {
    /// 1-based.
    pub step: u64,
    pub total_steps: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: Option<f64>,
    pub epoch: f64,
    pub tokens: u64,
    pub tokens_per_second: f64,
    pub elapsed_secs: f64,
    /// Device memory in use now, where the backend reports it.
    pub memory_bytes: Option<u64>,
    /// `stage: dpo`: TRL's reward and log-prob metrics of the step (means over its micro-batches).
    pub metrics: Vec<(String, f64)>,
    /// The eval loss, on the steps that evaluate.
    pub eval_loss: Option<f64>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Finished,
    /// Stopped on request after `step`; a checkpoint was written.
    Interrupted {
        step: u64,
        checkpoint: PathBuf,
    },
}

/// The record of a run.
#[derive(Debug, Clone)]
pub struct Summary {
    pub outcome: Outcome,
    /// Every step this process ran (not the resumed-over ones).
    pub steps: Vec<StepInfo>,
    pub peak_memory_bytes: Option<u64>,
    pub trainable_params: usize,
    pub output_dir: PathBuf,
}

/// Make the device for a backend (with autodiff, and gradient checkpointing when asked).
pub fn make_device(backend: Backend, checkpointing: bool) -> Result<Device> {
    let device = make_plain_device(backend)?.autodiff();
    Ok(if checkpointing {
        device.gradient_checkpointing()
    } else {
        device
    })
}

/// The device of `backend` without autodiff (benchmarks, inference).
pub fn make_plain_device(backend: Backend) -> Result<Device> {
    #[allow(deprecated)]
    let device = match backend {
        Backend::NdArray => Device::ndarray(),
        Backend::Flex => Device::flex(),
        #[cfg(feature = "wgpu")]
        Backend::Wgpu => Device::wgpu(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(feature = "vulkan")]
        Backend::Vulkan => Device::vulkan(burn::tensor::DeviceKind::DefaultDevice),
        #[cfg(feature = "cuda")]
        Backend::Cuda => Device::cuda(0),
        #[allow(unreachable_patterns)]
        other => {
            return Err(Error::Unsupported(format!(
                "`backend: {}` is not compiled into this build (rebuild with `--features {}`)",
                other.name(),
                other.name()
            )));
        }
    };
    Ok(device)
}

/// What serves wgpu's default adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgpuRuntime {
    /// cubecl's name for the runtime: `wgpu<wgsl>` (shaders/'s WGSL kernels launch) or
    /// `wgpu<spirv>` (a `vulkan` build on a Vulkan adapter with the memory model, buffer device
    /// addresses and SPIR-V 1.3: the `#[cube]` kernels instead).
    pub name: String,
    /// The adapter's cooperative-matrix shapes (VK_KHR_cooperative_matrix: tensor cores), which
    /// cubek's matmul uses; only the SPIR-V compiler reaches them.
    pub cooperative_matrices: usize,
}

/// The runtime of wgpu's default adapter, `None` where there is no adapter.
#[cfg(feature = "wgpu")]
pub fn wgpu_runtime() -> Option<WgpuRuntime> {
    let device = burn_cubecl::cubecl::Device::Wgpu(Default::default());
    std::panic::catch_unwind(move || {
        let client = device.client();
        WgpuRuntime {
            name: client.name().to_string(),
            cooperative_matrices: client.features().matmul.cmma.len(),
        }
    })
    .ok()
}

fn memory_in_use(device: &Device) -> Option<u64> {
    device.memory_pool_usage().map(|u| u.bytes_in_use)
}

/// Resident-set high-water mark of this process (Linux), for CPU backends.
pub fn process_peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn hms(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
}

/// The DPO metrics of trainer_log.jsonl, TRL's names.
pub const DPO_METRICS: [&str; 6] = [
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
];

/// The KTO metrics of trainer_log.jsonl: the batch KL estimate and TRL's rewards (means of the
/// micro-batches that have desirable / undesirable examples, over the step's micro-batches).
pub const KTO_METRICS: [&str; 3] = ["kl", "rewards/chosen", "rewards/rejected"];

/// A 1-D tensor's values on the host (detached), for metrics.
fn host(t: Tensor<1>) -> Vec<f64> {
    t.detach()
        .inner()
        .into_data()
        .try_into_vec_as::<f32>()
        .unwrap_or_default()
        .into_iter()
        .map(f64::from)
        .collect()
}

/// What a checkpoint must agree on with the run resuming it.
fn fingerprint(args: &TrainArgs, num_examples: usize, total: u64) -> Value {
    json!({
        "per_device_train_batch_size": args.batch_size,
        "gradient_accumulation_steps": args.grad_accum,
        "seed": args.seed,
        "shuffle": args.shuffle,
        "num_examples": num_examples,
        "total_steps": total,
        "lora_rank": args.lora_rank,
        "packing": args.packing,
        "neat_packing": args.data.neat_packing,
        "train_on_prompt": args.data.masking.train_on_prompt,
        "mask_history": args.data.masking.mask_history,
        "dpo": args.dpo.is_some(),
        // The two attention paths sum in different orders (`attention_kernel`).
        "attention_kernel_cube": args.cube_attention,
    })
}

/// The pid in a leftover's name suffix (`.tmpPID`, `.oldPID`), when it is not a running process
/// other than this one (on Linux; elsewhere any pid but ours counts as gone).
fn dead_pid(suffix: &str) -> bool {
    let Ok(pid) = suffix.parse::<u32>() else {
        return false;
    };
    if pid == std::process::id() {
        return true;
    }
    !Path::new("/proc").join(pid.to_string()).exists() || !Path::new("/proc/self").exists()
}

/// Remove what a killed save leaves in `out`: `.checkpoint-N.tmpPID/` (an incomplete checkpoint)
/// and `FILE.tmpPID` files (an incomplete atomic write); a `.checkpoint-N.oldPID/` (a complete
/// checkpoint renamed away while its replacement was moved in) is restored as `checkpoint-N` when
/// that is missing, else removed. Returns one line per thing done.
pub fn clean_leftovers(out: &Path) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let entries = std::fs::read_dir(out).map_err(|e| Error::io(out, e))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        let Some(name) = p.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        if let Some(rest) = name.strip_prefix(".checkpoint-")
            && let Some((step, tail)) = rest.split_once('.')
            && step.parse::<u64>().is_ok()
        {
            if let Some(pid) = tail.strip_prefix("tmp")
                && dead_pid(pid)
            {
                std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
                done.push(format!(
                    "removed {name} (a checkpoint whose save was interrupted)"
                ));
            } else if let Some(pid) = tail.strip_prefix("old")
                && dead_pid(pid)
            {
                let target = out.join(format!("checkpoint-{step}"));
                if target.exists() {
                    std::fs::remove_dir_all(&p).map_err(|e| Error::io(&p, e))?;
                    done.push(format!("removed {name} (checkpoint-{step} was replaced)"));
                } else {
                    std::fs::rename(&p, &target).map_err(|e| Error::io(&p, e))?;
                    done.push(format!(
                        "restored checkpoint-{step} from {name} (its replacement was interrupted)"
                    ));
                }
            }
            continue;
        }
        if p.is_file()
            && let Some((_, pid)) = name.rsplit_once(".tmp")
            && !pid.is_empty()
            && dead_pid(pid)
        {
            std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
            done.push(format!(
                "removed {name} (a file whose write was interrupted)"
            ));
        }
    }
    Ok(done)
}

/// The newest `checkpoint-N` directory in `dir`.
pub fn latest_checkpoint(dir: &Path) -> Option<PathBuf> {
    let rd = std::fs::read_dir(dir).ok()?;
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let n: u64 = name.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path()
                .join("trainer_state.json")
                .is_file()
                .then_some((n, e.path()))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, p)| p)
}

/// Everything needed to continue exactly.
struct Saved {
    step: u64,
    log_history: Vec<Value>,
    /// The 4-bit path chosen for each product shape (src/quant_tune.rs).
    quant_kernels: Vec<Choice>,
}

/// The training run's state and its outputs.
pub struct Trainer<'a> {
    pub args: TrainArgs,
    pub model: &'a Model,
    pub adapter: Adapter,
    examples: Vec<Example>,
    /// `stage: dpo`: the pairs (`examples` then holds their chosen sides, for counting).
    pairs: Option<Vec<Pair>>,
    /// `stage: kto`: the (target, KL completion, desirable) triples (`examples` holds targets).
    feedback: Option<Vec<Feedback>>,
    /// Held-out data for the eval loss: examples (pt / sft), pairs (dpo) or feedback (kto).
    eval: Encoded,
    schedule: Schedule,
    pub total_steps: u64,
    warmup: u64,
    optimizer: AdamW,
    start_step: u64,
    log_history: Vec<Value>,
    stop: Arc<AtomicBool>,
    /// What [`clean_leftovers`] did in output_dir before the run (for the caller to print).
    pub cleaned: Vec<String>,
}

impl std::fmt::Debug for Trainer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("total_steps", &self.total_steps)
            .finish()
    }
}

impl<'a> Trainer<'a> {
    /// Set up a run: adapter (new, from adapter_name_or_path, or from the checkpoint resumed),
    /// optimizer state and the step to start from.
    /// A `stage: dpo` run on chosen / rejected pairs (the reference is the base with the adapter
    /// disabled; TRL's sigmoid loss with `pref_beta`, `dpo_label_smoothing`, plus `pref_ftx` × the
    /// chosen answers' per-token NLL, as LLaMA-Factory's DPO trainer).
    pub fn new_pairs(args: TrainArgs, model: &'a Model, pairs: Vec<Pair>) -> Result<Self> {
        if args.dpo.is_none() && args.stage != "rm" {
            return Err(Error::Invalid(
                "pairs are trained with `stage: dpo` or `stage: rm`".into(),
            ));
        }
        let chosen = pairs.iter().map(|p| p.chosen.clone()).collect();
        let mut t = Self::new(args, model, chosen)?;
        t.pairs = Some(pairs);
        Ok(t)
    }

    /// A `stage: kto` run on desirable / undesirable examples (the reference is the base with the
    /// adapter disabled; TRL's `kto_loss` with `pref_beta`, `kto_chosen_weight`,
    /// `kto_rejected_weight`, plus `pref_ftx` × the desirable answers' per-token NLL, as
    /// LLaMA-Factory's KTO trainer).
    pub fn new_feedback(
        args: TrainArgs,
        model: &'a Model,
        feedback: Vec<Feedback>,
    ) -> Result<Self> {
        if args.kto.is_none() {
            return Err(Error::Invalid(
                "feedback is trained with `stage: kto`".into(),
            ));
        }
        let targets = feedback.iter().map(|f| f.example.clone()).collect();
        let mut t = Self::new(args, model, targets)?;
        t.feedback = Some(feedback);
        Ok(t)
    }

    /// The per-step metrics this run logs (DPO's, KTO's, or none).
    fn metric_names(&self) -> &'static [&'static str] {
        if self.pairs.is_some() && self.args.dpo.is_some() {
            &DPO_METRICS
        } else if self.feedback.is_some() {
            &KTO_METRICS
        } else {
            &[]
        }
    }

    pub fn new(args: TrainArgs, model: &'a Model, examples: Vec<Example>) -> Result<Self> {
        let device = model.device().clone();
        let vocab = model.config.arch.vocab_size as u32;
        for (i, e) in examples.iter().enumerate() {
            if let Some(t) = e.input_ids.iter().find(|t| **t >= vocab) {
                return Err(Error::Invalid(format!(
                    "example {} holds token id {t}, outside the model's vocabulary of {vocab}",
                    i + 1
                )));
            }
        }
        if examples.iter().all(|e| e.loss_tokens() == 0) {
            return Err(Error::Invalid(
                "no example has a label to learn (every label is -100 after truncation)".into(),
            ));
        }
        let schedule = Schedule {
            batch_size: args.batch_size,
            grad_accum: args.grad_accum,
            shuffle: args.shuffle,
            seed: args.seed,
            num_examples: examples.len(),
        };
        let total_steps = args.total_steps(schedule.steps_per_epoch());
        let warmup = args.warmup(total_steps);
        let targets = if args.lora_target.iter().any(|t| t == "all") {
            model
                .config
                .arch
                .all_lora_targets()
                .iter()
                .map(|s| s.to_string())
                .collect()
        } else {
            args.lora_target.clone()
        };
        let spec = LoraSpec {
            rank: args.lora_rank,
            alpha: args.lora_alpha,
            dropout: args.lora_dropout,
            rslora: args.use_rslora,
            targets,
            dora: args.use_dora,
        };
        // Leftovers of a run killed while saving go first (a renamed-away complete checkpoint
        // comes back), so the newest checkpoint is found among complete ones.
        let cleaned = if args.output_dir.is_dir() {
            clean_leftovers(&args.output_dir)?
        } else {
            Vec::new()
        };
        let resume_dir = match &args.resume {
            Resume::No => None,
            Resume::Latest => Some(latest_checkpoint(&args.output_dir).ok_or_else(|| {
                Error::Invalid(format!(
                    "`resume_from_checkpoint: true` but {} has no checkpoint-N directory",
                    args.output_dir.display()
                ))
            })?),
            Resume::Dir(d) => Some(d.clone()),
        };
        // `stage: rm`: the value head from the directory the run continues (the checkpoint, the
        // adapter, or the model, as LLaMA-Factory looks), else a fresh one.
        let hidden = model.config.arch.hidden_size as usize;
        let with_head = |mut a: Adapter, dirs: &[&Path]| -> Result<Adapter> {
            if args.stage == "rm" {
                let mut head = None;
                for d in dirs {
                    head = ValueHead::load(d, hidden, args.value_head_dropout, &device)?;
                    if head.is_some() {
                        break;
                    }
                }
                a.value_head = Some(head.unwrap_or_else(|| {
                    ValueHead::init(hidden, args.seed, args.value_head_dropout, &device)
                }));
            }
            Ok(a)
        };
        model.q4_tuner.set_mode(args.quant_kernel);
        model.cube_attention.set(args.cube_attention);
        let (adapter, optimizer, saved) = match &resume_dir {
            Some(dir) => {
                let adapter = with_head(
                    Adapter::load(dir, model, args.lora_dropout, &device)?,
                    &[dir.as_path()],
                )?;
                let (opt, saved) = load_state(
                    dir,
                    &adapter,
                    &fingerprint(&args, examples.len(), total_steps),
                    args.adamw,
                )?;
                // The interrupted run's 4-bit paths, so that every product is computed as it was.
                model.q4_tuner.restore(&saved.quant_kernels);
                (adapter, opt, Some(saved))
            }
            None => {
                let adapter = match &args.adapter_dir {
                    Some(d) => with_head(
                        Adapter::load(d, model, args.lora_dropout, &device)?,
                        &[d.as_path(), args.model_dir.as_path()],
                    )?,
                    None => with_head(
                        Adapter::init(model, spec, args.seed, &device)?,
                        &[args.model_dir.as_path()],
                    )?,
                };
                let params: Vec<Tensor<2>> = adapter
                    .params()
                    .into_iter()
                    .map(|(_, t)| t.clone().inner())
                    .collect();
                (adapter.clone(), AdamW::new(args.adamw, &params), None)
            }
        };
        let (start_step, log_history) = match saved {
            Some(s) => (s.step, s.log_history),
            None => (0, Vec::new()),
        };
        let mut optimizer = optimizer;
        // transformers' parameter groups: no weight decay on biases (the value head's).
        optimizer.no_decay = adapter
            .params()
            .iter()
            .map(|(k, _)| k.ends_with("bias"))
            .collect();
        Ok(Trainer {
            args,
            model,
            adapter,
            examples,
            pairs: None,
            feedback: None,
            eval: Encoded::Examples(Vec::new()),
            schedule,
            total_steps,
            warmup,
            optimizer,
            start_step,
            log_history,
            stop: Arc::new(AtomicBool::new(false)),
            cleaned,
        })
    }

    /// The examples the eval loss is computed on (`eval_strategy` steps / epoch).
    pub fn with_eval(self, eval: Vec<Example>) -> Self {
        self.with_eval_data(Encoded::Examples(eval))
    }

    /// The held-out data of the run's kind: examples, DPO pairs or KTO feedback.
    pub fn with_eval_data(mut self, eval: Encoded) -> Self {
        self.eval = eval;
        self
    }

    /// transformers' eval loss: each batch's mean token loss (batches of
    /// `per_device_eval_batch_size` in order, dropout off), averaged over the examples.
    pub fn eval_loss(&self) -> Option<f64> {
        self.evaluate().map(|(l, _)| l)
    }

    /// The eval loss and the stage's eval metrics, as LLaMA-Factory logs them: the loss is
    /// transformers' (each batch's mean, weighted by its size, dropout off); DPO's
    /// `eval_rewards/*` and `eval_logps/*` are the mean of the batches' means (TRL's stored
    /// metrics); KTO's `eval_rewards/chosen|rejected` are sums over the eval set divided by
    /// their counts and `eval_kl` is the *sum* of the batches' KL estimates, as LLaMA-Factory's
    /// KTO `log` adds them up.
    pub fn evaluate(&self) -> Option<(f64, Vec<(String, f64)>)> {
        let bs = self.args.eval.as_ref()?.batch_size;
        let mut total = 0.0;
        let mut n = 0usize;
        let mut metrics: Vec<(String, f64)> = Vec::new();
        let scalar = |t: Tensor<1>| t.inner().into_scalar::<f32>() as f64;
        match (&self.eval, self.args.dpo, self.args.kto) {
            (Encoded::Examples(ex), _, _) => {
                for chunk in ex.chunks(bs) {
                    let batch: Vec<&Example> = chunk.iter().collect();
                    let (sum, count) =
                        self.model
                            .loss_sum(&batch, &self.adapter, &mut StepRng::eval());
                    if count == 0 {
                        continue;
                    }
                    total += scalar(sum) / count as f64 * chunk.len() as f64;
                    n += chunk.len();
                }
            }
            (Encoded::Pairs(pairs), Some(dpo), _) => {
                let mut sums = [0.0f64; DPO_METRICS.len()];
                let mut batches = 0usize;
                let idx: Vec<usize> = (0..pairs.len()).collect();
                for chunk in idx.chunks(bs) {
                    let (loss, m) = self.dpo_loss(pairs, chunk, dpo, 1);
                    total += scalar(loss) * chunk.len() as f64;
                    n += chunk.len();
                    for (s, v) in sums.iter_mut().zip(m) {
                        *s += v;
                    }
                    batches += 1;
                }
                for (name, s) in DPO_METRICS.iter().zip(sums) {
                    metrics.push((format!("eval_{name}"), s / batches.max(1) as f64));
                }
            }
            (Encoded::Pairs(pairs), None, _) => {
                // LLaMA-Factory's reward-model eval: the pairwise loss and ComputeAccuracy (the
                // share of pairs whose chosen score beats the rejected one).
                let mut right = 0usize;
                let idx: Vec<usize> = (0..pairs.len()).collect();
                for chunk in idx.chunks(bs) {
                    let (c, r) = self.rm_scores(pairs, chunk, &mut StepRng::eval());
                    total += scalar(rm_loss(c.clone(), r.clone())) * chunk.len() as f64;
                    n += chunk.len();
                    right += host(c)
                        .iter()
                        .zip(host(r))
                        .filter(|(c, r)| **c > *r)
                        .count();
                }
                metrics.push(("eval_accuracy".into(), right as f64 / n.max(1) as f64));
            }
            (Encoded::Feedback(fb), _, Some(kto)) => {
                let (mut kl, mut sum_c, mut n_c, mut sum_r, mut n_r) = (0.0, 0.0, 0, 0.0, 0);
                let idx: Vec<usize> = (0..fb.len()).collect();
                for chunk in idx.chunks(bs) {
                    let (loss, m) = self.kto_loss(fb, chunk, kto, 1);
                    total += scalar(loss) * chunk.len() as f64;
                    n += chunk.len();
                    let chosen = chunk.iter().filter(|&&i| fb[i].desirable).count();
                    kl += m[0].unwrap_or(0.0);
                    sum_c += m[1].unwrap_or(0.0) * chosen as f64;
                    n_c += chosen;
                    sum_r += m[2].unwrap_or(0.0) * (chunk.len() - chosen) as f64;
                    n_r += chunk.len() - chosen;
                }
                metrics.push(("eval_kl".into(), kl));
                let (c, r) = (sum_c / n_c.max(1) as f64, sum_r / n_r.max(1) as f64);
                if n_c > 0 {
                    metrics.push(("eval_rewards/chosen".into(), c));
                }
                if n_r > 0 {
                    metrics.push(("eval_rewards/rejected".into(), r));
                }
                if n_c > 0 && n_r > 0 {
                    metrics.push(("eval_rewards/margins".into(), c - r));
                }
            }
            _ => return None,
        }
        (n > 0).then(|| (total / n as f64, metrics))
    }

    /// A flag that, once set (e.g. by a Ctrl-C handler), ends the run after the current step
    /// with a checkpoint.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    pub fn start_step(&self) -> u64 {
        self.start_step
    }

    pub fn num_examples(&self) -> usize {
        self.examples.len()
    }

    /// Run from the start step to the end (or a stop request), calling `on_step` after each step.
    pub fn run(&mut self, mut on_step: impl FnMut(&StepInfo)) -> Result<Summary> {
        let out = self.args.output_dir.clone();
        std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
        self.rewrite_log()?;
        let device = self.model.device().clone();
        let spe = self.schedule.steps_per_epoch() as f64;
        let started = Instant::now();
        let mut steps = Vec::new();
        let mut tokens_total = 0u64;
        let mut peak: Option<u64> = None;
        let mut window: Vec<f64> = Vec::new();
        let names = self.metric_names();
        let mut metric_window: Vec<Vec<f64>> = Vec::new();
        // KTO's log as LLaMA-Factory's CustomKTOTrainer keeps it over a logging window: the KL
        // estimates summed, the rewards summed with their counts (chosen, n, rejected, n).
        let mut kto_window = [0.0f64; 5];
        let mut last_saved: Option<PathBuf> = latest_checkpoint(&out);
        for step in self.start_step..self.total_steps {
            let batches = self.schedule.step_batches(step as usize);
            let n_tokens: usize = batches
                .iter()
                .flatten()
                .map(|&i| self.examples[i].loss_tokens())
                .sum();
            let step_tokens: u64 = batches
                .iter()
                .flatten()
                .map(|&i| self.examples[i].input_ids.len() as u64)
                .sum();
            self.adapter.require_grad();
            let params: Vec<Tensor<2>> = self
                .adapter
                .params()
                .into_iter()
                .map(|(_, t)| t.clone())
                .collect();
            let mut acc: Option<Vec<Tensor<2>>> = None;
            let mut loss_value = 0.0f64;
            let mut pref_metrics = vec![0.0f64; names.len()];
            if n_tokens > 0 {
                for (mi, mb) in batches.iter().enumerate() {
                    let batch: Vec<&Example> = mb.iter().map(|&i| &self.examples[i]).collect();
                    let mut rng = StepRng::new(self.args.seed, step, mi as u64);
                    let loss = match (&self.pairs, self.args.dpo, &self.feedback, self.args.kto) {
                        (Some(pairs), Some(dpo), _, _) => {
                            let (loss, m) = self.dpo_loss(pairs, mb, dpo, batches.len());
                            for (acc, v) in pref_metrics.iter_mut().zip(m) {
                                *acc += v / batches.len() as f64;
                            }
                            loss
                        }
                        (Some(pairs), None, _, _) => {
                            let (c, r) = self.rm_scores(pairs, mb, &mut rng);
                            rm_loss(c, r) / batches.len() as f64
                        }
                        (_, _, Some(fb), Some(kto)) => {
                            let (loss, m) = self.kto_loss(fb, mb, kto, batches.len());
                            for (acc, v) in pref_metrics.iter_mut().zip(m) {
                                *acc += v.unwrap_or(0.0) / batches.len() as f64;
                            }
                            let chosen = mb.iter().filter(|&&i| fb[i].desirable).count() as f64;
                            let rejected = mb.len() as f64 - chosen;
                            kto_window[0] += m[0].unwrap_or(0.0);
                            kto_window[1] += m[1].unwrap_or(0.0) * chosen;
                            kto_window[2] += chosen;
                            kto_window[3] += m[2].unwrap_or(0.0) * rejected;
                            kto_window[4] += rejected;
                            loss
                        }
                        _ => {
                            let (sum, _) = self.model.loss_sum(&batch, &self.adapter, &mut rng);
                            sum / n_tokens as f64
                        }
                    };
                    loss_value += loss.clone().inner().into_scalar::<f32>() as f64;
                    // At the end of the forward pass (everything autodiff keeps is alive) and
                    // after backward (gradients); burn has no peak counter, so both are polled.
                    if let Some(m) = memory_in_use(&device) {
                        peak = Some(peak.map_or(m, |p| p.max(m)));
                    }
                    let grads = loss.backward();
                    if let Some(m) = memory_in_use(&device) {
                        peak = Some(peak.map_or(m, |p| p.max(m)));
                    }
                    let g: Vec<Tensor<2>> = params
                        .iter()
                        .map(|p| {
                            p.grad(&grads)
                                .unwrap_or_else(|| p.clone().inner().zeros_like())
                        })
                        .collect();
                    acc = Some(match acc {
                        None => g,
                        Some(a) => a.into_iter().zip(g).map(|(x, y)| x + y).collect(),
                    });
                }
            }
            if !loss_value.is_finite() {
                let kept = match &last_saved {
                    Some(p) => format!("the last good checkpoint is {}", p.display()),
                    None => "no checkpoint had been written yet; nothing was overwritten".into(),
                };
                return Err(Error::NonFiniteLoss {
                    step: step + 1,
                    loss: loss_value,
                    kept,
                });
            }
            let lr = lr_at(
                self.args.schedule,
                self.args.learning_rate,
                step,
                self.warmup,
                self.total_steps,
            );
            let mut grad_norm = None;
            if let Some(grads) = acc {
                let grads = if self.args.max_grad_norm > 0.0 {
                    let (g, norm) = clip(grads, self.args.max_grad_norm);
                    grad_norm = Some(norm);
                    g
                } else {
                    grads
                };
                if grad_norm.is_some_and(|n| !n.is_finite()) {
                    return Err(Error::NonFiniteLoss {
                        step: step + 1,
                        loss: f64::NAN,
                        kept: "the gradient norm is not finite; no checkpoint was overwritten"
                            .into(),
                    });
                }
                let inner: Vec<Tensor<2>> = params.into_iter().map(|p| p.inner()).collect();
                let updated = self.optimizer.update(inner, grads, lr);
                self.adapter
                    .set_params(updated.into_iter().map(|t| attach(t, &device)).collect());
            }
            tokens_total += step_tokens;
            let elapsed = started.elapsed().as_secs_f64();
            let info = StepInfo {
                step: step + 1,
                total_steps: self.total_steps,
                loss: loss_value,
                lr,
                grad_norm,
                epoch: (step + 1) as f64 / spe,
                tokens: step_tokens,
                tokens_per_second: tokens_total as f64 / elapsed.max(1e-9),
                elapsed_secs: elapsed,
                memory_bytes: memory_in_use(&device),
                metrics: names
                    .iter()
                    .map(|k| k.to_string())
                    .zip(pref_metrics.iter().copied())
                    .collect(),
                eval_loss: None,
            };
            window.push(loss_value);
            metric_window.push(pref_metrics);
            if (step + 1) % self.args.logging_steps == 0 || step + 1 == self.total_steps {
                let done = (step + 1 - self.start_step) as f64;
                let remaining = elapsed / done * (self.total_steps - step - 1) as f64;
                let mean = window.iter().sum::<f64>() / window.len() as f64;
                window.clear();
                let mut entry = json!({
                    "current_steps": step + 1,
                    "total_steps": self.total_steps,
                    "loss": round(mean, 4),
                    "lr": lr,
                    "epoch": round(info.epoch, 2),
                    "percentage": round(100.0 * (step + 1) as f64 / self.total_steps as f64, 2),
                    "elapsed_time": hms(elapsed),
                    "remaining_time": hms(remaining),
                    "tokens_per_second": round(info.tokens_per_second, 1),
                    "memory": info.memory_bytes.or_else(process_peak_rss_bytes),
                    "loss_exact": mean,
                });
                if !names.is_empty()
                    && let Some(o) = entry.as_object_mut()
                {
                    // LLaMA-Factory's DPO / KTO log: its `accuracy` and TRL's metric names,
                    // averaged over the logging window.
                    let n = metric_window.len().max(1) as f64;
                    for (k, name) in names.iter().enumerate() {
                        let v = metric_window.iter().map(|m| m[k]).sum::<f64>() / n;
                        o.insert(name.to_string(), json!(v));
                        if *name == "rewards/accuracies" {
                            o.insert("accuracy".into(), json!(round(v, 4)));
                        }
                    }
                    if self.feedback.is_some() {
                        // LLaMA-Factory's KTO `log`: sums over the window's micro-batches, the
                        // rewards over their counts, the KL left summed, margins when both kinds
                        // were seen.
                        let [kl, sc, nc, sr, nr] = kto_window;
                        o.insert("kl".into(), json!(kl));
                        o.remove("rewards/chosen");
                        o.remove("rewards/rejected");
                        if nc > 0.0 {
                            o.insert("rewards/chosen".into(), json!(sc / nc));
                        }
                        if nr > 0.0 {
                            o.insert("rewards/rejected".into(), json!(sr / nr));
                        }
                        if nc > 0.0 && nr > 0.0 {
                            o.insert("rewards/margins".into(), json!(sc / nc - sr / nr));
                        }
                    }
                }
                kto_window = [0.0; 5];
                metric_window.clear();
                self.append_log(&entry)?;
            }
            let mut info = info;
            if let Some(ev) = &self.args.eval {
                let every = match ev.every_steps {
                    Some(f) if f < 1.0 => (f * self.total_steps as f64).ceil() as u64,
                    Some(f) => f as u64,
                    None => self.schedule.steps_per_epoch() as u64,
                }
                .max(1);
                if (step + 1) % every == 0
                    && let Some((l, metrics)) = self.evaluate()
                {
                    info.eval_loss = Some(l);
                    let mut entry = json!({
                        "current_steps": step + 1,
                        "total_steps": self.total_steps,
                        "eval_loss": round(l, 4),
                        "eval_loss_exact": l,
                        "epoch": round(info.epoch, 2),
                        "percentage": round(100.0 * (step + 1) as f64 / self.total_steps as f64, 2),
                        "elapsed_time": hms(elapsed),
                    });
                    if let Some(o) = entry.as_object_mut() {
                        for (k, v) in metrics {
                            o.insert(k, json!(v));
                        }
                    }
                    self.append_log(&entry)?;
                }
            }
            on_step(&info);
            steps.push(info);
            let stop = self.stop.load(Ordering::SeqCst);
            if (step + 1) % self.args.save_steps == 0 || (stop && step + 1 < self.total_steps) {
                let dir = self.save_checkpoint(step + 1)?;
                last_saved = Some(dir.clone());
                if stop {
                    return Ok(Summary {
                        outcome: Outcome::Interrupted {
                            step: step + 1,
                            checkpoint: dir,
                        },
                        steps,
                        peak_memory_bytes: peak,
                        trainable_params: self.adapter.num_params(),
                        output_dir: out,
                    });
                }
            }
        }
        self.adapter
            .save(&out, &self.args.model_dir.display().to_string())?;
        if self.args.plot_loss {
            let points: Vec<(f64, f64)> = self
                .log_history
                .iter()
                .filter_map(|e| Some((e["current_steps"].as_f64()?, e["loss_exact"].as_f64()?)))
                .collect();
            let evals: Vec<(f64, f64)> = self
                .log_history
                .iter()
                .filter_map(|e| {
                    Some((e["current_steps"].as_f64()?, e["eval_loss_exact"].as_f64()?))
                })
                .collect();
            let png = out.join("training_loss.png");
            crate::plot::write_loss_png(&png, "loss", &out, &points, &evals)?;
            if !evals.is_empty() {
                // LLaMA-Factory's plot_loss draws eval_loss to its own file too.
                let png = out.join("training_eval_loss.png");
                crate::plot::write_loss_png(&png, "eval_loss", &out, &evals, &[])?;
            }
        }
        Ok(Summary {
            outcome: Outcome::Finished,
            steps,
            peak_memory_bytes: peak,
            trainable_params: self.adapter.num_params(),
            output_dir: out,
        })
    }

    fn log_path(&self) -> PathBuf {
        self.args.output_dir.join("trainer_log.jsonl")
    }

    fn rewrite_log(&self) -> Result<()> {
        let mut text = String::new();
        for e in &self.log_history {
            text.push_str(&e.to_string());
            text.push('\n');
        }
        write_atomic(&self.log_path(), text.as_bytes())
    }

    fn append_log(&mut self, entry: &Value) -> Result<()> {
        use std::io::Write;
        let path = self.log_path();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        writeln!(f, "{entry}").map_err(|e| Error::io(&path, e))?;
        self.log_history.push(entry.clone());
        Ok(())
    }

    /// One micro-batch of pairs: chosen then rejected in one forward (as LLaMA-Factory's
    /// collator concatenates them), the reference with the adapter disabled; the mean loss over
    /// the pairs divided by the step's number of micro-batches (transformers' accumulation), and
    /// the micro-batch's metrics in [`DPO_METRICS`] order.
    fn dpo_loss(
        &self,
        pairs: &[Pair],
        mb: &[usize],
        dpo: crate::config::DpoArgs,
        micro_batches: usize,
    ) -> (Tensor<1>, [f64; DPO_METRICS.len()]) {
        use burn::tensor::activation::softplus;
        let b = mb.len();
        let batch = pair_batch(pairs, mb);
        // LLaMA-Factory's DPO and KTO trainers disable dropout (`disable_dropout_in_model`).
        let (policy, counts) = self
            .model
            .seq_logps(&batch, &self.adapter, &mut StepRng::eval());
        let (reference, _) =
            self.model
                .seq_logps(&batch, &self.adapter.disabled(), &mut StepRng::eval());
        let reference = reference.detach();
        let (pc, pr) = (policy.clone().slice(0..b), policy.slice(b..2 * b));
        let (rc, rr) = (reference.clone().slice(0..b), reference.slice(b..2 * b));
        let z = ((pc.clone() - pr.clone()) - (rc.clone() - rr.clone())) * dpo.beta;
        // −log σ(z)(1 − ε) − log σ(−z) ε, with −log σ(x) = softplus(−x).
        let mut losses = softplus(z.clone().neg(), 1.0) * (1.0 - dpo.label_smoothing)
            + softplus(z, 1.0) * dpo.label_smoothing;
        if dpo.ftx > 1e-6 {
            let lens: Vec<f32> = counts[..b].iter().map(|&c| c.max(1) as f32).collect();
            let lens: Tensor<1> = Tensor::from_data(
                burn::tensor::TensorData::new(lens, [b]),
                self.model.device(),
            );
            losses = losses + (pc.clone().neg() / lens) * dpo.ftx;
        }
        let loss = losses.mean() / micro_batches as f64;
        let (pc, pr, rc, rr) = (host(pc), host(pr), host(rc), host(rr));
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        let chosen: Vec<f64> = pc
            .iter()
            .zip(&rc)
            .map(|(p, r)| dpo.beta * (p - r))
            .collect();
        let rejected: Vec<f64> = pr
            .iter()
            .zip(&rr)
            .map(|(p, r)| dpo.beta * (p - r))
            .collect();
        let acc: Vec<f64> = chosen
            .iter()
            .zip(&rejected)
            .map(|(c, r)| f64::from(u8::from(c > r)))
            .collect();
        let margins: Vec<f64> = chosen.iter().zip(&rejected).map(|(c, r)| c - r).collect();
        (
            loss,
            [
                mean(&chosen),
                mean(&rejected),
                mean(&acc),
                mean(&margins),
                mean(&pc),
                mean(&pr),
            ],
        )
    }

    /// `stage: rm`: the value head's score at each sequence's last token, chosen `[b]` and
    /// rejected `[b]`, from one forward over chosen then rejected (LLaMA-Factory's pairwise batch).
    fn rm_scores(&self, pairs: &[Pair], mb: &[usize], rng: &mut StepRng) -> (Tensor<1>, Tensor<1>) {
        let b = mb.len();
        let batch = pair_batch(pairs, mb);
        let len = batch.iter().map(|e| e.input_ids.len()).max().unwrap_or(0);
        let hidden = self.model.hidden(&batch, &self.adapter, rng);
        let head = self
            .adapter
            .value_head
            .as_ref()
            .expect("a stage: rm trainer is built with a value head");
        let values = head.forward(hidden, rng).reshape([2 * b, len]);
        let last: Vec<i64> = batch
            .iter()
            .map(|e| e.input_ids.len().saturating_sub(1) as i64)
            .collect();
        let idx: Tensor<2, burn::tensor::Int> = Tensor::from_data(
            burn::tensor::TensorData::new(last, [2 * b, 1]),
            self.model.device(),
        );
        let scores = values.gather(1, idx).reshape([2 * b]);
        (scores.clone().slice(0..b), scores.slice(b..2 * b))
    }

    /// One micro-batch of KTO feedback: the targets with gradients, their KL completions without
    /// (adapter on), the reference of both with the adapter disabled; TRL's `kto_loss`, its mean
    /// over the micro-batch, `pref_ftx` × the desirable answers' per-token NLL rescaled as
    /// LLaMA-Factory does, divided by the step's micro-batches; metrics in [`KTO_METRICS`] order
    /// (None where the micro-batch has no example of that kind).
    fn kto_loss(
        &self,
        feedback: &[Feedback],
        mb: &[usize],
        kto: crate::config::KtoArgs,
        micro_batches: usize,
    ) -> (Tensor<1>, [Option<f64>; KTO_METRICS.len()]) {
        use burn::tensor::activation::sigmoid;
        let b = mb.len();
        let device = self.model.device();
        let targets: Vec<&Example> = mb.iter().map(|&i| &feedback[i].example).collect();
        let kls: Vec<&Example> = mb.iter().map(|&i| &feedback[i].kl).collect();
        let eval = || StepRng::eval();
        let (policy, counts) = self.model.seq_logps(&targets, &self.adapter, &mut eval());
        let disabled = self.adapter.disabled();
        let policy_kl = host(self.model.seq_logps(&kls, &self.adapter, &mut eval()).0);
        let reference = self
            .model
            .seq_logps(&targets, &disabled, &mut eval())
            .0
            .detach();
        let reference_kl = host(self.model.seq_logps(&kls, &disabled, &mut eval()).0);
        // The batch's KL estimate, detached and clamped at 0.
        let kl = (policy_kl
            .iter()
            .zip(&reference_kl)
            .map(|(p, r)| p - r)
            .sum::<f64>()
            / b.max(1) as f64)
            .max(0.0);
        let tags: Vec<bool> = mb.iter().map(|&i| feedback[i].desirable).collect();
        let vec1 =
            |v: Vec<f32>| Tensor::<1>::from_data(burn::tensor::TensorData::new(v, [b]), device);
        let desirable = vec1(tags.iter().map(|&t| f32::from(u8::from(t))).collect());
        let undesirable = vec1(tags.iter().map(|&t| f32::from(u8::from(!t))).collect());
        let ratio = policy.clone() - reference.clone();
        // 1 − σ(β(r − KL)) for desirable, 1 − σ(β(KL − r)) for undesirable, each weighted.
        let chosen = (sigmoid((ratio.clone() - kl) * kto.beta).neg() + 1.0) * desirable.clone();
        let rejected = (sigmoid((ratio.neg() + kl) * kto.beta).neg() + 1.0) * undesirable;
        let mut loss =
            (chosen * kto.desirable_weight + rejected * kto.undesirable_weight).sum() / b as f64;
        let n_chosen = tags.iter().filter(|&&t| t).count();
        if kto.ftx > 1e-6 && n_chosen > 0 {
            let lens = vec1(counts.iter().map(|&c| c.max(1) as f32).collect());
            let sft = (policy.clone().neg() / lens * desirable).sum() / n_chosen as f64;
            loss = loss + sft * (kto.ftx / n_chosen as f64 * b as f64);
        }
        let (pc, rc) = (host(policy), host(reference));
        let rewards = |want: bool| -> Option<f64> {
            let v: Vec<f64> = (0..b)
                .filter(|&i| tags[i] == want)
                .map(|i| kto.beta * (pc[i] - rc[i]))
                .collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        (
            loss / micro_batches as f64,
            [Some(kl), rewards(true), rewards(false)],
        )
    }

    /// Write `checkpoint-{step}/` (adapter, optimizer moments, trainer state) atomically: into a
    /// temporary directory first, renamed into place when complete.
    pub fn save_checkpoint(&self, step: u64) -> Result<PathBuf> {
        let out = &self.args.output_dir;
        let final_dir = out.join(format!("checkpoint-{step}"));
        let tmp = out.join(format!(".checkpoint-{step}.tmp{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        self.adapter
            .save(&tmp, &self.args.model_dir.display().to_string())?;
        let mut moments: BTreeMap<String, HostTensor> = BTreeMap::new();
        for (i, (name, _)) in self.adapter.params().iter().enumerate() {
            moments.insert(
                format!("exp_avg.{name}"),
                host_of(&self.optimizer.exp_avg[i])?,
            );
            moments.insert(
                format!("exp_avg_sq.{name}"),
                host_of(&self.optimizer.exp_avg_sq[i])?,
            );
        }
        save_f32(&tmp.join("optimizer.safetensors"), &moments)?;
        let state = json!({
            "global_step": step,
            "optimizer_step": self.optimizer.step,
            "fingerprint": fingerprint(&self.args, self.examples.len(), self.total_steps),
            "log_history": self.log_history,
            "quant_kernels": self.model.q4_tuner.choices(),
        });
        write_atomic(
            &tmp.join("trainer_state.json"),
            serde_json::to_string_pretty(&state)
                .unwrap_or_default()
                .as_bytes(),
        )?;
        if final_dir.exists() {
            let old = out.join(format!(".checkpoint-{step}.old{}", std::process::id()));
            std::fs::rename(&final_dir, &old).map_err(|e| Error::io(&final_dir, e))?;
            std::fs::rename(&tmp, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(&tmp, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
        }
        Ok(final_dir)
    }
}

/// A pairwise micro-batch as LLaMA-Factory's collator lays it out: the chosen sides, then the
/// rejected sides.
fn pair_batch<'p>(pairs: &'p [Pair], mb: &[usize]) -> Vec<&'p Example> {
    mb.iter()
        .map(|&i| &pairs[i].chosen)
        .chain(mb.iter().map(|&i| &pairs[i].rejected))
        .collect()
}

/// LLaMA-Factory's pairwise loss: −log σ(chosen − rejected), the mean over the pairs.
fn rm_loss(chosen: Tensor<1>, rejected: Tensor<1>) -> Tensor<1> {
    burn::tensor::activation::softplus(rejected - chosen, 1.0).mean()
}

/// Put a plain tensor back on `device`'s autodiff context (with its checkpointing strategy).
fn attach(t: Tensor<2>, device: &Device) -> Tensor<2> {
    let t = t.autodiff();
    match device.gradient_checkpointing_strategy() {
        Some(s) => t.with_gradient_checkpointing_strategy(s),
        None => t,
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

fn load_state(
    dir: &Path,
    adapter: &Adapter,
    expect: &Value,
    config: crate::optim::AdamWConfig,
) -> Result<(AdamW, Saved)> {
    let state_path = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| Error::ckpt(&state_path, format!("not valid JSON: {e}")))?;
    let fp = &v["fingerprint"];
    if let (Some(have), Some(want)) = (fp.as_object(), expect.as_object()) {
        for (k, w) in want {
            // A key an older checkpoint does not record reads as off (every switch added to the
            // fingerprint defaults to false), so runs that do not use it still resume.
            if have.get(k).is_none() && *w == json!(false) {
                continue;
            }
            if have.get(k) != Some(w) {
                return Err(Error::ckpt(
                    &state_path,
                    format!(
                        "was written with `{k}` = {}, this run has {w}: resuming would not continue the same run",
                        have.get(k)
                            .map(|x| x.to_string())
                            .unwrap_or_else(|| "nothing".into())
                    ),
                ));
            }
        }
    } else {
        return Err(Error::ckpt(&state_path, "has no `fingerprint` object"));
    }
    let step = v["global_step"]
        .as_u64()
        .ok_or_else(|| Error::ckpt(&state_path, "has no `global_step`"))?;
    let opt_step = v["optimizer_step"]
        .as_u64()
        .ok_or_else(|| Error::ckpt(&state_path, "has no `optimizer_step`"))?;
    let log_history = v["log_history"].as_array().cloned().unwrap_or_default();
    // Checkpoints from before the tuner have none: the run measures again.
    let quant_kernels: Vec<Choice> = match v.get("quant_kernels") {
        Some(k) => serde_json::from_value(k.clone()).map_err(|e| {
            Error::ckpt(
                &state_path,
                format!("`quant_kernels` is not a list of choices: {e}"),
            )
        })?,
        None => Vec::new(),
    };
    let opt_path = dir.join("optimizer.safetensors");
    let mut w = Weights::load_file(&opt_path)?;
    let mut exp_avg = Vec::new();
    let mut exp_avg_sq = Vec::new();
    for (name, t) in adapter.params() {
        let shape = t.dims().to_vec();
        let device = t.device();
        for (prefix, out) in [("exp_avg", &mut exp_avg), ("exp_avg_sq", &mut exp_avg_sq)] {
            let h = w
                .take(&format!("{prefix}.{name}"), &shape)
                .map_err(|e| Error::ckpt(&opt_path, e.to_string()))?;
            out.push(
                Tensor::<2>::from_data(burn::tensor::TensorData::new(h.data, h.shape), &device)
                    .inner(),
            );
        }
    }
    Ok((
        AdamW {
            config,
            step: opt_step,
            no_decay: vec![false; exp_avg.len()],
            exp_avg,
            exp_avg_sq,
        },
        Saved {
            step,
            log_history,
            quant_kernels,
        },
    ))
}
