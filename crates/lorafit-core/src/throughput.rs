//! Time per step from FLOPs and a model-utilisation (MFU) curve calibrated on our H100
//! measurements of the PyTorch + PEFT stack, scaled to other GPUs by their bf16 peak.

use serde::Serialize;

use crate::arch::ModelArch;
use crate::plan::{Method, Plan, Precision, Stage};

/// Achieved MFU of transformers + PEFT LoRA with gradient checkpointing on an H100, by hidden
/// size: measured points (hidden size, MFU) from `data/validation/measured_h100.jsonl`, linearly
/// interpolated, flat outside. Calibrated: small models are dominated by kernel launches and the
/// logits, large ones approach the usual 35–40 %.
pub const MFU_BY_HIDDEN: &[(f64, f64)] = &[
    (896.0, 0.045),
    (1536.0, 0.105),
    (2048.0, 0.135),
    (3072.0, 0.19),
    (3584.0, 0.28),
    (4096.0, 0.30),
    (8192.0, 0.38),
];

/// Seconds per trainable parameter the optimizer step (plus autocast's weight casts, clipping and
/// zeroing) takes on an H100 (3.35 TB/s): memory-bound elementwise passes. Calibrated on the
/// full-fine-tuning points; scaled by memory bandwidth for other GPUs.
pub fn optimizer_seconds_per_param(opt: crate::plan::Optimizer) -> f64 {
    use crate::plan::Optimizer::*;
    match opt {
        AdamwTorch | Ademamix | AdamMini | Muon => 55e-12,
        Sgd | Lomo => 15e-12,
        OneState => 35e-12,
        Adamw8bit | PagedAdamw8bit | Adamw4bit | Ademamix8bit | OneState8bit | Adafactor => 100e-12,
    }
}

/// FLOPs and time of one optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepTime {
    /// Model FLOPs per trained token (forward, backward and recomputation).
    pub flops_per_token: f64,
    /// Tokens processed per optimizer step across all GPUs.
    pub tokens_per_step: u64,
    pub step_seconds: f64,
    /// Tokens per second across all GPUs.
    pub tokens_per_second: f64,
    /// MFU assumed.
    pub mfu: f64,
}

fn interp(table: &[(f64, f64)], x: f64) -> f64 {
    let first = table[0];
    let last = table[table.len() - 1];
    if x <= first.0 {
        return first.1;
    }
    if x >= last.0 {
        return last.1;
    }
    for w in table.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if x <= x1 {
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0);
        }
    }
    last.1
}

/// Forward FLOPs per token: 2 per active matmul weight (lm_head included) + causal attention.
pub fn forward_flops_per_token(arch: &ModelArch, seq_len: u64) -> f64 {
    let matmul = (arch.active_params()
        - arch.embedding_params()
        - arch.per_layer_embedding_params()
        - arch.layer_norm_params_total()
        - arch.vision_params()) as f64
        + if arch.tie_word_embeddings {
            arch.embedding_params() as f64
        } else {
            0.0
        };
    // QKᵀ and AV: 2·2·s·q_dim per token per layer, halved by the causal mask.
    // DeltaNet layers are linear in s: their chunked recurrence is ~4·64·(key + value width).
    let attn = 2.0 * seq_len as f64 * arch.q_dim() as f64 * arch.attention_layers() as f64;
    let linear = arch.linear_attention.as_ref().map_or(0.0, |la| {
        (arch.num_layers - arch.attention_layers()) as f64
            * 4.0
            * 64.0
            * (la.key_dim() + la.value_dim()) as f64
    });
    2.0 * matmul + attn + linear
}

/// The correction Llama 3.2 Vision's cross-attention layers need, per text token, for a sample
/// whose images give `patches` tower patches: their k / v projections read the image's projected
/// patches, not the text (so [`forward_flops_per_token`]'s per-token count of those weights is
/// replaced by one per patch), and every text token attends to all the patches, unmasked.
/// 0 for models without cross-attention.
pub fn cross_attention_flops_per_token(arch: &ModelArch, patches: u64, seq_len: u64) -> f64 {
    use crate::arch::{LayerKind, Mixer};
    let layers = arch
        .layer_kinds
        .iter()
        .filter(|k| k.mixer == Mixer::CrossAttention)
        .count() as f64;
    if layers == 0.0 {
        return 0.0;
    }
    let kind = LayerKind {
        mixer: Mixer::CrossAttention,
        moe: false,
        kv_shared: false,
    };
    let kv_weights: f64 = arch
        .kind_linears(kind)
        .iter()
        .filter(|l| l.name == "k_proj" || l.name == "v_proj")
        .map(|l| (l.in_features * l.out_features * l.count) as f64)
        .sum();
    let per_text_token = patches as f64 / seq_len.max(1) as f64;
    layers
        * (2.0 * kv_weights * (per_text_token - 1.0) + 4.0 * patches as f64 * arch.q_dim() as f64)
}

/// The step time of `plan` on a GPU with `bf16_tflops` peak and `bandwidth_gbps` memory bandwidth.
/// `trainable_params` is per GPU (after ZeRO sharding of the optimizer).
pub fn step_time(
    arch: &ModelArch,
    plan: &Plan,
    bf16_tflops: f64,
    bandwidth_gbps: f64,
    trainable_params: f64,
) -> StepTime {
    let fwd = forward_flops_per_token(arch, plan.cutoff_len);
    let recompute = if plan.gradient_checkpointing {
        1.0
    } else {
        0.0
    };
    let passes = match plan.method {
        // backward = input grads + weight grads.
        Method::Full => 3.0 + recompute,
        // frozen weights: backward computes input grads only.
        Method::Lora | Method::Oft => 2.0 + recompute,
        // LLaMA-Factory makes the embedding output require grad, so input gradients flow through
        // every layer; only the trainable layers add weight gradients.
        Method::Freeze => {
            let frac = (plan
                .freeze_trainable_layers
                .unsigned_abs()
                .min(arch.num_layers) as f64)
                / arch.num_layers as f64;
            2.0 + recompute + frac
        }
    };
    // Reference log-probs (DPO, KTO) are one more forward without gradients; KTO's KL half of the
    // batch runs forward only, like its reference.
    let passes = match plan.stage {
        Stage::Dpo if plan.reference_forward => passes + 1.0,
        Stage::Kto => passes / 2.0 + 1.5,
        _ => passes,
    };
    // A vision tower runs forward on every image / video patch (and backward when it trains).
    let media = crate::memory::media_tokens(arch, plan);
    let (patches, audio_positions) = (media.patches as f64, media.audio_positions as f64);
    let tower_passes = if plan.vision.freeze_tower || plan.method == Method::Freeze {
        1.0
    } else {
        passes
    };
    // An audio encoder (inside the tower's parameters) runs over its own positions instead.
    let vision = arch.vision.as_ref().map_or(0.0, |v| {
        let audio = v.audio.map_or(0, |a| a.params) as f64;
        2.0 * ((v.tower_params as f64 - audio) * patches + audio * audio_positions)
            / plan.cutoff_len.max(1) as f64
            * tower_passes
    });
    let cross = cross_attention_flops_per_token(arch, patches as u64, plan.cutoff_len);
    let flops_per_token = (fwd + cross) * passes + vision;
    let mut mfu = interp(MFU_BY_HIDDEN, arch.hidden_size as f64);
    match plan.method {
        // The curve was measured with LoRA on all 7 linear modules; each wrapped module adds two thin
        // matmuls, a scale and an add per pass (calibrated: q/v-only runs 1.55× faster).
        Method::Lora | Method::Oft => {
            let n = if plan.lora_target.iter().any(|t| t == "all") {
                arch.all_lora_targets().len()
            } else {
                plan.lora_target.len()
            } as f64;
            mfu *= (1.0 + 0.11 * 7.0) / (1.0 + 0.11 * n);
        }
        // Frozen layers run plain bf16 matmuls with no adapter overhead. Calibrated.
        Method::Freeze => mfu *= 1.6,
        Method::Full => {}
    }
    if plan.quant.is_some() || arch.stored_quant.is_some() {
        // bitsandbytes dequantizes every weight in every pass; measured 1.0–1.6× slower, worst on small models.
        let h = arch.hidden_size as f64;
        mfu /= 1.0 + 0.55 * ((4096.0 - h) / 2048.0).clamp(0.0, 1.0);
    }
    if plan.precision == Precision::Fp32 {
        // TF32 tensor cores: about half the bf16 rate.
        mfu *= 0.5;
    }
    let per_gpu = plan
        .sequences_per_micro_batch()
        .saturating_mul(plan.cutoff_len)
        .saturating_mul(plan.grad_accum);
    let tokens_per_step = per_gpu.saturating_mul(plan.num_gpus.max(1));
    let per_gpu_tokens = per_gpu as f64;
    let optimizer_seconds = trainable_params * optimizer_seconds_per_param(plan.optimizer) * 3350.0
        / bandwidth_gbps.max(1.0);
    // Eager attention writes and reads the b·heads·s² scores (bf16 + fp32 softmax + grads): memory-bound.
    let eager_seconds = if plan.attention == crate::plan::Attention::Eager {
        let scores =
            (plan.batch_size * arch.num_attention_heads) as f64 * (plan.cutoff_len as f64).powi(2);
        (24.0 + 8.0 * recompute) * scores * arch.attention_layers() as f64 * plan.grad_accum as f64
            / (bandwidth_gbps.max(1.0) * 1e9)
    } else {
        0.0
    };
    let step_seconds = per_gpu_tokens * flops_per_token / (bf16_tflops * 1e12 * mfu)
        + optimizer_seconds
        + eager_seconds;
    StepTime {
        flops_per_token,
        tokens_per_step,
        step_seconds,
        tokens_per_second: tokens_per_step as f64 / step_seconds,
        mfu,
    }
}
