//! The calculators users know, re-derived from their published rules so the page and
//! docs/validation.md can show them beside lorafit on the same points.
//!
//! * LLaMA-Factory's README "Hardware Requirement" table: per billion parameters, full (mixed)
//!   18 GB, full pure_bf16 8 GB, freeze/LoRA 2 GB, QLoRA 8-bit 1 GB, 4-bit 0.5 GB — independent of
//!   batch, length, rank and vocabulary.
//! * gpu_poor (RahulSChand/gpu_poor, src/App.js `getAllComputedData`): parameters counted as
//!   2·V·h + L·(4h² + 3hi) (no GQA, no tied embeddings), bf16 weights (QLoRA: a quarter), per-layer
//!   activations from h, i, heads and s (eager attention's s² terms always), × 0.15 with gradient
//!   checkpointing, fixed LoRA gradient/optimizer terms, and 650 MiB overhead. No logits.

use crate::arch::ModelArch;
use crate::plan::{Method, Plan, Precision};

/// LLaMA-Factory README rule of thumb, bytes (GB = 1e9).
pub fn llamafactory_rule_bytes(arch: &ModelArch, plan: &Plan) -> f64 {
    let x = arch.total_params() as f64 / 1e9;
    let gb_per_b = match (plan.method, plan.quant, plan.precision) {
        (Method::Full, _, Precision::PureBf16) => 8.0,
        (Method::Full, _, _) => 18.0,
        (_, Some(q), _) if q.bits == 8 => 1.0,
        (_, Some(_), _) => 0.5,
        _ => 2.0,
    };
    gb_per_b * x * 1e9
}

/// gpu_poor's training estimate, bytes (it works in MiB).
pub fn gpu_poor_bytes(arch: &ModelArch, plan: &Plan) -> f64 {
    let mib = 1024.0 * 1024.0;
    let (v, h, l, i, heads) = (
        arch.vocab_size as f64,
        arch.hidden_size as f64,
        arch.num_layers as f64,
        arch.intermediate_size as f64,
        arch.num_attention_heads as f64,
    );
    let params = v * h * 2.0 + l * 4.0 * h * h + l * 3.0 * i * h;
    let fb = 2.0;
    let s = plan.cutoff_len as f64;
    let b = plan.batch_size as f64;
    let qlora = plan.quant.is_some();
    let model = if qlora {
        params * fb / 4.0
    } else {
        params * fb
    };
    let attn = s * h * 3.0 * fb
        + s * h * 2.0 * fb
        + s * s * heads * fb
        + s * s * heads * 4.0
        + s * s * heads * fb
        + 3.0 * s * h * fb;
    let ffn = 2.0 * h * s * fb + fb * 5.0 * s * i + i * s * fb;
    let norm = s * 8.0 + s * h * fb * 6.0;
    let mut act = (attn + ffn + norm) * l * b;
    if plan.gradient_checkpointing {
        act *= 0.15;
    }
    let common = (15.0 * h + 6.0 * i) * l;
    let extra_qlora = 0.75 * common * 50.0 * (s / 50.0).max(1.0).sqrt() * b;
    let grad_opt = match plan.method {
        Method::Full => params * 3.0 * fb,
        _ if qlora => l * 8.0 * h * 0.5 * 4.0 * 3.0 + extra_qlora,
        _ => l * 8.0 * h * 2.0 * 4.0 * 3.0 * 2.0,
    };
    model + grad_opt + act + 650.0 * mib
}
