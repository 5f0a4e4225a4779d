//! Contract 1: LLaMA-Factory's configuration keys (plus lorafit's own) parsed into a typed
//! [`Plan`], with `--set key=value` overrides, warnings for unknown keys, and errors that name the
//! key, the value and what is allowed.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::Error;

/// A configuration value as written (YAML scalar, `--set` text or share-link parameter).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Val {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
}

impl std::fmt::Display for Val {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Val::Bool(b) => write!(f, "{b}"),
            Val::Int(i) => write!(f, "{i}"),
            Val::Float(x) => write!(f, "{x}"),
            Val::Str(s) => write!(f, "{s}"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Bool,
    Int(i64, i64),
    Float(f64, f64),
    Enum(&'static [&'static str]),
    Str,
    /// A string, or `true`/`false` (resume_from_checkpoint).
    StrOrBool,
}

/// Where a key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Origin {
    /// `llamafactory-cli train` reads it.
    LlamaFactory,
    /// lorafit's own; left out of exports for LLaMA-Factory.
    Lorafit,
}

struct KeyDef {
    name: &'static str,
    kind: Kind,
    origin: Origin,
    help: &'static str,
}

const LF: Origin = Origin::LlamaFactory;
const LO: Origin = Origin::Lorafit;
const BIG: i64 = 1 << 40;

/// Optimizers understood (`adamw_torch_fused`/`adamw_bnb_8bit` are the HF spellings of the same).
pub const OPTIMIZERS: &[&str] = &[
    "adamw_torch",
    "adamw_torch_fused",
    "adamw_8bit",
    "adamw_bnb_8bit",
    "paged_adamw_8bit",
    "sgd",
    "adafactor",
];

const KEYS: &[KeyDef] = &[
    KeyDef {
        name: "model_name_or_path",
        kind: Kind::Str,
        origin: LF,
        help: "catalog id or a directory with config.json",
    },
    KeyDef {
        name: "adapter_name_or_path",
        kind: Kind::Str,
        origin: LF,
        help: "PEFT adapter to start from",
    },
    KeyDef {
        name: "stage",
        kind: Kind::Enum(&["sft", "pt"]),
        origin: LF,
        help: "training stage",
    },
    KeyDef {
        name: "do_train",
        kind: Kind::Bool,
        origin: LF,
        help: "false estimates inference instead of training",
    },
    KeyDef {
        name: "finetuning_type",
        kind: Kind::Enum(&["full", "freeze", "lora"]),
        origin: LF,
        help: "full, freeze or lora",
    },
    KeyDef {
        name: "freeze_trainable_layers",
        kind: Kind::Int(-4096, 4096),
        origin: LF,
        help: "freeze: train the last N layers (negative: the first N)",
    },
    KeyDef {
        name: "lora_rank",
        kind: Kind::Int(1, 8192),
        origin: LF,
        help: "LoRA rank r",
    },
    KeyDef {
        name: "lora_alpha",
        kind: Kind::Float(1e-6, 1e9),
        origin: LF,
        help: "LoRA alpha (default 2 × rank)",
    },
    KeyDef {
        name: "lora_dropout",
        kind: Kind::Float(0.0, 0.999),
        origin: LF,
        help: "dropout on the LoRA input",
    },
    KeyDef {
        name: "lora_target",
        kind: Kind::Str,
        origin: LF,
        help: "`all` or a comma list of module names",
    },
    KeyDef {
        name: "use_rslora",
        kind: Kind::Bool,
        origin: LF,
        help: "rank-stabilised scaling alpha/√r",
    },
    KeyDef {
        name: "use_dora",
        kind: Kind::Bool,
        origin: LF,
        help: "weight-decomposed LoRA",
    },
    KeyDef {
        name: "quantization_bit",
        kind: Kind::Enum(&["4", "8"]),
        origin: LF,
        help: "4 or 8 (QLoRA)",
    },
    KeyDef {
        name: "quantization_type",
        kind: Kind::Enum(&["nf4", "fp4"]),
        origin: LF,
        help: "4-bit data type",
    },
    KeyDef {
        name: "double_quantization",
        kind: Kind::Bool,
        origin: LF,
        help: "quantize the absmax scales too",
    },
    KeyDef {
        name: "dataset",
        kind: Kind::Str,
        origin: LF,
        help: "dataset name(s) in dataset_info.json, or a file",
    },
    KeyDef {
        name: "dataset_dir",
        kind: Kind::Str,
        origin: LF,
        help: "folder of dataset_info.json",
    },
    KeyDef {
        name: "template",
        kind: Kind::Str,
        origin: LF,
        help: "chat template",
    },
    KeyDef {
        name: "cutoff_len",
        kind: Kind::Int(1, 10_000_000),
        origin: LF,
        help: "tokens per sample after truncation",
    },
    KeyDef {
        name: "max_samples",
        kind: Kind::Int(1, BIG),
        origin: LF,
        help: "use at most this many samples",
    },
    KeyDef {
        name: "packing",
        kind: Kind::Bool,
        origin: LF,
        help: "pack samples into cutoff_len sequences",
    },
    KeyDef {
        name: "neat_packing",
        kind: Kind::Bool,
        origin: LF,
        help: "packing with attention kept within each packed sample",
    },
    KeyDef {
        name: "train_on_prompt",
        kind: Kind::Bool,
        origin: LF,
        help: "learn the prompts too",
    },
    KeyDef {
        name: "mask_history",
        kind: Kind::Bool,
        origin: LF,
        help: "learn only the last turn of each conversation",
    },
    KeyDef {
        name: "per_device_train_batch_size",
        kind: Kind::Int(1, 65_536),
        origin: LF,
        help: "micro-batch per GPU",
    },
    KeyDef {
        name: "gradient_accumulation_steps",
        kind: Kind::Int(1, 65_536),
        origin: LF,
        help: "micro-batches per optimizer step",
    },
    KeyDef {
        name: "learning_rate",
        kind: Kind::Float(0.0, 10.0),
        origin: LF,
        help: "peak learning rate",
    },
    KeyDef {
        name: "num_train_epochs",
        kind: Kind::Float(1e-9, 1e6),
        origin: LF,
        help: "epochs over the dataset",
    },
    KeyDef {
        name: "max_steps",
        kind: Kind::Int(-1, BIG),
        origin: LF,
        help: "optimizer steps (-1: from epochs)",
    },
    KeyDef {
        name: "lr_scheduler_type",
        kind: Kind::Enum(&["constant", "linear", "cosine", "constant_with_warmup"]),
        origin: LF,
        help: "learning-rate schedule",
    },
    KeyDef {
        name: "warmup_steps",
        kind: Kind::Int(0, BIG),
        origin: LF,
        help: "warm-up steps",
    },
    KeyDef {
        name: "warmup_ratio",
        kind: Kind::Float(0.0, 1.0),
        origin: LF,
        help: "warm-up as a fraction of the steps",
    },
    KeyDef {
        name: "max_grad_norm",
        kind: Kind::Float(0.0, 1e9),
        origin: LF,
        help: "global-norm clipping (0: none)",
    },
    KeyDef {
        name: "weight_decay",
        kind: Kind::Float(0.0, 10.0),
        origin: LF,
        help: "AdamW weight decay",
    },
    KeyDef {
        name: "adam_beta1",
        kind: Kind::Float(0.0, 0.999_999_9),
        origin: LF,
        help: "AdamW β1",
    },
    KeyDef {
        name: "adam_beta2",
        kind: Kind::Float(0.0, 0.999_999_9),
        origin: LF,
        help: "AdamW β2",
    },
    KeyDef {
        name: "adam_epsilon",
        kind: Kind::Float(0.0, 1.0),
        origin: LF,
        help: "AdamW ε",
    },
    KeyDef {
        name: "optim",
        kind: Kind::Enum(OPTIMIZERS),
        origin: LF,
        help: "optimizer",
    },
    KeyDef {
        name: "bf16",
        kind: Kind::Bool,
        origin: LF,
        help: "bf16 mixed precision",
    },
    KeyDef {
        name: "fp16",
        kind: Kind::Bool,
        origin: LF,
        help: "fp16 mixed precision",
    },
    KeyDef {
        name: "pure_bf16",
        kind: Kind::Bool,
        origin: LF,
        help: "bf16 weights, gradients and optimizer states",
    },
    KeyDef {
        name: "flash_attn",
        kind: Kind::Enum(&["auto", "disabled", "sdpa", "fa2"]),
        origin: LF,
        help: "attention kernel (disabled = eager)",
    },
    KeyDef {
        name: "disable_gradient_checkpointing",
        kind: Kind::Bool,
        origin: LF,
        help: "keep all activations",
    },
    KeyDef {
        name: "deepspeed",
        kind: Kind::Str,
        origin: LF,
        help: "DeepSpeed JSON (ds_z{0,2,3}[_offload]_config.json understood)",
    },
    KeyDef {
        name: "seed",
        kind: Kind::Int(0, u32::MAX as i64),
        origin: LF,
        help: "random seed",
    },
    KeyDef {
        name: "logging_steps",
        kind: Kind::Int(1, BIG),
        origin: LF,
        help: "log every N steps",
    },
    KeyDef {
        name: "save_steps",
        kind: Kind::Int(1, BIG),
        origin: LF,
        help: "checkpoint every N steps",
    },
    KeyDef {
        name: "output_dir",
        kind: Kind::Str,
        origin: LF,
        help: "where outputs go",
    },
    KeyDef {
        name: "resume_from_checkpoint",
        kind: Kind::StrOrBool,
        origin: LF,
        help: "checkpoint to resume",
    },
    KeyDef {
        name: "plot_loss",
        kind: Kind::Bool,
        origin: LF,
        help: "write training_loss.png",
    },
    KeyDef {
        name: "gpu",
        kind: Kind::Str,
        origin: LO,
        help: "GPU catalog id",
    },
    KeyDef {
        name: "num_gpus",
        kind: Kind::Int(1, 4096),
        origin: LO,
        help: "data-parallel GPUs",
    },
    KeyDef {
        name: "shuffle",
        kind: Kind::Bool,
        origin: LO,
        help: "shuffle samples (false keeps file order)",
    },
    KeyDef {
        name: "backend",
        kind: Kind::Enum(&["ndarray", "flex", "wgpu", "cuda"]),
        origin: LO,
        help: "lorafit train backend",
    },
    KeyDef {
        name: "dataset_tokens",
        kind: Kind::Int(0, 1 << 50),
        origin: LO,
        help: "tokens per epoch, for time and cost",
    },
    KeyDef {
        name: "price_per_hour",
        kind: Kind::Float(0.0, 1e6),
        origin: LO,
        help: "USD per GPU-hour",
    },
];

/// LLaMA-Factory / transformers keys that do not change an estimate: accepted silently.
const IGNORED: &[&str] = &[
    "trust_remote_code",
    "overwrite_cache",
    "overwrite_output_dir",
    "preprocessing_num_workers",
    "dataloader_num_workers",
    "report_to",
    "ddp_timeout",
    "val_size",
    "per_device_eval_batch_size",
    "eval_strategy",
    "evaluation_strategy",
    "eval_steps",
    "save_only_model",
    "save_total_limit",
    "run_name",
    "do_eval",
    "do_predict",
    "lora_bias",
    "additional_target",
    "plot_loss_keys",
    "include_num_input_tokens_seen",
    "logging_dir",
    "tokenized_path",
    "streaming",
    "buffer_size",
    "mix_strategy",
    "eval_dataset",
    "media_dir",
    "image_max_pixels",
    "video_max_pixels",
    "enable_thinking",
    "resize_vocab",
    "use_fast_tokenizer",
    "rope_scaling",
    "upcast_layernorm",
    "upcast_lmhead_output",
    "use_unsloth",
    "use_liger_kernel",
    "enable_liger_kernel",
    "ddp_find_unused_parameters",
    "save_strategy",
    "logging_strategy",
    "push_to_hub",
    "hub_model_id",
    "max_new_tokens",
];

/// Every key lorafit reads, with its origin and one line of help.
pub fn known_keys() -> impl Iterator<Item = (&'static str, Origin, &'static str)> {
    KEYS.iter().map(|k| (k.name, k.origin, k.help))
}

fn describe(kind: Kind) -> String {
    match kind {
        Kind::Bool => "true or false".into(),
        Kind::Int(lo, hi) => format!("a whole number from {lo} to {hi}"),
        Kind::Float(lo, hi) => format!("a number from {lo} to {hi}"),
        Kind::Enum(v) => format!("one of {}", v.join(", ")),
        Kind::Str => "a string".into(),
        Kind::StrOrBool => "a path, true or false".into(),
    }
}

fn check(def: &KeyDef, v: Val) -> Result<Val, Error> {
    let bad = |v: &Val| Error::bad(def.name, v, describe(def.kind));
    match def.kind {
        Kind::Bool => match &v {
            Val::Bool(_) => Ok(v),
            Val::Str(s) if s.eq_ignore_ascii_case("true") => Ok(Val::Bool(true)),
            Val::Str(s) if s.eq_ignore_ascii_case("false") => Ok(Val::Bool(false)),
            _ => Err(bad(&v)),
        },
        Kind::Int(lo, hi) => {
            let i = match &v {
                Val::Int(i) => *i,
                Val::Float(f) if f.fract() == 0.0 && f.is_finite() && f.abs() < 9e15 => *f as i64,
                Val::Str(s) => s.trim().parse::<i64>().map_err(|_| bad(&v))?,
                _ => return Err(bad(&v)),
            };
            if (lo..=hi).contains(&i) {
                Ok(Val::Int(i))
            } else {
                Err(bad(&v))
            }
        }
        Kind::Float(lo, hi) => {
            let f = match &v {
                Val::Int(i) => *i as f64,
                Val::Float(f) => *f,
                Val::Str(s) => s.trim().parse::<f64>().map_err(|_| bad(&v))?,
                Val::Bool(_) => return Err(bad(&v)),
            };
            if f.is_finite() && f >= lo && f <= hi {
                Ok(Val::Float(f))
            } else {
                Err(bad(&v))
            }
        }
        Kind::Enum(allowed) => {
            let s = match &v {
                Val::Str(s) => s.trim().to_string(),
                Val::Int(i) => i.to_string(),
                Val::Bool(b) => b.to_string(),
                Val::Float(f) => f.to_string(),
            };
            // YAML reads `flash_attn: disabled` fine, but `quantization_bit: 4` as an int: both normalise here.
            if allowed.contains(&s.as_str()) {
                Ok(Val::Str(s))
            } else {
                Err(bad(&v))
            }
        }
        Kind::Str => match v {
            Val::Str(s) if !s.trim().is_empty() && s.len() <= 4096 => Ok(Val::Str(s)),
            Val::Int(_) | Val::Float(_) => Ok(Val::Str(v.to_string())),
            _ => Err(bad(&v)),
        },
        Kind::StrOrBool => match v {
            Val::Bool(_) => Ok(v),
            Val::Str(s) if s.len() <= 4096 => Ok(Val::Str(s)),
            _ => Err(bad(&v)),
        },
    }
}

/// The keys of a configuration as given, validated one by one, in canonical key order.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Settings {
    values: BTreeMap<usize, Val>,
    /// Unknown keys seen (warned about, otherwise ignored).
    #[serde(skip)]
    pub warnings: Vec<String>,
}

fn yaml_scalar(key: &str, v: &serde_yaml::Value) -> Result<Option<Val>, Error> {
    use serde_yaml::Value as Y;
    Ok(Some(match v {
        Y::Null => return Ok(None),
        Y::Bool(b) => Val::Bool(*b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Val::Int(i)
            } else {
                Val::Float(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Y::String(s) => Val::Str(s.clone()),
        Y::Sequence(items) => {
            // LLaMA-Factory accepts lists for dataset / lora_target: join with commas.
            let mut parts = Vec::new();
            for it in items {
                match it {
                    Y::String(s) => parts.push(s.clone()),
                    Y::Number(n) => parts.push(n.to_string()),
                    _ => {
                        return Err(Error::bad(
                            key,
                            format!("{it:?}"),
                            "a list of plain strings",
                        ));
                    }
                }
            }
            Val::Str(parts.join(","))
        }
        other => {
            return Err(Error::bad(
                key,
                format!("{other:?}"),
                "a plain value, not a mapping",
            ));
        }
    }))
}

/// Parse a value written as text (`--set k=v`, a share link) the way YAML would read it.
pub fn parse_text_value(text: &str) -> Val {
    let t = text.trim();
    if t.eq_ignore_ascii_case("true") {
        return Val::Bool(true);
    }
    if t.eq_ignore_ascii_case("false") {
        return Val::Bool(false);
    }
    if let Ok(i) = t.parse::<i64>() {
        return Val::Int(i);
    }
    if let Ok(f) = t.parse::<f64>()
        && f.is_finite()
    {
        return Val::Float(f);
    }
    Val::Str(t.to_string())
}

impl Settings {
    /// Parse LLaMA-Factory YAML text.
    pub fn from_yaml(text: &str) -> Result<Self, Error> {
        let doc: serde_yaml::Value = serde_yaml::from_str(text)
            .map_err(|e| Error::Syntax(format!("the YAML does not parse: {e}")))?;
        let mut s = Settings::default();
        let map = match doc {
            serde_yaml::Value::Mapping(m) => m,
            serde_yaml::Value::Null => return Ok(s),
            _ => {
                return Err(Error::Syntax(
                    "the YAML must be a mapping of `key: value` lines".into(),
                ));
            }
        };
        for (k, v) in &map {
            let Some(key) = k.as_str() else {
                return Err(Error::Syntax(format!("keys must be strings, got {k:?}")));
            };
            if let Some(val) = yaml_scalar(key, v)? {
                s.set(key, val)?;
            }
        }
        Ok(s)
    }

    /// Set one key (validated). Unknown keys become warnings.
    pub fn set(&mut self, key: &str, v: Val) -> Result<(), Error> {
        let key = key.trim();
        match KEYS.iter().position(|k| k.name == key) {
            Some(i) => {
                let checked = check(&KEYS[i], v)?;
                self.values.insert(i, checked);
            }
            None if IGNORED.contains(&key) => {}
            None => self.warnings.push(format!("unknown key `{key}` ignored")),
        }
        Ok(())
    }

    /// Apply `key=value` (the command line's `--set`).
    pub fn set_assignment(&mut self, assignment: &str) -> Result<(), Error> {
        let (k, v) = assignment.split_once('=').ok_or_else(|| {
            Error::Syntax(format!("`--set {assignment}` must look like key=value"))
        })?;
        self.set(k, parse_text_value(v))
    }

    /// Remove a key (back to its default).
    pub fn unset(&mut self, key: &str) {
        if let Some(i) = KEYS.iter().position(|k| k.name == key) {
            self.values.remove(&i);
        }
    }

    /// The value given for a key, if any.
    pub fn get(&self, key: &str) -> Option<&Val> {
        KEYS.iter()
            .position(|k| k.name == key)
            .and_then(|i| self.values.get(&i))
    }

    /// The keys given, in canonical order, with their origin.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, Origin, &Val)> {
        self.values
            .iter()
            .map(|(i, v)| (KEYS[*i].name, KEYS[*i].origin, v))
    }

    /// The value of `key` if given with this type.
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Val::Str(s)) => Some(s),
            _ => None,
        }
    }
    /// The value of `key` if given with this type.
    pub fn bool(&self, key: &str, default: bool) -> bool {
        match self.get(key) {
            Some(Val::Bool(b)) => *b,
            _ => default,
        }
    }
    /// The value of `key` if given with this type.
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.get(key) {
            Some(Val::Int(i)) => Some(*i),
            _ => None,
        }
    }
    /// The value of `key` if given with this type.
    pub fn float(&self, key: &str) -> Option<f64> {
        match self.get(key) {
            Some(Val::Float(f)) => Some(*f),
            Some(Val::Int(i)) => Some(*i as f64),
            _ => None,
        }
    }

    /// The typed plan, with defaults filled in and cross-key conflicts rejected.
    pub fn plan(&self) -> Result<Plan, Error> {
        Plan::from_settings(self)
    }
}

/// full / freeze / lora.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Full,
    Freeze,
    Lora,
}

/// Numeric precision of the training step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// bf16 (or fp16) autocast, trainable parameters and optimizer states in fp32.
    Mixed16,
    /// Everything bf16.
    PureBf16,
    /// Everything fp32.
    Fp32,
}

/// The attention kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Attention {
    /// Materialises the b·heads·s² score matrix.
    Eager,
    /// PyTorch SDPA (flash / memory-efficient kernels).
    Sdpa,
    /// flash-attention 2.
    Fa2,
}

/// Optimizer family as far as memory is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    AdamwTorch,
    Adamw8bit,
    PagedAdamw8bit,
    Sgd,
    Adafactor,
}

/// Weight quantization of the frozen base (QLoRA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Quant {
    /// 4 or 8.
    pub bits: u8,
    /// nf4 / fp4 (4-bit only).
    pub fp4: bool,
    pub double_quant: bool,
}

/// ZeRO sharding across the data-parallel GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Zero {
    /// 0 = plain data parallel.
    pub stage: u8,
    pub offload_optimizer: bool,
    pub offload_param: bool,
    /// Whether DeepSpeed is in use at all (changes mixed-precision bookkeeping).
    pub deepspeed: bool,
}

impl Zero {
    /// Understand LLaMA-Factory's bundled names `ds_z{0,2,3}[_offload]_config.json`.
    pub fn from_llamafactory_name(path: &str) -> Option<Zero> {
        let name = path.rsplit(['/', '\\']).next().unwrap_or(path);
        let rest = name.strip_prefix("ds_z")?;
        let stage = rest.chars().next()?.to_digit(10)? as u8;
        if stage > 3 {
            return None;
        }
        let offload = rest[1..].starts_with("_offload");
        Some(Zero {
            stage,
            offload_optimizer: offload,
            offload_param: offload && stage == 3,
            deepspeed: true,
        })
    }

    /// Read `zero_optimization` from a DeepSpeed JSON config's text.
    pub fn from_deepspeed_json(text: &str) -> Result<Zero, Error> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::bad("deepspeed", "(file)", format!("valid JSON ({e})")))?;
        let zo = v.get("zero_optimization");
        let stage = match zo.and_then(|z| z.get("stage")) {
            None => 0,
            Some(s) => match s.as_u64() {
                Some(n @ 0..=3) => n as u8,
                _ => {
                    return Err(Error::bad(
                        "deepspeed.zero_optimization.stage",
                        s,
                        "0, 1, 2 or 3",
                    ));
                }
            },
        };
        let dev = |k: &str| {
            zo.and_then(|z| z.get(k))
                .and_then(|o| o.get("device"))
                .and_then(|d| d.as_str())
                .unwrap_or("none")
                != "none"
        };
        Ok(Zero {
            stage,
            offload_optimizer: dev("offload_optimizer"),
            offload_param: dev("offload_param"),
            deepspeed: true,
        })
    }
}

/// Everything an estimate (or a training run) needs, typed and defaulted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub model: String,
    pub train: bool,
    pub method: Method,
    pub freeze_trainable_layers: i64,
    pub lora_rank: u64,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    /// `all` or module names.
    pub lora_target: Vec<String>,
    pub use_rslora: bool,
    pub use_dora: bool,
    pub quant: Option<Quant>,
    pub precision: Precision,
    pub fp16: bool,
    pub attention: Attention,
    pub gradient_checkpointing: bool,
    pub optimizer: Optimizer,
    pub batch_size: u64,
    pub grad_accum: u64,
    pub cutoff_len: u64,
    pub packing: bool,
    pub num_train_epochs: f64,
    pub max_steps: Option<u64>,
    pub max_samples: Option<u64>,
    pub gpu: Option<String>,
    pub num_gpus: u64,
    /// DeepSpeed path as given (the CLI reads a real file and fills `zero`).
    pub deepspeed: Option<String>,
    pub zero: Zero,
    pub dataset_tokens: Option<u64>,
    pub price_per_hour: Option<f64>,
}

impl Plan {
    fn from_settings(s: &Settings) -> Result<Plan, Error> {
        let model = s
            .str("model_name_or_path")
            .ok_or_else(|| Error::Missing("model_name_or_path".into()))?
            .to_string();
        let method = match s.str("finetuning_type").unwrap_or("lora") {
            "full" => Method::Full,
            "freeze" => Method::Freeze,
            _ => Method::Lora,
        };
        let lora_rank = s.int("lora_rank").unwrap_or(8) as u64;
        let quant = s.str("quantization_bit").map(|b| Quant {
            bits: if b == "8" { 8 } else { 4 },
            fp4: s.str("quantization_type") == Some("fp4"),
            double_quant: s.bool("double_quantization", true),
        });
        if quant.is_some() && method != Method::Lora {
            return Err(Error::Conflict(format!(
                "quantization_bit needs finetuning_type: lora (QLoRA); got finetuning_type: {}",
                s.str("finetuning_type").unwrap_or("lora")
            )));
        }
        let (bf16, fp16, pure) = (
            s.bool("bf16", false),
            s.bool("fp16", false),
            s.bool("pure_bf16", false),
        );
        if bf16 && fp16 {
            return Err(Error::Conflict("bf16 and fp16 cannot both be true".into()));
        }
        if pure && fp16 {
            return Err(Error::Conflict(
                "pure_bf16 and fp16 cannot both be true".into(),
            ));
        }
        let precision = if pure {
            Precision::PureBf16
        } else if bf16 || fp16 {
            Precision::Mixed16
        } else {
            Precision::Fp32
        };
        let attention = match s.str("flash_attn").unwrap_or("auto") {
            "disabled" => Attention::Eager,
            "fa2" => Attention::Fa2,
            _ => Attention::Sdpa,
        };
        let optimizer = match s.str("optim").unwrap_or("adamw_torch") {
            "adamw_8bit" | "adamw_bnb_8bit" => Optimizer::Adamw8bit,
            "paged_adamw_8bit" => Optimizer::PagedAdamw8bit,
            "sgd" => Optimizer::Sgd,
            "adafactor" => Optimizer::Adafactor,
            _ => Optimizer::AdamwTorch,
        };
        let lora_target = s
            .str("lora_target")
            .unwrap_or("all")
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>();
        if lora_target.is_empty() {
            return Err(Error::bad(
                "lora_target",
                "",
                "`all` or a comma list of module names",
            ));
        }
        let deepspeed = s.str("deepspeed").map(str::to_string);
        let zero = deepspeed
            .as_deref()
            .and_then(Zero::from_llamafactory_name)
            .unwrap_or_default();
        let max_steps = s.int("max_steps").filter(|&m| m > 0).map(|m| m as u64);
        if let Some(gpu) = s.str("gpu") {
            crate::catalog::find_gpu(gpu)?;
        }
        Ok(Plan {
            model,
            train: s.bool("do_train", true),
            method,
            freeze_trainable_layers: s.int("freeze_trainable_layers").unwrap_or(2),
            lora_rank,
            lora_alpha: s.float("lora_alpha").unwrap_or(2.0 * lora_rank as f64),
            lora_dropout: s.float("lora_dropout").unwrap_or(0.0),
            lora_target,
            use_rslora: s.bool("use_rslora", false),
            use_dora: s.bool("use_dora", false),
            quant,
            precision,
            fp16,
            attention,
            gradient_checkpointing: !s.bool("disable_gradient_checkpointing", false),
            optimizer,
            batch_size: s.int("per_device_train_batch_size").unwrap_or(8) as u64,
            grad_accum: s.int("gradient_accumulation_steps").unwrap_or(1) as u64,
            cutoff_len: s.int("cutoff_len").unwrap_or(2048) as u64,
            // LLaMA-Factory turns packing on for neat_packing.
            packing: s.bool("packing", false) || s.bool("neat_packing", false),
            num_train_epochs: s.float("num_train_epochs").unwrap_or(3.0),
            max_steps,
            max_samples: s.int("max_samples").map(|m| m as u64),
            gpu: s.str("gpu").map(str::to_string),
            num_gpus: s.int("num_gpus").unwrap_or(1) as u64,
            deepspeed,
            zero,
            dataset_tokens: s.int("dataset_tokens").map(|t| t as u64),
            price_per_hour: s.float("price_per_hour"),
        })
    }

    /// Whether the run uses LoRA adapters (LoRA or QLoRA).
    pub fn is_lora(&self) -> bool {
        self.method == Method::Lora
    }
}
