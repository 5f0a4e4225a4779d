//! Contract 2: the whole estimate of one configuration — memory per GPU, time, cost, whether it
//! fits — plus the searches users ask for (largest batch / cutoff_len that fits, cheapest GPU).

use serde::Serialize;

use crate::arch::ModelArch;
use crate::catalog::{self, Gpu, Price};
use crate::error::Error;
use crate::memory::{self, Breakdown, Memory, Phase};
use crate::plan::Plan;
use crate::throughput::{self, StepTime};

/// Where the model's shape came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelSource {
    Catalog,
    ConfigJson,
    ParamCount,
}

/// The price one run costs at one provider.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProviderCost {
    pub provider: String,
    pub kind: String,
    pub usd_per_hour: f64,
    pub cost_usd: f64,
    pub source: String,
    pub as_of: String,
}

/// Contract 2's object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    pub model: String,
    pub model_source: ModelSource,
    /// The config.json the model's shape was read from, when the caller read one (a model
    /// directory, a Hugging Face or ModelScope cache).
    pub model_config_path: Option<String>,
    pub total_params: u64,
    pub trainable_params: u64,
    pub peak_allocated_bytes: u64,
    pub peak_reserved_bytes: u64,
    pub torch_reserved_bytes: u64,
    pub breakdown: Breakdown,
    pub peak_phase: Phase,
    /// Host RAM for offloaded states, gradients, parameters or activation checkpoints.
    pub host_ram_bytes: u64,
    pub gpu: Option<String>,
    pub gpu_memory_bytes: Option<u64>,
    pub num_gpus: u64,
    pub fits: Option<bool>,
    pub flops_per_token: f64,
    pub mfu: f64,
    pub tokens_per_step: u64,
    pub tokens_per_second: f64,
    pub step_seconds: f64,
    pub total_steps: Option<u64>,
    pub total_seconds: Option<f64>,
    pub price_per_hour: Option<f64>,
    pub cost_usd: Option<f64>,
    pub costs: Vec<ProviderCost>,
    pub warnings: Vec<String>,
    /// Vision-language models: the tower, what trains, and the image tokens of a sample.
    pub vision: Option<VisionSummary>,
}

/// The vision side of an estimate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VisionSummary {
    pub tower_params: u64,
    pub projector_params: u64,
    pub tower_trained: bool,
    pub projector_trained: bool,
    pub images_per_sample: u64,
    /// Language-model tokens the images of one sample take (inside cutoff_len).
    pub image_tokens_per_sample: u64,
    pub videos_per_sample: u64,
    /// Language-model tokens the videos of one sample take (inside cutoff_len).
    pub video_tokens_per_sample: u64,
    /// Frames of one video as the processor receives them (sampled, made even).
    pub video_frames: u64,
    /// Patches the tower processes per sample (images and videos).
    pub tower_patches_per_sample: u64,
    /// Whether the tower takes images (Qwen2-Audio's does not).
    pub takes_images: bool,
    /// Whether the model has an audio encoder (Qwen2-Audio, Gemma 4 E2B / E4B).
    pub has_audio: bool,
    pub audios_per_sample: u64,
    /// Language-model tokens the audios of one sample take (inside cutoff_len).
    pub audio_tokens_per_sample: u64,
}

/// Parse `7B`, `1.5b`, `500M` or a plain integer as a parameter count.
pub fn parse_param_count(s: &str) -> Option<u64> {
    let t = s.trim();
    let (num, mult) = match t.chars().last()? {
        'b' | 'B' => (&t[..t.len() - 1], 1e9),
        'm' | 'M' => (&t[..t.len() - 1], 1e6),
        _ => (t, 1.0),
    };
    let v: f64 = num.parse().ok()?;
    (v.is_finite() && v > 0.0).then(|| (v * mult).round() as u64)
}

/// Resolve `model_name_or_path`: a `config.json` text the caller read wins, then the catalog,
/// then a raw parameter count such as `7B`.
pub fn resolve_model(
    plan: &Plan,
    config_json: Option<&str>,
) -> Result<(ModelArch, ModelSource), Error> {
    if let Some(text) = config_json {
        return Ok((ModelArch::from_config_json(text)?, ModelSource::ConfigJson));
    }
    match catalog::find_model(&plan.model) {
        Ok(m) => Ok((m.arch()?, ModelSource::Catalog)),
        Err(e) => match parse_param_count(&plan.model) {
            Some(n) => Ok((ModelArch::from_param_count(n)?, ModelSource::ParamCount)),
            None => Err(e),
        },
    }
}

/// Parameters one GPU's optimizer updates (ZeRO ≥ 1 shards them; offload moves them to the CPU).
fn optimizer_params(plan: &Plan, trainable: u64) -> f64 {
    let z = plan.zero;
    if z.deepspeed && z.offload_optimizer {
        0.0
    } else if z.deepspeed && z.stage >= 1 {
        trainable as f64 / plan.num_gpus.max(1) as f64
    } else {
        trainable as f64
    }
}

fn gpu_of(plan: &Plan) -> Result<Option<&'static Gpu>, Error> {
    plan.gpu.as_deref().map(catalog::find_gpu).transpose()
}

/// Optimizer steps of the run, when the data size is known.
pub fn total_steps(plan: &Plan, tokens_per_step: u64) -> Option<u64> {
    if let Some(m) = plan.max_steps {
        return Some(m);
    }
    let epochs = plan.num_train_epochs;
    if let Some(tok) = plan.dataset_tokens {
        return Some(((tok as f64 * epochs) / tokens_per_step.max(1) as f64).ceil() as u64);
    }
    plan.max_samples.map(|n| {
        let per_step =
            plan.batch_size as f64 * plan.grad_accum as f64 * plan.num_gpus.max(1) as f64;
        ((n as f64 * epochs) / per_step).ceil() as u64
    })
}

/// Memory only (cheap; used by the searches).
pub fn memory(arch: &ModelArch, plan: &Plan) -> Result<Memory, Error> {
    memory::estimate(arch, plan)
}

/// The full estimate of `plan` for `arch`.
pub fn estimate(arch: &ModelArch, source: ModelSource, plan: &Plan) -> Result<Estimate, Error> {
    let mem = memory::estimate(arch, plan)?;
    let gpu = gpu_of(plan)?;
    let mut warnings = plan.notes.clone();
    if let Some(sq) = &arch.stored_quant {
        if sq.assumed {
            warnings.push(format!(
                "quantization_config quant_method `{}` is not modelled: its weights are counted as 16-bit",
                sq.method
            ));
        }
        if plan.quant.is_some() {
            warnings.push(format!(
                "quantization_bit is ignored: the checkpoint is pre-quantized ({} {}-bit), as LLaMA-Factory does",
                sq.method, sq.bits
            ));
        }
    }
    if arch.vision.is_none() {
        for k in &plan.vision.keys_given {
            warnings.push(format!(
                "{k}: this model has no vision tower, so it changes nothing"
            ));
        }
    }
    let audio = arch.vision.as_ref().and_then(|v| v.audio);
    let audio_only = arch.vision.as_ref().is_some_and(|v| !v.kind.takes_images());
    if arch.vision.is_some()
        && plan.vision.images_per_sample == 0
        && plan.vision.videos_per_sample == 0
        && plan.vision.audios_per_sample == 0
        && plan.vision.dataset.is_none()
        && plan.train
    {
        warnings.push(if audio_only {
            "this model has an audio encoder; audios_per_sample 0: text-only samples (set audios_per_sample, or name a dataset with an audios column)".into()
        } else {
            "this model has a vision tower; images_per_sample 0: text-only samples (set images_per_sample / videos_per_sample, or name a dataset with an images or videos column)".into()
        });
    }
    let saved = memory::modules_to_save_params(arch, plan)?;
    if saved > 0 {
        warnings.push(format!(
            "{}: PEFT trains whole fp32 copies of them beside the adapter (modules_to_save: {:.0} M parameters, {:.1} GiB with their gradients and AdamW states){}",
            plan.modules_to_save.join(", "),
            saved as f64 / 1e6,
            saved as f64 * 16.0 / (1u64 << 30) as f64,
            if plan.modules_to_save == ["embed_tokens", "lm_head"] {
                " — LLaMA-Factory adds them when the vocabulary is resized (resize_vocab, add_tokens, add_special_tokens)"
            } else {
                ""
            }
        ));
    }
    let media = memory::media_tokens(arch, plan);
    if media.audios > 0 {
        if plan.vision.dataset.is_none() {
            let window =
                if audio.is_some_and(|a| a.kind == crate::arch::vision::AudioKind::Qwen25Omni) {
                    "the processor cuts audios at 300 s"
                } else {
                    "the encoder pads or cuts every audio to 30 s"
                };
            warnings.push(format!(
                "audios: each is assumed {} s long (set audio_seconds, or name a dataset whose audio files lorafit can read); {window}",
                plan.vision.audio_seconds
            ));
        }
        if audio.is_some_and(|a| a.kind == crate::arch::vision::AudioKind::Gemma4) {
            warnings.push(
                "Gemma 4 audio: LLaMA-Factory's gemma4 plugin (ff6d4d1) counts the audio file's path instead of its samples, so it inserts no audio tokens and the model's token check fails; lorafit counts the tokens transformers' Gemma4Processor inserts".into(),
            );
        }
    }
    if arch.moe.is_some() && plan.is_lora() && plan.lora_target.iter().any(|t| t == "all") {
        warnings.push(
            "lora_target all: transformers 5 stores the routed experts as fused 3-D tensors, which PEFT's target_modules does not wrap; attention (and shared experts) get adapters".into(),
        );
    }
    if arch.vision.is_some() && plan.vision.videos_per_sample > 0 && plan.vision.dataset.is_none() {
        warnings.push(format!(
            "videos: each is assumed {} s long with frames as large as video_max_pixels allows (set video_seconds, or name a dataset whose video files lorafit can read)",
            plan.vision.video_seconds
        ));
    }
    let vision = arch.vision.as_ref().map(|v| {
        let m = &media;
        VisionSummary {
            tower_params: v.tower_params,
            projector_params: v.projector_params,
            tower_trained: !plan.vision.freeze_tower
                && matches!(
                    plan.method,
                    crate::plan::Method::Full | crate::plan::Method::Lora
                ),
            projector_trained: !plan.vision.freeze_projector,
            images_per_sample: m.images,
            image_tokens_per_sample: m.image_tokens,
            videos_per_sample: m.videos,
            video_tokens_per_sample: m.video_tokens,
            video_frames: m.video_frames,
            tower_patches_per_sample: m.patches,
            takes_images: v.kind.takes_images(),
            has_audio: v.audio.is_some(),
            audios_per_sample: m.audios,
            audio_tokens_per_sample: m.audio_tokens,
        }
    });
    let (tflops, bandwidth) = match gpu {
        Some(g) => {
            if !g.bf16 && plan.precision == crate::plan::Precision::Mixed16 && !plan.fp16 {
                warnings.push(format!("{} has no bf16: use fp16: true", g.name));
            }
            (g.bf16_tflops, g.memory_bandwidth_gbps)
        }
        None => catalog::find_gpu("H100-SXM")
            .map(|g| (g.bf16_tflops, g.memory_bandwidth_gbps))
            .unwrap_or((989.0, 3350.0)),
    };
    if gpu.is_none() {
        warnings
            .push("no `gpu` given: time assumes an H100 SXM and nothing is checked for fit".into());
    }
    if let Some(maxpos) = arch.max_position_embeddings
        && plan.cutoff_len > maxpos
    {
        warnings.push(format!(
            "cutoff_len {} exceeds the model's max_position_embeddings {maxpos}",
            plan.cutoff_len
        ));
    }
    let st: StepTime = throughput::step_time(
        arch,
        plan,
        tflops,
        bandwidth,
        optimizer_params(plan, mem.trainable_params),
    );
    let steps = total_steps(plan, st.tokens_per_step);
    let total_seconds = steps.map(|n| n as f64 * st.step_seconds);
    let gpu_hours = total_seconds.map(|s| s / 3600.0 * plan.num_gpus.max(1) as f64);
    let costs: Vec<ProviderCost> = match (gpu, gpu_hours) {
        (Some(g), Some(hours)) => g
            .prices
            .iter()
            .map(|p: &Price| ProviderCost {
                provider: p.provider.clone(),
                kind: p.kind.clone(),
                usd_per_hour: p.usd_per_hour,
                cost_usd: p.usd_per_hour * hours,
                source: p.source.clone(),
                as_of: p.as_of.clone(),
            })
            .collect(),
        _ => Vec::new(),
    };
    let price_per_hour = plan
        .price_per_hour
        .or_else(|| gpu.and_then(Gpu::cheapest_price).map(|p| p.usd_per_hour));
    let cost_usd = match (price_per_hour, gpu_hours) {
        (Some(p), Some(h)) => Some(p * h),
        _ => None,
    };
    Ok(Estimate {
        model: plan.model.clone(),
        model_source: source,
        model_config_path: None,
        total_params: mem.total_params,
        trainable_params: mem.trainable_params,
        peak_allocated_bytes: mem.peak_allocated_bytes,
        peak_reserved_bytes: mem.peak_reserved_bytes,
        torch_reserved_bytes: mem.torch_reserved_bytes,
        breakdown: mem.breakdown,
        peak_phase: mem.phase,
        host_ram_bytes: mem.host_ram_bytes,
        gpu: gpu.map(|g| g.id.clone()),
        gpu_memory_bytes: gpu.map(Gpu::memory_bytes),
        num_gpus: plan.num_gpus,
        fits: gpu.map(|g| mem.peak_reserved_bytes <= g.memory_bytes()),
        flops_per_token: st.flops_per_token,
        mfu: st.mfu,
        tokens_per_step: st.tokens_per_step,
        tokens_per_second: st.tokens_per_second,
        step_seconds: st.step_seconds,
        total_steps: steps,
        total_seconds,
        price_per_hour,
        cost_usd,
        costs,
        warnings,
        vision,
    })
}

fn fits(arch: &ModelArch, plan: &Plan, budget: u64) -> bool {
    memory::estimate(arch, plan).is_ok_and(|m| m.peak_reserved_bytes <= budget)
}

/// The largest `per_device_train_batch_size` (≤ 4096) whose peak fits in `budget_bytes`.
pub fn largest_batch(arch: &ModelArch, plan: &Plan, budget_bytes: u64) -> Option<u64> {
    let at = |b: u64| {
        let mut p = plan.clone();
        p.batch_size = b;
        fits(arch, &p, budget_bytes)
    };
    largest_true(1, 4096, at)
}

/// The largest `cutoff_len` (a multiple of 128, ≤ 1,048,576) whose peak fits in `budget_bytes`.
pub fn longest_cutoff(arch: &ModelArch, plan: &Plan, budget_bytes: u64) -> Option<u64> {
    let at = |k: u64| {
        let mut p = plan.clone();
        p.cutoff_len = k * 128;
        fits(arch, &p, budget_bytes)
    };
    largest_true(1, 8192, at).map(|k| k * 128)
}

/// Binary search for the largest x in [lo, hi] with `f(x)` (memory is monotone in it).
fn largest_true(lo: u64, hi: u64, f: impl Fn(u64) -> bool) -> Option<u64> {
    if !f(lo) {
        return None;
    }
    let (mut good, mut bad) = (lo, hi + 1);
    if f(hi) {
        return Some(hi);
    }
    while bad - good > 1 {
        let mid = good + (bad - good) / 2;
        if f(mid) { good = mid } else { bad = mid }
    }
    Some(good)
}

/// One way to run the configuration on rented GPUs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuOption {
    pub gpu: String,
    pub num_gpus: u64,
    pub peak_reserved_bytes: u64,
    pub fits: bool,
    pub total_seconds: Option<f64>,
    pub usd_per_hour: Option<f64>,
    pub cost_usd: Option<f64>,
}

/// Every catalog GPU at 1, 2, 4 and 8 per node, cheapest first (by total cost when the data size
/// is known, else by $/hour); options that do not fit come last.
pub fn gpu_options(arch: &ModelArch, plan: &Plan) -> Vec<GpuOption> {
    let mut out = Vec::new();
    for g in catalog::gpus() {
        for n in [1u64, 2, 4, 8] {
            let mut p = plan.clone();
            p.gpu = Some(g.id.clone());
            p.num_gpus = n;
            if n > 1 && !p.zero.sharded() {
                // Across GPUs people shard with ZeRO-3 (LLaMA-Factory's ds_z3_config.json).
                p.zero = crate::plan::Zero {
                    stage: 3,
                    offload_optimizer: false,
                    offload_param: false,
                    deepspeed: true,
                    fsdp: false,
                    sub_group_size: None,
                };
            }
            let Ok(m) = memory::estimate(arch, &p) else {
                continue;
            };
            let st = throughput::step_time(
                arch,
                &p,
                g.bf16_tflops,
                g.memory_bandwidth_gbps,
                optimizer_params(&p, m.trainable_params),
            );
            let secs = total_steps(&p, st.tokens_per_step).map(|s| s as f64 * st.step_seconds);
            let price = g.cheapest_price().map(|p| p.usd_per_hour);
            let fit = m.peak_reserved_bytes <= g.memory_bytes();
            out.push(GpuOption {
                gpu: g.id.clone(),
                num_gpus: n,
                peak_reserved_bytes: m.peak_reserved_bytes,
                fits: fit,
                total_seconds: secs,
                usd_per_hour: price.map(|x| x * n as f64),
                cost_usd: match (price, secs) {
                    (Some(pr), Some(s)) => Some(pr * n as f64 * s / 3600.0),
                    _ => None,
                },
            });
            if fit {
                break; // more GPUs of the same type only cost more for the same tokens
            }
        }
    }
    let key = |o: &GpuOption| {
        (
            !o.fits,
            o.cost_usd.or(o.usd_per_hour).unwrap_or(f64::INFINITY),
        )
    };
    out.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1))
    });
    out
}
