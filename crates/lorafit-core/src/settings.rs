//! Contract 1: LLaMA-Factory's configuration keys (plus lorafit's own) as given — YAML (v0 flat or
//! v1 nested), `--set key=value`, a share link — validated one by one into [`Settings`], with
//! warnings for unknown keys and errors that name the key, the value and what is allowed.
//! [`Settings::plan`] types and defaults them (plan.rs).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::error::Error;
use crate::plan::Plan;

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

/// LLaMA-Factory's stages.
pub const STAGES: &[&str] = &["pt", "sft", "rm", "ppo", "dpo", "kto"];

/// Optimizers understood: every `optim` transformers 5.8 accepts, by memory family (see
/// [`Optimizer::from_name`]).
pub const OPTIMIZERS: &[&str] = &[
    "adamw_torch",
    "adamw_torch_fused",
    "adamw_torch_xla",
    "adamw_torch_npu_fused",
    "adamw_apex_fused",
    "adamw_anyprecision",
    "stable_adamw",
    "grokadamw",
    "schedule_free_adamw",
    "schedule_free_radam",
    "paged_adamw_32bit",
    "adamw_8bit",
    "adamw_bnb_8bit",
    "adamw_torch_8bit",
    "paged_adamw_8bit",
    "adamw_torch_4bit",
    "ademamix",
    "paged_ademamix_32bit",
    "ademamix_8bit",
    "paged_ademamix_8bit",
    "lion_32bit",
    "paged_lion_32bit",
    "lion_8bit",
    "paged_lion_8bit",
    "adagrad",
    "rmsprop",
    "rmsprop_bnb",
    "rmsprop_bnb_32bit",
    "rmsprop_bnb_8bit",
    "sgd",
    "schedule_free_sgd",
    "adafactor",
    "lomo",
    "adalomo",
    "galore_adamw",
    "galore_adamw_8bit",
    "galore_adafactor",
    "galore_adamw_layerwise",
    "galore_adamw_8bit_layerwise",
    "galore_adafactor_layerwise",
    "apollo_adamw",
    "apollo_adamw_layerwise",
];

/// Every `lr_scheduler_type` transformers 5.8 accepts (the schedule changes no estimate).
pub const SCHEDULERS: &[&str] = &[
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
    "greedy",
];

/// Whether `key` holds free text (a path, an id): its value is kept as written, and exported
/// quoted when it looks like a number.
pub(crate) fn is_text_key(key: &str) -> bool {
    match KEYS.iter().find(|k| k.name == key) {
        Some(def) => matches!(def.kind, Kind::Str),
        None => crate::keys::find(key).is_some_and(|k| k.kind == "str"),
    }
}

/// A boolean as PyYAML (YAML 1.1, what LLaMA-Factory reads configs with) spells it:
/// true/false, yes/no, on/off, any case.
pub(crate) fn yaml11_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => Some(true),
        "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Spellings other versions of LLaMA-Factory write for the same value.
fn alias(key: &str, value: &str) -> Option<&'static str> {
    Some(match (key, value) {
        ("flash_attn", "eager") => "disabled",
        ("flash_attn", "flash_attention_2") => "fa2",
        ("flash_attn", "flash_attention_3") => "fa3",
        _ => return None,
    })
}

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
        kind: Kind::Enum(STAGES),
        origin: LF,
        help: "training stage: pt, sft, rm (reward model), ppo, dpo, kto",
    },
    KeyDef {
        name: "do_train",
        kind: Kind::Bool,
        origin: LF,
        help: "false estimates inference instead of training",
    },
    KeyDef {
        name: "finetuning_type",
        kind: Kind::Enum(&["full", "freeze", "lora", "oft"]),
        origin: LF,
        help: "full, freeze, lora or oft",
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
        kind: Kind::Enum(SCHEDULERS),
        origin: LF,
        help: "learning-rate schedule (lorafit train runs constant, constant_with_warmup, linear, cosine)",
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
        kind: Kind::Enum(&["auto", "disabled", "sdpa", "fa2", "fa3"]),
        origin: LF,
        help: "attention kernel (disabled = eager; v1's eager / flash_attention_2 are read too)",
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
        name: "bnb_rounding",
        kind: Kind::Enum(&["nearest", "cpu_table"]),
        origin: LO,
        help: "double-quant codes when lorafit train quantizes at load: nearest (bitsandbytes on CUDA) or cpu_table (its CPU kernel)",
    },
    KeyDef {
        name: "backend",
        kind: Kind::Enum(&["ndarray", "flex", "wgpu", "vulkan", "cuda"]),
        origin: LO,
        help: "lorafit train backend (vulkan: SPIR-V kernels, needs a build with --features vulkan)",
    },
    KeyDef {
        name: "quant_kernel",
        kind: Kind::Enum(&["auto", "fused", "dequantize"]),
        origin: LO,
        help: "lorafit train, 4-bit on wgpu: auto (time both on each shape, keep the faster), fused (never holds a dense weight) or dequantize (one layer's f32 weight at a time, then burn's matmul)",
    },
    KeyDef {
        name: "attention_kernel",
        kind: Kind::Enum(&["tensor_ops", "cube"]),
        origin: LO,
        help: "lorafit train attention on wgpu / CUDA: tensor_ops (tiles of burn ops, faster on lavapipe) or cube (one #[cube] kernel each way, no scores buffer)",
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
    KeyDef {
        name: "images_per_sample",
        kind: Kind::Int(0, 1024),
        origin: LO,
        help: "images per training sample for a vision-language model (default: 1 when the dataset has images, else 0)",
    },
    KeyDef {
        name: "videos_per_sample",
        kind: Kind::Int(0, 64),
        origin: LO,
        help: "videos per training sample for a vision-language model (default: 1 when the dataset has videos, else 0)",
    },
    KeyDef {
        name: "video_seconds",
        kind: Kind::Float(0.01, 86400.0),
        origin: LO,
        help: "length of each video in seconds when lorafit cannot read the files (default 10)",
    },
    KeyDef {
        name: "audios_per_sample",
        kind: Kind::Int(0, 256),
        origin: LO,
        help: "audios per training sample for a model with an audio encoder (Qwen2-Audio, Qwen2.5-Omni, Gemma 4 E2B / E4B; default: 1 when the dataset has audios, else 0)",
    },
    KeyDef {
        name: "audio_seconds",
        kind: Kind::Float(0.01, 86400.0),
        origin: LO,
        help: "length of each audio in seconds when lorafit cannot read the files (default 10)",
    },
    KeyDef {
        name: "accelerate_config",
        kind: Kind::Str,
        origin: LO,
        help: "accelerate config (FSDP / DeepSpeed) the run is launched with: its sharding and num_processes",
    },
];

/// `distributed_type` when `map` is an accelerate config (what `accelerate config` writes and
/// LLaMA-Factory's examples/accelerate/*.yaml are) rather than a training config: it has
/// `distributed_type` and names no model.
fn accelerate_config_kind(map: &serde_yaml_ng::Mapping) -> Option<String> {
    let has = |k: &str| map.contains_key(serde_yaml_ng::Value::from(k));
    if has("model_name_or_path") || has("model") {
        return None;
    }
    map.get(serde_yaml_ng::Value::from("distributed_type"))
        .map(|v| v.as_str().map_or_else(|| format!("{v:?}"), str::to_string))
}

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
        Kind::Str => "a non-empty string without control characters".into(),
        Kind::StrOrBool => "a path, true or false".into(),
    }
}

fn check(def: &KeyDef, v: Val) -> Result<Val, Error> {
    let bad = |v: &Val| Error::bad(def.name, v, describe(def.kind));
    match def.kind {
        Kind::Bool => match &v {
            Val::Bool(_) => Ok(v),
            Val::Str(s) => crate::settings::yaml11_bool(s)
                .map(Val::Bool)
                .ok_or_else(|| bad(&v)),
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
            let s = alias(def.name, &s).map(str::to_string).unwrap_or(s);
            if allowed.contains(&s.as_str()) {
                Ok(Val::Str(s))
            } else {
                Err(bad(&v))
            }
        }
        Kind::Str => match v {
            Val::Str(s)
                if !s.trim().is_empty() && s.len() <= 4096 && !s.chars().any(char::is_control) =>
            {
                Ok(Val::Str(s))
            }
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
    /// LLaMA-Factory keys lorafit has no typed entry for, validated by the type LLaMA-Factory
    /// declares (crate::keys), kept so exports carry them.
    extra: BTreeMap<String, Val>,
    /// Unknown keys seen (warned about, otherwise ignored), and notes on how the file was read.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// A YAML value as a [`Val`]; `Ok(None)` for null. Mappings and nested lists are `Err(Nested)`.
fn yaml_scalar(v: &serde_yaml_ng::Value) -> Result<Option<Val>, YamlValueError> {
    use serde_yaml_ng::Value as Y;
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
                    Y::Bool(b) => parts.push(b.to_string()),
                    _ => return Err(YamlValueError::Nested),
                }
            }
            Val::Str(parts.join(","))
        }
        _ => return Err(YamlValueError::Nested),
    }))
}

/// Why a YAML value is not a plain [`Val`].
#[derive(Debug)]
enum YamlValueError {
    /// A mapping, or a list of mappings / lists.
    Nested,
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
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)
            .map_err(|e| Error::Syntax(format!("the YAML does not parse: {e}")))?;
        let mut s = Settings::default();
        let map = match doc {
            serde_yaml_ng::Value::Mapping(m) => m,
            serde_yaml_ng::Value::Null => return Ok(s),
            _ => {
                return Err(Error::Syntax(
                    "the YAML must be a mapping of `key: value` lines".into(),
                ));
            }
        };
        if let Some(kind) = accelerate_config_kind(&map) {
            return Err(Error::Syntax(format!(
                "this is an accelerate config (`distributed_type: {kind}`), not a training config: \
                 name it in the training YAML as `accelerate_config: PATH`, or give it to \
                 `lorafit estimate TRAIN.yaml --fsdp-config PATH`"
            )));
        }
        let mut flat = Vec::new();
        for (k, v) in &map {
            let Some(key) = k.as_str() else {
                return Err(Error::Syntax(format!("keys must be strings, got {k:?}")));
            };
            flat.push((key.to_string(), v.clone()));
        }
        if crate::v1::is_v1(&flat) {
            flat = crate::v1::flatten(flat, &mut s.warnings)?;
        }
        for (key, v) in &flat {
            match yaml_scalar(v) {
                Ok(Some(val)) => s.set(key, val)?,
                Ok(None) => {}
                Err(YamlValueError::Nested) => s.set_nested(key, v)?,
            }
        }
        Ok(s)
    }

    /// A mapping (or list of mappings) as a key's value: DeepSpeed's config written inline, or
    /// an LLaMA-Factory / transformers key whose type takes one (`gradient_checkpointing_kwargs`).
    fn set_nested(&mut self, key: &str, v: &serde_yaml_ng::Value) -> Result<(), Error> {
        if key == "deepspeed" {
            let json = serde_json::to_string(v)
                .map_err(|e| Error::bad(key, "(mapping)", format!("a DeepSpeed config ({e})")))?;
            return self.set(key, Val::Str(json));
        }
        match crate::keys::find(key) {
            Some(k) if k.kind == "any" => {}
            Some(k) => {
                return Err(Error::bad(
                    key,
                    "(a mapping or nested list)",
                    format!("a plain {} value", k.kind),
                ));
            }
            None if KEYS.iter().any(|d| d.name == key) => {
                return Err(Error::bad(
                    key,
                    "(a mapping or nested list)",
                    "a plain value",
                ));
            }
            None => self
                .warnings
                .push(format!("unknown key `{key}` (a mapping) ignored")),
        }
        Ok(())
    }

    /// Set one key (validated). Unknown keys become warnings.
    pub fn set(&mut self, key: &str, v: Val) -> Result<(), Error> {
        let key = key.trim();
        match KEYS.iter().position(|k| k.name == key) {
            Some(i) => {
                let checked = check(&KEYS[i], v)?;
                self.values.insert(i, checked);
            }
            None => match crate::keys::find(key) {
                Some(def) => {
                    let checked = crate::keys::check(def, v)?;
                    self.extra.insert(key.to_string(), checked);
                }
                None => self.warnings.push(format!(
                    "unknown key `{key}` ignored (neither LLaMA-Factory nor lorafit has it)"
                )),
            },
        }
        Ok(())
    }

    /// Apply `key=value` (the command line's `--set`).
    pub fn set_assignment(&mut self, assignment: &str) -> Result<(), Error> {
        let (k, v) = assignment.split_once('=').ok_or_else(|| {
            Error::Syntax(format!("`--set {assignment}` must look like key=value"))
        })?;
        self.set_text(k, v)
    }

    /// Set a key from text (`--set`, a share link): string-valued keys keep the text as written
    /// (`gpu=-0` stays `-0`, not the number 0); others are read as YAML would read them.
    pub fn set_text(&mut self, key: &str, text: &str) -> Result<(), Error> {
        let key = key.trim();
        if is_text_key(key) && !text.trim().is_empty() {
            self.set(key, Val::Str(text.trim().to_string()))
        } else {
            self.set(key, parse_text_value(text))
        }
    }

    /// Remove a key (back to its default).
    pub fn unset(&mut self, key: &str) {
        if let Some(i) = KEYS.iter().position(|k| k.name == key) {
            self.values.remove(&i);
        }
        self.extra.remove(key);
    }

    /// The value given for a key, if any.
    pub fn get(&self, key: &str) -> Option<&Val> {
        match KEYS.iter().position(|k| k.name == key) {
            Some(i) => self.values.get(&i),
            None => self.extra.get(key),
        }
    }

    /// The LLaMA-Factory keys given that lorafit has no typed entry for, by name.
    pub fn extra(&self) -> impl Iterator<Item = (&str, &Val)> {
        self.extra.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The keys given with their origin: lorafit's typed keys in canonical order, then the other
    /// LLaMA-Factory keys by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, Origin, &Val)> {
        self.values
            .iter()
            .map(|(i, v)| (KEYS[*i].name, KEYS[*i].origin, v))
            .chain(
                self.extra
                    .iter()
                    .map(|(k, v)| (k.as_str(), Origin::LlamaFactory, v)),
            )
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
