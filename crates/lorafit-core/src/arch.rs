//! Model architectures read from a Hugging Face `config.json`: shapes, exact parameter counts and
//! the linear modules LoRA can target.
//!
//! Supported families: llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3 (text), phi3, mixtral
//! and qwen3_moe (mixtral-style sparse MoE). Multimodal configs with a nested `text_config` are
//! read through that block.

use serde::Serialize;
use serde_json::Value;

use crate::error::Error;

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

/// Sparse mixture-of-experts MLP (every layer), mixtral style.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Moe {
    pub num_experts: u64,
    pub experts_per_token: u64,
    pub expert_intermediate_size: u64,
}

/// One linear module of a decoder layer (`count` > 1 for MoE experts).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Linear {
    /// The HF module name, the one `lora_target` uses (`q_proj`, `gate_up_proj`, `w1`, …).
    pub name: &'static str,
    pub in_features: u64,
    pub out_features: u64,
    pub bias: bool,
    /// How many copies per layer (experts).
    pub count: u64,
    /// An `nn.Linear` PEFT can wrap (`lora_target: all` takes it); MoE routers and fused
    /// 3-D expert tensors (gpt-oss) are not.
    pub targetable: bool,
}

impl Linear {
    /// Weight parameters of all copies (bias excluded).
    pub fn weight_params(&self) -> u64 {
        self.in_features * self.out_features * self.count
    }
    /// Bias parameters of all copies.
    pub fn bias_params(&self) -> u64 {
        if self.bias {
            self.out_features * self.count
        } else {
            0
        }
    }
}

/// The decoder linears as a pre-quantized checkpoint stores them (`quantization_config` in its
/// config.json: bitsandbytes, AWQ, GPTQ, HQQ, FP8, AQLM, MXFP4).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredQuant {
    /// `quant_method` as written.
    pub method: String,
    /// Bits of the codes.
    pub bits: f64,
    /// Bytes per linear weight parameter, scales and zeros included.
    pub bytes_per_param: f64,
    /// The method is not one lorafit knows: 2 bytes per parameter assumed (a note says so).
    pub assumed: bool,
}

fn parse_quantization_config(
    q: &serde_json::Map<String, Value>,
    hidden: u64,
) -> Result<StoredQuant, Error> {
    let method = q
        .get("quant_method")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase();
    let num = |k: &str| q.get(k).and_then(Value::as_f64);
    let group = |default: f64| match num("group_size") {
        Some(g) if g > 0.0 => g,
        Some(_) => hidden as f64, // -1: one scale per output channel
        None => default,
    };
    let (bits, bytes) = match method.as_str() {
        "bitsandbytes" | "bnb" => {
            if get_bool(q, "load_in_8bit") == Some(true) {
                (8.0, 1.0 + 4.0 / hidden as f64)
            } else {
                let dq = get_bool(q, "bnb_4bit_use_double_quant").unwrap_or(false);
                (
                    4.0,
                    0.5 + if dq {
                        (1.0 + 4.0 / 256.0) / 64.0
                    } else {
                        4.0 / 64.0
                    },
                )
            }
        }
        "awq" | "gptq" | "autoround" | "auto-round" => {
            let b = num("bits").unwrap_or(4.0);
            (b, b / 8.0 + (2.0 + b / 8.0) / group(128.0))
        }
        "hqq" => {
            let b = q
                .get("quant_config")
                .and_then(|c| c.get("weight_quant_params"))
                .and_then(|w| w.get("nbits"))
                .and_then(Value::as_f64)
                .or_else(|| num("nbits"))
                .unwrap_or(4.0);
            (b, b / 8.0 + 4.0 / group(64.0))
        }
        "fp8" => {
            let block: f64 = q
                .get("weight_block_size")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_f64).product())
                .unwrap_or(hidden as f64);
            (8.0, 1.0 + 4.0 / block.max(1.0))
        }
        "fbgemm_fp8" => (8.0, 1.0 + 4.0 / hidden as f64),
        "aqlm" => {
            let b = num("num_codebooks").unwrap_or(1.0) * num("nbits_per_codebook").unwrap_or(16.0)
                / num("in_group_size").unwrap_or(8.0).max(1.0);
            (b, b / 8.0 + 2.0 / hidden as f64)
        }
        "mxfp4" => (4.0, 0.5 + 1.0 / 32.0),
        _ => {
            return Ok(StoredQuant {
                method: if method.is_empty() {
                    "unknown".into()
                } else {
                    method
                },
                bits: 16.0,
                bytes_per_param: 2.0,
                assumed: true,
            });
        }
    };
    if !(bits.is_finite() && bits > 0.0 && bits <= 16.0) {
        return Err(Error::ModelConfig(format!(
            "quantization_config: {bits} bits per weight is not a quantization (1–16 allowed)"
        )));
    }
    Ok(StoredQuant {
        method,
        bits,
        bytes_per_param: bytes,
        assumed: false,
    })
}

/// A decoder-only transformer, as much of it as memory, time and parameter counts need.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelArch {
    pub model_type: String,
    pub hidden_size: u64,
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
    /// Bias on o_proj (gpt-oss).
    pub o_bias: bool,
    /// Attention sinks: one learned logit per head and layer (gpt-oss).
    pub attention_sinks: bool,
    pub moe: Option<Moe>,
    pub max_position_embeddings: Option<u64>,
    pub rope_theta: Option<f64>,
    pub rope_scaling: RopeScaling,
    /// A pre-quantized checkpoint's storage of the decoder linears.
    pub stored_quant: Option<StoredQuant>,
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
        "default" => RopeScaling::None,
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
                "rope_type `{other}` is not supported; allowed: default, llama3, linear, dynamic, yarn"
            )));
        }
    };
    Ok((scaling, theta))
}

/// Model types this crate understands.
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
    "olmo2",
    "granite",
    "gpt_oss",
];

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
        // Multimodal wrappers (gemma3, llava-style) keep the language model in `text_config`.
        let obj = match top.get("text_config") {
            Some(Value::Object(tc)) if top.get("hidden_size").is_none() => tc,
            _ => top,
        };
        let mut model_type = obj
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or(top_type)
            .to_string();
        if model_type.is_empty() {
            return Err(Error::ModelConfig("`model_type` is missing".into()));
        }
        if model_type == "gemma3" {
            model_type = "gemma3_text".into();
        }
        if !SUPPORTED_MODEL_TYPES.contains(&model_type.as_str()) {
            return Err(Error::ModelConfig(format!(
                "model_type `{model_type}` is not supported; supported: {}",
                SUPPORTED_MODEL_TYPES.join(", ")
            )));
        }
        let hidden_size = req_u64(obj, "hidden_size")?;
        let num_layers = req_u64(obj, "num_hidden_layers")?;
        let num_attention_heads = req_u64(obj, "num_attention_heads")?;
        let num_key_value_heads =
            get_u64(obj, "num_key_value_heads")?.unwrap_or(num_attention_heads);
        let vocab_size = req_u64(obj, "vocab_size")?;
        let intermediate_size = req_u64(obj, "intermediate_size")?;
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
                model_type.as_str(),
                "gemma" | "gemma2" | "gemma3_text"
            ));
        let qkv_bias = match model_type.as_str() {
            "qwen2" => true,
            "glm4" => get_bool(obj, "attention_bias").unwrap_or(true),
            _ => get_bool(obj, "attention_bias").unwrap_or(false),
        };
        let moe = match model_type.as_str() {
            "mixtral" => Some(Moe {
                num_experts: req_u64(obj, "num_local_experts")?,
                experts_per_token: req_u64(obj, "num_experts_per_tok")?,
                expert_intermediate_size: intermediate_size,
            }),
            "gpt_oss" => Some(Moe {
                num_experts: req_u64(obj, "num_local_experts")?,
                experts_per_token: req_u64(obj, "num_experts_per_tok")?,
                expert_intermediate_size: intermediate_size,
            }),
            "qwen3_moe" => Some(Moe {
                num_experts: req_u64(obj, "num_experts")?,
                experts_per_token: req_u64(obj, "num_experts_per_tok")?,
                expert_intermediate_size: req_u64(obj, "moe_intermediate_size")?,
            }),
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
        let (rope_scaling, rope_theta) = parse_rope(obj)?;
        let stored_quant = match top
            .get("quantization_config")
            .or_else(|| obj.get("quantization_config"))
        {
            Some(Value::Object(q)) => Some(parse_quantization_config(q, hidden_size)?),
            _ => None,
        };
        Ok(ModelArch {
            stored_quant,
            qk_norm: matches!(
                model_type.as_str(),
                "qwen3" | "qwen3_moe" | "gemma3_text" | "olmo2"
            ),
            qk_norm_full: model_type == "olmo2",
            norms_per_layer: if matches!(model_type.as_str(), "gemma2" | "gemma3_text" | "glm4") {
                4
            } else {
                2
            },
            fused_projections: model_type == "phi3",
            fused_gate_up: matches!(model_type.as_str(), "phi3" | "glm4"),
            o_bias: model_type == "gpt_oss",
            attention_sinks: model_type == "gpt_oss",
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
            max_position_embeddings: get_u64(obj, "max_position_embeddings")?,
            rope_theta,
            rope_scaling,
        })
    }

    /// Width of the concatenated query heads.
    pub fn q_dim(&self) -> u64 {
        self.num_attention_heads * self.head_dim
    }

    /// Width of the concatenated key (or value) heads: smaller than `q_dim` under GQA.
    pub fn kv_dim(&self) -> u64 {
        self.num_key_value_heads * self.head_dim
    }

    /// The linear modules of one decoder layer, with HF names.
    pub fn layer_linears(&self) -> Vec<Linear> {
        let (h, q, kv) = (self.hidden_size, self.q_dim(), self.kv_dim());
        let lin = |name, in_features, out_features, bias, count| Linear {
            name,
            in_features,
            out_features,
            bias,
            count,
            targetable: true,
        };
        let fixed = |name, in_features, out_features, count| Linear {
            targetable: false,
            ..lin(name, in_features, out_features, true, count)
        };
        let mut v = if self.fused_projections {
            vec![
                lin("qkv_proj", h, q + 2 * kv, false, 1),
                lin("o_proj", q, h, false, 1),
            ]
        } else {
            vec![
                lin("q_proj", h, q, self.qkv_bias, 1),
                lin("k_proj", h, kv, self.qkv_bias, 1),
                lin("v_proj", h, kv, self.qkv_bias, 1),
                lin("o_proj", q, h, self.o_bias, 1),
            ]
        };
        match (&self.moe, self.model_type.as_str()) {
            (Some(m), "gpt_oss") => {
                // The router and the experts' fused 3-D tensors (with biases) are not nn.Linear.
                let i = m.expert_intermediate_size;
                v.push(fixed("router", h, m.num_experts, 1));
                v.push(fixed("experts.gate_up_proj", h, 2 * i, m.num_experts));
                v.push(fixed("experts.down_proj", i, h, m.num_experts));
            }
            (Some(m), "mixtral") => {
                let i = m.expert_intermediate_size;
                v.push(Linear {
                    targetable: false,
                    ..lin("gate", h, m.num_experts, false, 1)
                });
                v.push(lin("w1", h, i, false, m.num_experts));
                v.push(lin("w3", h, i, false, m.num_experts));
                v.push(lin("w2", i, h, false, m.num_experts));
            }
            (Some(m), _) => {
                let i = m.expert_intermediate_size;
                v.push(Linear {
                    targetable: false,
                    ..lin("gate", h, m.num_experts, false, 1)
                });
                v.push(lin("gate_proj", h, i, false, m.num_experts));
                v.push(lin("up_proj", h, i, false, m.num_experts));
                v.push(lin("down_proj", i, h, false, m.num_experts));
            }
            (None, _) if self.fused_gate_up => {
                v.push(lin("gate_up_proj", h, 2 * self.intermediate_size, false, 1));
                v.push(lin("down_proj", self.intermediate_size, h, false, 1));
            }
            (None, _) => {
                let i = self.intermediate_size;
                v.push(lin("gate_proj", h, i, false, 1));
                v.push(lin("up_proj", h, i, false, 1));
                v.push(lin("down_proj", i, h, false, 1));
            }
        }
        v
    }

    /// Names `lora_target: all` expands to (LLaMA-Factory: every linear layer except lm_head; the
    /// MoE router and non-`nn.Linear` expert tensors are left out).
    pub fn all_lora_targets(&self) -> Vec<&'static str> {
        self.layer_linears()
            .into_iter()
            .filter(|l| l.targetable)
            .map(|l| l.name)
            .collect()
    }

    /// Norm (and q/k-norm, attention-sink) parameters of one decoder layer: the 1-D ones.
    pub fn layer_norm_params(&self) -> u64 {
        let qk = match (self.qk_norm, self.qk_norm_full) {
            (true, true) => self.q_dim() + self.kv_dim(),
            (true, false) => 2 * self.head_dim,
            _ => 0,
        };
        let sinks = if self.attention_sinks {
            self.num_attention_heads
        } else {
            0
        };
        self.norms_per_layer * self.hidden_size + qk + sinks
    }

    /// Parameters of one decoder layer.
    pub fn layer_params(&self) -> u64 {
        self.layer_linears()
            .iter()
            .map(|l| l.weight_params() + l.bias_params())
            .sum::<u64>()
            + self.layer_norm_params()
    }

    /// Linear weight parameters of all decoder layers (what 4/8-bit quantization compresses).
    pub fn layer_linear_weight_params(&self) -> u64 {
        self.num_layers
            * self
                .layer_linears()
                .iter()
                .map(Linear::weight_params)
                .sum::<u64>()
    }

    /// Embedding table parameters.
    pub fn embedding_params(&self) -> u64 {
        self.vocab_size * self.hidden_size
    }

    /// lm_head parameters (0 when tied to the embeddings).
    pub fn lm_head_params(&self) -> u64 {
        if self.tie_word_embeddings {
            0
        } else {
            self.vocab_size * self.hidden_size
        }
    }

    /// Exact total parameter count, as `sum(p.numel() for p in model.parameters())` reports it.
    pub fn total_params(&self) -> u64 {
        self.num_layers * self.layer_params()
            + self.embedding_params()
            + self.lm_head_params()
            + self.hidden_size
    }

    /// Parameters active for one token (MoE: only the routed experts).
    pub fn active_params(&self) -> u64 {
        match &self.moe {
            None => self.total_params(),
            Some(m) => {
                // One expert's weights and biases, over the linears replicated per expert.
                let expert: u64 = self
                    .layer_linears()
                    .iter()
                    .filter(|l| l.count == m.num_experts && m.num_experts > 1)
                    .map(|l| (l.weight_params() + l.bias_params()) / l.count)
                    .sum();
                self.total_params()
                    - self.num_layers * (m.num_experts - m.experts_per_token) * expert
            }
        }
    }

    /// Intermediate width one token passes through in the MLP (MoE: the routed experts together).
    pub fn active_intermediate(&self) -> u64 {
        match &self.moe {
            None => self.intermediate_size,
            Some(m) => m.expert_intermediate_size * m.experts_per_token,
        }
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
            attention_sinks: false,
            moe: None,
            max_position_embeddings: None,
            rope_theta: None,
            rope_scaling: RopeScaling::None,
        })
    }
}
