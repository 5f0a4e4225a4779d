//! The `lorafit` stack: what `lorafit train` itself holds on its device at its peak, next to
//! memory.rs's model of PyTorch + PEFT. The two differ because the trainers do: lorafit computes
//! everything in f32 (with `bf16` / `fp16` the decoder's linear weights, the embedding and lm_head
//! are stored 16-bit and only the linears' products run in f16 where fp16 has f16 arithmetic;
//! norms stay f32), attention is tiled (no `[heads, s, s]` term) and the loss chunked (no
//! `[tokens, vocab]` logits; a 16-bit lm_head is widened a vocabulary tile at a time), AdamW's states exist from the start, and burn's autodiff keeps
//! its own set of tensors for the backward pass.
//!
//! The peak is at the end of a micro-batch's forward pass: resident weights + the adapter and its
//! AdamW states (+ the gradients accumulated over earlier micro-batches) + what autodiff keeps.
//! What autodiff keeps was counted op by op in lorafit-train's model (per token, in f32):
//!
//! | tensor kept for the backward | floats per token |
//! |---|---|
//! | RMSNorm inputs (the residual stream; layer 0's is a constant) + their 3 row statistics | 2h + 6 per layer − h |
//! | a LoRA layer's input (shared by q/k/v, by gate/up) and its `x·Aᵀ` | in (once per input) + r |
//! | with `lora_dropout`: each LoRA layer's mask and dropped input instead of the input | 2·in per LoRA layer |
//! | q/k norms (qwen3): their inputs and row statistics | q + kv + 3·(heads + kv heads) |
//! | tiled attention: rotated q, k, v, the output, the log-sum-exp | 2q + 2kv + heads |
//! | SwiGLU: gate, σ(gate), silu(gate), up | 4·intermediate |
//! | final norm input and output (the loss's input), RoPE tables | 2h + 2·head_dim |
//!
//! and checked against burn's pool counters on wgpu by varying one dimension at a time
//! (crates/lorafit-train/tests/memory/model.rs; docs/benchmarks.md has the table).

use crate::arch::ModelArch;
use crate::memory::lora_modules;
use crate::plan::{Method, Plan, Precision, Stage};

/// The model types `lorafit train` runs (lorafit-train's `model::SUPPORTED`).
pub const TRAINABLE_MODEL_TYPES: &[&str] = &["llama", "mistral", "qwen2", "qwen3"];

/// Floats per token that burn's gradient checkpointing (`disable_gradient_checkpointing:
/// false`, burn's balanced strategy) keeps at the end of the forward pass, per unit of each
/// dimension: per layer × hidden, q width, kv width, intermediate, heads; and outside the layers
/// × hidden. Calibrated: fitted on the tune points of crates/lorafit-train/tests/memory/model.rs
/// (llama shapes varied one dimension at a time, `lora_target: all`); burn keeps the outputs of
/// compute-bound ops (the matmuls) to recompute the rest, which is more than it keeps without
/// checkpointing, not less.
pub const CHECKPOINTED: [f64; 6] = [6.11, 6.0, 7.75, 4.0, 1.0, 1.56];

/// `lorafit train`'s device memory at its peak, in bytes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LorafitMemory {
    /// The base on the device: f32, or for the linears bitsandbytes' packed 4-bit / int8 parts or
    /// 16-bit values (`bf16` / `fp16`).
    pub weights_bytes: u64,
    /// LoRA's A/B (f32), AdamW's two states, and the accumulated gradient when
    /// gradient_accumulation_steps > 1.
    pub adapter_bytes: u64,
    /// What autodiff keeps for the backward pass of one micro-batch.
    pub activation_bytes: u64,
    pub peak_bytes: u64,
    /// Rows in one micro-batch's forward (DPO / rm: chosen + rejected).
    pub rows: u64,
    /// What the model does not cover for this config.
    pub notes: Vec<String>,
}

/// Bytes of one linear weight `[out, in]` as lorafit-train stores it on the device.
fn linear_bytes(out: u64, inp: u64, plan: &Plan) -> u64 {
    let n = out * inp;
    match &plan.quant {
        None if plan.precision == Precision::Fp32 => 4 * n,
        // 16-bit, two values per 32-bit word.
        None => n.div_ceil(2) * 4,
        Some(q) if q.bits == 8 => n.div_ceil(4) * 4 + 4 * out,
        Some(q) => {
            let blocks = n.div_ceil(64);
            let codes = blocks * 32 + 16 * 4;
            codes
                + if q.double_quant {
                    blocks.div_ceil(4) * 4 + blocks.div_ceil(256) * 4 + 256 * 4
                } else {
                    blocks * 4 + 4 + 4
                }
        }
    }
}

/// `lorafit train`'s peak for `plan` on `arch`, or why it would not run it.
pub fn lorafit_stack(arch: &ModelArch, plan: &Plan) -> Result<LorafitMemory, String> {
    if !TRAINABLE_MODEL_TYPES.contains(&arch.model_type.as_str())
        || arch.moe.is_some()
        || arch.vision.is_some()
    {
        return Err(format!(
            "lorafit train runs {} (dense, text only); `{}` is estimated for PyTorch only",
            TRAINABLE_MODEL_TYPES.join(", "),
            arch.model_type
        ));
    }
    if plan.method != Method::Lora {
        return Err("lorafit train runs LoRA / QLoRA only".into());
    }
    let mut notes = Vec::new();
    let (h, inter) = (arch.hidden_size, arch.intermediate_size);
    let (q, kv) = (arch.q_dim(), arch.kv_dim());
    let (heads, kv_heads) = (arch.num_attention_heads, arch.num_key_value_heads);
    let layers = arch.num_layers;
    let r = plan.lora_rank;

    // Weights: embeddings, lm_head (untied), norms and biases in f32 (the embedding and lm_head
    // 16-bit with bf16 / fp16); the linears as stored.
    let linear_bytes_total: u64 = arch
        .layer_linears()
        .iter()
        .map(|l| l.layers * l.count * linear_bytes(l.out_features, l.in_features, plan))
        .sum();
    // Tied embeddings are one copy (lm_head; the embedding rows are read from it).
    let other = arch.total_params() - arch.layer_linear_weight_params();
    // 16-bit linears share one widening table: the f32 value of every 16-bit pattern; the
    // embedding and lm_head are stored 16-bit with them (2 bytes a value instead of 4; a tied
    // pair is one matrix).
    let sixteen_bit = plan.quant.is_none() && plan.precision != Precision::Fp32;
    let half_table = if sixteen_bit { 4 << 16 } else { 0 };
    let half_vocab = if sixteen_bit && h % 2 == 0 {
        arch.vocab_size * h * if arch.tie_word_embeddings { 1 } else { 2 }
    } else {
        0
    };
    let weights_bytes = linear_bytes_total + 4 * other - 2 * half_vocab + half_table;

    // Adapter: A [r, in] and B [out, r] per targeted linear, in 3 or 4 f32 copies.
    let targets = lora_modules(arch, plan).map_err(|e| e.to_string())?;
    let adapter_params: u64 = targets
        .iter()
        .map(|l| l.layers * l.count * r * (l.in_features + l.out_features))
        .sum::<u64>()
        + if plan.stage == Stage::Rm { h + 1 } else { 0 };
    let copies = 3 + u64::from(plan.grad_accum > 1);
    let adapter_bytes = 4 * copies * adapter_params;

    // Activations per token, summed over the layers.
    let layers_with = |names: &[&str]| {
        targets
            .iter()
            .filter(|l| names.contains(&l.name))
            .map(|l| l.layers)
            .max()
            .unwrap_or(0)
    };
    let dropout_on = plan.lora_dropout > 0.0;
    // Without dropout a LoRA layer keeps its input (once per shared input); with it, each LoRA
    // layer keeps its own mask and dropped input instead.
    let lora_inputs = u64::from(!dropout_on)
        * (layers_with(&["q_proj", "k_proj", "v_proj"]) * h
            + layers_with(&["o_proj"]) * q
            + layers_with(&["gate_proj", "up_proj"]) * h
            + layers_with(&["down_proj"]) * inter);
    let lora_products: u64 = targets.iter().map(|l| l.layers * l.count * r).sum();
    let dropout: u64 = if dropout_on {
        targets.iter().map(|l| l.layers * 2 * l.in_features).sum()
    } else {
        0
    };
    let qk_norm = if arch.qk_norm {
        q + kv + 3 * (heads + kv_heads)
    } else {
        0
    };
    let rm_head = if plan.stage == Stage::Rm { 2 * h } else { 0 };
    let per_token = if plan.gradient_checkpointing {
        let [ch, cq, ckv, ci, cheads, cout] = CHECKPOINTED;
        let per_layer = ch * h as f64
            + cq * q as f64
            + ckv * kv as f64
            + ci * inter as f64
            + cheads * heads as f64
            + 6.0
            + qk_norm as f64;
        (layers as f64 * per_layer + cout * h as f64).round() as u64
            + lora_products
            + dropout
            + 2 * arch.head_dim
            + rm_head
    } else {
        let per_layer = 2 * h + 6 + qk_norm + 2 * q + 2 * kv + heads + 4 * inter;
        layers * per_layer - h
            + lora_inputs
            + lora_products
            + dropout
            + 2 * h
            + 2 * arch.head_dim
            + rm_head
    };
    let rows = plan.batch_size
        * match plan.stage {
            Stage::Dpo | Stage::Rm => 2,
            _ => 1,
        };
    let tokens = rows * plan.cutoff_len;
    let activation_bytes = 4 * tokens * per_token;
    if plan.gradient_checkpointing && targets.len() < arch.all_lora_targets().len() {
        notes.push(
            "gradient checkpointing with a partial lora_target: fitted for `all` only".into(),
        );
    }
    // The largest linear weight, which a product that widens or dequantizes holds in f32.
    let widest = arch
        .layer_linears()
        .iter()
        .map(|l| l.out_features * l.in_features)
        .max()
        .unwrap_or(0);
    if half_table > 0 {
        notes.push(format!(
            "16-bit linears: each product widens one weight to f32 for its duration (the largest, {:.1} MiB, comes on top while it runs)",
            (4 * widest) as f64 / 1048576.0
        ));
    }
    if plan.quant.as_ref().is_some_and(|q| q.bits == 4) {
        notes.push(format!(
            "4-bit linears: a product that dequantizes (the CPU backends always; wgpu where `quant_kernel: auto` measured it faster, or `dequantize`) holds one f32 weight for its duration (the largest, {:.1} MiB, comes on top while it runs); `quant_kernel: fused` never does",
            (4 * widest) as f64 / 1048576.0
        ));
    }
    if plan.use_dora {
        notes.push("DoRA's extra activations are not modelled (LoRA's are counted)".into());
    }
    if plan.stage == Stage::Kto {
        notes.push("KTO: the KL batch runs without a graph; counted as its targets only".into());
    }
    Ok(LorafitMemory {
        weights_bytes,
        adapter_bytes,
        activation_bytes,
        peak_bytes: weights_bytes + adapter_bytes + activation_bytes,
        rows,
        notes,
    })
}
