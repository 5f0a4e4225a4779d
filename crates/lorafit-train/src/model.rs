//! The Llama family (llama incl. Llama 3.1 rope scaling, mistral, qwen2 with q/k/v biases and tied
//! embeddings, qwen3 with q/k norms) on burn, with factored LoRA on any of its linear layers.
//!
//! Activations are kept as `[tokens, features]` 2-D tensors between layers (tokens = batch ×
//! length); attention reshapes to `[batch, heads, length, head_dim]`.

use std::path::Path;

use burn::backend::Dispatch;
use burn::tensor::activation::silu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use lorafit_core::ModelArch;
use lorafit_core::arch::RopeScaling;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::fused_ops::{AttnOpts, FusedOps, loss_chunk, vocab_tile};
use crate::lora::{Adapter, LoraSpec};
use crate::quant::{HalfWeight, Int8Weight, Nf4Weight, QuantSpec};
use crate::quant_tune::{Q4Kernel, TunerId};
use crate::weights::{HostTensor, Weights};
pub use lorafit_data::{Example, StepRng};

/// The shape and numerics of a checkpoint, read from its config.json.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub arch: ModelArch,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Each layer's sliding window (0: full attention), as transformers masks it: mistral's
    /// `sliding_window`; qwen2 / qwen3 with `use_sliding_window` from layer `max_window_layers`
    /// on; `layer_types` where the config spells them out.
    pub windows: Vec<usize>,
}

/// The families this trainer runs.
pub const SUPPORTED: &[&str] = &["llama", "mistral", "qwen2", "qwen3"];

impl ModelConfig {
    /// Parse config.json text; an architecture outside [`SUPPORTED`] is an error naming it.
    pub fn from_json(path: &Path, text: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| Error::ckpt(path, format!("not valid JSON: {e}")))?;
        let arch =
            ModelArch::from_config_value(&v).map_err(|e| Error::ckpt(path, e.to_string()))?;
        if !SUPPORTED.contains(&arch.model_type.as_str()) {
            return Err(Error::Unsupported(format!(
                "{}: model_type `{}` is not one lorafit can train (supported: {})",
                path.display(),
                arch.model_type,
                SUPPORTED.join(", ")
            )));
        }
        if arch.moe.is_some() || arch.fused_projections {
            return Err(Error::Unsupported(format!(
                "{}: mixture-of-experts and fused projections are not supported for training",
                path.display()
            )));
        }
        if arch.vision.is_some() {
            return Err(Error::Unsupported(format!(
                "{}: vision-language models are not supported for training (lorafit estimate covers them)",
                path.display()
            )));
        }
        match arch.rope_scaling {
            RopeScaling::None | RopeScaling::Llama3 { .. } | RopeScaling::Linear { .. } => {}
            ref other => {
                return Err(Error::Unsupported(format!(
                    "{}: rope scaling {other:?} is not supported for training (none, linear and llama3 are)",
                    path.display()
                )));
            }
        }
        if let Some(act) = v.get("hidden_act").and_then(Value::as_str)
            && act != "silu"
        {
            return Err(Error::Unsupported(format!(
                "{}: hidden_act `{act}` is not supported (silu is)",
                path.display()
            )));
        }
        let rms_norm_eps = v
            .get("rms_norm_eps")
            .and_then(Value::as_f64)
            .unwrap_or(1e-6);
        let rope_theta = arch.rope_theta.unwrap_or(10000.0);
        let windows = sliding_windows(&v, &arch.model_type, arch.num_layers as usize)
            .map_err(|e| Error::ckpt(path, e))?;
        Ok(ModelConfig {
            arch,
            rms_norm_eps,
            rope_theta,
            windows,
        })
    }

    /// Read `dir/config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        Self::from_json(&path, &text)
    }

    fn dims(&self) -> (usize, usize, usize, usize, usize, usize) {
        let a = &self.arch;
        (
            a.hidden_size as usize,
            a.intermediate_size as usize,
            a.num_attention_heads as usize,
            a.num_key_value_heads as usize,
            a.head_dim as usize,
            a.vocab_size as usize,
        )
    }

    /// RoPE inverse frequencies in f32, as transformers computes them (incl. llama3 / linear scaling).
    pub fn inv_freq(&self) -> Vec<f32> {
        let hd = self.arch.head_dim as usize;
        let base = self.rope_theta as f32;
        let mut inv: Vec<f32> = (0..hd)
            .step_by(2)
            .map(|i| 1.0 / base.powf(i as f32 / hd as f32))
            .collect();
        match self.arch.rope_scaling {
            RopeScaling::Linear { factor } => inv.iter_mut().for_each(|f| *f /= factor as f32),
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => {
                let (factor, low, high) = (
                    factor as f32,
                    low_freq_factor as f32,
                    high_freq_factor as f32,
                );
                let old = original_max_position_embeddings as f32;
                let low_wavelen = old / low;
                let high_wavelen = old / high;
                for f in &mut inv {
                    let wavelen = 2.0 * std::f32::consts::PI / *f;
                    let scaled = if wavelen > low_wavelen {
                        *f / factor
                    } else {
                        *f
                    };
                    let smooth = (old / wavelen - low) / (high - low);
                    let smoothed = (1.0 - smooth) * scaled / factor + smooth * scaled;
                    let medium = wavelen >= high_wavelen && wavelen <= low_wavelen;
                    *f = if medium { smoothed } else { scaled };
                }
            }
            _ => {}
        }
        inv
    }
}

/// A frozen base weight: dense f32 (stored transposed, `[in, out]`), 4-bit (QLoRA), int8 or
/// 16-bit (`bf16` / `fp16`).
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // burn's Tensor is itself 640 bytes; one per linear layer
pub enum BaseWeight {
    Dense(Tensor<2>),
    Quant(Nf4Weight),
    Int8(Int8Weight),
    Half(HalfWeight),
}

/// A frozen linear layer `y = x·Wᵀ + b`, maybe with LoRA.
#[derive(Debug, Clone)]
pub struct Linear {
    pub weight: BaseWeight,
    pub bias: Option<Tensor<1>>,
    /// The HF module path, e.g. `model.layers.0.self_attn.q_proj`.
    pub path: String,
    /// ‖W_o‖² per output row `[1, out]`, computed once when DoRA first needs it.
    row_norms: std::sync::OnceLock<Tensor<2>>,
}

impl Linear {
    fn new(weight: BaseWeight, bias: Option<Tensor<1>>, path: String) -> Self {
        Linear {
            weight,
            bias,
            path,
            row_norms: std::sync::OnceLock::new(),
        }
    }

    /// x·Wᵀ (no bias) for x `[n, in]`.
    pub fn base(&self, x: Tensor<2>) -> Tensor<2> {
        match &self.weight {
            BaseWeight::Dense(wt) => x.matmul(wt.clone()),
            BaseWeight::Quant(q) => q.matmul(x),
            BaseWeight::Int8(q) => q.matmul(x),
            BaseWeight::Half(w) => w.matmul(x),
        }
    }

    /// ‖W_o‖², `[1, out]`, as a constant.
    pub fn row_norms(&self) -> Tensor<2> {
        self.row_norms
            .get_or_init(|| {
                let sq = match &self.weight {
                    BaseWeight::Dense(wt) => (wt.clone() * wt.clone()).sum_dim(0),
                    BaseWeight::Quant(q) => {
                        let w = q.dequantize();
                        (w.clone() * w).sum_dim(1).transpose()
                    }
                    BaseWeight::Int8(q) => {
                        let w = q.dequantize();
                        (w.clone() * w).sum_dim(1).transpose()
                    }
                    BaseWeight::Half(h) => {
                        let w = h.widen();
                        (w.clone() * w).sum_dim(1).transpose()
                    }
                };
                sq.detach()
            })
            .clone()
    }

    /// DoRA's ‖W + s·B·A‖ per output row `[1, out]`, treated as a constant (PEFT detaches it), from
    /// factors: ‖W_o‖² + 2s·Σ_r B[o,r]·(A·Wᵀ)[r,o] + s²·Σ B[o,:]·(A·Aᵀ)·B[o,:]ᵀ, so neither W nor
    /// B·A is ever formed.
    fn dora_norm(&self, lora: &crate::lora::LoraWeights, s: f64) -> Tensor<2> {
        let a = lora.a.clone().detach();
        let b = lora.b.clone().detach();
        let aw = self.base(a.clone()); // A·Wᵀ [r, out]
        let cross = (b.clone() * aw.transpose()).sum_dim(1).transpose();
        let quad = (b.clone().matmul(a.clone().matmul(a.transpose())) * b)
            .sum_dim(1)
            .transpose();
        (self.row_norms() + cross * (2.0 * s) + quad * (s * s)).sqrt()
    }

    /// x `[n, in]` → `[n, out]`, adding the adapter's LoRA (or DoRA) term when it targets this layer.
    pub fn forward(&self, x: Tensor<2>, adapter: &Adapter, rng: &mut StepRng) -> Tensor<2> {
        let base = self.base(x.clone());
        let mut y = base.clone();
        if let Some(b) = &self.bias {
            y = y + b.clone().unsqueeze_dim(0);
        }
        let Some(lora) = adapter.get(&self.path) else {
            return y;
        };
        let spec = adapter.spec();
        match &lora.magnitude {
            None => y + lora.forward(x, spec, rng),
            Some(m) => {
                // PEFT's DoRA: y + (m/‖W+sBA‖ − 1)·(x'·Wᵀ) + m/‖W+sBA‖·(x'·Aᵀ·Bᵀ·s), x' = dropout(x).
                let (xd, dropped) = crate::lora::LoraWeights::dropout(x, spec, rng);
                let base_d = if dropped { self.base(xd.clone()) } else { base };
                let lora_out = lora.product(xd, spec);
                let k = m.clone() / self.dora_norm(lora, spec.scale());
                y + (k.clone() - 1.0) * base_d + k * lora_out
            }
        }
    }
}

#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor<1>,
    eps: f64,
}

impl RmsNorm {
    /// x `[.., d]` normalized over its last dimension.
    fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let var = x.clone().square().mean_dim(D - 1);
        let x = x * (var + self.eps).sqrt().recip();
        let mut shape = [1usize; D];
        shape[D - 1] = self.weight.dims()[0];
        x * self.weight.clone().reshape(shape)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    input_norm: RmsNorm,
    post_norm: RmsNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// `embed_tokens` on the device: f32, or with `bf16` / `fp16` 16-bit like the linears (what
/// LLaMA-Factory's model holds in that dtype), rows widened as they are looked up.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per model
enum Embedding {
    Dense(Tensor<2>),
    Half(HalfWeight),
}

/// lm_head on the device: f32 as lm_headᵀ `[hidden, vocab]`, or with `bf16` / `fp16` the
/// `[vocab, hidden]` weight 16-bit like the linears, which the loss widens a vocabulary tile at
/// a time ([`FusedOps::label_logprobs_h16`]). A tied embedding is the same tensor.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per model
enum Head {
    Dense(Tensor<2>),
    Half(HalfWeight),
}

/// A Llama-family causal LM with frozen weights on one device.
#[derive(Debug, Clone)]
pub struct Model {
    pub config: ModelConfig,
    /// `embed_tokens` `[vocab, hidden]`; `None` when tied to lm_head, whose one copy then serves
    /// both (see [`Model::embed`]).
    embed: Option<Embedding>,
    layers: Vec<Layer>,
    norm: RmsNorm,
    /// lm_head (the embedding when tied).
    head: Head,
    device: Device,
    /// Picks how the 4-bit weights' products run (src/quant_tune.rs); the trainer sets its mode
    /// from `quant_kernel` and saves its choices with each checkpoint.
    pub q4_tuner: TunerId,
    /// Attention through cubecl's `#[cube]` kernels where the backend has them
    /// (`attention_kernel: cube`, set by the trainer); false: the tiled tensor ops (fused_ops/).
    pub cube_attention: std::cell::Cell<bool>,
}

/// The keys and values (after RoPE, before GQA's repeat) `[1, kv_heads, len, head_dim]` of each
/// layer for the positions decoded so far: generation appends one token at a time.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Option<(Tensor<4>, Tensor<4>)>>,
    len: usize,
}

impl KvCache {
    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

fn to_device<const D: usize>(t: HostTensor, device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(t.data, t.shape), device)
}

fn transpose_host(t: HostTensor) -> HostTensor {
    let (r, c) = (t.shape[0], t.shape[1]);
    let mut out = vec![0f32; r * c];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = t.data[i * c + j];
        }
    }
    HostTensor::new(vec![c, r], out)
}

impl Model {
    /// Load a checkpoint directory (config.json + safetensors) onto `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        Self::load_quantized(dir, device, None)
    }

    /// Load a checkpoint, quantizing the decoder layers' linear weights to 4 bits (QLoRA) when
    /// `quant` is given; embeddings, norms and lm_head stay unquantized, as in transformers.
    pub fn load_quantized(dir: &Path, device: &Device, quant: Option<QuantSpec>) -> Result<Self> {
        let config = ModelConfig::from_dir(dir)?;
        let weights = Weights::load_dir(dir)?;
        Self::from_weights(config, weights, device, quant)
    }

    pub fn from_weights(
        config: ModelConfig,
        mut w: Weights,
        device: &Device,
        quant: Option<QuantSpec>,
    ) -> Result<Self> {
        let (h, inter, nh, nkv, hd, vocab) = config.dims();
        let a = config.arch.clone();
        let q4_tuner = TunerId::new(Q4Kernel::Auto, &[]);
        let tuned = |mut weight: Nf4Weight| {
            weight.set_tuner(q4_tuner);
            weight
        };
        let half_table = match quant {
            Some(QuantSpec::Half(kind)) => Some((kind, HalfWeight::table(kind, device))),
            _ => None,
        };
        let eps = config.rms_norm_eps;
        let norm = |w: &mut Weights, name: &str, d: usize| -> Result<RmsNorm> {
            Ok(RmsNorm {
                weight: to_device(w.take(name, &[d])?, device),
                eps,
            })
        };
        let linear = |w: &mut Weights,
                      path: String,
                      inp: usize,
                      out: usize,
                      bias: bool|
         -> Result<Linear> {
            let bias = if bias {
                Some(to_device(w.take(&format!("{path}.bias"), &[out])?, device))
            } else {
                None
            };
            // Stored 4-bit (a `*-bnb-4bit` checkpoint): used as is, never re-quantized.
            if let Some(q) = w.take_quantized(&format!("{path}.weight")) {
                let q = q?;
                if q.shape != [out, inp] {
                    return Err(Error::Invalid(format!(
                        "4-bit tensor `{path}.weight` has shape {:?}, but config.json implies [{out}, {inp}]",
                        q.shape
                    )));
                }
                return Ok(Linear::new(
                    BaseWeight::Quant(tuned(Nf4Weight::upload(&q, device)?)),
                    bias,
                    path,
                ));
            }
            let weight = w.take(&format!("{path}.weight"), &[out, inp])?;
            if let Some((kind, table)) = &half_table {
                let weight = HalfWeight::upload(&weight.data, out, inp, *kind, table);
                return Ok(Linear::new(BaseWeight::Half(weight), bias, path));
            }
            let weight = match quant {
                Some(QuantSpec::Int8) => {
                    BaseWeight::Int8(Int8Weight::quantize(&weight.data, out, inp, device)?)
                }
                Some(QuantSpec::FourBit {
                    quant_type,
                    double_quant,
                    rounding,
                }) => BaseWeight::Quant(tuned(Nf4Weight::quantize(
                    &weight.data,
                    out,
                    inp,
                    quant_type,
                    double_quant,
                    rounding,
                    device,
                )?)),
                Some(QuantSpec::Half(_)) | None => {
                    BaseWeight::Dense(to_device(transpose_host(weight), device))
                }
            };
            Ok(Linear::new(weight, bias, path))
        };
        let embed_host = w.take("model.embed_tokens.weight", &[vocab, h])?;
        let mut layers = Vec::new();
        for i in 0..a.num_layers as usize {
            let p = format!("model.layers.{i}");
            let qk_norm = a.qk_norm;
            layers.push(Layer {
                input_norm: norm(&mut w, &format!("{p}.input_layernorm.weight"), h)?,
                post_norm: norm(&mut w, &format!("{p}.post_attention_layernorm.weight"), h)?,
                q: linear(
                    &mut w,
                    format!("{p}.self_attn.q_proj"),
                    h,
                    nh * hd,
                    a.qkv_bias,
                )?,
                k: linear(
                    &mut w,
                    format!("{p}.self_attn.k_proj"),
                    h,
                    nkv * hd,
                    a.qkv_bias,
                )?,
                v: linear(
                    &mut w,
                    format!("{p}.self_attn.v_proj"),
                    h,
                    nkv * hd,
                    a.qkv_bias,
                )?,
                o: linear(&mut w, format!("{p}.self_attn.o_proj"), nh * hd, h, false)?,
                q_norm: if qk_norm {
                    Some(norm(&mut w, &format!("{p}.self_attn.q_norm.weight"), hd)?)
                } else {
                    None
                },
                k_norm: if qk_norm {
                    Some(norm(&mut w, &format!("{p}.self_attn.k_norm.weight"), hd)?)
                } else {
                    None
                },
                gate: linear(&mut w, format!("{p}.mlp.gate_proj"), h, inter, false)?,
                up: linear(&mut w, format!("{p}.mlp.up_proj"), h, inter, false)?,
                down: linear(&mut w, format!("{p}.mlp.down_proj"), inter, h, false)?,
            });
        }
        let norm_f = norm(&mut w, "model.norm.weight", h)?;
        let (embed_host, lm_head_host) = if a.tie_word_embeddings {
            (None, embed_host)
        } else {
            (Some(embed_host), w.take("lm_head.weight", &[vocab, h])?)
        };
        let leftover: Vec<&str> = w
            .names()
            .filter(|n| !n.ends_with("rotary_emb.inv_freq"))
            .collect();
        if !leftover.is_empty() {
            return Err(Error::Invalid(format!(
                "the checkpoint has tensors config.json does not describe (is it the right config?): {}",
                leftover
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(Model {
            q4_tuner,
            cube_attention: Default::default(),
            embed: embed_host.map(|e| match &half_table {
                Some((kind, table)) if h % 2 == 0 => {
                    Embedding::Half(HalfWeight::upload(&e.data, vocab, h, *kind, table))
                }
                _ => Embedding::Dense(to_device(e, device)),
            }),
            head: match &half_table {
                Some((kind, table)) if h % 2 == 0 => Head::Half(HalfWeight::upload(
                    &lm_head_host.data,
                    vocab,
                    h,
                    *kind,
                    table,
                )),
                _ => Head::Dense(to_device(transpose_host(lm_head_host), device)),
            },
            layers,
            norm: norm_f,
            config,
            device: device.clone(),
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Every linear layer, in module order.
    pub fn linears(&self) -> Vec<&Linear> {
        self.layers
            .iter()
            .flat_map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down])
            .collect()
    }

    /// ‖W_o‖² per output row `[1, out]` of the linear at `path` (DoRA's initial magnitude²).
    pub fn row_norms(&self, path: &str) -> Result<Tensor<2>> {
        self.linears()
            .into_iter()
            .find(|l| l.path == path)
            .map(Linear::row_norms)
            .ok_or_else(|| Error::Invalid(format!("no linear layer `{path}`")))
    }

    /// Input and output features of the linear at `path`.
    pub fn linear_shape(&self, path: &str) -> Option<(usize, usize)> {
        self.linears()
            .into_iter()
            .find(|l| l.path == path)
            .map(|l| match &l.weight {
                BaseWeight::Dense(wt) => {
                    let d = wt.dims();
                    (d[0], d[1])
                }
                BaseWeight::Quant(q) => {
                    let (out, inp) = q.shape();
                    (inp, out)
                }
                BaseWeight::Int8(q) => {
                    let (out, inp) = q.shape();
                    (inp, out)
                }
                BaseWeight::Half(h) => {
                    let (out, inp) = h.shape();
                    (inp, out)
                }
            })
    }

    /// RoPE tables `[batch, 1, len, head_dim]` (cos, sin), rotate-half layout, for each token's position.
    fn rope(&self, batch: &[&Example], len: usize) -> (Tensor<4>, Tensor<4>) {
        let b = batch.len();
        let inv = self.config.inv_freq();
        let hd = self.config.arch.head_dim as usize;
        let mut cos = Vec::with_capacity(b * len * hd);
        let mut sin = Vec::with_capacity(b * len * hd);
        for (row, t) in (0..b).flat_map(|r| (0..len).map(move |t| (r, t))) {
            let pos = batch[row].position_ids.get(t).copied().unwrap_or(t as u32);
            for _ in 0..2 {
                for f in &inv {
                    let angle = pos as f32 * f;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        (
            Tensor::from_data(TensorData::new(cos, [b, 1, len, hd]), &self.device),
            Tensor::from_data(TensorData::new(sin, [b, 1, len, hd]), &self.device),
        )
    }

    /// Logits `[batch·len, vocab]` for a micro-batch (rows right-padded to the longest): at each
    /// example's `position_ids` (empty: 0, 1, 2, …), attention confined to its `segment_ids`
    /// sub-sequences when it has them (`neat_packing`).
    pub fn logits(&self, batch: &[&Example], adapter: &Adapter, rng: &mut StepRng) -> Tensor<2> {
        self.head_logits(self.hidden(batch, adapter, rng))
    }

    /// The last hidden states `[batch·len, hidden]` (after the final norm: transformers'
    /// `hidden_states[-1]`, what a value head reads), rows right-padded to the longest.
    pub fn hidden(&self, batch: &[&Example], adapter: &Adapter, rng: &mut StepRng) -> Tensor<2> {
        let b = batch.len();
        let len = batch.iter().map(|e| e.input_ids.len()).max().unwrap_or(0);
        let flat: Vec<i64> = batch
            .iter()
            .flat_map(|e| {
                let r = &e.input_ids;
                r.iter()
                    .map(|&t| t as i64)
                    .chain(std::iter::repeat_n(0, len - r.len()))
            })
            .collect();
        let n = b * len;
        let idx: Tensor<1, Int> = Tensor::from_data(TensorData::new(flat, [n]), &self.device);
        let x = self.embed(idx);
        let (cos, sin) = self.rope(batch, len);
        // Causal within a sub-sequence (neat_packing). Padding (segment 0, and the right-padding
        // of short rows) attends only to padding, so no row is fully masked.
        let packed = batch.iter().any(|e| !e.segment_ids.is_empty());
        let seg: Vec<i64> = batch
            .iter()
            .flat_map(|e| {
                (0..len).map(move |t| match packed {
                    true => e.segment_ids.get(t).copied().unwrap_or(0) as i64,
                    false => 1,
                })
            })
            .collect();
        let segments = Tensor::<2, Int>::from_data(TensorData::new(seg, [b, len]), &self.device);
        let x = self.decoder(
            x,
            [b, len],
            (&cos, &sin),
            (&segments, packed),
            adapter,
            rng,
            None,
        );
        self.norm.forward(x)
    }

    /// The decoder layers on `x` `[b·len, hidden]`, attention confined to `segments` `[b, keys]`
    /// when `packed`. With a `cache`, the keys and values of earlier positions come from it and
    /// this call's are appended (`segments` then spans `past + len` keys).
    #[allow(clippy::too_many_arguments)]
    fn decoder(
        &self,
        mut x: Tensor<2>,
        [b, len]: [usize; 2],
        (cos, sin): (&Tensor<4>, &Tensor<4>),
        (segments, packed): (&Tensor<2, Int>, bool),
        adapter: &Adapter,
        rng: &mut StepRng,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor<2> {
        let (_, _, nh, nkv, hd, _) = self.config.dims();
        let n = b * len;
        let scale = 1.0 / (hd as f32).sqrt();
        let tile = attention_tile(b, nh);
        for (i, layer) in self.layers.iter().enumerate() {
            let residual = x.clone();
            let hs = layer.input_norm.forward(x);
            let q = layer
                .q
                .forward(hs.clone(), adapter, rng)
                .reshape([b, len, nh, hd]);
            let k = layer
                .k
                .forward(hs.clone(), adapter, rng)
                .reshape([b, len, nkv, hd]);
            let v = layer.v.forward(hs, adapter, rng).reshape([b, len, nkv, hd]);
            let (q, k) = match (&layer.q_norm, &layer.k_norm) {
                (Some(qn), Some(kn)) => (qn.forward(q), kn.forward(k)),
                _ => (q, k),
            };
            let q = rotate(q.swap_dims(1, 2), cos, sin);
            let mut k = rotate(k.swap_dims(1, 2), cos, sin);
            let mut v = v.swap_dims(1, 2);
            if let Some(c) = cache.as_deref_mut() {
                if let Some((pk, pv)) = c.layers[i].take() {
                    k = Tensor::cat(vec![pk, k], 2);
                    v = Tensor::cat(vec![pv, v], 2);
                }
                c.layers[i] = Some((k.clone(), v.clone()));
            }
            let opts = AttnOpts {
                scale,
                tile,
                window: self.config.windows.get(i).copied().unwrap_or(0),
                packed,
                cube: self.cube_attention.get(),
            };
            let attn = Tensor::<4>::from_dispatch(Dispatch::flash_attention(
                q.into_dispatch(),
                k.into_dispatch(),
                v.into_dispatch(),
                segments.clone().into_dispatch(),
                opts,
            ));
            let attn = attn.swap_dims(1, 2).reshape([n, nh * hd]);
            x = residual + layer.o.forward(attn, adapter, rng);
            let residual = x.clone();
            let hs = layer.post_norm.forward(x);
            let gate = silu(layer.gate.forward(hs.clone(), adapter, rng));
            let up = layer.up.forward(hs, adapter, rng);
            x = residual + layer.down.forward(gate * up, adapter, rng);
        }
        if let Some(c) = cache {
            c.len += len;
        }
        x
    }

    /// An empty KV cache for [`Model::logits_cached`].
    pub fn kv_cache(&self) -> KvCache {
        KvCache {
            layers: vec![None; self.layers.len()],
            len: 0,
        }
    }

    /// Logits `[ids.len(), vocab]` of one sequence's next tokens, `ids` continuing the sequence
    /// whose keys and values `cache` holds (positions `cache.len()..`); the cache is extended.
    /// Equal to the rows of [`Model::logits`] on the whole sequence, without recomputing it.
    pub fn logits_cached(&self, ids: &[u32], cache: &mut KvCache, adapter: &Adapter) -> Tensor<2> {
        let (past, len) = (cache.len, ids.len());
        let idx: Tensor<1, Int> = Tensor::from_data(
            TensorData::new(ids.iter().map(|&t| t as i64).collect::<Vec<_>>(), [len]),
            &self.device,
        );
        let x = self.embed(idx);
        let e = Example {
            position_ids: (past..past + len).map(|p| p as u32).collect(),
            ..Default::default()
        };
        let (cos, sin) = self.rope(&[&e], len);
        let total = past + len;
        let segments = Tensor::<2, Int>::ones([1, total], &self.device);
        let mut rng = StepRng::eval();
        let x = self.decoder(
            x,
            [1, len],
            (&cos, &sin),
            (&segments, false),
            adapter,
            &mut rng,
            Some(cache),
        );
        self.head_logits(self.norm.forward(x))
    }

    /// Sum of token cross-entropies over the labelled positions (labels unshifted, -100 ignored),
    /// and the number of those positions.
    pub fn loss_sum(
        &self,
        batch: &[&Example],
        adapter: &Adapter,
        rng: &mut StepRng,
    ) -> (Tensor<1>, usize) {
        let len = batch.iter().map(|e| e.input_ids.len()).max().unwrap_or(0);
        let mut targets = Vec::with_capacity(batch.len() * len);
        let mut weights = Vec::with_capacity(batch.len() * len);
        for e in batch {
            for t in 0..len {
                let next = e.labels.get(t + 1).copied().unwrap_or(-100);
                targets.push(next.max(0));
                weights.push(if next >= 0 { 1.0f32 } else { 0.0 });
            }
        }
        let count = weights.iter().filter(|w| **w > 0.0).count();
        let n = targets.len();
        let logp = self.label_logprobs(self.hidden(batch, adapter, rng), targets);
        let w: Tensor<1> = Tensor::from_data(TensorData::new(weights, [n]), &self.device);
        ((logp * w).sum().neg(), count)
    }

    /// Each sequence's summed log-probability of its labels (`get_batch_logps`: labels shifted by
    /// one, -100 ignored) `[b]`, and how many label tokens each has.
    pub fn seq_logps(
        &self,
        batch: &[&Example],
        adapter: &Adapter,
        rng: &mut StepRng,
    ) -> (Tensor<1>, Vec<usize>) {
        let b = batch.len();
        let len = batch.iter().map(|e| e.input_ids.len()).max().unwrap_or(0);
        let mut targets = Vec::with_capacity(b * len);
        let mut weights = Vec::with_capacity(b * len);
        let mut counts = vec![0usize; b];
        for (i, e) in batch.iter().enumerate() {
            for t in 0..len {
                let next = e.labels.get(t + 1).copied().unwrap_or(-100);
                targets.push(next.max(0));
                weights.push(if next >= 0 { 1.0f32 } else { 0.0 });
                counts[i] += usize::from(next >= 0);
            }
        }
        let n = targets.len();
        let logp = self.label_logprobs(self.hidden(batch, adapter, rng), targets);
        let w: Tensor<1> = Tensor::from_data(TensorData::new(weights, [n]), &self.device);
        let picked = (logp * w).reshape([b, len]);
        (picked.sum_dim(1).reshape([b]), counts)
    }

    /// The input embeddings of token ids `idx` `[n]` → `[n, hidden]`: rows of `embed_tokens`, or
    /// for tied embeddings columns of lm_headᵀ — the same values, one copy on the device.
    fn embed(&self, idx: Tensor<1, Int>) -> Tensor<2> {
        match &self.embed {
            Some(Embedding::Dense(e)) => e.clone().select(0, idx),
            Some(Embedding::Half(e)) => e.rows(idx),
            None => match &self.head {
                Head::Dense(t) => t.clone().select(1, idx).transpose(),
                Head::Half(w) => w.rows(idx),
            },
        }
    }

    /// `lm_head(h)`: the logits `[n, vocab]` of hidden states `[n, hidden]`.
    fn head_logits(&self, x: Tensor<2>) -> Tensor<2> {
        match &self.head {
            Head::Dense(t) => x.matmul(t.clone()),
            Head::Half(w) => w.matmul(x),
        }
    }

    /// `log softmax(lm_head(h))[target]` `[n]` for hidden states `[n, hidden]`, over token chunks
    /// ([`FusedOps::label_logprobs`]): the `[n, vocab]` logits are never formed.
    pub fn label_logprobs(&self, hidden: Tensor<2>, targets: Vec<i64>) -> Tensor<1> {
        let n = targets.len();
        let t: Tensor<1, Int> = Tensor::from_data(TensorData::new(targets, [n]), &self.device);
        match &self.head {
            Head::Dense(head_t) => {
                let [h, vocab] = head_t.dims();
                Tensor::from_dispatch(Dispatch::label_logprobs(
                    hidden.into_dispatch(),
                    head_t.clone().into_dispatch(),
                    t.into_dispatch(),
                    loss_chunk(n, vocab, h),
                ))
            }
            Head::Half(w) => {
                let (vocab, h) = w.shape();
                let tile = vocab_tile(n, vocab);
                let (words, table) = w.parts();
                Tensor::from_dispatch(Dispatch::label_logprobs_h16(
                    hidden.into_dispatch(),
                    words.into_dispatch(),
                    table.into_dispatch(),
                    t.into_dispatch(),
                    vocab,
                    tile,
                    loss_chunk(n, tile, h),
                ))
            }
        }
    }
}

/// Each layer's sliding window from config.json (see [`ModelConfig::windows`]).
fn sliding_windows(
    v: &Value,
    model_type: &str,
    layers: usize,
) -> std::result::Result<Vec<usize>, String> {
    let window =
        match v.get("sliding_window") {
            None | Some(Value::Null) => 0,
            Some(w) => w.as_u64().filter(|&w| w > 0).ok_or_else(|| {
                format!("`sliding_window` = {w}: expected a positive integer or null")
            })? as usize,
        };
    let qwen = matches!(model_type, "qwen2" | "qwen3");
    let on = match model_type {
        "mistral" => true,
        _ if qwen => v.get("use_sliding_window").and_then(Value::as_bool) == Some(true),
        _ => false,
    };
    if window == 0 || !on {
        return Ok(vec![0; layers]);
    }
    if !qwen {
        return Ok(vec![window; layers]);
    }
    // Qwen2Config / Qwen3Config: `layer_types`, by default sliding from `max_window_layers` on.
    match v.get("layer_types").and_then(Value::as_array) {
        Some(types) if types.len() != layers => Err(format!(
            "`layer_types` has {} entries for {layers} layers",
            types.len()
        )),
        Some(types) => types
            .iter()
            .enumerate()
            .map(|(i, t)| match t.as_str() {
                Some("full_attention") => Ok(0),
                Some("sliding_attention") => Ok(window),
                _ => Err(format!(
                    "`layer_types[{i}]` = {t}: allowed full_attention, sliding_attention"
                )),
            })
            .collect(),
        None => {
            let from = v
                .get("max_window_layers")
                .and_then(Value::as_u64)
                .unwrap_or(layers as u64) as usize;
            Ok((0..layers)
                .map(|i| if i >= from { window } else { 0 })
                .collect())
        }
    }
}

/// The query / key tile of [`FusedOps::flash_attention`] for `b × heads`: the largest power of two
/// up to 1024 whose scores `[b, heads, tile, tile]` (f32) stay within 64 MiB.
pub fn attention_tile(b: usize, heads: usize) -> usize {
    let mut tile = 1024;
    while tile > 16 && b * heads * tile * tile * 4 > 64 << 20 {
        tile /= 2;
    }
    tile
}

/// x `[b, h, len, hd]` · cos + rotate_half(x) · sin.
fn rotate(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
    let [b, h, len, hd] = x.dims();
    let half = hd / 2;
    let x1 = x.clone().slice([0..b, 0..h, 0..len, 0..half]);
    let x2 = x.clone().slice([0..b, 0..h, 0..len, half..hd]);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * cos.clone() + rotated * sin.clone()
}

/// The LoRA specs a model accepts (`all` or names) resolved to the module paths they target.
pub fn target_paths(model: &Model, spec: &LoraSpec) -> Result<Vec<String>> {
    let all = model.config.arch.all_lora_targets();
    for t in &spec.targets {
        if !all.contains(&t.as_str()) {
            return Err(Error::Invalid(format!(
                "lora_target `{t}` is not a linear layer of this {} model (its layers: {})",
                model.config.arch.model_type,
                all.join(", ")
            )));
        }
    }
    Ok(model
        .linears()
        .into_iter()
        .filter(|l| {
            let leaf = l.path.rsplit('.').next().unwrap_or("");
            spec.targets.iter().any(|t| t == leaf)
        })
        .map(|l| l.path.clone())
        .collect())
}
