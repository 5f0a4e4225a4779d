//! The measured points lorafit is validated against (`data/validation/*.jsonl`) and the error
//! statistics docs/validation.md reports. Pure: callers pass the file text.

use serde::{Deserialize, Serialize};

use crate::baselines;
use crate::error::Error;
use crate::estimate;
use crate::plan::{Settings, Val};

/// What was measured on the GPU.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Measured {
    pub peak_allocated_bytes: u64,
    pub peak_reserved_bytes: u64,
    /// nvidia-smi used − torch reserved (CUDA context and kernels).
    pub context_bytes: u64,
    pub tokens_per_second: f64,
    pub trainable_params: u64,
}

/// One measured configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Point {
    pub id: String,
    /// `tune` (coefficients were fitted on these) or `holdout` (never used for fitting).
    pub split: String,
    pub source: String,
    /// LLaMA-Factory keys of the run.
    pub config: serde_json::Map<String, serde_json::Value>,
    pub measured: Measured,
}

/// A point with lorafit's and the baselines' answers.
#[derive(Debug, Clone, Serialize)]
pub struct Compared {
    pub point: Point,
    pub trainable_params: u64,
    pub est_allocated: u64,
    /// nvidia-smi equivalent: reserved + context.
    pub est_smi: u64,
    pub meas_smi: u64,
    pub est_tokens_per_second: f64,
    pub llamafactory_bytes: f64,
    pub gpu_poor_bytes: f64,
}

impl Compared {
    /// Relative error of max_memory_allocated.
    pub fn err_allocated(&self) -> f64 {
        self.est_allocated as f64 / self.point.measured.peak_allocated_bytes as f64 - 1.0
    }
    /// Relative error of the nvidia-smi figure (reserved + context).
    pub fn err_smi(&self) -> f64 {
        self.est_smi as f64 / self.meas_smi as f64 - 1.0
    }
    pub fn err_tokens(&self) -> f64 {
        self.est_tokens_per_second / self.point.measured.tokens_per_second - 1.0
    }
    pub fn err_llamafactory(&self) -> f64 {
        self.llamafactory_bytes / self.meas_smi as f64 - 1.0
    }
    pub fn err_gpu_poor(&self) -> f64 {
        self.gpu_poor_bytes / self.meas_smi as f64 - 1.0
    }
}

/// The non-empty lines of a JSONL file, each a `T`; errors name `what` and the line.
fn parse_jsonl<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<Vec<T>, Error> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, l)| {
            serde_json::from_str(l)
                .map_err(|e| Error::Syntax(format!("{what} line {}: {e}", n + 1)))
        })
        .collect()
}

/// Parse a JSONL file of points.
pub fn parse_points(text: &str) -> Result<Vec<Point>, Error> {
    parse_jsonl(text, "validation")
}

fn json_to_val(v: &serde_json::Value) -> Option<Val> {
    Some(match v {
        serde_json::Value::Bool(b) => Val::Bool(*b),
        serde_json::Value::Number(n) => n.as_i64().map(Val::Int).unwrap_or(Val::Float(n.as_f64()?)),
        serde_json::Value::String(s) => Val::Str(s.clone()),
        _ => return None,
    })
}

/// A point's `config` object (LLaMA-Factory keys and JSON values) as settings.
pub fn settings_from_config(
    config: &serde_json::Map<String, serde_json::Value>,
) -> Result<Settings, Error> {
    let mut s = Settings::default();
    for (k, v) in config {
        if let Some(val) = json_to_val(v) {
            s.set(k, val)?;
        }
    }
    Ok(s)
}

/// Estimate one point (its GPU: an H100).
pub fn compare(p: &Point) -> Result<Compared, Error> {
    let mut s = settings_from_config(&p.config)?;
    s.set("gpu", Val::Str("H100-SXM".into()))?;
    let plan = s.plan()?;
    let (arch, source) = estimate::resolve_model(&plan, None)?;
    let e = estimate::estimate(&arch, source, &plan)?;
    Ok(Compared {
        trainable_params: e.trainable_params,
        est_allocated: e.peak_allocated_bytes,
        est_smi: e.peak_reserved_bytes,
        meas_smi: p.measured.peak_reserved_bytes + p.measured.context_bytes,
        est_tokens_per_second: e.tokens_per_second,
        llamafactory_bytes: baselines::llamafactory_rule_bytes(&arch, &plan),
        gpu_poor_bytes: baselines::gpu_poor_bytes(&arch, &plan),
        point: p.clone(),
    })
}

/// Median and maximum of |x|.
pub fn median_max(errors: impl IntoIterator<Item = f64>) -> (f64, f64) {
    let mut v: Vec<f64> = errors.into_iter().map(f64::abs).collect();
    if v.is_empty() {
        return (0.0, 0.0);
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let med = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (med, v[n - 1])
}

/// The H100 points bundled with the crate.
pub const MEASURED_H100: &str = include_str!("../data/validation/measured_h100.jsonl");

/// Published per-GPU peaks of vision-language and MoE fine-tunes (ms-swift's examples): torch's
/// `max_memory_reserved` in GiB as the source prints it, with the source's settings in
/// LLaMA-Factory's keys and what had to be assumed about the data.
pub const PUBLISHED_PEAKS: &str = include_str!("../data/validation/published_peaks.jsonl");

/// One published peak.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishedPeak {
    pub id: String,
    pub source: String,
    /// What the source does not say and the comparison assumes (sample lengths, image sizes).
    pub assumed: String,
    pub gpus: u64,
    /// The model was split over the GPUs by layers (transformers' `device_map`): together they
    /// hold what one GPU would, so lorafit's one-GPU peak is compared with the sum.
    #[serde(default)]
    pub model_parallel: bool,
    pub config: serde_json::Map<String, serde_json::Value>,
    /// torch.cuda.max_memory_reserved() per GPU, GiB.
    pub reserved_gib: f64,
}

impl PublishedPeak {
    /// lorafit's torch-reserved peak per GPU (bytes) for the point's settings.
    pub fn estimate_reserved(&self) -> Result<u64, Error> {
        let plan = settings_from_config(&self.config)?.plan()?;
        let (arch, source) = estimate::resolve_model(&plan, None)?;
        Ok(estimate::estimate(&arch, source, &plan)?.torch_reserved_bytes)
    }

    /// The published figure this point compares with, bytes: per GPU, or summed over the GPUs
    /// of a model-parallel run.
    pub fn published_bytes(&self) -> f64 {
        let n = if self.model_parallel {
            self.gpus as f64
        } else {
            1.0
        };
        self.reserved_gib * GIB * n
    }

    /// `estimate` (bytes, from [`Self::estimate_reserved`]) / published − 1.
    pub fn error(&self, estimate: u64) -> f64 {
        estimate as f64 / self.published_bytes() - 1.0
    }
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// Parse [`PUBLISHED_PEAKS`]-shaped JSONL.
pub fn parse_published(text: &str) -> Result<Vec<PublishedPeak>, Error> {
    parse_jsonl(text, "published")
}
