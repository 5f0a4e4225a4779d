//! The typed, defaulted configuration ([`Plan`]) an estimate or a training run needs, made from
//! [`Settings`] with LLaMA-Factory's defaults and its cross-key checks (the ones in its
//! `FinetuningArguments.__post_init__`); features whose memory is not modelled become notes.

use serde::Serialize;

use crate::arch::media::{ImageKeys, SampleMedia, VideoKeys};
use crate::error::Error;
pub use crate::settings::{
    OPTIMIZERS, Origin, STAGES, Settings, Val, known_keys, parse_text_value,
};

/// LLaMA-Factory's training stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// Pre-training on plain text (same memory as sft).
    Pt,
    Sft,
    /// Reward model: a value head; chosen and rejected in one batch.
    Rm,
    /// PPO (not modelled beyond sft + value head; noted).
    Ppo,
    /// DPO family (sigmoid, hinge, ipo, orpo, simpo): chosen and rejected in one batch.
    Dpo,
    /// KTO: the batch and its KL batch.
    Kto,
}

impl Stage {
    /// Chosen and rejected (or target and KL) sequences per sample.
    pub fn sequences_per_sample(self) -> u64 {
        match self {
            Stage::Rm | Stage::Dpo | Stage::Kto => 2,
            _ => 1,
        }
    }
}

/// full / freeze / lora / oft.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Full,
    Freeze,
    Lora,
    /// Orthogonal fine-tuning (PEFT OFT): block-diagonal rotations of each target's input.
    Oft,
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
    /// flash-attention 2 (or 3).
    Fa2,
}

/// Optimizer family as far as memory is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    /// Two full-precision states (AdamW in all its torch spellings, paged 32-bit too).
    AdamwTorch,
    /// Two 8-bit states (bitsandbytes / torchao).
    Adamw8bit,
    PagedAdamw8bit,
    /// Two 4-bit states (torchao).
    Adamw4bit,
    /// Three full-precision states (AdEMAMix).
    Ademamix,
    /// Three 8-bit states.
    Ademamix8bit,
    /// One full-precision state (Lion, RMSprop, Adagrad).
    OneState,
    /// One 8-bit state (Lion / RMSprop 8-bit).
    OneState8bit,
    /// No state (plain SGD, momentum 0 as transformers sets it).
    Sgd,
    /// Factored second moments.
    Adafactor,
    /// LOMO / AdaLomo: the update is fused into backward; gradients are never all held.
    Lomo,
    /// Adam-mini: one full state, the second moment one scalar per block.
    AdamMini,
    /// Muon: one momentum state for the 2-D hidden matrices, AdamW for the rest.
    Muon,
}

impl Optimizer {
    /// The memory family of an `optim` value (one of [`OPTIMIZERS`]).
    pub fn from_name(name: &str) -> Optimizer {
        match name {
            "adamw_8bit"
            | "adamw_bnb_8bit"
            | "adamw_torch_8bit"
            | "galore_adamw_8bit"
            | "galore_adamw_8bit_layerwise" => Optimizer::Adamw8bit,
            "paged_adamw_8bit" => Optimizer::PagedAdamw8bit,
            "adamw_torch_4bit" => Optimizer::Adamw4bit,
            "ademamix" | "paged_ademamix_32bit" => Optimizer::Ademamix,
            "ademamix_8bit" | "paged_ademamix_8bit" => Optimizer::Ademamix8bit,
            "lion_32bit" | "paged_lion_32bit" | "adagrad" | "rmsprop" | "rmsprop_bnb"
            | "rmsprop_bnb_32bit" => Optimizer::OneState,
            "lion_8bit" | "paged_lion_8bit" | "rmsprop_bnb_8bit" => Optimizer::OneState8bit,
            "sgd" | "schedule_free_sgd" => Optimizer::Sgd,
            "adafactor" | "galore_adafactor" | "galore_adafactor_layerwise" => Optimizer::Adafactor,
            "lomo" | "adalomo" => Optimizer::Lomo,
            _ => Optimizer::AdamwTorch,
        }
    }
}

/// Where the frozen base's quantization comes from (`quantization_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QuantMethod {
    /// bitsandbytes NF4 / FP4 / LLM.int8 (quantized at load).
    Bnb,
    /// HQQ: 4-bit codes with fp16 scale and zero per group of 64 (quantized at load).
    Hqq,
    /// EETQ: int8 per output channel (quantized at load).
    Eetq,
    /// A pre-quantized checkpoint (GPTQ / AWQ / AQLM …): 4-bit codes + fp16 scales per 128.
    PreQuantized,
}

impl QuantMethod {
    /// The `quantization_method` spelling.
    pub fn name(self) -> &'static str {
        match self {
            QuantMethod::Bnb => "bnb",
            QuantMethod::Hqq => "hqq",
            QuantMethod::Eetq => "eetq",
            QuantMethod::PreQuantized => "pre-quantized",
        }
    }
}

/// Weight quantization of the frozen base (QLoRA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Quant {
    /// 4 or 8.
    pub bits: u8,
    /// nf4 / fp4 (4-bit only).
    pub fp4: bool,
    pub double_quant: bool,
    pub method: QuantMethod,
}

/// GaLore / APOLLO: optimizer states of the targeted matrices kept in a rank-r projection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LowRankOptimizer {
    /// "galore" or "apollo".
    pub kind: &'static str,
    pub rank: u64,
    /// `all` or module names (`q_proj`, `mlp`, …).
    pub target: Vec<String>,
    /// Per-layer updates in backward: gradients are never all held.
    pub layerwise: bool,
}

/// BAdam: block coordinate descent over the layers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Badam {
    /// `ratio` mode's `badam_update_ratio`; `None` in layer mode (one layer at a time).
    pub update_ratio: Option<f64>,
}

/// ZeRO / FSDP sharding across the data-parallel GPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub struct Zero {
    /// 0 = plain data parallel; FSDP FULL_SHARD is 3, SHARD_GRAD_OP 2.
    pub stage: u8,
    pub offload_optimizer: bool,
    pub offload_param: bool,
    /// Whether DeepSpeed is in use at all (changes mixed-precision bookkeeping).
    pub deepspeed: bool,
    /// PyTorch FSDP / FSDP2 (fp32 sharded parameters, no DeepSpeed bookkeeping).
    pub fsdp: bool,
    /// DeepSpeed's `zero_optimization.sub_group_size` where a JSON sets it to something other
    /// than its default (1e9 elements, also LLaMA-Factory's configs): the ZeRO-3 optimizer step
    /// converts one such slice of gradients to fp32 at a time. `None`: the default.
    pub sub_group_size: Option<u64>,
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
            fsdp: false,
            sub_group_size: None,
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
        // A number, or `1e9` as JSON's float; the default is kept as `None`.
        let sub_group_size = match zo.and_then(|z| z.get("sub_group_size")) {
            None => None,
            Some(v) => match v.as_f64() {
                Some(n) if n >= 1.0 && n.is_finite() => {
                    Some(n as u64).filter(|&n| n != Zero::DEFAULT_SUB_GROUP_SIZE)
                }
                _ => {
                    return Err(Error::bad(
                        "deepspeed.zero_optimization.sub_group_size",
                        v,
                        "a positive number of elements",
                    ));
                }
            },
        };
        Ok(Zero {
            stage,
            offload_optimizer: dev("offload_optimizer"),
            offload_param: dev("offload_param"),
            deepspeed: true,
            fsdp: false,
            sub_group_size,
        })
    }
}

impl Zero {
    /// DeepSpeed's `sub_group_size` default, which LLaMA-Factory's ZeRO-3 configs also set.
    pub const DEFAULT_SUB_GROUP_SIZE: u64 = 1_000_000_000;

    /// The elements of one ZeRO-3 sub-group (the slice the optimizer step converts to fp32).
    pub fn sub_group_elements(&self) -> f64 {
        self.sub_group_size.unwrap_or(Self::DEFAULT_SUB_GROUP_SIZE) as f64
    }

    /// Whether parameters, gradients or states are sharded by anything.
    pub fn sharded(&self) -> bool {
        self.deepspeed || self.fsdp
    }

    /// transformers' `fsdp` key (`full_shard auto_wrap`, `shard_grad_op`, `… offload`).
    pub fn from_fsdp_option(value: &str) -> Option<Zero> {
        let v = value.to_ascii_lowercase();
        let stage = if v.contains("full_shard") || v.contains("hybrid_shard") {
            3
        } else if v.contains("shard_grad_op") {
            2
        } else if v.trim().is_empty() || v.contains("no_shard") || v == "false" {
            return None;
        } else {
            3
        };
        let offload = v.contains("offload");
        Some(Zero {
            stage,
            offload_optimizer: offload,
            offload_param: offload,
            deepspeed: false,
            fsdp: true,
            sub_group_size: None,
        })
    }

    /// An accelerate config (LLaMA-Factory's examples/accelerate/fsdp*_config.yaml): the sharding
    /// and `num_processes`, or `None` when it is not an FSDP config.
    pub fn from_accelerate_yaml(text: &str) -> Result<Option<(Zero, Option<u64>)>, Error> {
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)
            .map_err(|e| Error::Syntax(format!("the accelerate config does not parse: {e}")))?;
        let gpus = doc
            .get("num_processes")
            .and_then(serde_yaml_ng::Value::as_u64)
            .filter(|n| *n > 0);
        match doc
            .get("distributed_type")
            .and_then(serde_yaml_ng::Value::as_str)
        {
            Some("FSDP") => {}
            Some("DEEPSPEED") => {
                let cfg = doc.get("deepspeed_config");
                let stage = cfg
                    .and_then(|c| c.get("zero_stage"))
                    .and_then(serde_yaml_ng::Value::as_u64)
                    .unwrap_or(0)
                    .min(3) as u8;
                let dev = |k: &str| {
                    cfg.and_then(|c| c.get(k))
                        .and_then(serde_yaml_ng::Value::as_str)
                        .is_some_and(|d| d != "none")
                };
                let zero = Zero {
                    stage,
                    offload_optimizer: dev("offload_optimizer_device"),
                    offload_param: dev("offload_param_device"),
                    deepspeed: true,
                    fsdp: false,
                    sub_group_size: None,
                };
                return Ok(Some((zero, gpus)));
            }
            _ => return Ok(None),
        }
        let f = doc.get("fsdp_config");
        let field = |k: &str| f.and_then(|c| c.get(k));
        let strategy = field("fsdp_sharding_strategy")
            .map(|v| match v {
                serde_yaml_ng::Value::Number(n) => match n.as_u64() {
                    Some(2) => "SHARD_GRAD_OP".to_string(),
                    Some(3) => "NO_SHARD".to_string(),
                    _ => "FULL_SHARD".to_string(),
                },
                other => other.as_str().unwrap_or("FULL_SHARD").to_string(),
            })
            .unwrap_or_else(|| {
                // FSDP2 has no strategy key: reshard_after_forward false is SHARD_GRAD_OP.
                match field("fsdp_reshard_after_forward").and_then(serde_yaml_ng::Value::as_bool) {
                    Some(false) => "SHARD_GRAD_OP".into(),
                    _ => "FULL_SHARD".into(),
                }
            });
        let offload = field("fsdp_offload_params")
            .and_then(serde_yaml_ng::Value::as_bool)
            .unwrap_or(false);
        let stage = match strategy.to_ascii_uppercase().as_str() {
            "NO_SHARD" => 0,
            "SHARD_GRAD_OP" => 2,
            _ => 3,
        };
        Ok(Some((
            Zero {
                stage,
                offload_optimizer: offload,
                offload_param: offload,
                deepspeed: false,
                fsdp: true,
                sub_group_size: None,
            },
            gpus,
        )))
    }
}

/// Everything an estimate (or a training run) needs, typed and defaulted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub model: String,
    pub train: bool,
    pub stage: Stage,
    pub method: Method,
    pub freeze_trainable_layers: i64,
    /// `all` or module names within the trained layers (`mlp`, `self_attn`, …).
    pub freeze_trainable_modules: Vec<String>,
    /// Modules outside the layers trained too (`embed_tokens`, `lm_head`, `norm`).
    pub freeze_extra_modules: Vec<String>,
    /// LoRA / OFT: modules PEFT trains whole beside the adapter (`modules_to_save`): LLaMA-Factory's
    /// `additional_target`, or `embed_tokens` and `lm_head` when the vocabulary is resized
    /// (`resize_vocab`, or tokens added by `add_tokens` / `add_special_tokens` /
    /// `new_special_tokens_config`).
    pub modules_to_save: Vec<String>,
    pub lora_rank: u64,
    pub lora_alpha: f64,
    pub lora_dropout: f64,
    /// `all` or module names.
    pub lora_target: Vec<String>,
    pub use_rslora: bool,
    pub use_dora: bool,
    /// OFT: the rotation block size (`oft_block_size`; from `oft_rank` when that is given).
    pub oft_block_size: u64,
    pub oft_rank: u64,
    pub quant: Option<Quant>,
    pub precision: Precision,
    pub fp16: bool,
    pub attention: Attention,
    pub gradient_checkpointing: bool,
    /// Unsloth's gradient checkpointing: the checkpointed layer inputs live in host RAM.
    pub offload_checkpoints: bool,
    /// The loss is computed chunk by chunk from the last hidden state (Liger's fused linear
    /// cross-entropy, Unsloth's chunked loss): no full-vocabulary logits.
    pub chunked_loss: bool,
    pub optimizer: Optimizer,
    pub low_rank_optimizer: Option<LowRankOptimizer>,
    pub badam: Option<Badam>,
    /// DPO / KTO keep a second frozen model for the reference log-probs (full / freeze / oft
    /// without `ref_model`, or any `ref_model`).
    pub reference_model: bool,
    /// The reference log-probs are computed (DPO except orpo / simpo; KTO).
    pub reference_forward: bool,
    pub batch_size: u64,
    pub grad_accum: u64,
    pub cutoff_len: u64,
    pub packing: bool,
    pub num_train_epochs: f64,
    pub max_steps: Option<u64>,
    pub max_samples: Option<u64>,
    pub gpu: Option<String>,
    pub num_gpus: u64,
    /// DeepSpeed path (or inline JSON) as given (the CLI reads a real file and fills `zero`).
    pub deepspeed: Option<String>,
    /// lorafit's `accelerate_config` path as given (the CLI reads it and fills `zero`).
    pub accelerate_config: Option<String>,
    pub zero: Zero,
    pub dataset_tokens: Option<u64>,
    pub price_per_hour: Option<f64>,
    /// Vision-language models: what trains and how many image tokens a sample carries.
    pub vision: VisionPlan,
    /// What the estimate assumes for keys whose memory it does not model (shown as warnings).
    pub notes: Vec<String>,
}

/// LLaMA-Factory's multimodal keys (`freeze_vision_tower`, `freeze_multi_modal_projector`,
/// `freeze_language_model`, `image_max_pixels`, `image_min_pixels`, `crop_to_patches`, `video_max_pixels`,
/// `video_min_pixels`, `video_fps`, `video_maxlen`) and lorafit's `images_per_sample`,
/// `videos_per_sample`, `video_seconds`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VisionPlan {
    pub freeze_tower: bool,
    pub freeze_projector: bool,
    pub freeze_language: bool,
    /// Images per training sample (lorafit's key; 0 = text-only samples).
    pub images_per_sample: u64,
    /// `image_max_pixels`, `image_min_pixels`, `crop_to_patches` (InternVL).
    pub image: ImageKeys,
    /// Videos per training sample (lorafit's key; 0 = none).
    pub videos_per_sample: u64,
    /// Length of a video when no file says it (lorafit's key `video_seconds`).
    pub video_seconds: f64,
    pub video: VideoKeys,
    /// Audios per training sample (lorafit's key; 0 = none).
    pub audios_per_sample: u64,
    /// Length of an audio when no file says it (lorafit's key `audio_seconds`).
    pub audio_seconds: f64,
    /// `audio_sampling_rate`: LLaMA-Factory resamples every audio to it (16000).
    pub audio_rate: u64,
    /// The dataset's rows' media, when `lorafit estimate` read the files' headers: the row with
    /// the most image + video tokens sets the estimate, instead of the `*_per_sample` keys.
    #[serde(skip)]
    pub dataset: Option<Vec<SampleMedia>>,
    /// The multimodal keys the config gave (a note says they do nothing on a text model).
    pub keys_given: Vec<&'static str>,
}

impl Default for VisionPlan {
    fn default() -> Self {
        VisionPlan {
            freeze_tower: true,
            freeze_projector: true,
            freeze_language: false,
            images_per_sample: 0,
            image: ImageKeys::default(),
            videos_per_sample: 0,
            video_seconds: 10.0,
            video: VideoKeys::default(),
            audios_per_sample: 0,
            audio_seconds: 10.0,
            audio_rate: 16000,
            dataset: None,
            keys_given: Vec::new(),
        }
    }
}

fn list(s: &Settings, key: &str, default: &str) -> Vec<String> {
    s.str(key)
        .unwrap_or(default)
        .split(',')
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect()
}

impl Plan {
    pub(crate) fn from_settings(s: &Settings) -> Result<Plan, Error> {
        let model = s
            .str("model_name_or_path")
            .ok_or_else(|| Error::Missing("model_name_or_path".into()))?
            .to_string();
        let mut notes = Vec::new();
        let stage = match s.str("stage").unwrap_or("sft") {
            "pt" => Stage::Pt,
            "rm" => Stage::Rm,
            "ppo" => Stage::Ppo,
            "dpo" => Stage::Dpo,
            "kto" => Stage::Kto,
            _ => Stage::Sft,
        };
        let ft = s.str("finetuning_type").unwrap_or("lora");
        let method = match ft {
            "full" => Method::Full,
            "freeze" => Method::Freeze,
            "oft" => Method::Oft,
            _ => Method::Lora,
        };
        let flag = |k: &str| s.bool(k, false);
        // LLaMA-Factory's own cross-key checks (FinetuningArguments.__post_init__).
        let (galore, apollo, badam) = (flag("use_galore"), flag("use_apollo"), flag("use_badam"));
        if method == Method::Lora && (galore || apollo || badam) {
            return Err(Error::Conflict(
                "use_galore / use_apollo / use_badam need finetuning_type full or freeze, not lora"
                    .into(),
            ));
        }
        if u8::from(galore) + u8::from(apollo) + u8::from(badam) > 1 {
            return Err(Error::Conflict(
                "use_galore, use_apollo and use_badam cannot be combined".into(),
            ));
        }
        if method != Method::Lora {
            for k in ["loraplus_lr_ratio", "use_rslora", "use_dora", "pissa_init"] {
                let on = match s.get(k) {
                    Some(Val::Bool(b)) => *b,
                    Some(_) => true,
                    None => false,
                };
                if on {
                    return Err(Error::Conflict(format!(
                        "`{k}` is only valid with finetuning_type: lora (got {ft})"
                    )));
                }
            }
        }
        if flag("use_llama_pro") && method == Method::Full {
            return Err(Error::Conflict(
                "use_llama_pro needs finetuning_type freeze or lora".into(),
            ));
        }
        let pref_loss = s.str("pref_loss").unwrap_or("sigmoid");
        if stage == Stage::Dpo
            && pref_loss != "sigmoid"
            && s.float("dpo_label_smoothing").unwrap_or(0.0) > 1e-6
        {
            return Err(Error::Conflict(
                "dpo_label_smoothing applies to pref_loss: sigmoid only".into(),
            ));
        }
        let use_ref = match stage {
            Stage::Dpo => !matches!(pref_loss, "orpo" | "simpo"),
            Stage::Kto => true,
            _ => false,
        };
        if flag("pissa_init") && (use_ref || stage == Stage::Ppo) {
            return Err(Error::Conflict(
                "pissa_init cannot be used with stage ppo / kto or a DPO reference model".into(),
            ));
        }
        if stage == Stage::Ppo {
            if s.str("reward_model").is_none() {
                return Err(Error::Missing("reward_model (stage: ppo needs one)".into()));
            }
            notes.push(
                "stage ppo: estimated as sft plus a value head; the reward model, the reference \
                 model and generation buffers are not counted"
                    .into(),
            );
        }
        let reference_model = use_ref && (method != Method::Lora || s.str("ref_model").is_some());
        if use_ref && s.str("ref_model").is_some() {
            notes.push("ref_model: assumed the size of the trained model".into());
        }

        let lora_rank = s.int("lora_rank").unwrap_or(8) as u64;
        let quant = match s.str("quantization_bit") {
            Some(b) => {
                let method_name = s.str("quantization_method").unwrap_or("bnb");
                let qm = match method_name {
                    "bnb" => QuantMethod::Bnb,
                    "hqq" => QuantMethod::Hqq,
                    "eetq" => QuantMethod::Eetq,
                    other => {
                        notes.push(format!(
                            "quantization_method {other} quantizes nothing at load (LLaMA-Factory does that with bnb, hqq or eetq): 4-bit codes with fp16 scales per 128 are assumed unless the model's config.json has a quantization_config"
                        ));
                        QuantMethod::PreQuantized
                    }
                };
                if qm == QuantMethod::Eetq && b != "8" {
                    return Err(Error::bad(
                        "quantization_bit",
                        b,
                        "8 with quantization_method: eetq (EETQ is int8 only)",
                    ));
                }
                Some(Quant {
                    bits: if b == "8" { 8 } else { 4 },
                    fp4: s.str("quantization_type") == Some("fp4"),
                    double_quant: s.bool("double_quantization", true),
                    method: qm,
                })
            }
            None => None,
        };
        if quant.is_some() && !matches!(method, Method::Lora | Method::Oft) {
            return Err(Error::Conflict(format!(
                "quantization_bit needs finetuning_type: lora or oft (QLoRA); got finetuning_type: {ft}"
            )));
        }
        let (bf16, fp16, pure) = (flag("bf16"), flag("fp16"), flag("pure_bf16"));
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
            "fa2" | "fa3" => Attention::Fa2,
            _ => Attention::Sdpa,
        };
        let optim = s.str("optim").unwrap_or("adamw_torch");
        let mut optimizer = Optimizer::from_name(optim);
        if flag("use_adam_mini") {
            optimizer = Optimizer::AdamMini;
        }
        if flag("use_muon") {
            optimizer = Optimizer::Muon;
        }
        let lora_target = list(s, "lora_target", "all");
        if lora_target.is_empty() {
            return Err(Error::bad(
                "lora_target",
                "",
                "`all` or a comma list of module names",
            ));
        }
        let low_rank_optimizer = if galore || optim.starts_with("galore_") {
            Some(LowRankOptimizer {
                kind: "galore",
                rank: s.int("galore_rank").unwrap_or(16).max(1) as u64,
                target: list(s, "galore_target", "all"),
                layerwise: s.bool("galore_layerwise", false) || optim.ends_with("_layerwise"),
            })
        } else if apollo || optim.starts_with("apollo_") {
            Some(LowRankOptimizer {
                kind: "apollo",
                rank: s.int("apollo_rank").unwrap_or(16).max(1) as u64,
                target: list(s, "apollo_target", "all"),
                layerwise: s.bool("apollo_layerwise", false) || optim.ends_with("_layerwise"),
            })
        } else {
            None
        };
        let badam = badam.then(|| Badam {
            update_ratio: (s.str("badam_mode") == Some("ratio"))
                .then(|| s.float("badam_update_ratio").unwrap_or(0.05)),
        });
        // Liger's fused linear cross-entropy is off for the stages that need logits.
        let liger = flag("enable_liger_kernel") || flag("use_liger_kernel");
        let unsloth = flag("use_unsloth");
        let chunked_loss = (liger && matches!(stage, Stage::Pt | Stage::Sft)) || unsloth;
        if liger && !chunked_loss {
            notes.push(format!(
                "enable_liger_kernel with stage {}: LLaMA-Factory turns the fused cross-entropy off (the logits are needed), so they are counted",
                s.str("stage").unwrap_or("sft")
            ));
        }
        if unsloth {
            notes.push(
                "use_unsloth: modelled as chunked cross-entropy and checkpoints in host RAM; Unsloth's other kernels are not"
                    .into(),
            );
        }
        if flag("use_audio_in_video") {
            // LLaMA-Factory's Qwen2OmniPlugin interleaves each video's frames with the audio
            // entry after it, two-second chunks at a time, between one vision_bos / audio_bos
            // and audio_eos / vision_eos: the same tokens as without it, in another order.
            notes.push(
                "use_audio_in_video: interleaves each video with the audio entry that follows it (the same tokens in another order, so the estimate is unchanged); the sound must be in the dataset's audios, one per video (audios_per_sample without a dataset)"
                    .into(),
            );
        }
        if flag("fp8") {
            notes.push("fp8: FP8 matmuls are not modelled (memory and time as bf16)".into());
        }
        if flag("pissa_init") {
            notes.push(
                "pissa_init: the one-off SVD at load is not counted (training memory as LoRA)"
                    .into(),
            );
        }
        let d = VisionPlan::default();
        // A positive count (pixels, frames), LLaMA-Factory's default when absent.
        let positive = |k: &str, default: u64| s.int(k).unwrap_or(default as i64).max(1) as u64;
        let vision = VisionPlan {
            freeze_tower: s.bool("freeze_vision_tower", d.freeze_tower),
            freeze_projector: s.bool("freeze_multi_modal_projector", d.freeze_projector),
            freeze_language: s.bool("freeze_language_model", d.freeze_language),
            images_per_sample: s.int("images_per_sample").unwrap_or(0).max(0) as u64,
            image: ImageKeys {
                max_pixels: positive("image_max_pixels", d.image.max_pixels),
                min_pixels: positive("image_min_pixels", d.image.min_pixels),
                crop_to_patches: s.bool("crop_to_patches", d.image.crop_to_patches),
            },
            videos_per_sample: s.int("videos_per_sample").unwrap_or(0).max(0) as u64,
            video_seconds: s.float("video_seconds").unwrap_or(d.video_seconds),
            video: VideoKeys {
                max_pixels: positive("video_max_pixels", d.video.max_pixels),
                min_pixels: positive("video_min_pixels", d.video.min_pixels),
                fps: s.float("video_fps").unwrap_or(d.video.fps),
                maxlen: positive("video_maxlen", d.video.maxlen),
            },
            audios_per_sample: s.int("audios_per_sample").unwrap_or(0).max(0) as u64,
            audio_seconds: s.float("audio_seconds").unwrap_or(d.audio_seconds),
            audio_rate: positive("audio_sampling_rate", d.audio_rate),
            dataset: None,
            keys_given: [
                "freeze_vision_tower",
                "freeze_multi_modal_projector",
                "freeze_language_model",
                "images_per_sample",
                "image_max_pixels",
                "image_min_pixels",
                "crop_to_patches",
                "videos_per_sample",
                "video_seconds",
                "video_max_pixels",
                "video_min_pixels",
                "video_fps",
                "video_maxlen",
                "audios_per_sample",
                "audio_seconds",
                "audio_sampling_rate",
            ]
            .into_iter()
            .filter(|k| s.get(k).is_some())
            .collect(),
        };
        if vision.image.max_pixels < vision.image.min_pixels {
            return Err(Error::Conflict(
                "image_max_pixels cannot be smaller than image_min_pixels (LLaMA-Factory)".into(),
            ));
        }
        if vision.video.max_pixels < vision.video.min_pixels {
            return Err(Error::Conflict(
                "video_max_pixels cannot be smaller than video_min_pixels (LLaMA-Factory)".into(),
            ));
        }
        if s.int("oft_rank").unwrap_or(0) > 0 && s.int("oft_block_size").is_some_and(|b| b > 0) {
            return Err(Error::Conflict(
                "set one of oft_rank and oft_block_size, not both (PEFT's OFT)".into(),
            ));
        }
        let deepspeed = s.str("deepspeed").map(str::to_string);
        let mut zero = match deepspeed.as_deref() {
            Some(text) if text.trim_start().starts_with('{') => Zero::from_deepspeed_json(text)?,
            Some(path) => Zero::from_llamafactory_name(path).unwrap_or_default(),
            None => Zero::default(),
        };
        if let Some(f) = s.str("fsdp")
            && let Some(z) = Zero::from_fsdp_option(f)
        {
            if deepspeed.is_some() {
                return Err(Error::Conflict(
                    "deepspeed and fsdp cannot both be set".into(),
                ));
            }
            zero = z;
        }
        let max_steps = s.int("max_steps").filter(|&m| m > 0).map(|m| m as u64);
        if let Some(gpu) = s.str("gpu") {
            crate::catalog::find_gpu(gpu)?;
        }
        let gc_off = flag("disable_gradient_checkpointing");
        Ok(Plan {
            model,
            train: s.bool("do_train", true),
            stage,
            method,
            freeze_trainable_layers: s.int("freeze_trainable_layers").unwrap_or(2),
            freeze_trainable_modules: list(s, "freeze_trainable_modules", "all"),
            freeze_extra_modules: list(s, "freeze_extra_modules", ""),
            modules_to_save: if s.get("additional_target").is_some() {
                list(s, "additional_target", "")
            } else if flag("resize_vocab")
                || [
                    "add_tokens",
                    "add_special_tokens",
                    "new_special_tokens_config",
                ]
                .iter()
                .any(|k| s.str(k).is_some_and(|v| !v.trim().is_empty()))
            {
                vec!["embed_tokens".into(), "lm_head".into()]
            } else {
                Vec::new()
            },
            lora_rank,
            lora_alpha: s.float("lora_alpha").unwrap_or(2.0 * lora_rank as f64),
            lora_dropout: s.float("lora_dropout").unwrap_or(0.0),
            lora_target,
            use_rslora: flag("use_rslora"),
            use_dora: flag("use_dora"),
            oft_block_size: s.int("oft_block_size").unwrap_or(32).max(0) as u64,
            oft_rank: s.int("oft_rank").unwrap_or(0).max(0) as u64,
            quant,
            precision,
            fp16,
            attention,
            gradient_checkpointing: !gc_off,
            offload_checkpoints: !gc_off && (flag("use_unsloth_gc") || unsloth),
            chunked_loss,
            optimizer,
            low_rank_optimizer,
            badam,
            reference_model,
            reference_forward: use_ref,
            batch_size: s.int("per_device_train_batch_size").unwrap_or(8) as u64,
            grad_accum: s.int("gradient_accumulation_steps").unwrap_or(1) as u64,
            cutoff_len: s.int("cutoff_len").unwrap_or(2048) as u64,
            // LLaMA-Factory turns packing on for neat_packing.
            packing: flag("packing") || flag("neat_packing"),
            num_train_epochs: s.float("num_train_epochs").unwrap_or(3.0),
            max_steps,
            max_samples: s.int("max_samples").map(|m| m as u64),
            gpu: s.str("gpu").map(str::to_string),
            num_gpus: s.int("num_gpus").unwrap_or(1) as u64,
            deepspeed,
            accelerate_config: s.str("accelerate_config").map(str::to_string),
            zero,
            vision,
            dataset_tokens: s.int("dataset_tokens").map(|t| t as u64),
            price_per_hour: s.float("price_per_hour"),
            notes,
        })
    }

    /// Whether the run uses LoRA adapters (LoRA or QLoRA).
    pub fn is_lora(&self) -> bool {
        self.method == Method::Lora
    }

    /// Whether the base is frozen behind PEFT adapters (LoRA or OFT).
    pub fn is_adapter(&self) -> bool {
        matches!(self.method, Method::Lora | Method::Oft)
    }

    /// One line naming the stage, the method and what changes memory (`dpo · QLoRA 4-bit (bnb)
    /// r8`, `sft · full + GaLore r16 layer-wise`), for tables and the page.
    pub fn describe(&self) -> String {
        let stage = match self.stage {
            Stage::Pt => "pt",
            Stage::Sft => "sft",
            Stage::Rm => "rm",
            Stage::Ppo => "ppo",
            Stage::Dpo => "dpo",
            Stage::Kto => "kto",
        };
        let mut m = match (self.method, self.quant) {
            (Method::Lora, Some(q)) => {
                format!(
                    "QLoRA {}-bit ({}) r{}",
                    q.bits,
                    q.method.name(),
                    self.lora_rank
                )
            }
            (Method::Oft, Some(q)) => format!(
                "QOFT {}-bit ({}) block {}",
                q.bits,
                q.method.name(),
                self.oft_block_size
            ),
            (Method::Lora, None) => format!("LoRA r{}", self.lora_rank),
            (Method::Oft, None) => format!("OFT block {}", self.oft_block_size),
            (Method::Full, _) => "full".into(),
            (Method::Freeze, _) => format!("freeze {} layers", self.freeze_trainable_layers),
        };
        if self.use_dora {
            m.push_str(" + DoRA");
        }
        if let Some(l) = &self.low_rank_optimizer {
            let name = if l.kind == "galore" {
                "GaLore"
            } else {
                "APOLLO"
            };
            m.push_str(&format!(
                " + {name} r{}{}",
                l.rank,
                if l.layerwise { " layer-wise" } else { "" }
            ));
        }
        if let Some(b) = self.badam {
            match b.update_ratio {
                Some(r) => m.push_str(&format!(" + BAdam ratio {r}")),
                None => m.push_str(" + BAdam (a layer at a time)"),
            }
        }
        if self.reference_model {
            m.push_str(" + reference copy");
        }
        if self.chunked_loss {
            m.push_str(" + chunked loss");
        }
        if self.zero.fsdp {
            m.push_str(&format!(" + FSDP (as ZeRO-{})", self.zero.stage));
        } else if self.zero.deepspeed {
            m.push_str(&format!(
                " + ZeRO-{}{}",
                self.zero.stage,
                if self.zero.offload_optimizer {
                    " offload"
                } else {
                    ""
                }
            ));
        }
        format!("{stage} · {m}")
    }

    /// Sequences in one micro-batch (DPO / KTO / RM put two per sample).
    pub fn sequences_per_micro_batch(&self) -> u64 {
        self.batch_size
            .saturating_mul(self.stage.sequences_per_sample())
    }
}
