//! Model architectures read from a Hugging Face `config.json`: shapes, exact parameter counts and
//! the linear modules LoRA can target.
//!
//! Supported families: see [`SUPPORTED_MODEL_TYPES`]. A model is a stack of decoder layers of
//! possibly different kinds ([`LayerKind`]: dense or MoE MLP, softmax or linear attention), so
//! DeepSeek's first dense layers, Llama 4's interleaved experts and Qwen3-Next's hybrid
//! attention count exactly. Multimodal configs keep the language model in `text_config` and the
//! vision tower in `vision_config` ([`vision`]).

use serde::Serialize;
use serde_json::Value;

use crate::error::Error;

mod dialects;
pub mod media;
pub mod quant;
pub mod vision;

/// RoPE scaling as declared by the checkpoint (`rope_scaling`, or transformers v5 `rope_parameters`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum RopeScaling {
    /// Plain RoPE.
    None,
    /// Llama 3.1 style frequency-dependent scaling.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_max_position_embeddings: u64,
    },
    /// Linear position interpolation.
    Linear { factor: f64 },
    /// Dynamic NTK.
    Dynamic { factor: f64 },
    /// YaRN.
    Yarn {
        factor: f64,
        original_max_position_embeddings: Option<u64>,
    },
}

/// Sparse mixture-of-experts MLP. transformers 5.x stores the routed experts as fused 3-D
/// tensors (`experts.gate_up_proj` [E, 2i, h], `experts.down_proj` [E, h, i]), which are not
/// `nn.Linear`: `lora_target: all` does not wrap them (PEFT would need `target_parameters`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Moe {
    pub num_experts: u64,
    pub experts_per_token: u64,
    pub expert_intermediate_size: u64,
    /// Width of the always-on shared expert(s) (0: none): qwen2_moe / qwen3_next / qwen3_5
    /// `shared_expert_intermediate_size`, deepseek / glm4_moe `moe_intermediate_size ×
    /// n_shared_experts`, llama4 `intermediate_size`.
    pub shared_intermediate_size: u64,
    /// A `shared_expert_gate` Linear(h, 1) scales the shared expert (qwen2_moe, qwen3_next, qwen3_5).
    pub shared_expert_gate: bool,
    /// The router is an `nn.Linear` that `lora_target: all` wraps (deepseek_v2's `gate`).
    pub router_targetable: bool,
    /// The router has a bias (gpt-oss; deepseek_v3 / glm4_moe's `e_score_correction_bias` is
    /// a buffer, not a parameter).
    pub router_bias: bool,
}

/// Multi-head latent attention (deepseek_v2 / v3): low-rank q and joint kv projections.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mla {
    /// `q_lora_rank` (None: a plain `q_proj`).
    pub q_lora_rank: Option<u64>,
    pub kv_lora_rank: u64,
    pub qk_nope_head_dim: u64,
    pub qk_rope_head_dim: u64,
    pub v_head_dim: u64,
}

/// Gated DeltaNet linear attention (qwen3_next, qwen3_5): a recurrent state per head instead of
/// a KV cache.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinearAttention {
    pub num_key_heads: u64,
    pub num_value_heads: u64,
    pub key_head_dim: u64,
    pub value_head_dim: u64,
    pub conv_kernel: u64,
    /// qwen3_5 splits the input projection (`in_proj_qkv`, `in_proj_z`, `in_proj_b`,
    /// `in_proj_a`); qwen3_next fuses it (`in_proj_qkvz`, `in_proj_ba`).
    pub split_projections: bool,
}

impl LinearAttention {
    pub fn key_dim(&self) -> u64 {
        self.num_key_heads * self.key_head_dim
    }
    pub fn value_dim(&self) -> u64 {
        self.num_value_heads * self.value_head_dim
    }
}

/// What a decoder layer mixes tokens with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mixer {
    /// Softmax attention (or MLA).
    Attention,
    /// Gated DeltaNet.
    LinearAttention,
    /// Gated cross-attention to the image features (Llama 3.2 Vision's `cross_attention_layers`):
    /// queries from the text, keys and values from the vision tower's output; q/k norms and two
    /// tanh gates.
    CrossAttention,
    /// Gemma 4's full-attention layers (between its sliding-window ones): heads
    /// [`GlobalAttention::head_dim`] wide, their own kv heads and, with `attention_k_eq_v`, keys
    /// that serve as values (no `v_proj`).
    GlobalAttention,
}

/// The shape of Gemma 4's full-attention layers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GlobalAttention {
    /// `global_head_dim`.
    pub head_dim: u64,
    /// `num_global_key_value_heads` with `attention_k_eq_v`, else `num_key_value_heads`.
    pub kv_heads: u64,
    /// `attention_k_eq_v`: the keys are the values; the layer has no `v_proj`.
    pub k_eq_v: bool,
}

/// The kind of one decoder layer: its token mixer, whether its MLP is routed experts, and
/// whether it reuses an earlier layer's keys and values (Gemma 4 E2B / E4B's last
/// `num_kv_shared_layers`: no k / v projections, and with `use_double_wide_mlp` an MLP twice as
/// wide).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct LayerKind {
    pub mixer: Mixer,
    pub moe: bool,
    pub kv_shared: bool,
}

/// Gemma 4's per-layer embeddings (E2B / E4B): a second token table of `width` values per layer
/// (`vocab_size_per_layer_input` rows), a projection of the hidden state to the same
/// `layers × width`, and in each layer a gate (h → width) and a projection back (width → h).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerLayerInput {
    /// `hidden_size_per_layer_input`.
    pub width: u64,
    /// `vocab_size_per_layer_input`.
    pub vocab: u64,
}

/// One linear module of the decoder (`count` > 1 for MoE experts).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Linear {
    /// The HF module name, the one `lora_target` uses (`q_proj`, `gate_up_proj`, `w1`, …).
    pub name: &'static str,
    pub in_features: u64,
    pub out_features: u64,
    pub bias: bool,
    /// How many copies per layer (experts).
    pub count: u64,
    /// A module PEFT wraps when `lora_target` names it; MoE routers and fused 3-D expert
    /// tensors are not.
    pub targetable: bool,
    /// Found by `lora_target: all`: LLaMA-Factory's `find_all_linear_modules` takes modules whose
    /// class name says `Linear`, so GPT-2's `Conv1D`s are targetable but not found.
    pub in_all: bool,
    /// How many decoder layers hold this module.
    pub layers: u64,
}

impl Linear {
    /// Weight parameters of all copies in one layer (bias excluded).
    pub fn weight_params(&self) -> u64 {
        self.in_features * self.out_features * self.count
    }
    /// Bias parameters of all copies in one layer.
    pub fn bias_params(&self) -> u64 {
        if self.bias {
            self.out_features * self.count
        } else {
            0
        }
    }
    /// Weight + bias parameters over every layer that holds it.
    pub fn total_params(&self) -> u64 {
        (self.weight_params() + self.bias_params()) * self.layers
    }
}

pub use quant::StoredQuant;
pub use vision::{Vision, VisionKind};

/// A decoder-only transformer, as much of it as memory, time and parameter counts need.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelArch {
    /// The language model's type, normalised (`qwen2_5_vl_text` → `qwen2`, `gemma3` →
    /// `gemma3_text`); a multimodal wrapper's own type is [`Vision::kind`].
    pub model_type: String,
    pub hidden_size: u64,
    /// The MLP width of dense layers.
    pub intermediate_size: u64,
    pub num_layers: u64,
    pub num_attention_heads: u64,
    pub num_key_value_heads: u64,
    pub head_dim: u64,
    pub vocab_size: u64,
    pub tie_word_embeddings: bool,
    /// Bias on q/k/v (qwen2).
    pub qkv_bias: bool,
    /// Per-head RMSNorm on q and k (qwen3, gemma3).
    pub qk_norm: bool,
    /// RMSNorms per decoder layer (2; gemma2/3 have 4).
    pub norms_per_layer: u64,
    /// Fused `qkv_proj` (phi3).
    pub fused_projections: bool,
    /// Fused `gate_up_proj` (phi3, glm4).
    pub fused_gate_up: bool,
    /// q/k norms over the whole projection width rather than per head (olmo2).
    pub qk_norm_full: bool,
    /// Bias on o_proj (gpt-oss; seed_oss's `attention_out_bias`, ernie's `use_bias`).
    pub o_bias: bool,
    /// Bias on the MLP's gate / up / down projections (llama-style `mlp_bias`, ernie's `use_bias`,
    /// starcoder2's `use_bias`).
    pub mlp_bias: bool,
    /// The MLP is gated (SwiGLU / GeGLU: gate, up, down); starcoder2's is `c_fc` → GELU →
    /// `c_proj`.
    pub gated_mlp: bool,
    /// The norms are LayerNorms with a bias (starcoder2), not RMSNorms: twice the parameters.
    pub norm_bias: bool,
    /// Whether the norms have parameters at all (OLMo (1)'s LayerNorms have none).
    pub norm_params: bool,
    /// Attention sinks: one learned logit per head and layer (gpt-oss).
    pub attention_sinks: bool,
    /// A bias on the output head (Phi-3.5-MoE's `lm_head_bias`).
    pub lm_head_bias: bool,
    /// `q_proj` also produces a sigmoid output gate (qwen3_next, qwen3_5): twice as wide.
    pub attn_output_gate: bool,
    pub moe: Option<Moe>,
    pub mla: Option<Mla>,
    pub linear_attention: Option<LinearAttention>,
    /// Gemma 4: the full-attention layers' own shape.
    pub global_attention: Option<GlobalAttention>,
    /// Gemma 4 E2B / E4B: per-layer embeddings.
    pub per_layer_input: Option<PerLayerInput>,
    /// Gemma 4 `use_double_wide_mlp`: the KV-shared layers' MLPs are twice `intermediate_size`.
    pub double_wide_shared_mlp: bool,
    /// Each decoder layer's kind, in order (dense/MoE, attention/linear attention).
    #[serde(serialize_with = "serialize_kinds")]
    pub layer_kinds: Vec<LayerKind>,
    pub vision: Option<Vision>,
    pub max_position_embeddings: Option<u64>,
    pub rope_theta: Option<f64>,
    pub rope_scaling: RopeScaling,
    /// A pre-quantized checkpoint's storage of the decoder linears.
    pub stored_quant: Option<StoredQuant>,
}

/// Each distinct kind of `kinds` with how many layers have it, in order of first appearance.
fn group_kinds(kinds: &[LayerKind]) -> Vec<(LayerKind, u64)> {
    let mut groups: Vec<(LayerKind, u64)> = Vec::new();
    for k in kinds {
        match groups.iter_mut().find(|g| g.0 == *k) {
            Some(g) => g.1 += 1,
            None => groups.push((*k, 1)),
        }
    }
    groups
}

fn serialize_kinds<S: serde::Serializer>(kinds: &[LayerKind], s: S) -> Result<S::Ok, S::Error> {
    // "48 × attention + moe" style summary: a per-layer list would drown the JSON.
    let text: Vec<String> = group_kinds(kinds)
        .iter()
        .map(|(k, n)| {
            let mixer = match k.mixer {
                Mixer::Attention => "attention",
                Mixer::GlobalAttention => "global attention",
                Mixer::LinearAttention => "linear attention",
                Mixer::CrossAttention => "cross attention",
            };
            format!("{n} × {mixer} + {}", if k.moe { "moe" } else { "mlp" })
        })
        .collect();
    s.serialize_str(&text.join(", "))
}

fn get_u64(obj: &serde_json::Map<String, Value>, key: &str) -> Result<Option<u64>, Error> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) => Ok(Some(v)),
            None => Err(Error::ModelConfig(format!(
                "`{key}` must be a non-negative integer, got {n}"
            ))),
        },
        Some(other) => Err(Error::ModelConfig(format!(
            "`{key}` must be a non-negative integer, got {other}"
        ))),
    }
}

fn req_u64(obj: &serde_json::Map<String, Value>, key: &str) -> Result<u64, Error> {
    let v = get_u64(obj, key)?.ok_or_else(|| Error::ModelConfig(format!("`{key}` is missing")))?;
    if v == 0 {
        return Err(Error::ModelConfig(format!(
            "`{key}` must be at least 1, got 0"
        )));
    }
    Ok(v)
}

fn get_f64(obj: &serde_json::Map<String, Value>, key: &str) -> Option<f64> {
    obj.get(key).and_then(Value::as_f64)
}

fn get_bool(obj: &serde_json::Map<String, Value>, key: &str) -> Option<bool> {
    obj.get(key).and_then(Value::as_bool)
}

/// Dimensions above this are rejected as absurd (they would overflow the accounting).
const MAX_DIM: u64 = 1 << 24;
const MAX_LAYERS: u64 = 4096;

fn parse_rope(obj: &serde_json::Map<String, Value>) -> Result<(RopeScaling, Option<f64>), Error> {
    // transformers v5 folds rope_theta into `rope_parameters`; v4 has `rope_theta` + `rope_scaling`.
    let mut theta = get_f64(obj, "rope_theta");
    let block = match (obj.get("rope_scaling"), obj.get("rope_parameters")) {
        (Some(v @ Value::Object(_)), _) => Some(v),
        (_, Some(v @ Value::Object(_))) => Some(v),
        _ => None,
    };
    let Some(Value::Object(rs)) = block else {
        return Ok((RopeScaling::None, theta));
    };
    if theta.is_none() {
        theta = get_f64(rs, "rope_theta");
    }
    let kind = rs
        .get("rope_type")
        .or_else(|| rs.get("type"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let factor = || {
        get_f64(rs, "factor").ok_or_else(|| {
            Error::ModelConfig(format!("rope scaling `{kind}` needs a numeric `factor`"))
        })
    };
    let scaling = match kind {
        // Qwen-VL's multimodal RoPE splits the rotary dims by axis: no length scaling.
        "default" | "mrope" => RopeScaling::None,
        "llama3" => RopeScaling::Llama3 {
            factor: factor()?,
            low_freq_factor: get_f64(rs, "low_freq_factor").unwrap_or(1.0),
            high_freq_factor: get_f64(rs, "high_freq_factor").unwrap_or(4.0),
            original_max_position_embeddings: get_u64(rs, "original_max_position_embeddings")?
                .unwrap_or(8192),
        },
        "linear" => RopeScaling::Linear { factor: factor()? },
        "dynamic" => RopeScaling::Dynamic { factor: factor()? },
        "yarn" => RopeScaling::Yarn {
            factor: factor()?,
            original_max_position_embeddings: get_u64(rs, "original_max_position_embeddings")?,
        },
        other => {
            return Err(Error::ModelConfig(format!(
                "rope_type `{other}` is not supported; allowed: default, mrope, llama3, linear, dynamic, yarn"
            )));
        }
    };
    Ok((scaling, theta))
}

/// Model types this crate understands (the language model's, and the multimodal wrappers').
pub const SUPPORTED_MODEL_TYPES: &[&str] = &[
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3",
    "gemma3_text",
    "phi3",
    "mixtral",
    "qwen3_moe",
    "glm4",
    "glm4_moe",
    "olmo2",
    "granite",
    "gpt_oss",
    "deepseek_v2",
    "deepseek_v3",
    "qwen3_next",
    "qwen3_5",
    "qwen3_5_moe",
    "llama4",
    "qwen2_vl",
    "qwen2_5_vl",
    "qwen3_vl",
    "qwen3_vl_moe",
    "mistral3",
    "llava",
    "llava_next",
    "llava_next_video",
    "glm4v",
    "internvl",
    "seed_oss",
    "ernie4_5",
    "ernie4_5_moe",
    "hunyuan_v1_dense",
    "minimax_m2",
    "qwen2_moe",
    "starcoder2",
    "paligemma",
    "mllama",
    "gemma4",
    "gemma4_text",
    "ministral3",
    "glm4v_moe",
    "qwen2_audio",
    "olmo",
    "cohere",
    "granitemoe",
    "internlm2",
    "falcon",
    "bloom",
    "chatglm",
    "phimoe",
    "gpt2",
    "qwen2_5_omni",
    "qwen2_5_omni_thinker",
];

/// The language model's type under a wrapper's text type (`qwen2_5_vl_text` → `qwen2`).
fn normalise_text_type(t: &str) -> &str {
    match t {
        "gemma3" => "gemma3_text",
        "gemma4" => "gemma4_text",
        // Ministral 3's text model is Mistral's (YaRN rope in `rope_parameters`); InternLM3
        // (remote code) is Llama's, its biases read by `dialects`.
        "ministral3" => "mistral",
        "internlm3" => "llama",
        "qwen2_vl_text"
        | "qwen2_5_vl_text"
        | "qwen2_vl"
        | "qwen2_5_vl"
        | "qwen2_5_omni_text"
        | "qwen2_5_omni_thinker" => "qwen2",
        "qwen3_vl_text" | "qwen3_vl" => "qwen3",
        "qwen3_vl_moe_text" | "qwen3_vl_moe" => "qwen3_moe",
        "qwen3_5_text" => "qwen3_5",
        "qwen3_5_moe_text" => "qwen3_5_moe",
        "llama4_text" => "llama4",
        "glm4v_text" | "glm4v" => "glm4",
        "glm4v_moe_text" | "glm4v_moe" => "glm4_moe",
        "mllama_text_model" => "mllama",
        other => other,
    }
}

/// `layer_types` read with `names` (each allowed string and its mixer): None when the config
/// has none, an error naming the entry when one is not allowed or the count is not `n`.
fn read_layer_types(
    obj: &serde_json::Map<String, Value>,
    n: usize,
    names: &[(&str, Mixer)],
) -> Result<Option<Vec<Mixer>>, Error> {
    let Some(Value::Array(a)) = obj.get("layer_types") else {
        return Ok(None);
    };
    if a.len() != n {
        return Err(Error::ModelConfig(format!(
            "`layer_types` has {} entries for {n} layers",
            a.len()
        )));
    }
    a.iter()
        .enumerate()
        .map(|(i, t)| {
            names
                .iter()
                .find(|(name, _)| t.as_str() == Some(name))
                .map(|(_, m)| *m)
                .ok_or_else(|| {
                    let allowed: Vec<&str> = names.iter().map(|(name, _)| *name).collect();
                    Error::ModelConfig(format!(
                        "`layer_types[{i}]` = {t}: allowed {}",
                        allowed.join(", ")
                    ))
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// The layer kinds of a hybrid / partly-MoE stack.
fn layer_kinds(
    obj: &serde_json::Map<String, Value>,
    model_type: &str,
    num_layers: u64,
    moe: Option<&Moe>,
) -> Result<Vec<LayerKind>, Error> {
    let n = num_layers as usize;
    // Token mixers: `layer_types` where given, else every `full_attention_interval`-th layer
    // is full attention (qwen3_next / qwen3_5).
    let hybrid = matches!(model_type, "qwen3_next" | "qwen3_5" | "qwen3_5_moe");
    // Gemma 4 E2B / E4B: the last `num_kv_shared_layers` reuse earlier layers' keys and values.
    let kv_shared = if model_type == "gemma4_text" {
        get_u64(obj, "num_kv_shared_layers")?.unwrap_or(0) as usize
    } else {
        0
    };
    let mut mixers = vec![Mixer::Attention; n];
    if model_type == "mllama" {
        let Some(Value::Array(cross)) = obj.get("cross_attention_layers") else {
            return Err(Error::ModelConfig(
                "mllama needs `cross_attention_layers` (the decoder layers that attend to the image)"
                    .into(),
            ));
        };
        for c in cross {
            match c.as_u64() {
                Some(i) if (i as usize) < n => mixers[i as usize] = Mixer::CrossAttention,
                _ => {
                    return Err(Error::ModelConfig(format!(
                        "`cross_attention_layers` entry {c} is not a layer index below {n}"
                    )));
                }
            }
        }
    }
    if model_type == "gemma4_text" {
        // Full attention where `layer_types` says so; transformers' default is every 6th layer,
        // and the last layer is always full attention.
        let named = read_layer_types(
            obj,
            n,
            &[
                ("full_attention", Mixer::GlobalAttention),
                ("sliding_attention", Mixer::Attention),
            ],
        )?;
        match named {
            Some(m) => mixers = m,
            None => {
                for (i, m) in mixers.iter_mut().enumerate() {
                    if (i + 1) % 6 == 0 {
                        *m = Mixer::GlobalAttention;
                    }
                }
            }
        }
        if let Some(last) = mixers.last_mut() {
            *last = Mixer::GlobalAttention;
        }
    }
    if hybrid {
        let named = read_layer_types(
            obj,
            n,
            &[
                ("linear_attention", Mixer::LinearAttention),
                ("full_attention", Mixer::Attention),
            ],
        )?;
        match named {
            Some(m) => mixers = m,
            _ => {
                let every = get_u64(obj, "full_attention_interval")?.unwrap_or(4).max(1) as usize;
                for (i, m) in mixers.iter_mut().enumerate() {
                    if (i + 1) % every != 0 {
                        *m = Mixer::LinearAttention;
                    }
                }
            }
        }
    }
    // Which layers route to experts.
    let ids = |k: &str| -> Vec<u64> {
        match obj.get(k) {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).collect(),
            _ => Vec::new(),
        }
    };
    let mut moe_layer = vec![moe.is_some(); n];
    if moe.is_some() {
        match model_type {
            "deepseek_v2" | "deepseek_v3" | "glm4_moe" => {
                let k = get_u64(obj, "first_k_dense_replace")?.unwrap_or(0);
                let freq = get_u64(obj, "moe_layer_freq")?.unwrap_or(1).max(1);
                for (i, m) in moe_layer.iter_mut().enumerate() {
                    *m = i as u64 >= k && (i as u64).is_multiple_of(freq);
                }
            }
            "ernie4_5_moe" => {
                let start = get_u64(obj, "moe_layer_start_index")?.unwrap_or(1);
                let end =
                    get_u64(obj, "moe_layer_end_index")?.unwrap_or(num_layers.saturating_sub(1));
                let every = get_u64(obj, "moe_layer_interval")?.unwrap_or(1).max(1);
                for (i, m) in moe_layer.iter_mut().enumerate() {
                    let i = i as u64;
                    *m = (i + 1).is_multiple_of(every) && i >= start && i <= end;
                }
            }
            "qwen2_moe" | "qwen3_moe" | "qwen3_next" => {
                let step = get_u64(obj, "decoder_sparse_step")?.unwrap_or(1).max(1);
                let only = ids("mlp_only_layers");
                for (i, m) in moe_layer.iter_mut().enumerate() {
                    *m = !only.contains(&(i as u64)) && (i as u64 + 1).is_multiple_of(step);
                }
            }
            "llama4" => {
                let listed = ids("moe_layers");
                let step = get_u64(obj, "interleave_moe_layer_step")?
                    .unwrap_or(1)
                    .max(1);
                for (i, m) in moe_layer.iter_mut().enumerate() {
                    *m = if obj.get("moe_layers").is_some_and(Value::is_array) {
                        listed.contains(&(i as u64))
                    } else {
                        (i as u64 + 1).is_multiple_of(step)
                    };
                }
            }
            _ => {}
        }
    }
    Ok(mixers
        .into_iter()
        .zip(moe_layer)
        .enumerate()
        .map(|(i, (mixer, moe))| LayerKind {
            mixer,
            moe,
            kv_shared: i >= n - kv_shared.min(n),
        })
        .collect())
}

impl ModelArch {
    /// Parse the text of a Hugging Face `config.json`.
    pub fn from_config_json(text: &str) -> Result<Self, Error> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::ModelConfig(format!("config.json is not valid JSON: {e}")))?;
        Self::from_config_value(&v)
    }

    /// Parse an already-decoded `config.json`.
    pub fn from_config_value(v: &Value) -> Result<Self, Error> {
        let Value::Object(top) = v else {
            return Err(Error::ModelConfig(
                "config.json must be a JSON object".into(),
            ));
        };
        let top_type = top
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        // Configs in their family's own spellings, read as every other model's.
        if let Some(canonical) = dialects::canonical(top_type, top)? {
            return Self::from_config_value(&canonical);
        }
        // Multimodal wrappers (gemma3, llava-style, Qwen-VL) keep the language model in `text_config`.
        // PaliGemma's top level also carries a `hidden_size` that is not the language model's.
        let obj = match top.get("text_config") {
            Some(Value::Object(tc))
                if top.get("hidden_size").is_none() || top_type == "paligemma" =>
            {
                tc
            }
            _ => top,
        };
        let raw_type = obj
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or(top_type);
        if raw_type.is_empty() {
            return Err(Error::ModelConfig("`model_type` is missing".into()));
        }
        if !SUPPORTED_MODEL_TYPES.contains(&top_type)
            && !top_type.is_empty()
            && !SUPPORTED_MODEL_TYPES.contains(&normalise_text_type(top_type))
        {
            return Err(Error::ModelConfig(format!(
                "model_type `{top_type}` is not supported; supported: {}",
                SUPPORTED_MODEL_TYPES.join(", ")
            )));
        }
        let model_type = normalise_text_type(raw_type).to_string();
        if !SUPPORTED_MODEL_TYPES.contains(&model_type.as_str()) {
            return Err(Error::ModelConfig(format!(
                "model_type `{raw_type}` is not supported; supported: {}",
                SUPPORTED_MODEL_TYPES.join(", ")
            )));
        }
        let mt = model_type.as_str();
        let hidden_size = req_u64(obj, "hidden_size")?;
        let num_layers = req_u64(obj, "num_hidden_layers")?;
        let num_attention_heads = req_u64(obj, "num_attention_heads")?;
        let num_key_value_heads =
            get_u64(obj, "num_key_value_heads")?.unwrap_or(num_attention_heads);
        let vocab_size = req_u64(obj, "vocab_size")?;
        // qwen3_5_moe has no dense MLP width.
        let intermediate_size = match mt {
            "qwen3_5_moe" => get_u64(obj, "intermediate_size")?.unwrap_or(0),
            "llama4" => req_u64(obj, "intermediate_size_mlp")
                .or_else(|_| req_u64(obj, "intermediate_size"))?,
            _ => req_u64(obj, "intermediate_size")?,
        };
        if num_key_value_heads == 0 || num_attention_heads % num_key_value_heads != 0 {
            return Err(Error::ModelConfig(format!(
                "num_attention_heads ({num_attention_heads}) must be a multiple of num_key_value_heads ({num_key_value_heads})"
            )));
        }
        let head_dim = match get_u64(obj, "head_dim")? {
            Some(0) | None => {
                if hidden_size % num_attention_heads != 0 {
                    return Err(Error::ModelConfig(format!(
                        "hidden_size ({hidden_size}) is not divisible by num_attention_heads ({num_attention_heads}) and no head_dim is given"
                    )));
                }
                hidden_size / num_attention_heads
            }
            Some(d) => d,
        };
        for (k, v) in [
            ("hidden_size", hidden_size),
            ("intermediate_size", intermediate_size),
            ("vocab_size", vocab_size),
            ("num_attention_heads", num_attention_heads),
            ("head_dim", head_dim),
        ] {
            if v > MAX_DIM {
                return Err(Error::ModelConfig(format!(
                    "`{k}` = {v} is absurd; at most {MAX_DIM} is accepted"
                )));
            }
        }
        if num_layers > MAX_LAYERS {
            return Err(Error::ModelConfig(format!(
                "`num_hidden_layers` = {num_layers} is absurd; at most {MAX_LAYERS} is accepted"
            )));
        }
        let tie_word_embeddings = get_bool(obj, "tie_word_embeddings")
            .or_else(|| get_bool(top, "tie_word_embeddings"))
            .unwrap_or(matches!(
                mt,
                "gemma"
                    | "gemma2"
                    | "gemma3_text"
                    | "gemma4_text"
                    | "starcoder2"
                    | "cohere"
                    | "falcon"
                    | "bloom"
                    | "gpt2"
            ));
        // Falcon's `bias` (off in the released models) on every projection; BLOOM's are all biased.
        let falcon_bias = match mt {
            "bloom" | "gpt2" => true,
            "falcon" => get_bool(obj, "bias").unwrap_or(false),
            _ => false,
        };
        // ERNIE 4.5's `use_bias` puts a bias on every attention and MLP projection.
        let ernie_bias = get_bool(obj, "use_bias").unwrap_or(false);
        // StarCoder 2's `use_bias` (default on) puts a bias on every projection.
        let starcoder_bias = get_bool(obj, "use_bias").unwrap_or(true);
        let qkv_bias = match mt {
            "qwen2" => true,
            "qwen2_moe" => get_bool(obj, "qkv_bias").unwrap_or(true),
            "starcoder2" => starcoder_bias,
            "glm4" | "glm4_moe" => get_bool(obj, "attention_bias").unwrap_or(true),
            "ernie4_5" | "ernie4_5_moe" => ernie_bias,
            // InternLM2's remote config: `bias` (default on; the released checkpoints say false)
            // on wqkv and wo.
            "internlm2" => get_bool(obj, "bias").unwrap_or(true),
            "falcon" | "bloom" | "gpt2" => falcon_bias,
            _ => get_bool(obj, "attention_bias").unwrap_or(false),
        };
        let moe_int = || req_u64(obj, "moe_intermediate_size");
        let experts = |k: &str| req_u64(obj, k);
        let plain = |num_experts, experts_per_token, expert_intermediate_size| Moe {
            num_experts,
            experts_per_token,
            expert_intermediate_size,
            shared_intermediate_size: 0,
            shared_expert_gate: false,
            router_targetable: false,
            router_bias: false,
        };
        let moe = match mt {
            // Phi-3.5-MoE: Mixtral's layout; its router (`mlp.router`, an `nn.Linear` subclass
            // LLaMA-Factory's name test does not see) has no bias.
            "mixtral" | "phimoe" => Some(plain(
                experts("num_local_experts")?,
                experts("num_experts_per_tok")?,
                intermediate_size,
            )),
            "gpt_oss" => Some(Moe {
                router_bias: true,
                ..plain(
                    experts("num_local_experts")?,
                    experts("num_experts_per_tok")?,
                    intermediate_size,
                )
            }),
            "qwen3_moe" => Some(plain(
                experts("num_experts")?,
                experts("num_experts_per_tok")?,
                moe_int()?,
            )),
            // MiniMax-M2: every layer routed, a bare [E, h] router (its score-correction bias is
            // a buffer), `intermediate_size` is one expert's width.
            "minimax_m2" => Some(plain(
                experts("num_local_experts")?,
                experts("num_experts_per_tok")?,
                intermediate_size,
            )),
            // Granite 3 MoE: every layer routed; the router is an `nn.Linear` (`router.layer`)
            // that `lora_target: all` wraps; the experts are two 3-D tensors
            // (`input_linear`, `output_linear`); `intermediate_size` is one expert's width.
            "granitemoe" => Some(Moe {
                router_targetable: true,
                ..plain(
                    experts("num_local_experts")?,
                    experts("num_experts_per_tok")?,
                    intermediate_size,
                )
            }),
            "qwen2_moe" | "qwen3_next" | "qwen3_5_moe" => Some(Moe {
                shared_intermediate_size: get_u64(obj, "shared_expert_intermediate_size")?
                    .unwrap_or(0),
                shared_expert_gate: true,
                ..plain(
                    experts("num_experts")?,
                    experts("num_experts_per_tok")?,
                    moe_int()?,
                )
            }),
            "deepseek_v2" | "deepseek_v3" | "glm4_moe" => {
                let i = moe_int()?;
                Some(Moe {
                    shared_intermediate_size: i * get_u64(obj, "n_shared_experts")?.unwrap_or(0),
                    router_targetable: mt == "deepseek_v2",
                    ..plain(
                        experts("n_routed_experts")?,
                        experts("num_experts_per_tok")?,
                        i,
                    )
                })
            }
            "ernie4_5_moe" => {
                let i = moe_int()?;
                Some(Moe {
                    shared_intermediate_size: i * get_u64(obj, "moe_num_shared_experts")?
                        .unwrap_or(0),
                    // The router is a bare [E, h] parameter with an `e_score_correction_bias`
                    // parameter of E (counted as the router's bias).
                    router_bias: true,
                    ..plain(experts("moe_num_experts")?, experts("moe_k")?, i)
                })
            }
            // Gemma 4 (26B-A4B): the routed experts run beside the dense MLP, which acts as the
            // shared expert; the router is an `nn.Linear` (`router.proj`).
            "gemma4_text" if get_bool(obj, "enable_moe_block").unwrap_or(false) => Some(Moe {
                shared_intermediate_size: intermediate_size,
                router_targetable: true,
                ..plain(
                    experts("num_experts")?,
                    experts("top_k_experts")?,
                    moe_int()?,
                )
            }),
            "llama4" => {
                let i = req_u64(obj, "intermediate_size")?;
                Some(Moe {
                    shared_intermediate_size: i,
                    ..plain(
                        experts("num_local_experts")?,
                        experts("num_experts_per_tok")?,
                        i,
                    )
                })
            }
            _ => None,
        };
        if let Some(m) = &moe
            && (m.experts_per_token > m.num_experts || m.num_experts > 4096)
        {
            return Err(Error::ModelConfig(format!(
                "num_experts_per_tok ({}) must not exceed the number of experts ({}, at most 4096)",
                m.experts_per_token, m.num_experts
            )));
        }
        let mla = match mt {
            "deepseek_v2" | "deepseek_v3" => Some(Mla {
                q_lora_rank: get_u64(obj, "q_lora_rank")?.filter(|r| *r > 0),
                kv_lora_rank: req_u64(obj, "kv_lora_rank")?,
                qk_nope_head_dim: req_u64(obj, "qk_nope_head_dim")?,
                qk_rope_head_dim: req_u64(obj, "qk_rope_head_dim")?,
                v_head_dim: req_u64(obj, "v_head_dim")?,
            }),
            _ => None,
        };
        let linear_attention = match mt {
            "qwen3_next" | "qwen3_5" | "qwen3_5_moe" => Some(LinearAttention {
                num_key_heads: req_u64(obj, "linear_num_key_heads")?,
                num_value_heads: req_u64(obj, "linear_num_value_heads")?,
                key_head_dim: req_u64(obj, "linear_key_head_dim")?,
                value_head_dim: req_u64(obj, "linear_value_head_dim")?,
                conv_kernel: get_u64(obj, "linear_conv_kernel_dim")?.unwrap_or(4),
                split_projections: mt != "qwen3_next",
            }),
            _ => None,
        };
        let global_attention = match mt {
            "gemma4_text" => {
                let k_eq_v = get_bool(obj, "attention_k_eq_v").unwrap_or(false);
                // transformers' defaults: a 512-wide global head (0 falls back to `head_dim`).
                Some(GlobalAttention {
                    head_dim: match get_u64(obj, "global_head_dim")? {
                        Some(0) => head_dim,
                        Some(d) => d,
                        None => 512,
                    },
                    kv_heads: match get_u64(obj, "num_global_key_value_heads")? {
                        Some(k) if k_eq_v && k > 0 => k,
                        _ => num_key_value_heads,
                    },
                    k_eq_v,
                })
            }
            _ => None,
        };
        // Gemma 4's per-layer embeddings, with transformers' defaults (256 values a layer over a
        // 262 144-row table): a config must say 0 to have none, as the 31B and 26B-A4B do.
        let per_layer_input = match get_u64(obj, "hidden_size_per_layer_input")? {
            _ if mt != "gemma4_text" => None,
            Some(0) => None,
            width => Some(PerLayerInput {
                width: width.unwrap_or(256),
                vocab: get_u64(obj, "vocab_size_per_layer_input")?.unwrap_or(262_144),
            }),
        };
        let double_wide_shared_mlp =
            mt == "gemma4_text" && get_bool(obj, "use_double_wide_mlp").unwrap_or(false);
        let layer_kinds = layer_kinds(obj, mt, num_layers, moe.as_ref())?;
        let (rope_scaling, rope_theta) = parse_rope(obj)?;
        let stored_quant = match top
            .get("quantization_config")
            .or_else(|| obj.get("quantization_config"))
        {
            Some(Value::Object(q)) => Some(quant::parse_quantization_config(q, hidden_size)?),
            _ => None,
        };
        let vision = vision::Vision::parse(top_type, top, hidden_size)?;
        Ok(ModelArch {
            stored_quant,
            qk_norm: matches!(
                mt,
                "qwen3"
                    | "qwen3_moe"
                    | "gemma3_text"
                    | "gemma4_text"
                    | "olmo2"
                    | "qwen3_next"
                    | "qwen3_5"
                    | "qwen3_5_moe"
                    | "hunyuan_v1_dense"
                    | "minimax_m2"
            ) || (matches!(mt, "glm4_moe" | "cohere")
                && get_bool(obj, "use_qk_norm").unwrap_or(false)),
            // Command R+'s q / k LayerNorms hold a weight per head and dimension.
            qk_norm_full: matches!(mt, "olmo2" | "minimax_m2" | "cohere"),
            norms_per_layer: match mt {
                "gemma2" | "gemma3_text" | "gemma4_text" | "glm4" => 4,
                // Cohere runs attention and the MLP in parallel after one LayerNorm.
                "cohere" => 1,
                // Falcon's parallel blocks: one LayerNorm (7B; 11B's `num_ln_in_parallel_attn`),
                // or ln_attn + ln_mlp (the new decoder architecture: 40B, 180B).
                "falcon" if get_bool(obj, "parallel_attn").unwrap_or(true) => {
                    let new = get_bool(obj, "new_decoder_architecture").unwrap_or(false);
                    match get_u64(obj, "num_ln_in_parallel_attn")? {
                        Some(2) => 2,
                        None if new => 2,
                        _ => 1,
                    }
                }
                _ => 2,
            },
            // OLMo (1)'s LayerNorms have neither weight nor bias.
            norm_params: mt != "olmo",
            fused_projections: matches!(
                mt,
                "phi3" | "internlm2" | "falcon" | "bloom" | "chatglm" | "gpt2"
            ),
            fused_gate_up: matches!(mt, "phi3" | "glm4" | "chatglm"),
            // transformers 5.8: o_proj carries `attention_bias` in these families, `mlp_bias`
            // reaches the MLP in llama, granite and seed_oss.
            o_bias: match mt {
                "gpt_oss" => true,
                "seed_oss" => get_bool(obj, "attention_out_bias").unwrap_or(false),
                "starcoder2" => starcoder_bias,
                "ernie4_5" | "ernie4_5_moe" => ernie_bias,
                "llama" | "qwen3" | "qwen3_moe" | "granite" | "granitemoe" | "olmo" | "olmo2"
                | "cohere" | "gemma" | "gemma2" | "gemma3_text" | "gemma4_text"
                | "hunyuan_v1_dense" | "internlm2" | "phimoe" => qkv_bias,
                "falcon" | "bloom" | "gpt2" => falcon_bias,
                // ChatGLM's `add_bias_linear` (read as `mlp_bias`) is on `dense` too.
                "chatglm" => get_bool(obj, "mlp_bias").unwrap_or(false),
                _ => false,
            },
            mlp_bias: match mt {
                "ernie4_5" | "ernie4_5_moe" => ernie_bias,
                "llama" | "granite" | "seed_oss" | "chatglm" => {
                    get_bool(obj, "mlp_bias").unwrap_or(false)
                }
                "starcoder2" => starcoder_bias,
                "falcon" | "bloom" | "gpt2" => falcon_bias,
                _ => false,
            },
            gated_mlp: !matches!(mt, "starcoder2" | "falcon" | "bloom" | "gpt2"),
            // ChatGLM's LayerNorms (`rmsnorm: false`, no released model) have a bias.
            norm_bias: matches!(mt, "starcoder2" | "falcon" | "bloom" | "phimoe" | "gpt2")
                || (mt == "chatglm" && get_bool(obj, "rmsnorm") == Some(false)),
            attention_sinks: mt == "gpt_oss",
            lm_head_bias: mt == "phimoe" && get_bool(obj, "lm_head_bias").unwrap_or(false),
            attn_output_gate: matches!(mt, "qwen3_next" | "qwen3_5" | "qwen3_5_moe"),
            model_type,
            hidden_size,
            intermediate_size,
            num_layers,
            num_attention_heads,
            num_key_value_heads,
            head_dim,
            vocab_size,
            tie_word_embeddings,
            qkv_bias,
            moe,
            mla,
            linear_attention,
            global_attention,
            per_layer_input,
            double_wide_shared_mlp,
            layer_kinds,
            vision,
            max_position_embeddings: get_u64(obj, "max_position_embeddings")?,
            rope_theta,
            rope_scaling,
        })
    }

    /// Width of the concatenated query heads (MLA: nope + rope per head).
    pub fn q_dim(&self) -> u64 {
        match &self.mla {
            Some(m) => self.num_attention_heads * (m.qk_nope_head_dim + m.qk_rope_head_dim),
            None => self.num_attention_heads * self.head_dim,
        }
    }

    /// Width of the concatenated key (or value) heads: smaller than `q_dim` under GQA.
    pub fn kv_dim(&self) -> u64 {
        self.num_key_value_heads * self.head_dim
    }

    /// Per token and attention layer, the key + value widths a KV cache holds (transformers
    /// caches MLA's expanded per-head keys and values).
    pub fn kv_cache_width(&self) -> u64 {
        match &self.mla {
            Some(m) => {
                self.num_attention_heads * (m.qk_nope_head_dim + m.qk_rope_head_dim + m.v_head_dim)
            }
            None => 2 * self.kv_dim(),
        }
    }

    /// Layers of each kind, in order of first appearance.
    pub fn kind_counts(&self) -> Vec<(LayerKind, u64)> {
        group_kinds(&self.layer_kinds)
    }

    /// Layers whose token mixer is softmax attention.
    pub fn attention_layers(&self) -> u64 {
        self.layer_kinds
            .iter()
            .filter(|k| matches!(k.mixer, Mixer::Attention | Mixer::GlobalAttention))
            .count() as u64
    }

    /// The linear modules of one layer of `kind`, with HF names (`layers` = 1).
    pub fn kind_linears(&self, kind: LayerKind) -> Vec<Linear> {
        let (h, q, kv) = (self.hidden_size, self.q_dim(), self.kv_dim());
        let lin = |name, in_features, out_features, bias, count| Linear {
            name,
            in_features,
            out_features,
            bias,
            count,
            targetable: true,
            in_all: true,
            layers: 1,
        };
        let fixed = |name, in_features, out_features, bias, count| Linear {
            targetable: false,
            in_all: false,
            ..lin(name, in_features, out_features, bias, count)
        };
        let mut v = match (kind.mixer, &self.mla, &self.linear_attention) {
            (Mixer::LinearAttention, _, Some(la)) => {
                let (kd, vd, nv) = (la.key_dim(), la.value_dim(), la.num_value_heads);
                let mut v = if la.split_projections {
                    vec![
                        lin("in_proj_qkv", h, 2 * kd + vd, false, 1),
                        lin("in_proj_z", h, vd, false, 1),
                        lin("in_proj_b", h, nv, false, 1),
                        lin("in_proj_a", h, nv, false, 1),
                    ]
                } else {
                    vec![
                        lin("in_proj_qkvz", h, 2 * kd + 2 * vd, false, 1),
                        lin("in_proj_ba", h, 2 * nv, false, 1),
                    ]
                };
                v.push(lin("out_proj", vd, h, false, 1));
                v
            }
            (Mixer::GlobalAttention, _, _) if self.global_attention.is_some() => {
                let g = self.global_attention.as_ref().expect("checked");
                let (qg, kvg) = (
                    self.num_attention_heads * g.head_dim,
                    g.kv_heads * g.head_dim,
                );
                let b = self.qkv_bias;
                let mut v = vec![lin("q_proj", h, qg, b, 1)];
                if !kind.kv_shared {
                    v.push(lin("k_proj", h, kvg, b, 1));
                    if !g.k_eq_v {
                        v.push(lin("v_proj", h, kvg, b, 1));
                    }
                }
                v.push(lin("o_proj", qg, h, self.o_bias, 1));
                v
            }
            (_, Some(m), _) => {
                let bias = self.qkv_bias;
                let heads = self.num_attention_heads;
                let mut v = match m.q_lora_rank {
                    Some(r) => vec![
                        lin("q_a_proj", h, r, bias, 1),
                        lin("q_b_proj", r, q, false, 1),
                    ],
                    None => vec![lin("q_proj", h, q, false, 1)],
                };
                v.push(lin(
                    "kv_a_proj_with_mqa",
                    h,
                    m.kv_lora_rank + m.qk_rope_head_dim,
                    bias,
                    1,
                ));
                v.push(lin(
                    "kv_b_proj",
                    m.kv_lora_rank,
                    heads * (m.qk_nope_head_dim + m.v_head_dim),
                    false,
                    1,
                ));
                v.push(lin("o_proj", heads * m.v_head_dim, h, bias, 1));
                v
            }
            _ if self.fused_projections => vec![
                lin("qkv_proj", h, q + 2 * kv, self.qkv_bias, 1),
                lin("o_proj", q, h, self.o_bias, 1),
            ],
            // A KV-shared layer (Gemma 4 E2B / E4B) projects only queries and the output.
            _ if kind.kv_shared => vec![
                lin("q_proj", h, q, self.qkv_bias, 1),
                lin("o_proj", q, h, self.o_bias, 1),
            ],
            _ => {
                let qo = if self.attn_output_gate { 2 * q } else { q };
                let o_bias = self.o_bias;
                vec![
                    lin("q_proj", h, qo, self.qkv_bias, 1),
                    lin("k_proj", h, kv, self.qkv_bias, 1),
                    lin("v_proj", h, kv, self.qkv_bias, 1),
                    lin("o_proj", q, h, o_bias, 1),
                ]
            }
        };
        let mb = self.mlp_bias;
        let dense = |v: &mut Vec<Linear>, i: u64| {
            if !self.gated_mlp {
                v.push(lin("c_fc", h, i, mb, 1));
                v.push(lin("c_proj", i, h, mb, 1));
                return;
            }
            if self.fused_gate_up {
                v.push(lin("gate_up_proj", h, 2 * i, mb, 1));
            } else {
                v.push(lin("gate_proj", h, i, mb, 1));
                v.push(lin("up_proj", h, i, mb, 1));
            }
            v.push(lin("down_proj", i, h, mb, 1));
        };
        match &self.moe {
            Some(m) if kind.moe => {
                let (e, i) = (m.num_experts, m.expert_intermediate_size);
                let router = match self.model_type.as_str() {
                    "gpt_oss" | "llama4" | "phimoe" => "router",
                    "gemma4_text" => "proj",
                    "granitemoe" => "layer",
                    _ => "gate",
                };
                v.push(Linear {
                    targetable: m.router_targetable,
                    in_all: m.router_targetable,
                    ..lin(router, h, e, m.router_bias, 1)
                });
                // Fused 3-D expert tensors (gpt-oss adds their biases).
                let eb = self.model_type == "gpt_oss";
                v.push(fixed("experts.gate_up_proj", h, 2 * i, eb, e));
                v.push(fixed("experts.down_proj", i, h, eb, e));
                if m.shared_intermediate_size > 0 {
                    dense(&mut v, m.shared_intermediate_size);
                }
                if m.shared_expert_gate {
                    v.push(lin("shared_expert_gate", h, 1, false, 1));
                }
            }
            _ if kind.kv_shared && self.double_wide_shared_mlp => {
                dense(&mut v, 2 * self.intermediate_size)
            }
            _ => dense(&mut v, self.intermediate_size),
        }
        // Gemma 4's per-layer input: a gate into the layer's slice of the per-layer embedding
        // and a projection back.
        if let Some(p) = &self.per_layer_input {
            v.push(lin("per_layer_input_gate", h, p.width, false, 1));
            v.push(lin("per_layer_projection", p.width, h, false, 1));
        }
        // Families that name the modules their own way: InternLM2 (remote code) attention.wqkv /
        // wo, feed_forward.w1 (gate) / w3 (up) / w2 (down); Falcon, BLOOM and ChatGLM
        // self_attention.query_key_value / dense, mlp.dense_h_to_4h / dense_4h_to_h.
        let rename: &[(&str, &'static str)] = match self.model_type.as_str() {
            "internlm2" => &[
                ("qkv_proj", "wqkv"),
                ("o_proj", "wo"),
                ("gate_proj", "w1"),
                ("up_proj", "w3"),
                ("down_proj", "w2"),
            ],
            "falcon" | "bloom" => &[
                ("qkv_proj", "query_key_value"),
                ("o_proj", "dense"),
                ("c_fc", "dense_h_to_4h"),
                ("c_proj", "dense_4h_to_h"),
            ],
            // GPT-2: attn.c_attn / c_proj, mlp.c_fc / c_proj.
            "gpt2" => &[("qkv_proj", "c_attn"), ("o_proj", "c_proj")],
            // ChatGLM (remote code): the same names, the gated MLP's gate and up fused.
            "chatglm" => &[
                ("qkv_proj", "query_key_value"),
                ("o_proj", "dense"),
                ("gate_up_proj", "dense_h_to_4h"),
                ("down_proj", "dense_4h_to_h"),
            ],
            _ => &[],
        };
        for l in &mut v {
            if let Some((_, new)) = rename.iter().find(|(old, _)| *old == l.name) {
                l.name = new;
            }
            // GPT-2's projections are `Conv1D`s: LLaMA-Factory's `all` (a class-name test for
            // "Linear") finds none of them, though PEFT wraps them when named.
            if self.model_type == "gpt2" {
                l.in_all = false;
            }
        }
        v
    }

    /// The decoder's linear modules, each with the number of layers holding it (modules of
    /// the same name and shape in different layer kinds are one entry), then the
    /// [`Self::model_linears`] outside the layers.
    pub fn layer_linears(&self) -> Vec<Linear> {
        let mut out: Vec<Linear> = Vec::new();
        for (kind, n) in self.kind_counts() {
            for l in self.kind_linears(kind) {
                match out.iter_mut().find(|o| {
                    o.name == l.name
                        && o.in_features == l.in_features
                        && o.out_features == l.out_features
                        && o.count == l.count
                        && o.bias == l.bias
                }) {
                    Some(o) => o.layers += n,
                    None => out.push(Linear { layers: n, ..l }),
                }
            }
        }
        out.extend(self.model_linears());
        out
    }

    /// Names `lora_target: all` expands to (LLaMA-Factory: every `nn.Linear` of the language
    /// model except lm_head; routers and fused expert tensors are left out, and so is a frozen
    /// vision tower).
    pub fn all_lora_targets(&self) -> Vec<&'static str> {
        let mut names: Vec<&'static str> = Vec::new();
        for l in self.layer_linears() {
            if l.in_all && !names.contains(&l.name) {
                names.push(l.name);
            }
        }
        names
    }

    /// 1-D and other non-linear parameters of one layer of `kind`: norms, q/k norms, attention
    /// sinks, MLA's low-rank norms, DeltaNet's conv / decay / gate-norm, router biases.
    pub fn kind_other_params(&self, kind: LayerKind) -> u64 {
        let mut n = self.norms_per_layer * self.norm_width();
        match (kind.mixer, &self.mla, &self.linear_attention) {
            (Mixer::LinearAttention, _, Some(la)) => {
                let conv = 2 * la.key_dim() + la.value_dim();
                n += conv * la.conv_kernel + 2 * la.num_value_heads + la.value_head_dim;
            }
            (_, Some(m), _) => {
                n += m.kv_lora_rank + m.q_lora_rank.unwrap_or(0);
            }
            // Per-head q / k RMSNorms and the attention and MLP gates.
            (Mixer::CrossAttention, _, _) => n += 2 * self.head_dim + 2,
            // Per-head q / k RMSNorms of the wider heads (v's norm has no weight).
            (Mixer::GlobalAttention, _, _) if self.global_attention.is_some() => {
                let per_head = self.global_attention.as_ref().map_or(0, |g| g.head_dim);
                n += if kind.kv_shared { 1 } else { 2 } * per_head;
            }
            // A KV-shared layer keeps only its q norm.
            (Mixer::Attention, _, _) if kind.kv_shared && self.qk_norm => n += self.head_dim,
            _ => {
                n += match (self.qk_norm, self.qk_norm_full) {
                    (true, true) => self.q_dim() + self.kv_dim(),
                    (true, false) => 2 * self.head_dim,
                    _ => 0,
                };
                if self.attention_sinks {
                    n += self.num_attention_heads;
                }
            }
        }
        // Gemma 4's MoE block: the router's scale (h) and per-expert scale (E), and three more
        // RMSNorms around the experts.
        if kind.moe && self.model_type == "gemma4_text" {
            n += 4 * self.hidden_size + self.moe.as_ref().map_or(0, |m| m.num_experts);
        }
        // The norm after the per-layer input's projection.
        if self.per_layer_input.is_some() {
            n += self.hidden_size;
        }
        n
    }

    /// Parameters of one layer of `kind`.
    pub fn kind_params(&self, kind: LayerKind) -> u64 {
        self.kind_linears(kind)
            .iter()
            .map(|l| l.weight_params() + l.bias_params())
            .sum::<u64>()
            + self.kind_other_params(kind)
    }

    /// Norm and other 1-D parameters of all decoder layers.
    pub fn layer_norm_params_total(&self) -> u64 {
        self.kind_counts()
            .iter()
            .map(|(k, n)| n * self.kind_other_params(*k))
            .sum()
    }

    /// Parameters of the largest decoder layer (what ZeRO-3 gathers, what BAdam's layer mode
    /// trains at a time).
    pub fn layer_params(&self) -> u64 {
        self.kind_counts()
            .iter()
            .map(|(k, _)| self.kind_params(*k))
            .max()
            .unwrap_or(0)
    }

    /// Parameters of all decoder layers.
    pub fn decoder_params(&self) -> u64 {
        self.kind_counts()
            .iter()
            .map(|(k, n)| n * self.kind_params(*k))
            .sum()
    }

    /// The kinds of the layers `freeze_trainable_layers: n` trains (LLaMA-Factory: the last n,
    /// or the first |n| when negative).
    pub fn trained_layer_kinds(&self, n: i64) -> Vec<(LayerKind, u64)> {
        let k = (n.unsigned_abs() as usize).min(self.layer_kinds.len());
        let slice = if n >= 0 {
            &self.layer_kinds[self.layer_kinds.len() - k..]
        } else {
            &self.layer_kinds[..k]
        };
        group_kinds(slice)
    }

    /// Linear weight parameters of all decoder layers (what 4/8-bit quantization compresses).
    pub fn layer_linear_weight_params(&self) -> u64 {
        self.layer_linears()
            .iter()
            .map(|l| l.weight_params() * l.layers)
            .sum()
    }

    /// Parameters of one norm over the hidden size (a LayerNorm's bias doubles them).
    pub fn norm_width(&self) -> u64 {
        if !self.norm_params {
            0
        } else if self.norm_bias {
            2 * self.hidden_size
        } else {
            self.hidden_size
        }
    }

    /// The MLP's saved activations per intermediate unit relative to a gated MLP's four (gate,
    /// up, act(gate), product): a plain MLP saves two (`c_fc`'s output and the GELU's).
    pub fn mlp_activation_share(&self) -> f64 {
        if self.gated_mlp { 1.0 } else { 0.5 }
    }

    /// Embedding table parameters (Llama 3.2 Vision's table has 8 rows beyond the vocabulary).
    pub fn embedding_params(&self) -> u64 {
        let extra = if self.model_type == "mllama" { 8 } else { 0 };
        (self.vocab_size + extra) * self.hidden_size
    }

    /// Gemma 4's per-layer embedding table (`embed_tokens_per_layer`, `vocab_size_per_layer_input`
    /// × layers × width): a lookup, like the token embedding; 0 for other models.
    pub fn per_layer_embedding_params(&self) -> u64 {
        self.per_layer_input
            .as_ref()
            .map_or(0, |p| p.vocab * self.num_layers * p.width)
    }

    /// Linear modules outside the decoder layers other than lm_head (Gemma 4's
    /// `per_layer_model_projection`, h → layers × width, which `lora_target: all` wraps and
    /// bitsandbytes quantizes); each has `layers` = 1. [`Self::layer_linears`] lists them last.
    pub fn model_linears(&self) -> Vec<Linear> {
        match &self.per_layer_input {
            Some(p) => vec![Linear {
                name: "per_layer_model_projection",
                in_features: self.hidden_size,
                out_features: self.num_layers * p.width,
                bias: false,
                count: 1,
                targetable: true,
                in_all: true,
                layers: 1,
            }],
            None => Vec::new(),
        }
    }

    /// lm_head parameters (0 when tied to the embeddings).
    pub fn lm_head_params(&self) -> u64 {
        if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * self.hidden_size
        }
    }

    /// Parameters of the language model alone (no vision tower or projector; a wrapper's own
    /// parameters outside both, such as LLaVA-NeXT's `image_newline`, count here: LLaMA-Factory
    /// trains them with the language model).
    pub fn language_params(&self) -> u64 {
        self.decoder_params()
            + self.per_layer_embedding_params()
            + self
                .model_linears()
                .iter()
                .map(|l| l.weight_params() + l.bias_params())
                .sum::<u64>()
            + self.per_layer_input.as_ref().map_or(0, |p| p.width)
            + self.embedding_params()
            + self.lm_head_params()
            + self.norm_width()
            // BLOOM's word_embeddings_layernorm.
            + if self.model_type == "bloom" { self.norm_width() } else { 0 }
            + if self.lm_head_bias { self.vocab_size } else { 0 }
            // GPT-2's learned position table.
            + if self.model_type == "gpt2" {
                self.max_position_embeddings.unwrap_or(1024) * self.hidden_size
            } else {
                0
            }
            + self.vision.as_ref().map_or(0, |v| v.wrapper_params)
    }

    /// Vision tower + projector parameters (0 for a text model).
    pub fn vision_params(&self) -> u64 {
        self.vision.as_ref().map_or(0, Vision::params)
    }

    /// Exact total parameter count, as `sum(p.numel() for p in model.parameters())` reports it.
    pub fn total_params(&self) -> u64 {
        self.language_params() + self.vision_params()
    }

    /// Parameters active for one token (MoE: only the routed experts).
    pub fn active_params(&self) -> u64 {
        match &self.moe {
            None => self.total_params(),
            Some(m) => {
                // One routed expert's weights and biases.
                let kind = LayerKind {
                    mixer: Mixer::Attention,
                    moe: true,
                    kv_shared: false,
                };
                let expert: u64 = self
                    .kind_linears(kind)
                    .iter()
                    .filter(|l| l.name.starts_with("experts."))
                    .map(|l| (l.weight_params() + l.bias_params()) / l.count)
                    .sum();
                let moe_layers = self.layer_kinds.iter().filter(|k| k.moe).count() as u64;
                self.total_params() - moe_layers * (m.num_experts - m.experts_per_token) * expert
            }
        }
    }

    /// Intermediate width one token passes through in the MLP of a layer of `kind` (MoE: the
    /// routed experts together, and the shared expert).
    pub fn kind_intermediate(&self, kind: LayerKind) -> u64 {
        match &self.moe {
            Some(m) if kind.moe => {
                m.expert_intermediate_size * m.experts_per_token + m.shared_intermediate_size
            }
            _ => self.intermediate_size,
        }
    }

    /// The same, averaged over the layers.
    pub fn active_intermediate(&self) -> u64 {
        let n = self.num_layers.max(1);
        self.kind_counts()
            .iter()
            .map(|(k, c)| c * self.kind_intermediate(*k))
            .sum::<u64>()
            / n
    }

    /// A llama-shaped model with `params` parameters, for "raw parameter count" estimates when no
    /// config is at hand (shapes follow Llama 3 ratios: head_dim 128, GQA 8 kv heads, i = 3.5 h).
    pub fn from_param_count(params: u64) -> Result<Self, Error> {
        if !(1_000_000..=2_000_000_000_000).contains(&params) {
            return Err(Error::ModelConfig(format!(
                "a raw parameter count must be between 1e6 and 2e12, got {params}"
            )));
        }
        let vocab = 128_256u64;
        // Choose hidden size h (multiple of 128) and layers so that 12.5 h² L + 2 V h ≈ params.
        let p = params as f64;
        let mut best: Option<(f64, u64, u64)> = None;
        for h128 in 2..=128u64 {
            let h = h128 * 128;
            let embed = 2.0 * (vocab * h) as f64;
            let per_layer = (h as f64) * (h as f64) * (2.0 + 0.5 + 10.5);
            let layers = ((p - embed) / per_layer).round();
            if !(1.0..=256.0).contains(&layers) {
                continue;
            }
            // Prefer the usual aspect ratio (layers ≈ h / 128).
            let aspect = ((layers / (h as f64 / 128.0)).ln()).abs();
            if best.is_none_or(|b| aspect < b.0) {
                best = Some((aspect, h, layers as u64));
            }
        }
        let (_, h, layers) = best.unwrap_or((0.0, 256, 1));
        let heads = (h / 128).max(1);
        Ok(ModelArch {
            model_type: "llama".into(),
            stored_quant: None,
            hidden_size: h,
            intermediate_size: (h * 7 / 2).div_ceil(256) * 256,
            num_layers: layers,
            num_attention_heads: heads,
            num_key_value_heads: if heads % 8 == 0 { 8 } else { heads },
            head_dim: 128,
            vocab_size: vocab,
            tie_word_embeddings: false,
            qkv_bias: false,
            qk_norm: false,
            qk_norm_full: false,
            norms_per_layer: 2,
            fused_projections: false,
            fused_gate_up: false,
            o_bias: false,
            mlp_bias: false,
            gated_mlp: true,
            norm_bias: false,
            norm_params: true,
            attention_sinks: false,
            lm_head_bias: false,
            attn_output_gate: false,
            moe: None,
            mla: None,
            linear_attention: None,
            global_attention: None,
            per_layer_input: None,
            double_wide_shared_mlp: false,
            layer_kinds: vec![
                LayerKind {
                    mixer: Mixer::Attention,
                    moe: false,
                    kv_shared: false,
                };
                layers as usize
            ],
            vision: None,
            max_position_embeddings: None,
            rope_theta: None,
            rope_scaling: RopeScaling::None,
        })
    }
}
