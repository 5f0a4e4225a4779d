//! AdamW as `torch.optim.AdamW`, transformers' learning-rate schedules and global-norm clipping
//! as `torch.nn.utils.clip_grad_norm_`. They work on plain (non-autodiff) tensors.

use burn::tensor::Tensor;

/// constant / linear / cosine, each with linear warm-up (transformers' `get_*_schedule_with_warmup`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScheduleKind {
    /// transformers' `constant`: warm-up is ignored.
    Constant,
    ConstantWithWarmup,
    Linear,
    Cosine,
}

impl ScheduleKind {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "constant" => ScheduleKind::Constant,
            "constant_with_warmup" => ScheduleKind::ConstantWithWarmup,
            "linear" => ScheduleKind::Linear,
            "cosine" => ScheduleKind::Cosine,
            _ => return None,
        })
    }
}

/// The learning rate used by optimizer step `step` (0-based) of `total`.
pub fn lr_at(kind: ScheduleKind, peak: f64, step: u64, warmup: u64, total: u64) -> f64 {
    let (s, w, t) = (step as f64, warmup as f64, total as f64);
    let factor = match kind {
        ScheduleKind::Constant => 1.0,
        _ if step < warmup => s / w.max(1.0),
        ScheduleKind::ConstantWithWarmup => 1.0,
        ScheduleKind::Linear => ((t - s) / (t - w).max(1.0)).max(0.0),
        ScheduleKind::Cosine => {
            let progress = (s - w) / (t - w).max(1.0);
            (0.5 * (1.0 + (std::f64::consts::PI * 0.5 * 2.0 * progress).cos())).max(0.0)
        }
    };
    peak * factor
}

/// AdamW hyper-parameters (torch defaults unless the config says otherwise).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

/// The optimizer's moments for every trainable tensor, and the step count.
#[derive(Debug, Clone)]
pub struct AdamW {
    pub config: AdamWConfig,
    pub step: u64,
    pub exp_avg: Vec<Tensor<2>>,
    pub exp_avg_sq: Vec<Tensor<2>>,
    /// Tensors weight decay skips (transformers leaves biases out of the decay group).
    pub no_decay: Vec<bool>,
}

impl AdamW {
    pub fn new(config: AdamWConfig, params: &[Tensor<2>]) -> Self {
        AdamW {
            config,
            step: 0,
            exp_avg: params.iter().map(|p| p.zeros_like()).collect(),
            exp_avg_sq: params.iter().map(|p| p.zeros_like()).collect(),
            no_decay: vec![false; params.len()],
        }
    }

    /// One step: decoupled weight decay, moments, bias correction, as torch.optim.AdamW.
    pub fn update(
        &mut self,
        params: Vec<Tensor<2>>,
        grads: Vec<Tensor<2>>,
        lr: f64,
    ) -> Vec<Tensor<2>> {
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bias1 = 1.0 - c.beta1.powi(t);
        let bias2_sqrt = (1.0 - c.beta2.powi(t)).sqrt();
        let step_size = lr / bias1;
        let mut out = Vec::with_capacity(params.len());
        for (i, (p, g)) in params.into_iter().zip(grads).enumerate() {
            let p = if c.weight_decay != 0.0 && !self.no_decay.get(i).copied().unwrap_or(false) {
                p * (1.0 - lr * c.weight_decay)
            } else {
                p
            };
            let m = self.exp_avg[i].clone();
            let m = m.clone() + (g.clone() - m) * (1.0 - c.beta1);
            let v = self.exp_avg_sq[i].clone() * c.beta2 + g.clone() * g * (1.0 - c.beta2);
            let denom = v.clone().sqrt() / bias2_sqrt + c.eps;
            out.push(p - m.clone() / denom * step_size);
            self.exp_avg[i] = m;
            self.exp_avg_sq[i] = v;
        }
        out
    }
}

/// The global L2 norm of `grads` (reads one scalar back from the device).
pub fn global_norm(grads: &[Tensor<2>]) -> f64 {
    let Some(first) = grads.first() else {
        return 0.0;
    };
    let mut sum = first.clone().square().sum();
    for g in &grads[1..] {
        sum = sum + g.clone().square().sum();
    }
    (sum.into_scalar::<f32>() as f64).sqrt()
}

/// Scale `grads` so their global norm is at most `max_norm` (torch's `clip_grad_norm_`, which
/// always multiplies by min(1, max_norm / (norm + 1e-6))). Returns the norm before clipping.
pub fn clip(grads: Vec<Tensor<2>>, max_norm: f64) -> (Vec<Tensor<2>>, f64) {
    let norm = global_norm(&grads);
    let coef = (max_norm / (norm + 1e-6)).min(1.0);
    (grads.into_iter().map(|g| g * coef).collect(), norm)
}
