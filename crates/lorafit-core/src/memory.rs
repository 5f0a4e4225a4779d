//! The per-GPU memory model: what `torch.cuda.max_memory_allocated` / `max_memory_reserved` and
//! nvidia-smi report for the PyTorch + transformers + PEFT + bitsandbytes stack LLaMA-Factory runs.
//!
//! The step is modelled as three phases and the peak is the largest:
//! * **forward/backward boundary** — weights, optimizer states, (gradients when accumulating),
//!   autocast's bf16 copies of fp32 weights, saved activations (all layers, or the checkpointed
//!   layer inputs plus one recomputed layer), and the logits with their fp32 cross-entropy copies;
//! * **end of backward** — weights, states, all gradients (plus the tied embedding's second
//!   gradient while it is accumulated);
//! * **optimizer step** — weights, states, gradients and the optimizer's temporaries (torch's
//!   foreach AdamW holds one more fp32 tensor per parameter).
//!
//! The coefficients marked *calibrated* were fitted on the tuning half of our H100 measurements
//! (`data/validation/measured_h100.jsonl`); docs/validation.md shows the error on the held-out half.

use serde::Serialize;

use crate::arch::ModelArch;
use crate::error::Error;
use crate::plan::{Attention, Method, Optimizer, Plan, Precision};

/// Bytes per token per layer of saved activations, in units of the hidden size (bf16 compute).
/// Calibrated on the no-checkpointing LoRA points.
pub const ACT_PER_HIDDEN: f64 = 26.0;
/// Same, in units of the MLP intermediate size (gate, up, act(gate), product: 4 × 2 bytes).
pub const ACT_PER_INTERMEDIATE: f64 = 8.0;
/// Extra bytes per token per layer (× hidden) when the residual stream is fp32 (full fine-tuning
/// with fp32 master weights: the embeddings output fp32). Calibrated.
pub const ACT_FP32_RESIDUAL_PER_HIDDEN: f64 = 9.0;
/// Eager attention: bytes per score element (fp32 softmax output + its bf16 copy). Calibrated.
pub const EAGER_BYTES_PER_SCORE: f64 = 6.0;
/// Logits: bytes per (token × vocab) element at the start of backward: bf16 logits, the fp32 copy
/// `ForCausalLMLoss` makes, log-softmax output and its gradient. Calibrated.
pub const LOGIT_BYTES_PER_ELEMENT: f64 = 11.7;
/// cuBLAS workspaces and small buffers the allocator always holds. Calibrated.
pub const ALLOCATED_OVERHEAD_BYTES: f64 = 0.25e9;
/// Fraction of the transient (activation / logit / temporary) memory the caching allocator keeps
/// reserved beyond what is allocated at the peak. Calibrated.
pub const RESERVED_SLACK_FRACTION: f64 = 0.2;
/// Fixed allocator slack (block rounding, fragmentation). Calibrated.
pub const RESERVED_SLACK_BYTES: f64 = 0.6e9;
/// CUDA context + kernels, outside the allocator: nvidia-smi minus memory_reserved, measured with
/// torch 2.11 / CUDA 13 on an H100 (1,307,377,664 bytes on every point).
pub const CUDA_CONTEXT_BYTES: f64 = 1_307_377_664.0;

/// What the memory goes to, in bytes, at the peak. The parts add up to `peak_reserved_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Breakdown {
    /// Base model weights (quantized where asked) and autocast's bf16 working copies.
    pub weights: u64,
    /// LoRA / DoRA adapter parameters.
    pub adapter: u64,
    pub gradients: u64,
    /// Optimizer states and, at the optimizer step, its temporaries.
    pub optimizer: u64,
    /// Saved activations (and, for inference, the KV cache).
    pub activations: u64,
    /// Logits and the cross-entropy's fp32 copies.
    pub logits: u64,
    /// cuBLAS workspaces, allocator slack and the CUDA context.
    pub overhead: u64,
}

impl Breakdown {
    /// The part names, in display order (the JSON field names).
    pub const NAMES: [&'static str; 7] = [
        "weights",
        "adapter",
        "gradients",
        "optimizer",
        "activations",
        "logits",
        "overhead",
    ];

    /// (name, bytes) of every part, in display order.
    pub fn parts(&self) -> [(&'static str, u64); 7] {
        let v = [
            self.weights,
            self.adapter,
            self.gradients,
            self.optimizer,
            self.activations,
            self.logits,
            self.overhead,
        ];
        std::array::from_fn(|i| (Self::NAMES[i], v[i]))
    }

    /// Sum of the parts.
    pub fn total(&self) -> u64 {
        self.parts()
            .iter()
            .fold(0u64, |a, (_, b)| a.saturating_add(*b))
    }
}

/// The phase of the step where memory peaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    ForwardBackward,
    EndOfBackward,
    OptimizerStep,
    Inference,
}

/// Per-GPU memory of one configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Memory {
    pub total_params: u64,
    pub trainable_params: u64,
    /// `torch.cuda.max_memory_allocated()`.
    pub peak_allocated_bytes: u64,
    /// `torch.cuda.max_memory_reserved()`.
    pub torch_reserved_bytes: u64,
    /// What nvidia-smi shows: reserved + CUDA context (Contract 2's `peak_reserved_bytes`).
    pub peak_reserved_bytes: u64,
    pub breakdown: Breakdown,
    pub phase: Phase,
    /// Host RAM the run needs for ZeRO offload (0 without offload).
    pub cpu_offload_bytes: u64,
}

fn sat(x: f64) -> u64 {
    if x.is_nan() || x <= 0.0 {
        0
    } else {
        x.min(u64::MAX as f64) as u64
    }
}

/// Shapes of the trainable tensors: (rows, cols) per tensor, for the optimizer's per-tensor costs.
struct Trainable {
    params: f64,
    /// Largest single tensor (elements).
    largest: f64,
    /// Σ(rows + cols) over 2-D tensors + Σ n over 1-D: Adafactor's factored state size.
    factored: f64,
    /// The embedding table is trainable (tied: its gradient is accumulated twice).
    embedding_trainable: bool,
}

/// The layer indices `freeze_trainable_layers` trains (LLaMA-Factory: last N, negative = first N).
fn freeze_layers(arch: &ModelArch, n: i64) -> u64 {
    (n.unsigned_abs()).min(arch.num_layers)
}

/// LoRA adapter parameters and the per-layer modules it wraps.
pub fn lora_modules(arch: &ModelArch, plan: &Plan) -> Result<Vec<crate::arch::Linear>, Error> {
    let all = arch.layer_linears();
    if plan.lora_target.iter().any(|t| t == "all") {
        return Ok(all.into_iter().filter(|l| l.name != "gate").collect());
    }
    let mut out = Vec::new();
    for t in &plan.lora_target {
        match all.iter().find(|l| l.name == t.as_str()) {
            Some(l) => out.push(l.clone()),
            None => {
                return Err(Error::bad(
                    "lora_target",
                    t,
                    format!(
                        "`all` or module names of this model: {}",
                        arch.all_lora_targets().join(", ")
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// Adapter parameter count (A, B and DoRA magnitudes) over all layers.
pub fn adapter_params(arch: &ModelArch, plan: &Plan) -> Result<u64, Error> {
    let r = plan.lora_rank;
    let per_layer: u64 = lora_modules(arch, plan)?
        .iter()
        .map(|l| {
            l.count
                * (r * (l.in_features + l.out_features)
                    + if plan.use_dora { l.out_features } else { 0 })
        })
        .sum();
    Ok(per_layer * arch.num_layers)
}

fn trainable(arch: &ModelArch, plan: &Plan) -> Result<Trainable, Error> {
    let h = arch.hidden_size as f64;
    let linears = arch.layer_linears();
    let layer_factored: f64 = linears
        .iter()
        .map(|l| (l.count * (l.in_features + l.out_features)) as f64)
        .sum::<f64>()
        + arch.layer_norm_params() as f64;
    let largest_linear = linears
        .iter()
        .map(|l| (l.in_features * l.out_features) as f64)
        .fold(0.0, f64::max);
    Ok(match plan.method {
        Method::Full => Trainable {
            params: arch.total_params() as f64,
            largest: largest_linear.max(arch.embedding_params() as f64),
            factored: layer_factored * arch.num_layers as f64
                + (arch.vocab_size as f64 + h) * if arch.tie_word_embeddings { 1.0 } else { 2.0 },
            embedding_trainable: true,
        },
        Method::Freeze => {
            let n = freeze_layers(arch, plan.freeze_trainable_layers) as f64;
            Trainable {
                params: n * arch.layer_params() as f64,
                largest: largest_linear,
                factored: n * layer_factored,
                embedding_trainable: false,
            }
        }
        Method::Lora => {
            let mods = lora_modules(arch, plan)?;
            let r = plan.lora_rank as f64;
            Trainable {
                params: adapter_params(arch, plan)? as f64,
                largest: mods
                    .iter()
                    .map(|l| r * l.in_features.max(l.out_features) as f64)
                    .fold(0.0, f64::max),
                factored: arch.num_layers as f64
                    * mods
                        .iter()
                        .map(|l| {
                            l.count as f64 * (2.0 * r + (l.in_features + l.out_features) as f64)
                        })
                        .sum::<f64>(),
                embedding_trainable: false,
            }
        }
    })
}

/// Bytes of the quantized layer linears (weights + scales) for 4- or 8-bit.
fn quantized_bytes(arch: &ModelArch, bits: u8, double_quant: bool) -> f64 {
    let n = arch.layer_linear_weight_params() as f64;
    if bits == 8 {
        // LLM.int8: int8 weights + one fp32 scale per output row.
        let rows: f64 = arch.num_layers as f64
            * arch
                .layer_linears()
                .iter()
                .map(|l| (l.count * l.out_features) as f64)
                .sum::<f64>();
        n + 4.0 * rows
    } else {
        let blocks = n / 64.0;
        let scales = if double_quant {
            blocks + 4.0 * blocks / 256.0
        } else {
            4.0 * blocks
        };
        0.5 * n + scales
    }
}

/// Validate the numbers that must make sense for this model.
fn check_plan(arch: &ModelArch, plan: &Plan) -> Result<(), Error> {
    if plan.is_lora() {
        let min_dim = arch
            .hidden_size
            .min(arch.head_dim * arch.num_key_value_heads);
        if plan.lora_rank > arch.hidden_size {
            return Err(Error::bad(
                "lora_rank",
                plan.lora_rank,
                format!(
                    "at most the hidden size {} of this model (usually 8–256; smallest target dim {min_dim})",
                    arch.hidden_size
                ),
            ));
        }
    }
    if plan.method == Method::Freeze && plan.freeze_trainable_layers == 0 {
        return Err(Error::bad(
            "freeze_trainable_layers",
            0,
            "a non-zero number of layers",
        ));
    }
    if plan.quant.is_some_and(|q| q.bits == 8 && q.fp4) {
        return Err(Error::Conflict(
            "quantization_type fp4 applies to quantization_bit 4 only".into(),
        ));
    }
    if plan.zero.offload_param && plan.zero.stage != 3 {
        return Err(Error::Conflict(
            "parameter offload needs ZeRO stage 3".into(),
        ));
    }
    Ok(())
}

/// The memory model. `arch` is the model; `plan` the configuration.
pub fn estimate(arch: &ModelArch, plan: &Plan) -> Result<Memory, Error> {
    check_plan(arch, plan)?;
    if !plan.train {
        return Ok(inference(arch, plan));
    }
    let n_gpu = plan.num_gpus.max(1) as f64;
    let total = arch.total_params() as f64;
    let tr = trainable(arch, plan)?;
    let t = tr.params;
    let ds = plan.zero.deepspeed;
    let stage = if ds { plan.zero.stage } else { 0 };

    // Bytes per element of the compute dtype, of frozen weights, and of trainable parameters.
    let cb = if plan.precision == Precision::Fp32 {
        4.0
    } else {
        2.0
    };
    let wb = cb;
    let tb = match plan.precision {
        Precision::PureBf16 => 2.0,
        _ if ds && plan.precision == Precision::Mixed16 => 2.0, // DeepSpeed keeps bf16 params, fp32 master in the optimizer
        _ => 4.0,
    };
    let mixed = plan.precision == Precision::Mixed16;

    // Weights.
    let (mut base, adapter) = match plan.method {
        Method::Full => (total * tb, 0.0),
        Method::Freeze => ((total - t) * wb + t * tb, 0.0),
        Method::Lora => {
            let base = match plan.quant {
                Some(q) => {
                    let qn = arch.layer_linear_weight_params() as f64;
                    quantized_bytes(arch, q.bits, q.double_quant) + (total - qn) * wb
                }
                None => total * wb,
            };
            (base, t * tb)
        }
    };
    if stage == 3 {
        // Partitioned parameters plus the gathered working set of about two layers.
        let gathered = 2.0 * arch.layer_params() as f64 * 2.0;
        base = base / n_gpu + gathered;
    }
    if plan.zero.offload_param {
        base = 2.0 * 2.0 * arch.layer_params() as f64;
    }
    // autocast keeps bf16 copies of fp32 trainable weights alive through forward and backward.
    let cast = if mixed && !ds { 2.0 * t } else { 0.0 };

    // Gradients and optimizer.
    let mut grads = t * tb;
    let state_per_param = match plan.optimizer {
        Optimizer::AdamwTorch if ds && mixed => 12.0, // fp32 master + m + v
        Optimizer::AdamwTorch => 2.0 * tb,
        Optimizer::Adamw8bit | Optimizer::PagedAdamw8bit => {
            2.0 + if ds && mixed { 4.0 } else { 0.0 }
        }
        Optimizer::Sgd => {
            if ds && mixed {
                4.0
            } else {
                0.0
            }
        }
        Optimizer::Adafactor => {
            if ds && mixed {
                4.0
            } else {
                0.0
            }
        }
    };
    let mut states = state_per_param * t
        + if plan.optimizer == Optimizer::Adafactor {
            4.0 * tr.factored
        } else {
            0.0
        };
    let mut opt_temp = if ds {
        0.0
    } else {
        match plan.optimizer {
            Optimizer::AdamwTorch => t * tb,
            Optimizer::Adamw8bit | Optimizer::PagedAdamw8bit => 1.6 * 4.0 * tr.largest,
            Optimizer::Adafactor => 1.0 * 4.0 * tr.largest,
            Optimizer::Sgd => 0.0,
        }
    };
    let mut cpu = 0.0;
    if stage >= 1 {
        states /= n_gpu;
        opt_temp /= n_gpu;
    }
    if stage >= 2 {
        grads /= n_gpu;
    }
    if plan.zero.offload_optimizer {
        cpu += states * n_gpu + 2.0 * t; // states (all ranks) + the bf16 gradients copied over
        states = 0.0;
        opt_temp = 0.0;
    }
    if plan.zero.offload_param {
        cpu += 2.0 * total;
    }
    // Plain DDP keeps gradient buckets beside the gradients.
    let ddp_buckets = if plan.num_gpus > 1 && !ds { grads } else { 0.0 };

    // Activations of one micro-batch.
    let b = plan.batch_size as f64;
    let s = plan.cutoff_len as f64;
    let tokens = b * s;
    let h = arch.hidden_size as f64;
    let fp32_residual = plan.method == Method::Full && (tb == 4.0);
    let res_bytes = if fp32_residual { 4.0 } else { cb };
    let scale = cb / 2.0;
    let mut per_token_layer = scale
        * (ACT_PER_HIDDEN * h + ACT_PER_INTERMEDIATE * arch.active_intermediate() as f64)
        + if fp32_residual {
            ACT_FP32_RESIDUAL_PER_HIDDEN * h
        } else {
            0.0
        };
    if plan.is_lora() && plan.lora_dropout > 0.0 {
        // PEFT's dropout saves a dropped copy of each target's input and its mask.
        let ins: f64 = lora_modules(arch, plan)?
            .iter()
            .map(|l| l.in_features as f64)
            .sum();
        per_token_layer += ins * (cb + 1.0);
    }
    if plan.use_dora && plan.is_lora() {
        // DoRA computes the dense weight norm per module and keeps the base output for the rescale.
        let outs: f64 = lora_modules(arch, plan)?
            .iter()
            .map(|l| l.out_features as f64)
            .sum();
        per_token_layer += outs * cb;
    }
    let act_layer = tokens * per_token_layer;
    let attn_layer = if plan.attention == Attention::Eager {
        b * arch.num_attention_heads as f64 * s * s * EAGER_BYTES_PER_SCORE * scale
    } else {
        0.0
    };
    // Every layer keeps its activations, frozen ones too: LLaMA-Factory makes the embedding output
    // require grad, so autograd records the whole stack.
    let active_layers = arch.num_layers as f64;
    // fp32 compute: the logits are fp32 already (no extra copy) but every buffer is twice as wide.
    let logit_bytes = if cb == 4.0 {
        14.0
    } else {
        LOGIT_BYTES_PER_ELEMENT
    };
    let logits = logit_bytes * tokens * arch.vocab_size as f64;
    let (activations, logit_part) = if plan.gradient_checkpointing {
        let ckpt = active_layers * tokens * h * res_bytes;
        let recompute = act_layer + attn_layer;
        if logits >= recompute {
            (ckpt, logits)
        } else {
            (ckpt + recompute, 0.0)
        }
    } else {
        (active_layers * (act_layer + attn_layer), logits)
    };

    let persistent = base + adapter + states;
    let accum_grads = if plan.grad_accum > 1 {
        grads + ddp_buckets
    } else {
        0.0
    };
    // A tied embedding's gradient exists twice while the lm_head's is accumulated into it
    // (sharded like the other gradients under ZeRO-2/3).
    let tied_extra = if tr.embedding_trainable && arch.tie_word_embeddings {
        tb * arch.embedding_params() as f64 / if stage >= 2 { n_gpu } else { 1.0 }
    } else {
        0.0
    };
    let fwd = persistent + cast + accum_grads + activations + logit_part;
    let end_bwd = persistent + grads + ddp_buckets + tied_extra;
    let opt = persistent + grads + ddp_buckets + opt_temp;
    let (phase, peak) = [
        (Phase::ForwardBackward, fwd),
        (Phase::EndOfBackward, end_bwd),
        (Phase::OptimizerStep, opt),
    ]
    .into_iter()
    .fold((Phase::ForwardBackward, f64::MIN), |acc, x| {
        if x.1 > acc.1 { x } else { acc }
    });
    let allocated = peak + ALLOCATED_OVERHEAD_BYTES;
    let transient = (peak - persistent).max(0.0);
    let reserved = allocated + RESERVED_SLACK_FRACTION * transient + RESERVED_SLACK_BYTES;
    let smi = reserved + CUDA_CONTEXT_BYTES;

    let (g_part, o_part, w_extra, a_part, l_part) = match phase {
        Phase::ForwardBackward => (accum_grads, states, cast, activations, logit_part),
        Phase::EndOfBackward => (grads + ddp_buckets + tied_extra, states, 0.0, 0.0, 0.0),
        _ => (grads + ddp_buckets, states + opt_temp, 0.0, 0.0, 0.0),
    };
    let mut bd = Breakdown {
        weights: sat(base + w_extra),
        adapter: sat(adapter),
        gradients: sat(g_part),
        optimizer: sat(o_part),
        activations: sat(a_part),
        logits: sat(l_part),
        overhead: 0,
    };
    let smi_u = sat(smi);
    bd.overhead = smi_u.saturating_sub(bd.total());
    Ok(Memory {
        total_params: arch.total_params(),
        trainable_params: sat(t),
        peak_allocated_bytes: sat(allocated),
        torch_reserved_bytes: sat(reserved),
        peak_reserved_bytes: smi_u,
        breakdown: bd,
        phase,
        cpu_offload_bytes: sat(cpu),
    })
}

/// Inference: weights + KV cache for batch × cutoff_len tokens + one layer's transient + last-token logits.
fn inference(arch: &ModelArch, plan: &Plan) -> Memory {
    let cb = if plan.precision == Precision::Fp32 {
        4.0
    } else {
        2.0
    };
    let total = arch.total_params() as f64;
    let weights = match plan.quant {
        Some(q) => {
            let qn = arch.layer_linear_weight_params() as f64;
            quantized_bytes(arch, q.bits, q.double_quant) + (total - qn) * cb
        }
        None => total * cb,
    } / plan.num_gpus.max(1) as f64;
    let b = plan.batch_size as f64;
    let s = plan.cutoff_len as f64;
    let kv = 2.0 * arch.num_layers as f64 * arch.kv_dim() as f64 * cb * b * s
        / plan.num_gpus.max(1) as f64;
    let transient =
        b * s * (4.0 * arch.hidden_size as f64 + 2.0 * arch.active_intermediate() as f64) * cb
            + if plan.attention == Attention::Eager {
                b * arch.num_attention_heads as f64 * s * s * 6.0
            } else {
                0.0
            };
    let logits = b * arch.vocab_size as f64 * 4.0 * 2.0;
    let peak = weights + kv + transient + logits;
    let allocated = peak + ALLOCATED_OVERHEAD_BYTES;
    let reserved =
        allocated + RESERVED_SLACK_FRACTION * (transient + logits) + RESERVED_SLACK_BYTES;
    let smi = sat(reserved + CUDA_CONTEXT_BYTES);
    let mut bd = Breakdown {
        weights: sat(weights),
        activations: sat(kv + transient),
        logits: sat(logits),
        ..Breakdown::default()
    };
    bd.overhead = smi.saturating_sub(bd.total());
    Memory {
        total_params: arch.total_params(),
        trainable_params: 0,
        peak_allocated_bytes: sat(allocated),
        torch_reserved_bytes: sat(reserved),
        peak_reserved_bytes: smi,
        breakdown: bd,
        phase: Phase::Inference,
        cpu_offload_bytes: 0,
    }
}
