//! `lorafit train`'s reading of Contract 1: the LLaMA-Factory keys that drive a training run,
//! with transformers' defaults, checked together.

use std::path::{Path, PathBuf};

use lorafit_core::Settings;
use lorafit_core::plan::Val;

use crate::error::{Error, Result};
use crate::optim::{AdamWConfig, ScheduleKind};
use crate::quant::QuantSpec;
use crate::quant_ops::Half;
use crate::quant_tune::Q4Kernel;
use lorafit_quant::QuantType;

/// The compute backend (`backend` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    NdArray,
    /// burn's newer pure-Rust CPU backend.
    Flex,
    /// wgpu on whatever graphics API the machine offers (Vulkan, Metal, DX12).
    Wgpu,
    /// wgpu pinned to Vulkan: with the `vulkan` feature cubecl compiles its kernels to SPIR-V
    /// (cooperative matrices and f16 where the adapter has them).
    Vulkan,
    Cuda,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::NdArray => "ndarray",
            Backend::Flex => "flex",
            Backend::Wgpu => "wgpu",
            Backend::Vulkan => "vulkan",
            Backend::Cuda => "cuda",
        }
    }
}

/// DPO's keys (`pref_beta`, `pref_ftx`, `dpo_label_smoothing`), LLaMA-Factory's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpoArgs {
    pub beta: f64,
    /// Weight of the chosen answers' SFT loss (per-token mean) added to the DPO loss.
    pub ftx: f64,
    pub label_smoothing: f64,
}

/// KTO's keys (`pref_beta`, `pref_ftx`, `kto_chosen_weight`, `kto_rejected_weight`),
/// LLaMA-Factory's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KtoArgs {
    pub beta: f64,
    /// Weight of the desirable answers' SFT loss (per-token mean), rescaled as LLaMA-Factory does.
    pub ftx: f64,
    pub desirable_weight: f64,
    pub undesirable_weight: f64,
}

/// When and on what the eval loss is computed.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalArgs {
    pub eval_dataset: Option<String>,
    /// A fraction (< 1) or a number of examples (≥ 1) held out of the training data.
    pub val_size: f64,
    /// Steps between evaluations, or a fraction (< 1) of the run's steps as transformers reads
    /// `eval_steps`; None: each epoch.
    pub every_steps: Option<f64>,
    pub per_epoch: bool,
    pub batch_size: usize,
}

/// `resume_from_checkpoint`.
#[derive(Debug, Clone, PartialEq)]
pub enum Resume {
    No,
    /// The newest `checkpoint-N` in output_dir.
    Latest,
    Dir(PathBuf),
}

/// Everything a training run needs, resolved from the keys.
#[derive(Debug, Clone)]
pub struct TrainArgs {
    pub model_dir: PathBuf,
    pub adapter_dir: Option<PathBuf>,
    pub lora_rank: usize,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    /// `use_dora`: DoRA (PEFT's weight-decomposed LoRA).
    pub use_dora: bool,
    pub use_rslora: bool,
    /// `all`, or module names.
    pub lora_target: Vec<String>,
    pub dataset: String,
    pub dataset_dir: PathBuf,
    /// `stage`: pt, sft, rm, dpo or kto.
    pub stage: String,
    /// `stage: dpo`: TRL's sigmoid loss with these.
    pub dpo: Option<DpoArgs>,
    /// `stage: kto`: TRL's KTO loss with these.
    pub kto: Option<KtoArgs>,
    /// Evaluation: `eval_dataset`, or `val_size` of the training data held out; every
    /// `eval_steps` (`eval_strategy: steps`) or each epoch; `per_device_eval_batch_size`.
    pub eval: Option<EvalArgs>,
    /// `stage: rm`: dropout on the hidden states before the value head (trl's
    /// `summary_dropout_prob`, 0.1 as LLaMA-Factory loads it; not a LLaMA-Factory key).
    pub value_head_dropout: f64,
    /// `val_size`: rows held out of the training data (LLaMA-Factory holds them out even when
    /// `eval_strategy` is `no`).
    pub val_size: f64,
    pub cutoff_len: usize,
    pub max_samples: Option<usize>,
    /// `packing` as resolved (on for pt unless `packing: false`).
    pub packing: bool,
    /// Every data key (template, neat_packing, train_on_prompt / mask_history, …), as
    /// [`data_args`] reads them: lorafit-data's input.
    pub data: lorafit_data::DataArgs,
    pub batch_size: usize,
    pub grad_accum: usize,
    pub learning_rate: f64,
    pub num_train_epochs: f64,
    pub max_steps: Option<u64>,
    pub schedule: ScheduleKind,
    pub warmup_steps: u64,
    pub warmup_ratio: f64,
    pub max_grad_norm: f64,
    pub adamw: AdamWConfig,
    pub seed: u64,
    pub shuffle: bool,
    pub logging_steps: u64,
    pub save_steps: u64,
    pub output_dir: PathBuf,
    pub resume: Resume,
    pub plot_loss: bool,
    pub backend: Backend,
    /// `quant_kernel`: how 4-bit products run where shaders/'s kernels do (src/quant_tune.rs).
    pub quant_kernel: Q4Kernel,
    /// `attention_kernel: cube`: attention through the `#[cube]` kernels on cubecl's runtimes
    /// (fused_ops/attention_cube.rs); `tensor_ops` (the default): the tiled burn ops.
    pub cube_attention: bool,
    pub gradient_checkpointing: bool,
    pub bf16: bool,
    /// How the decoder's linears are stored: 4-bit / int8 (`quantization_bit`), 16-bit (`bf16` /
    /// `fp16` without quantization), or f32 (`None`).
    pub quant: Option<QuantSpec>,
}

fn unsupported(key: &str, value: &Val, why: &str) -> Error {
    Error::Unsupported(format!("`{key}: {value}`: {why}"))
}

/// The data keys of a config as lorafit-data takes them: one reading for `lorafit train` and for
/// `lorafit estimate`'s dataset statistics, so both encode the same examples.
pub fn data_args(
    s: &Settings,
    plan: &lorafit_core::plan::Plan,
    dataset_dir: PathBuf,
    tokenizer_dir: PathBuf,
) -> Result<lorafit_data::DataArgs> {
    Ok(lorafit_data::DataArgs {
        dataset: lorafit_data::load::dataset_names(s.str("dataset").unwrap_or("")),
        dataset_dir,
        tokenizer_dir,
        template: s.str("template").map(str::to_string),
        stage: match s.str("stage").unwrap_or("sft") {
            // Estimated, not trained: its data is read as sft's.
            "ppo" => lorafit_data::Stage::Sft,
            other => lorafit_data::Stage::from_name(other)?,
        },
        cutoff_len: plan.cutoff_len as usize,
        max_samples: plan.max_samples.map(|m| m as usize),
        packing: s.get("packing").map(|v| matches!(v, Val::Bool(true))),
        neat_packing: s.bool("neat_packing", false),
        masking: lorafit_data::Masking {
            train_on_prompt: s.bool("train_on_prompt", false),
            mask_history: s.bool("mask_history", false),
        },
        mix_strategy: lorafit_data::Mix::from_name(s.str("mix_strategy").unwrap_or("concat"))?,
        interleave_probs: match s.get("interleave_probs") {
            None => None,
            Some(v) => Some(
                v.to_string()
                    .split(',')
                    .map(|x| {
                        x.trim().parse::<f64>().map_err(|_| {
                            Error::Invalid(format!(
                                "`interleave_probs: {v}` must be comma-separated probabilities"
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
        },
        seed: s.int("seed").unwrap_or(42) as u64,
        enable_thinking: s.bool("enable_thinking", true),
        preserve_thinking: s.bool("preserve_thinking", false),
        default_system: s.str("default_system").map(str::to_string),
        tool_format: s.str("tool_format").map(str::to_string),
        preprocessing_batch_size: s.int("preprocessing_batch_size").unwrap_or(1000).max(1) as usize,
    })
}

impl TrainArgs {
    /// The data keys as lorafit-data takes them (the tokenizer is the model's).
    pub fn data_args(&self) -> lorafit_data::DataArgs {
        self.data.clone()
    }

    /// Resolve the keys; relative paths are taken from `base` (the config file's directory).
    pub fn from_settings(s: &Settings, base: &Path) -> Result<Self> {
        let plan = s.plan()?;
        // As `lorafit estimate`: relative to the working directory, else to the config's directory.
        let path = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() || p.exists() || !base.join(p).exists() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let model_dir = path(&plan.model);
        if !model_dir.join("config.json").is_file() {
            return Err(Error::Invalid(format!(
                "`model_name_or_path: {}`: lorafit train needs a local checkpoint directory with config.json and safetensors ({} has no config.json); download one first, e.g. `huggingface-cli download {} --local-dir DIR`",
                plan.model,
                model_dir.display(),
                plan.model
            )));
        }
        // Keys that change what is trained or how: refused rather than silently ignored.
        for (key, reason) in [
            ("deepspeed", "lorafit trains on one device"),
            ("fsdp", "lorafit trains on one device"),
            ("accelerate_config", "lorafit trains on one device"),
            ("use_galore", "lorafit train implements adamw_torch"),
            ("use_apollo", "lorafit train implements adamw_torch"),
            ("use_badam", "lorafit train implements adamw_torch"),
            ("use_adam_mini", "lorafit train implements adamw_torch"),
            ("use_muon", "lorafit train implements adamw_torch"),
            (
                "loraplus_lr_ratio",
                "lorafit train uses one learning rate for A and B",
            ),
            (
                "pissa_init",
                "lorafit train initialises LoRA as PEFT's default (kaiming A, zero B)",
            ),
            ("use_llama_pro", "lorafit train runs LoRA"),
            (
                "resize_vocab",
                "lorafit train keeps the checkpoint's vocabulary and trains the adapter only (no modules_to_save)",
            ),
            (
                "additional_target",
                "lorafit train trains the adapter only (PEFT's modules_to_save is not implemented)",
            ),
            (
                "add_tokens",
                "lorafit train keeps the checkpoint's vocabulary and tokenizer",
            ),
            (
                "add_special_tokens",
                "lorafit train keeps the checkpoint's vocabulary and tokenizer",
            ),
            (
                "new_special_tokens_config",
                "lorafit train keeps the checkpoint's vocabulary and tokenizer",
            ),
        ] {
            if let Some(v) = s.get(key)
                && !matches!(v, Val::Bool(false))
            {
                return Err(unsupported(key, v, reason));
            }
        }
        // Keys whose one value lorafit train runs.
        for (key, only, reason) in [
            (
                "quantization_method",
                "bnb",
                "lorafit train quantizes like bitsandbytes (quantization_method: bnb)",
            ),
            (
                "finetuning_type",
                "lora",
                "lorafit train runs LoRA (finetuning_type: lora)",
            ),
            (
                "optim",
                "adamw_torch",
                "lorafit train implements adamw_torch",
            ),
        ] {
            if let Some(v) = s.get(key)
                && v.to_string() != only
            {
                return Err(unsupported(key, v, reason));
            }
        }
        let stage = s.str("stage").unwrap_or("sft").to_string();
        if !matches!(stage.as_str(), "sft" | "pt" | "rm" | "dpo" | "kto") {
            return Err(unsupported(
                "stage",
                &Val::Str(stage),
                "lorafit train runs pretraining (pt), supervised fine-tuning (sft), reward modelling (rm), DPO (dpo) and KTO (kto); `lorafit estimate` covers the other stages",
            ));
        }
        if matches!(stage.as_str(), "dpo" | "kto")
            && let Some(v) = s.get("ref_model")
        {
            return Err(unsupported(
                "ref_model",
                v,
                "lorafit's DPO / KTO reference is the base with the adapter disabled (LLaMA-Factory's LoRA default)",
            ));
        }
        let kto = (stage == "kto").then(|| KtoArgs {
            beta: s.float("pref_beta").unwrap_or(0.1),
            ftx: s.float("pref_ftx").unwrap_or(0.0),
            desirable_weight: s.float("kto_chosen_weight").unwrap_or(1.0),
            undesirable_weight: s.float("kto_rejected_weight").unwrap_or(1.0),
        });
        let dpo = if stage == "dpo" {
            if let Some(v) = s.get("pref_loss")
                && v.to_string() != "sigmoid"
            {
                return Err(unsupported(
                    "pref_loss",
                    v,
                    "lorafit train runs DPO's sigmoid loss (pref_loss: sigmoid)",
                ));
            }
            let label_smoothing = s.float("dpo_label_smoothing").unwrap_or(0.0);
            if !(0.0..0.5).contains(&label_smoothing) {
                return Err(Error::Invalid(format!(
                    "`dpo_label_smoothing: {label_smoothing}` must be in [0, 0.5)"
                )));
            }
            Some(DpoArgs {
                beta: s.float("pref_beta").unwrap_or(0.1),
                ftx: s.float("pref_ftx").unwrap_or(0.0),
                label_smoothing,
            })
        } else {
            None
        };
        let eval = {
            let strategy = s.str("eval_strategy").unwrap_or("no");
            let eval_dataset = s.str("eval_dataset").map(str::to_string);
            let val_size = s.float("val_size").unwrap_or(0.0);
            if val_size < 0.0 {
                return Err(Error::Invalid(format!(
                    "`val_size: {val_size}` must be ≥ 0"
                )));
            }
            if eval_dataset.is_some() && val_size > 1e-6 {
                // LLaMA-Factory's DataArguments refuse the pair.
                return Err(Error::Invalid(
                    "`val_size` cannot be given with `eval_dataset`: hold out rows or name an eval set, not both".into(),
                ));
            }
            let has_data = eval_dataset.is_some() || val_size > 0.0;
            match strategy {
                "no" => None,
                "steps" | "epoch" if !has_data => {
                    return Err(Error::Invalid(format!(
                        "`eval_strategy: {strategy}` needs `eval_dataset` or `val_size`"
                    )));
                }
                "steps" => Some(EvalArgs {
                    eval_dataset,
                    val_size,
                    every_steps: Some(
                        s.float("eval_steps")
                            .filter(|x| *x > 0.0)
                            .or(s.float("logging_steps"))
                            .unwrap_or(10.0),
                    ),
                    per_epoch: false,
                    batch_size: s.int("per_device_eval_batch_size").unwrap_or(8).max(1) as usize,
                }),
                "epoch" => Some(EvalArgs {
                    eval_dataset,
                    val_size,
                    every_steps: None,
                    per_epoch: true,
                    batch_size: s.int("per_device_eval_batch_size").unwrap_or(8).max(1) as usize,
                }),
                other => {
                    return Err(Error::Invalid(format!(
                        "`eval_strategy: {other}` is not one of no, steps, epoch"
                    )));
                }
            }
        };
        let quant = match &plan.quant {
            // As LLaMA-Factory loads the model in its compute dtype: the linears kept 16-bit.
            None if s.bool("fp16", false) => Some(QuantSpec::Half(Half::F16)),
            None if s.bool("bf16", false) || s.bool("pure_bf16", false) => {
                Some(QuantSpec::Half(Half::Bf16))
            }
            None => None,
            Some(q) if q.bits == 8 => Some(QuantSpec::Int8),
            Some(q) if q.bits == 4 => Some(QuantSpec::FourBit {
                quant_type: if q.fp4 {
                    QuantType::Fp4
                } else {
                    QuantType::Nf4
                },
                double_quant: q.double_quant,
                rounding: match s.str("bnb_rounding") {
                    Some("cpu_table") => lorafit_quant::DqRounding::CpuTable,
                    _ => lorafit_quant::DqRounding::Nearest,
                },
            }),
            Some(q) => {
                return Err(unsupported(
                    "quantization_bit",
                    &Val::Int(q.bits as i64),
                    "lorafit train quantizes base weights to 4 bits (NF4/FP4) or 8 bits (bitsandbytes int8)",
                ));
            }
        };
        if s.bool("train_on_prompt", false) && s.bool("mask_history", false) {
            return Err(Error::Invalid(
                "`mask_history: true` and `train_on_prompt: true` exclude each other (as in LLaMA-Factory): \
                 mask_history learns only the last answer, train_on_prompt learns the prompts too"
                    .into(),
            ));
        }
        let dataset = s.str("dataset").map(str::to_string).ok_or_else(|| {
            Error::Invalid(
                "`dataset` is missing: a name in dataset_dir/dataset_info.json or a .jsonl file"
                    .into(),
            )
        })?;
        let schedule_name = s.str("lr_scheduler_type").unwrap_or("linear");
        let schedule = ScheduleKind::parse(schedule_name).ok_or_else(|| {
            Error::Invalid(format!("`lr_scheduler_type: {schedule_name}` is not one of constant, constant_with_warmup, linear, cosine"))
        })?;
        let resume = match s.get("resume_from_checkpoint") {
            None | Some(Val::Bool(false)) => Resume::No,
            Some(Val::Bool(true)) => Resume::Latest,
            Some(v) => {
                let t = v.to_string();
                if t.eq_ignore_ascii_case("true") {
                    Resume::Latest
                } else {
                    Resume::Dir(path(&t))
                }
            }
        };
        let backend = match s.str("backend") {
            Some("ndarray") => Backend::NdArray,
            Some("flex") => Backend::Flex,
            Some("cuda") => Backend::Cuda,
            Some("wgpu") => Backend::Wgpu,
            Some("vulkan") => Backend::Vulkan,
            _ => {
                if cfg!(feature = "wgpu") {
                    Backend::Wgpu
                } else {
                    Backend::NdArray
                }
            }
        };
        let targets: Vec<String> = plan.lora_target.clone();
        let dataset_dir = path(s.str("dataset_dir").unwrap_or("data"));
        let data = data_args(s, &plan, dataset_dir.clone(), model_dir.clone())?;
        Ok(TrainArgs {
            model_dir,
            adapter_dir: s.str("adapter_name_or_path").map(path),
            lora_rank: plan.lora_rank as usize,
            lora_alpha: plan.lora_alpha,
            lora_dropout: plan.lora_dropout,
            use_dora: s.bool("use_dora", false),
            use_rslora: plan.use_rslora,
            lora_target: targets,
            dataset,
            dataset_dir,
            cutoff_len: plan.cutoff_len as usize,
            max_samples: plan.max_samples.map(|m| m as usize),
            packing: plan.packing
                || (stage == "pt" && !matches!(s.get("packing"), Some(Val::Bool(false)))),
            stage,
            dpo,
            kto,
            eval,
            val_size: s.float("val_size").unwrap_or(0.0),
            value_head_dropout: 0.1,
            data,
            batch_size: plan.batch_size as usize,
            grad_accum: plan.grad_accum as usize,
            learning_rate: s.float("learning_rate").unwrap_or(5e-5),
            num_train_epochs: plan.num_train_epochs,
            max_steps: plan.max_steps,
            schedule,
            warmup_steps: s.int("warmup_steps").unwrap_or(0) as u64,
            warmup_ratio: s.float("warmup_ratio").unwrap_or(0.0),
            max_grad_norm: s.float("max_grad_norm").unwrap_or(1.0),
            adamw: AdamWConfig {
                beta1: s.float("adam_beta1").unwrap_or(0.9),
                beta2: s.float("adam_beta2").unwrap_or(0.999),
                eps: s.float("adam_epsilon").unwrap_or(1e-8),
                weight_decay: s.float("weight_decay").unwrap_or(0.0),
            },
            seed: s.int("seed").unwrap_or(42) as u64,
            shuffle: s.bool("shuffle", true),
            logging_steps: s.int("logging_steps").unwrap_or(10) as u64,
            save_steps: s.int("save_steps").unwrap_or(500) as u64,
            output_dir: path(s.str("output_dir").unwrap_or("output")),
            resume,
            plot_loss: s.bool("plot_loss", false),
            backend,
            quant_kernel: s
                .str("quant_kernel")
                .and_then(Q4Kernel::parse)
                .unwrap_or_default(),
            cube_attention: s.str("attention_kernel") == Some("cube"),
            gradient_checkpointing: plan.gradient_checkpointing,
            bf16: s.bool("bf16", false) || s.bool("pure_bf16", false),
            quant,
        })
    }

    /// Optimizer steps for `steps_per_epoch` (max_steps wins, as in transformers).
    pub fn total_steps(&self, steps_per_epoch: usize) -> u64 {
        match self.max_steps {
            Some(m) if m > 0 => m,
            _ => (self.num_train_epochs * steps_per_epoch as f64)
                .ceil()
                .max(1.0) as u64,
        }
    }

    /// Warm-up steps: warmup_steps, else ceil(warmup_ratio · total).
    pub fn warmup(&self, total: u64) -> u64 {
        if self.warmup_steps > 0 {
            self.warmup_steps
        } else {
            (self.warmup_ratio * total as f64).ceil() as u64
        }
    }
}
