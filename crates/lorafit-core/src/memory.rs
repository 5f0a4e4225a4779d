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

use crate::arch::media::AudioTokens;
use crate::arch::{LayerKind, Linear, Mixer, ModelArch};
use crate::error::Error;
use crate::plan::{Attention, Method, Optimizer, Plan, Precision, QuantMethod, Stage};

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
/// DeltaNet layers: copies of the q/k/v/z width saved per token (before and after the short
/// convolution). From the module's structure, not calibrated.
pub const LINEAR_ATTN_COPIES: f64 = 2.0;
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
    /// Host RAM the run needs beyond the model files: ZeRO / FSDP offload of states, gradients
    /// and parameters, and offloaded activation checkpoints (0 without offload).
    pub host_ram_bytes: u64,
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
    /// Of `params`, those in 2-D hidden matrices (the decoder layers' linears): Muon's share.
    hidden_matrix_params: f64,
}

/// The layer indices `freeze_trainable_layers` trains (LLaMA-Factory: last N, negative = first N).
fn freeze_layers(arch: &ModelArch, n: i64) -> u64 {
    (n.unsigned_abs()).min(arch.num_layers)
}

/// The linear modules a comma list names (`all`, HF module names), for `key`.
fn target_modules(
    arch: &ModelArch,
    targets: &[String],
    key: &str,
) -> Result<Vec<crate::arch::Linear>, Error> {
    let all = arch.layer_linears();
    if targets.iter().any(|t| t == "all") {
        let found: Vec<Linear> = all.iter().filter(|l| l.in_all).cloned().collect();
        if found.is_empty() {
            // LLaMA-Factory's find_all_linear_modules returns nothing and PEFT refuses an empty
            // target list (GPT-2: its projections are Conv1D, not nn.Linear).
            return Err(Error::bad(
                key,
                "all",
                format!(
                    "module names: `all` finds no nn.Linear in `{}`; name them: {}",
                    arch.model_type,
                    named_targets(&all).join(", ")
                ),
            ));
        }
        return Ok(found);
    }
    let mut out = Vec::new();
    for t in targets {
        let hits: Vec<Linear> = all
            .iter()
            .filter(|l| l.targetable && l.name == t.as_str())
            .cloned()
            .collect();
        match hits.is_empty() {
            false => out.extend(hits),
            true => {
                return Err(Error::bad(
                    key,
                    t,
                    format!(
                        "`all` or module names of this model: {}",
                        named_targets(&all).join(", ")
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// The distinct names `lora_target` may give: the modules PEFT wraps when named.
fn named_targets(all: &[Linear]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for l in all.iter().filter(|l| l.targetable) {
        if !names.contains(&l.name) {
            names.push(l.name);
        }
    }
    names
}

/// LoRA adapter parameters and the per-layer modules it wraps.
pub fn lora_modules(arch: &ModelArch, plan: &Plan) -> Result<Vec<crate::arch::Linear>, Error> {
    target_modules(arch, &plan.lora_target, "lora_target")
}

/// OFT's rotation block size for a module with `in_features` inputs.
fn oft_block(plan: &Plan, in_features: u64) -> u64 {
    match in_features.checked_div(plan.oft_rank) {
        Some(b) => b.max(1),
        None => plan.oft_block_size.clamp(1, in_features.max(1)),
    }
}

/// Adapter parameter count over all layers: LoRA's A, B (and DoRA magnitudes), or OFT's
/// skew-symmetric blocks (`in/b` blocks of `b(b−1)/2` each, PEFT's `oft_R`).
pub fn adapter_params(arch: &ModelArch, plan: &Plan) -> Result<u64, Error> {
    let r = plan.lora_rank;
    let decoder: u64 = lora_modules(arch, plan)?
        .iter()
        .map(|l| {
            l.count
                * l.layers
                * if plan.method == Method::Oft {
                    let b = oft_block(plan, l.in_features);
                    (l.in_features / b) * (b * b.saturating_sub(1) / 2)
                } else {
                    r * (l.in_features + l.out_features)
                        + if plan.use_dora { l.out_features } else { 0 }
                }
        })
        .sum();
    Ok(decoder + vision_adapter_params(arch, plan))
}

/// LoRA parameters in the vision tower and projector: LLaMA-Factory wraps the tower's linears
/// only when `freeze_vision_tower: false` (and the projector's when it is not frozen and its
/// names are targets).
fn vision_adapter_params(arch: &ModelArch, plan: &Plan) -> u64 {
    let Some(v) = &arch.vision else { return 0 };
    if plan.method != Method::Lora {
        return 0;
    }
    let all = plan.lora_target.iter().any(|t| t == "all");
    let named = |l: &Linear| all || plan.lora_target.iter().any(|t| t == l.name);
    let r = plan.lora_rank;
    let per = |l: &Linear| {
        l.layers
            * (r * (l.in_features + l.out_features)
                + if plan.use_dora { l.out_features } else { 0 })
    };
    let mut n = 0;
    if !plan.vision.freeze_tower {
        n += v
            .block_linears
            .iter()
            .filter(|l| named(l))
            .map(per)
            .sum::<u64>();
    }
    if !plan.vision.freeze_projector {
        // `all` never names the projector (LLaMA-Factory forbids its keys); a name shared with
        // a wrapped module does.
        let names: Vec<&str> = if all {
            let mut n: Vec<&str> = arch.all_lora_targets();
            if !plan.vision.freeze_tower {
                n.extend(v.block_linears.iter().map(|l| l.name));
            }
            n
        } else {
            plan.lora_target.iter().map(String::as_str).collect()
        };
        n += v
            .projector_linears
            .iter()
            .filter(|l| names.contains(&l.name))
            .map(per)
            .sum::<u64>();
    }
    n
}

/// Adafactor's factored state size of the trained vision parameters.
fn vision_factored(arch: &ModelArch, plan: &Plan) -> f64 {
    let Some(v) = &arch.vision else { return 0.0 };
    let f = |ls: &[Linear]| -> f64 {
        ls.iter()
            .map(|l| (l.layers * (l.in_features + l.out_features)) as f64)
            .sum()
    };
    let mut n = 0.0;
    if !plan.vision.freeze_tower {
        n += f(&v.block_linears);
    }
    if !plan.vision.freeze_projector {
        n += f(&v.projector_linears);
    }
    n
}

/// Vision parameters that train under full / freeze tuning (`freeze_vision_tower`,
/// `freeze_multi_modal_projector`; LLaMA-Factory's defaults freeze both).
fn vision_trainable_params(arch: &ModelArch, plan: &Plan) -> f64 {
    let Some(v) = &arch.vision else { return 0.0 };
    let mut n = 0.0;
    if !plan.vision.freeze_tower && plan.method == Method::Full {
        n += v.tower_params as f64;
    }
    if !plan.vision.freeze_projector {
        n += v.projector_params as f64;
    }
    n
}

/// The linears `self_attn` names in `freeze_trainable_modules` / `galore_target`; the rest of a
/// layer's linears are `mlp`.
const ATTENTION_LINEARS: [&str; 5] = ["q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj"];

/// Parameters of one layer that `freeze_trainable_modules` selects (LLaMA-Factory matches the
/// names inside each trained layer: `self_attn`, `mlp`, a linear's name, a norm's name).
fn freeze_module_params(arch: &ModelArch, modules: &[String], layers: i64) -> Result<f64, Error> {
    // A name must exist in some layer kind (DeltaNet's projections exist only in its layers).
    let mut total = 0.0;
    for m in modules {
        let mut found = false;
        for (kind, _) in arch.kind_counts() {
            found |= freeze_kind_params(arch, m, kind).is_some();
        }
        if !found {
            return Err(Error::bad(
                "freeze_trainable_modules",
                m,
                format!(
                    "`all`, self_attn, mlp, input_layernorm, post_attention_layernorm or a linear of this model: {}",
                    arch.all_lora_targets().join(", ")
                ),
            ));
        }
        for (kind, n) in arch.trained_layer_kinds(layers) {
            total += n as f64 * freeze_kind_params(arch, m, kind).unwrap_or(0.0);
        }
    }
    Ok(total)
}

/// Parameters one `freeze_trainable_modules` name selects in a layer of `kind` (None: the
/// name is not in such a layer).
fn freeze_kind_params(arch: &ModelArch, module: &str, kind: LayerKind) -> Option<f64> {
    let linears = arch.kind_linears(kind);
    let sum = |pred: &dyn Fn(&Linear) -> bool| -> f64 {
        linears
            .iter()
            .filter(|l| pred(l))
            .map(|l| (l.weight_params() + l.bias_params()) as f64)
            .sum()
    };
    let mixer = |l: &Linear| ATTENTION_LINEARS.contains(&l.name) || is_mixer_linear(l.name);
    // The mixer's 1-D parameters: everything but the two layer norms and router biases.
    let norms = 2.0 * arch.norm_width() as f64;
    let other = arch.kind_other_params(kind) as f64;
    let mixer_other = (other - norms).max(0.0);
    Some(match module {
        "all" => arch.kind_params(kind) as f64,
        "self_attn" | "attn" | "attention"
            if matches!(kind.mixer, Mixer::Attention | Mixer::GlobalAttention) =>
        {
            sum(&mixer) + mixer_other
        }
        "linear_attn" if kind.mixer == Mixer::LinearAttention => sum(&mixer) + mixer_other,
        "cross_attn" if kind.mixer == Mixer::CrossAttention => sum(&mixer) + mixer_other,
        "mlp" | "block_sparse_moe" | "feed_forward" => sum(&|l| !mixer(l)),
        "input_layernorm" | "post_attention_layernorm" => arch.norm_width() as f64,
        name if linears.iter().any(|l| l.name == name) => sum(&|l| l.name == name),
        _ => return None,
    })
}

/// Linears of the token mixer beyond q/k/v/o: MLA's low-rank projections, DeltaNet's.
fn is_mixer_linear(name: &str) -> bool {
    name.starts_with("q_a_")
        || name.starts_with("q_b_")
        || name.starts_with("kv_")
        || name.starts_with("in_proj")
        || name == "out_proj"
}

/// Parameters `freeze_extra_modules` adds (modules outside the decoder layers).
fn freeze_extra_params(arch: &ModelArch, modules: &[String]) -> Result<(f64, bool), Error> {
    extra_params(arch, modules, "freeze_extra_modules")
}

/// LoRA / OFT: parameters of the whole modules PEFT trains beside the adapter
/// (`modules_to_save`; 0 for other methods).
pub fn modules_to_save_params(arch: &ModelArch, plan: &Plan) -> Result<u64, Error> {
    if !plan.is_adapter() || plan.modules_to_save.is_empty() {
        return Ok(0);
    }
    Ok(extra_params(arch, &plan.modules_to_save, "additional_target")?.0 as u64)
}

/// Parameters of modules outside the decoder layers named in `key` (a tied lm_head counts the
/// embedding's), and whether the embedding is among them.
fn extra_params(arch: &ModelArch, modules: &[String], key: &str) -> Result<(f64, bool), Error> {
    let mut total = 0.0;
    let mut embedding = false;
    for m in modules {
        total += match m.as_str() {
            "embed_tokens" | "wte" => {
                embedding = true;
                arch.embedding_params() as f64
            }
            "lm_head" | "output" => {
                if arch.tie_word_embeddings {
                    embedding = true;
                    arch.embedding_params() as f64
                } else {
                    arch.lm_head_params() as f64
                }
            }
            "norm" | "final_layernorm" => arch.hidden_size as f64,
            other => {
                return Err(Error::bad(key, other, "embed_tokens, lm_head or norm"));
            }
        };
    }
    Ok((total, embedding))
}

fn trainable(arch: &ModelArch, plan: &Plan) -> Result<Trainable, Error> {
    let h = arch.hidden_size as f64;
    let linears = arch.layer_linears();
    let layers = arch.num_layers.max(1) as f64;
    let decoder_factored: f64 = linears
        .iter()
        .map(|l| (l.layers * l.count * (l.in_features + l.out_features)) as f64)
        .sum::<f64>()
        + arch.layer_norm_params_total() as f64;
    let largest_linear = linears
        .iter()
        .map(|l| (l.in_features * l.out_features) as f64)
        .fold(0.0, f64::max);
    let vision = vision_trainable_params(arch, plan);
    let language = arch.language_params() as f64;
    let mut tr = match plan.method {
        Method::Full => {
            let lm = if plan.vision.freeze_language {
                0.0
            } else {
                language
            };
            Trainable {
                params: lm + vision,
                largest: largest_linear.max(arch.embedding_params() as f64),
                factored: decoder_factored
                    + (arch.vocab_size as f64 + h)
                        * if arch.tie_word_embeddings { 1.0 } else { 2.0 }
                    + vision_factored(arch, plan),
                embedding_trainable: !plan.vision.freeze_language,
                hidden_matrix_params: arch.layer_linear_weight_params() as f64,
            }
        }
        Method::Freeze => {
            let n = arch
                .trained_layer_kinds(plan.freeze_trainable_layers)
                .iter()
                .map(|(_, c)| *c)
                .sum::<u64>() as f64;
            let in_layers = freeze_module_params(
                arch,
                &plan.freeze_trainable_modules,
                plan.freeze_trainable_layers,
            )?;
            let (extra, embedding) = freeze_extra_params(arch, &plan.freeze_extra_modules)?;
            let layer_matrices = arch.layer_linear_weight_params() as f64 / layers;
            Trainable {
                params: in_layers + extra + vision,
                largest: if embedding {
                    largest_linear.max(arch.embedding_params() as f64)
                } else {
                    largest_linear
                },
                factored: n / layers * decoder_factored
                    + extra.min(2.0 * (arch.vocab_size as f64 + h)),
                embedding_trainable: embedding,
                hidden_matrix_params: in_layers.min(n * layer_matrices),
            }
        }
        Method::Lora | Method::Oft => {
            let mods = lora_modules(arch, plan)?;
            let r = plan.lora_rank as f64;
            let largest = |l: &crate::arch::Linear| {
                if plan.method == Method::Oft {
                    let b = oft_block(plan, l.in_features) as f64;
                    (l.in_features as f64 / b) * b * (b - 1.0) / 2.0
                } else {
                    r * l.in_features.max(l.out_features) as f64
                }
            };
            // PEFT's `modules_to_save`: a trainable copy of each (a tied head gets its own), in
            // fp32 beside the frozen original; the largest is at most one vocabulary table.
            let saved = modules_to_save_params(arch, plan)? as f64;
            let saved_largest = saved.min(arch.embedding_params() as f64);
            let params = adapter_params(arch, plan)? as f64 + vision + saved;
            Trainable {
                params,
                largest: mods.iter().map(largest).fold(saved_largest, f64::max),
                factored: mods
                    .iter()
                    .map(|l| {
                        (l.layers * l.count) as f64
                            * (2.0 * r + (l.in_features + l.out_features) as f64)
                    })
                    .sum::<f64>(),
                embedding_trainable: false,
                hidden_matrix_params: 0.0,
            }
        }
    };
    if matches!(plan.stage, Stage::Rm | Stage::Ppo) {
        // TRL's value head: a Linear(hidden, 1) with bias, always trained.
        tr.params += h + 1.0;
    }
    Ok(tr)
}

/// Optimizer state bytes of the matrices GaLore / APOLLO project (instead of 2 full states):
/// per targeted [out, in] matrix, 2 states of rank × max(out, in) (+ GaLore's projection
/// rank × min(out, in), fp32), scaled by `state_bytes` per element; returns (states, params
/// covered).
fn low_rank_states(
    arch: &ModelArch,
    plan: &Plan,
    lr: &crate::plan::LowRankOptimizer,
    state_bytes: f64,
) -> Result<(f64, f64), Error> {
    let mods = target_modules(arch, &lr.target, &format!("{}_target", lr.kind)).or_else(|e| {
        // LLaMA-Factory also takes `mlp` / `self_attn` style names here.
        let attn = ATTENTION_LINEARS;
        let all = arch.layer_linears();
        let mut out = Vec::new();
        for t in &lr.target {
            match t.as_str() {
                "self_attn" | "attn" => {
                    out.extend(all.iter().filter(|l| attn.contains(&l.name)).cloned())
                }
                "mlp" => out.extend(
                    all.iter()
                        .filter(|l| !attn.contains(&l.name) && l.targetable)
                        .cloned(),
                ),
                _ => return Err(e.clone()),
            }
        }
        Ok(out)
    })?;
    let trained_fraction = match plan.method {
        Method::Freeze => {
            freeze_layers(arch, plan.freeze_trainable_layers) as f64 / arch.num_layers.max(1) as f64
        }
        _ => 1.0,
    };
    let r = lr.rank as f64;
    let (mut states, mut covered) = (0.0, 0.0);
    for l in &mods {
        let (big, small) = (
            l.in_features.max(l.out_features) as f64,
            l.in_features.min(l.out_features) as f64,
        );
        let c = (l.count * l.layers) as f64 * trained_fraction;
        states += c
            * (2.0 * r.min(small) * big * state_bytes
                + if lr.kind == "galore" {
                    4.0 * r.min(small) * small
                } else {
                    0.0
                });
        covered += c * big * small;
    }
    Ok((states, covered))
}

/// Bytes of the quantized layer linears (weights + scales).
fn quantized_bytes(arch: &ModelArch, q: crate::plan::Quant) -> f64 {
    let n = arch.layer_linear_weight_params() as f64;
    let rows: f64 = arch
        .layer_linears()
        .iter()
        .map(|l| (l.layers * l.count * l.out_features) as f64)
        .sum::<f64>();
    match (q.method, q.bits) {
        // LLM.int8 / EETQ: int8 weights + one scale per output row.
        (QuantMethod::Bnb | QuantMethod::Eetq, 8) => n + 4.0 * rows,
        // HQQ: codes + fp16 scale and zero per group of 64.
        (QuantMethod::Hqq, bits) => n * bits as f64 / 8.0 + 4.0 * n / 64.0,
        // GPTQ / AWQ: codes + fp16 scale and packed zero per group of 128.
        (QuantMethod::PreQuantized, bits) => n * bits as f64 / 8.0 + 2.5 * n / 128.0,
        _ => {
            let blocks = n / 64.0;
            let scales = if q.double_quant {
                blocks + 4.0 * blocks / 256.0
            } else {
                4.0 * blocks
            };
            0.5 * n + scales
        }
    }
}

/// Bytes of the frozen base: a pre-quantized checkpoint as stored (LLaMA-Factory ignores
/// `quantization_bit` for those), else quantized at load as `quantization_bit` says, else
/// `bytes` (the compute dtype) per parameter. Embeddings, norms and lm_head stay 16-bit.
fn frozen_weight_bytes(arch: &ModelArch, plan: &Plan, bytes: f64) -> f64 {
    let total = arch.total_params() as f64;
    let qn = arch.layer_linear_weight_params() as f64;
    match (&arch.stored_quant, plan.quant) {
        (Some(sq), _) => qn * sq.bytes_per_param + (total - qn) * bytes,
        (None, Some(q)) => quantized_bytes(arch, q) + (total - qn) * bytes,
        (None, None) => total * bytes,
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
    if let Some(sq) = &arch.stored_quant
        && !plan.is_adapter()
        && plan.train
    {
        return Err(Error::Conflict(format!(
            "this checkpoint is pre-quantized (quant_method {}): train it with finetuning_type lora or oft, not {:?}",
            sq.method, plan.method
        ).to_lowercase()));
    }
    let dataset_videos = plan
        .vision
        .dataset
        .as_ref()
        .and_then(|rows| rows.iter().map(|r| r.videos.len() as u64).max());
    if let Some(v) = &arch.vision
        && dataset_videos.unwrap_or(plan.vision.videos_per_sample) > 0
        && v.video_tokens(None, plan.vision.video_seconds, &plan.vision.video)
            .is_none()
    {
        return Err(Error::Conflict(format!(
            "{}: lorafit models video tokens for the Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5, InternVL and LLaVA-NeXT-Video towers only (GLM-4.1V's video sampling is not modelled), not this {:?} tower",
            match dataset_videos {
                Some(n) => format!("the dataset has up to {n} video(s) per sample"),
                None => format!("videos_per_sample {}", plan.vision.videos_per_sample),
            },
            v.kind
        )));
    }
    let dataset_audios = plan
        .vision
        .dataset
        .as_ref()
        .and_then(|rows| rows.iter().map(|r| r.audios.len() as u64).max());
    let audios = dataset_audios.unwrap_or(plan.vision.audios_per_sample);
    let audio = arch.vision.as_ref().and_then(|v| v.audio.as_ref());
    let given = || match dataset_audios {
        Some(n) => format!("the dataset has up to {n} audio(s) per sample"),
        None => format!("audios_per_sample {}", plan.vision.audios_per_sample),
    };
    if audios > 0 && audio.is_none() {
        return Err(Error::Conflict(format!(
            "{}, but this model has no audio encoder (LLaMA-Factory: \"This model does not support audio input\"); lorafit models Qwen2-Audio's, Qwen2.5-Omni's and Gemma 4 E2B / E4B's",
            given()
        )));
    }
    if let Some(v) = &arch.vision
        && !v.kind.takes_images()
    {
        let images = plan.vision.dataset.as_ref().map_or(
            plan.vision.images_per_sample + plan.vision.videos_per_sample,
            |rows| {
                rows.iter()
                    .map(|r| (r.images.len() + r.videos.len()) as u64)
                    .max()
                    .unwrap_or(0)
            },
        );
        if images > 0 {
            return Err(Error::Conflict(
                "Qwen2-Audio takes audio only: images and videos need a vision-language model (LLaMA-Factory: \"This model does not support image input\")".into(),
            ));
        }
    }
    if audios > 0
        && plan.vision.audio_rate != 16000
        && audio.is_some_and(|a| a.kind != crate::arch::vision::AudioKind::Gemma4)
    {
        return Err(Error::Conflict(format!(
            "audio_sampling_rate {}: Qwen2-Audio's and Qwen2.5-Omni's Whisper feature extractor takes 16000 Hz only (it raises on any other rate)",
            plan.vision.audio_rate
        )));
    }
    let media = media_tokens(arch, plan);
    if media.tokens() > plan.cutoff_len && plan.train {
        let mut parts = Vec::new();
        if media.images > 0 {
            parts.push(format!(
                "{} image(s) per sample = {} tokens (image_max_pixels {})",
                media.images, media.image_tokens, plan.vision.image.max_pixels
            ));
        }
        if media.videos > 0 {
            parts.push(format!(
                "{} video(s) per sample = {} tokens ({} frames each, video_max_pixels {}, video_fps {}, video_maxlen {})",
                media.videos,
                media.video_tokens,
                media.video_frames,
                plan.vision.video.max_pixels,
                plan.vision.video.fps,
                plan.vision.video.maxlen
            ));
        }
        if media.audios > 0 {
            parts.push(format!(
                "{} audio(s) per sample = {} tokens",
                media.audios, media.audio_tokens
            ));
        }
        let total = if parts.len() > 1 {
            format!(" ({} tokens together)", media.tokens())
        } else {
            String::new()
        };
        return Err(Error::Conflict(format!(
            "{}{total}, more than cutoff_len {}: LLaMA-Factory would cut image / video / audio tokens off; raise cutoff_len or lower the pixel / frame limits",
            parts.join(" and "),
            plan.cutoff_len
        )));
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
    if plan
        .low_rank_optimizer
        .as_ref()
        .is_some_and(|l| l.layerwise)
        && plan.grad_accum > 1
    {
        return Err(Error::Conflict(
            "layer-wise GaLore / APOLLO does not support gradient_accumulation_steps > 1 (LLaMA-Factory)"
                .into(),
        ));
    }
    Ok(())
}

/// The images', videos' and audios' share of one training sequence.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaShare {
    pub images: u64,
    pub image_tokens: u64,
    pub videos: u64,
    pub video_tokens: u64,
    /// Frames of one video as the processor receives them.
    pub video_frames: u64,
    /// Patches the vision tower processes for the sequence.
    pub patches: u64,
    pub audios: u64,
    pub audio_tokens: u64,
    /// Positions the audio encoder processes for the sequence.
    pub audio_positions: u64,
}

impl MediaShare {
    /// Image + video + audio tokens in the sequence (inside cutoff_len).
    pub fn tokens(&self) -> u64 {
        self.image_tokens + self.video_tokens + self.audio_tokens
    }

    fn add_audio(&mut self, t: AudioTokens, n: u64) {
        self.audios += n;
        self.audio_tokens += t.tokens() * n;
        self.audio_positions += t.positions * n;
    }
}

/// Image and video tokens and tower patches per sequence for this plan (zeros without a tower):
/// from the dataset's rows when their headers were read (the row with the most tokens), else
/// from `images_per_sample` / `videos_per_sample`.
pub fn media_tokens(arch: &ModelArch, plan: &Plan) -> MediaShare {
    let Some(v) = &arch.vision else {
        return MediaShare::default();
    };
    let vp = &plan.vision;
    if let Some(rows) = &vp.dataset {
        return largest_row(v, vp, rows)
            .map(|row| row_media(v, vp, row))
            .unwrap_or_default();
    }
    let mut m = MediaShare::default();
    if vp.images_per_sample > 0 {
        let (t, p) = v.image_tokens(&vp.image);
        m.images = vp.images_per_sample;
        m.image_tokens = t * vp.images_per_sample;
        m.patches += p * vp.images_per_sample;
    }
    if vp.videos_per_sample > 0
        && let Some(t) = v.video_tokens(None, vp.video_seconds, &vp.video)
    {
        m.videos = vp.videos_per_sample;
        m.video_tokens = t.tokens() * vp.videos_per_sample;
        m.video_frames = t.frames;
        m.patches += t.grid.patches() * vp.videos_per_sample;
    }
    if vp.audios_per_sample > 0
        && let Some(t) = v.audio_tokens(None, vp.audio_seconds, vp.audio_rate)
    {
        m.add_audio(t, vp.audios_per_sample);
    }
    m
}

/// Keep only the dataset row that [`media_tokens`] picks for this model, so the estimates that
/// follow (and the batch / cutoff searches, which run many) do not walk every row again.
pub fn keep_largest_media_row(arch: &ModelArch, plan: &mut Plan) {
    let (Some(v), Some(rows)) = (&arch.vision, &plan.vision.dataset) else {
        return;
    };
    let largest = largest_row(v, &plan.vision, rows).cloned();
    plan.vision.dataset = Some(largest.into_iter().collect());
}

/// The row with the most image + video + audio tokens (then tower patches).
fn largest_row<'a>(
    v: &crate::arch::Vision,
    vp: &crate::plan::VisionPlan,
    rows: &'a [crate::arch::media::SampleMedia],
) -> Option<&'a crate::arch::media::SampleMedia> {
    rows.iter().max_by_key(|row| {
        let m = row_media(v, vp, row);
        // Then the most audios, so that a model without an audio encoder keeps a row that has
        // them and says so.
        (m.tokens(), m.patches + m.audio_positions, row.audios.len())
    })
}

/// One dataset row: each image at its own size (Qwen-VL family; other towers' counts do not
/// depend on it), each video from its header.
fn row_media(
    v: &crate::arch::Vision,
    vp: &crate::plan::VisionPlan,
    row: &crate::arch::media::SampleMedia,
) -> MediaShare {
    let mut m = MediaShare {
        images: row.images.len() as u64,
        videos: row.videos.len() as u64,
        ..MediaShare::default()
    };
    for &(w, h) in &row.images {
        let (t, p) = v.sized_image_tokens(w, h, &vp.image);
        m.image_tokens += t;
        m.patches += p;
    }
    for file in &row.videos {
        if let Some(t) = v.video_tokens(Some(file), vp.video_seconds, &vp.video) {
            m.video_tokens += t.tokens();
            m.patches += t.grid.patches();
            m.video_frames = m.video_frames.max(t.frames);
        }
    }
    for file in &row.audios {
        if let Some(t) = v.audio_tokens(Some(file), vp.audio_seconds, vp.audio_rate) {
            m.add_audio(t, 1);
        }
    }
    m
}

/// (all layers, checkpointed inputs, one layer) of a trained vision tower's saved activations
/// for `b` sequences; zeros when the tower is frozen (its forward builds no graph).
fn vision_activations(
    arch: &ModelArch,
    plan: &Plan,
    b: f64,
    scale: f64,
    cb: f64,
) -> (f64, f64, f64) {
    let Some(v) = &arch.vision else {
        return (0.0, 0.0, 0.0);
    };
    if plan.vision.freeze_tower || plan.method == Method::Freeze {
        return (0.0, 0.0, 0.0);
    }
    let m = media_tokens(arch, plan);
    let patches = m.patches as f64 * b;
    let per_layer = patches
        * scale
        * (ACT_PER_HIDDEN * v.hidden_size as f64
            + ACT_PER_INTERMEDIATE * v.intermediate_size as f64);
    let depth = v.depth as f64;
    // An audio encoder's blocks save the same per position as a vision block.
    let (mut all, mut inputs, mut one) = (
        depth * per_layer,
        depth * patches * v.hidden_size as f64 * cb,
        per_layer,
    );
    if let Some(a) = &v.audio {
        let positions = m.audio_positions as f64 * b;
        let per = positions
            * scale
            * (ACT_PER_HIDDEN * a.hidden_size as f64
                + ACT_PER_INTERMEDIATE * a.intermediate_size as f64);
        all += a.depth as f64 * per;
        inputs += a.depth as f64 * positions * a.hidden_size as f64 * cb;
        one = one.max(per);
    }
    (all, inputs, one)
}

/// Liger's fused linear cross-entropy: tokens per chunk (`next_power_of_2(⌈BT / ⌈V / H⌉⌉)`).
fn liger_chunk_tokens(tokens: f64, arch: &ModelArch) -> f64 {
    let ratio = (arch.vocab_size as f64 / arch.hidden_size as f64)
        .ceil()
        .max(1.0);
    (tokens / ratio).ceil().max(1.0).log2().ceil().exp2()
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
    let stage = if plan.zero.sharded() {
        plan.zero.stage
    } else {
        0
    };

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

    // Weights (a DPO / KTO reference copy is frozen, in the compute dtype).
    let frozen_base = frozen_weight_bytes(arch, plan, wb);
    let vision_trained = vision_trainable_params(arch, plan);
    let (mut base, adapter) = match plan.method {
        Method::Full if arch.vision.is_none() => (total * tb, 0.0),
        Method::Full | Method::Freeze => ((total - t).max(0.0) * wb + t * tb, 0.0),
        // A trained projector is counted with the adapter, not twice.
        Method::Lora | Method::Oft => (frozen_base - vision_trained * wb, t * tb),
    };
    let reference = if plan.reference_model {
        total * wb
    } else {
        0.0
    };
    if stage == 3 {
        // Partitioned parameters plus the gathered working set of about two layers.
        let gathered = 2.0 * arch.layer_params() as f64 * 2.0;
        base = base / n_gpu + gathered;
    }
    let reference = if stage == 3 {
        reference / n_gpu
    } else {
        reference
    };
    if plan.zero.offload_param {
        base = 2.0 * 2.0 * arch.layer_params() as f64;
    }
    base += reference;
    // autocast keeps bf16 copies of fp32 trainable weights alive through forward and backward
    // (FSDP's mixed precision casts per wrapped unit instead).
    let cast = if mixed && !plan.zero.sharded() {
        2.0 * t
    } else {
        0.0
    };

    // BAdam trains one block (a layer, or a ratio of each matrix) at a time: gradients and
    // optimizer states exist for that block only, with an fp32 master copy under bf16.
    let opt_params = match plan.badam {
        Some(b) => match b.update_ratio {
            Some(r) => r * t,
            None => arch.layer_params() as f64,
        },
        None => t,
    };
    let badam_master = match plan.badam {
        Some(_) if tb < 4.0 => 4.0 * opt_params,
        _ => 0.0,
    };

    // Gradients and optimizer.
    let mut grads = match plan.badam {
        Some(b) if b.update_ratio.is_none() => opt_params * 4.0,
        _ => t * tb,
    };
    let layerwise = plan
        .low_rank_optimizer
        .as_ref()
        .is_some_and(|l| l.layerwise);
    if plan.optimizer == Optimizer::Lomo || layerwise {
        // The update runs inside backward, one parameter at a time.
        grads = tr.largest * tb;
    }
    // DeepSpeed's mixed precision: an fp32 master copy, and the states in fp32.
    let master = if ds && mixed { 4.0 } else { 0.0 };
    let sb = if ds && mixed { 4.0 } else { tb };
    let full_state = match plan.optimizer {
        Optimizer::AdamwTorch => 2.0 * sb,
        Optimizer::Adamw8bit | Optimizer::PagedAdamw8bit => 2.0,
        Optimizer::Adamw4bit => 1.0,
        Optimizer::Ademamix => 3.0 * sb,
        Optimizer::Ademamix8bit => 3.0,
        Optimizer::OneState | Optimizer::AdamMini => sb,
        Optimizer::OneState8bit => 1.0,
        Optimizer::Sgd | Optimizer::Adafactor | Optimizer::Lomo => 0.0,
        // Momentum for the hidden matrices, AdamW's two states for the rest (below).
        Optimizer::Muon => sb,
    };
    let state_bytes_per_element = match plan.optimizer {
        Optimizer::Adamw8bit | Optimizer::PagedAdamw8bit => 1.0,
        _ => 4.0,
    };
    let mut states = (full_state + master) * opt_params
        + badam_master
        + if plan.optimizer == Optimizer::Adafactor {
            4.0 * tr.factored
        } else {
            0.0
        };
    if plan.optimizer == Optimizer::Muon {
        states += sb * (opt_params - tr.hidden_matrix_params).max(0.0);
    }
    if let Some(lr) = &plan.low_rank_optimizer {
        let (projected, covered) = low_rank_states(arch, plan, lr, state_bytes_per_element)?;
        let covered = covered.min(opt_params);
        states = states - full_state * covered + projected;
    }
    let mut opt_temp = if ds {
        // DeepSpeed's ZeRO optimizers step on an fp32 copy of the rank's gradient partition,
        // converted from a flattened 16-bit copy (both alive while it converts): stage 1 / 2 a
        // param group's partition at a time (stage_1_and_2.py `step`; the decay group holds
        // nearly every weight), stage 3 one sub-group of at most `sub_group_size` elements
        // (stage3.py `_prepare_fp32_grad_for_sub_group`). Stage 0 keeps the bf16 optimizer's
        // own buffers, and an offloaded optimizer steps on the host (both below).
        // A total over the ranks, as the other branch's: divided by the GPUs below.
        match stage {
            1 | 2 => (tb + 4.0) * opt_params,
            3 => (tb + 4.0) * opt_params.min(plan.zero.sub_group_elements() * n_gpu),
            _ => 0.0,
        }
    } else {
        match plan.optimizer {
            // torch's foreach AdamW: one more full-precision tensor per parameter it updates
            // (BAdam: the active block's fp32 copy).
            Optimizer::AdamwTorch if plan.low_rank_optimizer.is_none() => {
                opt_params * if plan.badam.is_some() { 4.0 } else { tb }
            }
            Optimizer::Sgd | Optimizer::Lomo => 0.0,
            Optimizer::Muon => 3.0 * 4.0 * tr.largest,
            Optimizer::Adafactor => 1.0 * 4.0 * tr.largest,
            _ => 1.6 * 4.0 * tr.largest,
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
        cpu += (if plan.zero.fsdp { tb } else { 2.0 }) * total;
    }
    // Plain DDP keeps gradient buckets beside the gradients.
    let ddp_buckets = if plan.num_gpus > 1 && !plan.zero.sharded() {
        grads
    } else {
        0.0
    };

    // Activations of one micro-batch: DPO / RM carry chosen and rejected (KTO's KL half runs
    // without gradients, so it only adds a transient).
    let b = if plan.stage == Stage::Kto {
        plan.batch_size as f64
    } else {
        plan.sequences_per_micro_batch() as f64
    };
    let s = plan.cutoff_len as f64;
    let tokens = b * s;
    let h = arch.hidden_size as f64;
    let fp32_residual = plan.method == Method::Full && (tb == 4.0);
    let res_bytes = if fp32_residual { 4.0 } else { cb };
    let scale = cb / 2.0;
    let fp32_extra = if fp32_residual {
        ACT_FP32_RESIDUAL_PER_HIDDEN * h
    } else {
        0.0
    };
    let mods = if plan.is_adapter() {
        lora_modules(arch, plan)?
    } else {
        Vec::new()
    };
    // Llama 3.2 Vision's cross-attention layers attend to the tower's output (every tile's
    // patches), not to the text: each keeps its keys and values over those patches for the
    // backward. Not calibrated: from the module's structure.
    let cross_patches = b * media_tokens(arch, plan).patches as f64;
    // Saved activations of one layer of each kind: the calibrated dense terms, the adapters'
    // extra copies of their inputs, DeltaNet's projections and chunk states, eager scores.
    let layer_activations = |kind: LayerKind| -> f64 {
        let mut per_token = scale
            * (ACT_PER_HIDDEN * h
                + ACT_PER_INTERMEDIATE
                    * arch.mlp_activation_share()
                    * arch.kind_intermediate(kind) as f64)
            + fp32_extra;
        let here = arch.kind_linears(kind);
        let in_kind = |l: &&Linear| {
            here.iter().any(|k| {
                k.name == l.name
                    && k.in_features == l.in_features
                    && k.out_features == l.out_features
            })
        };
        let ins: f64 = mods
            .iter()
            .filter(in_kind)
            .map(|l| l.in_features as f64)
            .sum();
        if plan.method == Method::Oft {
            // OFT rotates each target's input block by block and keeps the rotated copy.
            per_token += ins * cb;
        } else if plan.is_adapter() && plan.lora_dropout > 0.0 {
            // PEFT's dropout saves a dropped copy of each target's input and its mask.
            per_token += ins * (cb + 1.0);
        }
        if plan.use_dora && plan.is_lora() {
            // DoRA computes the dense weight norm per module and keeps the base output.
            let outs: f64 = mods
                .iter()
                .filter(in_kind)
                .map(|l| l.out_features as f64)
                .sum();
            per_token += outs * cb;
        }
        if let Some(m) = &arch.moe
            && kind.moe
        {
            // Routing: the router logits (compute dtype) and their fp32 softmax, the top-k
            // weights (fp32) and indices (int64) that dispatch each token.
            let (e, k) = (m.num_experts as f64, m.experts_per_token as f64);
            per_token += e * (cb + 4.0) + k * (4.0 + 8.0);
        }
        let mut bytes = tokens * per_token;
        match (kind.mixer, &arch.linear_attention) {
            (Mixer::LinearAttention, Some(la)) => {
                // q, k, v, z before and after the short convolution, and the fp32 recurrent
                // state at every 64-token chunk boundary (the chunked kernels' saved states).
                let width = (2 * la.key_dim() + 2 * la.value_dim()) as f64;
                bytes += tokens * LINEAR_ATTN_COPIES * width * cb;
                bytes += b
                    * (s / 64.0).ceil()
                    * (la.num_value_heads * la.key_head_dim * la.value_head_dim) as f64
                    * 4.0;
            }
            (Mixer::CrossAttention, _) => {
                bytes += cross_patches * 2.0 * arch.kv_dim() as f64 * cb;
                if plan.attention == Attention::Eager {
                    bytes += b
                        * arch.num_attention_heads as f64
                        * s
                        * (cross_patches / b.max(1.0))
                        * EAGER_BYTES_PER_SCORE
                        * scale;
                }
            }
            _ if plan.attention == Attention::Eager => {
                bytes +=
                    b * arch.num_attention_heads as f64 * s * s * EAGER_BYTES_PER_SCORE * scale;
            }
            _ => {}
        }
        bytes
    };
    // The projected image features every cross-attention layer reads, kept once.
    let cross_states = if arch
        .layer_kinds
        .iter()
        .any(|k| k.mixer == Mixer::CrossAttention)
    {
        cross_patches * h * cb
    } else {
        0.0
    };
    let kinds = arch.kind_counts();
    // Every layer keeps its activations, frozen ones too: LLaMA-Factory makes the embedding output
    // require grad, so autograd records the whole stack.
    let all_layers: f64 = kinds
        .iter()
        .map(|(k, n)| *n as f64 * layer_activations(*k))
        .sum();
    let one_layer = kinds
        .iter()
        .map(|(k, _)| layer_activations(*k))
        .fold(0.0, f64::max);
    // A trained vision tower keeps its own activations for every image patch.
    let (tower_all, tower_ckpt, tower_one) = vision_activations(arch, plan, b, scale, cb);
    // fp32 compute: the logits are fp32 already (no extra copy) but every buffer is twice as wide.
    let logit_bytes = if cb == 4.0 {
        14.0
    } else {
        LOGIT_BYTES_PER_ELEMENT
    };
    let vocab = arch.vocab_size as f64;
    let logits = if plan.chunked_loss {
        // The gradient of the last hidden state is computed in forward; one chunk of fp32
        // logits (and its gradient, in place) lives at a time.
        tokens * h * cb + liger_chunk_tokens(tokens, arch) * vocab * (cb + 4.0)
    } else {
        match plan.stage {
            // The value head's loss ignores the logits: TRL's forward still makes them and an
            // fp32 copy, dropped before backward.
            Stage::Rm => (cb + 4.0) * tokens * vocab,
            _ => logit_bytes * tokens * vocab,
        }
    };
    // DPO / KTO: the reference log-probs are computed (no grad) while the policy's graph is
    // alive: its bf16 logits, their fp32 copy and the log-softmax.
    let ref_seq = if plan.stage == Stage::Kto {
        plan.batch_size as f64
    } else {
        b
    };
    let ref_logits = if plan.reference_forward {
        (cb + 8.0) * ref_seq * s * vocab
    } else {
        0.0
    };
    let logits = logits + ref_logits;
    let mut host_checkpoints = 0.0;
    let (activations, logit_part) = if plan.gradient_checkpointing {
        let mut ckpt = arch.num_layers as f64 * tokens * h * res_bytes + tower_ckpt + cross_states;
        if plan.offload_checkpoints {
            // Unsloth's checkpointing keeps the layer inputs in host RAM (two on the GPU).
            host_checkpoints = ckpt;
            ckpt = 2.0 * tokens * h * res_bytes;
        }
        let recompute = one_layer.max(tower_one);
        if logits >= recompute {
            (ckpt, logits)
        } else {
            (ckpt + recompute, 0.0)
        }
    } else {
        (all_layers + tower_all + cross_states, logits)
    };
    cpu += host_checkpoints;

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
        host_ram_bytes: sat(cpu),
    })
}

/// Inference: weights + KV cache for batch × cutoff_len tokens + one layer's transient + last-token logits.
fn inference(arch: &ModelArch, plan: &Plan) -> Memory {
    let cb = if plan.precision == Precision::Fp32 {
        4.0
    } else {
        2.0
    };
    let weights = frozen_weight_bytes(arch, plan, cb) / plan.num_gpus.max(1) as f64;
    let b = plan.batch_size as f64;
    let s = plan.cutoff_len as f64;
    // KV cache of the softmax-attention layers; DeltaNet layers keep a fixed state per sequence.
    let state = arch.linear_attention.as_ref().map_or(0.0, |la| {
        (arch.num_layers - arch.attention_layers()) as f64
            * b
            * ((la.num_value_heads * la.key_head_dim * la.value_head_dim) as f64 * 4.0
                + ((2 * la.key_dim() + la.value_dim()) * la.conv_kernel) as f64 * cb)
    });
    let kv = (arch.attention_layers() as f64 * arch.kv_cache_width() as f64 * cb * b * s + state)
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
        host_ram_bytes: 0,
    }
}
