//! Decoding as transformers' `generate` does it for `llamafactory-cli chat`: the prompt prefilled
//! once into a KV cache, then one token per forward; LLaMA-Factory's generating keys
//! (`do_sample`, `temperature`, `top_p`, `top_k`, `repetition_penalty`, `max_new_tokens`) with
//! their defaults, and the logits processors in transformers' order — repetition penalty, then
//! (sampling only) temperature, top-k, top-p — before a draw from the softmax.

use lorafit_core::Settings;
use lorafit_data::StepRng;

use crate::error::{Error, Result};
use crate::lora::Adapter;
use crate::model::Model;

/// What to generate, as LLaMA-Factory's `GeneratingArguments` reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct GenConfig {
    pub do_sample: bool,
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: usize,
    pub repetition_penalty: f64,
    pub max_new_tokens: usize,
    /// Seeds the sampler (lorafit's own generator, so a seed repeats lorafit's draws, not torch's).
    pub seed: u64,
}

impl GenConfig {
    /// Greedy decoding of up to `max_new_tokens` tokens, no penalty.
    pub fn greedy(max_new_tokens: usize) -> Self {
        GenConfig {
            do_sample: false,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            repetition_penalty: 1.0,
            max_new_tokens,
            seed: 42,
        }
    }

    /// The keys of a LLaMA-Factory config, with its defaults (`do_sample: true`, temperature 0.95,
    /// top_p 0.7, top_k 50, max_new_tokens 1024) and its rules: a temperature of 0 means greedy;
    /// `num_beams` > 1 is refused (beam search is not implemented).
    pub fn from_settings(s: &Settings) -> Result<Self> {
        let num = |k: &str, d: f64| s.float(k).unwrap_or(d);
        let beams = num("num_beams", 1.0);
        if beams > 1.0 {
            return Err(Error::Invalid(format!(
                "`num_beams: {beams}`: lorafit chat decodes greedily or by sampling; beam search is not implemented (use num_beams: 1)"
            )));
        }
        let temperature = num("temperature", 0.95);
        let top_p = num("top_p", 0.7);
        let repetition_penalty = num("repetition_penalty", 1.0);
        for (key, v, ok) in [
            ("temperature", temperature, temperature >= 0.0),
            ("top_p", top_p, top_p > 0.0 && top_p <= 1.0),
            (
                "repetition_penalty",
                repetition_penalty,
                repetition_penalty > 0.0,
            ),
        ] {
            if !ok || !v.is_finite() {
                return Err(Error::Invalid(format!(
                    "`{key}: {v}` is out of range ({})",
                    match key {
                        "temperature" => "≥ 0; 0 means greedy",
                        "top_p" => "0 < top_p ≤ 1",
                        _ => "> 0; 1 means none",
                    }
                )));
            }
        }
        let top_k = num("top_k", 50.0);
        if top_k < 0.0 {
            return Err(Error::Invalid(format!(
                "`top_k: {top_k}` must be ≥ 0 (0 means off)"
            )));
        }
        let mut max_new = num("max_new_tokens", 1024.0);
        if max_new < 1.0 {
            max_new = 1024.0;
        }
        Ok(GenConfig {
            do_sample: s.bool("do_sample", true) && temperature > 0.0,
            temperature,
            top_p,
            top_k: top_k as usize,
            repetition_penalty,
            max_new_tokens: max_new as usize,
            seed: num("seed", 42.0) as u64,
        })
    }

    /// One line for the user: what decoding this is.
    pub fn describe(&self) -> String {
        if self.do_sample {
            format!(
                "sampling: temperature {}, top_p {}, top_k {}, repetition_penalty {}, seed {}",
                self.temperature, self.top_p, self.top_k, self.repetition_penalty, self.seed
            )
        } else if self.repetition_penalty != 1.0 {
            format!("greedy, repetition_penalty {}", self.repetition_penalty)
        } else {
            "greedy".to_string()
        }
    }
}

/// transformers' `RepetitionPenaltyLogitsProcessor`: each token already in the sequence has its
/// score divided by `penalty` when positive, multiplied when negative.
pub fn repetition_penalty(scores: &mut [f32], seen: &[u32], penalty: f64) {
    if penalty == 1.0 {
        return;
    }
    let p = penalty as f32;
    let mut done = vec![false; scores.len()];
    for &t in seen {
        let t = t as usize;
        if t < scores.len() && !done[t] {
            done[t] = true;
            let s = scores[t];
            scores[t] = if s < 0.0 { s * p } else { s / p };
        }
    }
}

/// transformers' sampling warpers in its order: temperature (scores / t), top-k (scores below
/// the k-th largest to −∞, ties kept), top-p (the smallest-probability tokens whose cumulative
/// probability stays ≤ 1 − top_p to −∞, at least one token kept).
pub fn warp(scores: &mut [f32], temperature: f64, top_k: usize, top_p: f64) {
    if temperature != 1.0 {
        let t = temperature as f32;
        for s in scores.iter_mut() {
            *s /= t;
        }
    }
    if top_k > 0 && top_k < scores.len() {
        let mut sorted: Vec<f32> = scores.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        let kth = sorted[top_k - 1];
        for s in scores.iter_mut() {
            if *s < kth {
                *s = f32::NEG_INFINITY;
            }
        }
    }
    if top_p < 1.0 {
        let mut order: Vec<usize> = (0..scores.len()).collect();
        // Ascending, as torch.sort(descending=False) (stable here; ties in torch's order may differ).
        order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
        let probs = softmax(scores);
        let mut cum = 0f32;
        let last = order.len().saturating_sub(1);
        for (rank, &i) in order.iter().enumerate() {
            cum += probs[i];
            if rank < last && cum <= (1.0 - top_p) as f32 {
                scores[i] = f32::NEG_INFINITY;
            }
        }
    }
}

fn softmax(scores: &[f32]) -> Vec<f32> {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.into_iter().map(|x| x / sum).collect()
}

/// The next token from processed scores: the first largest (greedy, as argmax), or a draw from
/// their softmax.
pub fn choose(scores: &[f32], sample: bool, rng: &mut StepRng) -> u32 {
    if !sample {
        let mut best = 0;
        for (i, s) in scores.iter().enumerate() {
            if *s > scores[best] {
                best = i;
            }
        }
        return best as u32;
    }
    let probs = softmax(scores);
    let u = rng.next_f32();
    let mut cum = 0f32;
    let mut last = 0;
    for (i, p) in probs.iter().enumerate() {
        if *p > 0.0 {
            cum += p;
            last = i;
            if u < cum {
                return i as u32;
            }
        }
    }
    last as u32
}

impl Model {
    /// The prompt's continuation: up to `cfg.max_new_tokens` tokens, ending with (and including)
    /// the first of `stop`. `on_token` sees each token as it is chosen (for streaming).
    pub fn generate(
        &self,
        prompt: &[u32],
        adapter: &Adapter,
        cfg: &GenConfig,
        stop: &[u32],
        mut on_token: impl FnMut(u32),
    ) -> Vec<u32> {
        let mut cache = self.kv_cache();
        let mut rng = StepRng::new(cfg.seed, 0, 0);
        let mut seen = prompt.to_vec();
        let mut out = Vec::new();
        let mut feed: Vec<u32> = prompt.to_vec();
        while out.len() < cfg.max_new_tokens && !feed.is_empty() {
            let logits = self.logits_cached(&feed, &mut cache, adapter);
            let [n, _] = logits.dims();
            let mut scores: Vec<f32> = logits.slice(n - 1..n).into_data().iter::<f32>().collect();
            repetition_penalty(&mut scores, &seen, cfg.repetition_penalty);
            if cfg.do_sample {
                warp(&mut scores, cfg.temperature, cfg.top_k, cfg.top_p);
            }
            let next = choose(&scores, cfg.do_sample, &mut rng);
            out.push(next);
            seen.push(next);
            on_token(next);
            if stop.contains(&next) {
                break;
            }
            feed = vec![next];
        }
        out
    }

    /// Greedy decoding (transformers' `do_sample=False`) of up to `max_new` tokens.
    pub fn generate_greedy(
        &self,
        prompt: &[u32],
        adapter: &Adapter,
        max_new: usize,
        stop: &[u32],
    ) -> Vec<u32> {
        self.generate(prompt, adapter, &GenConfig::greedy(max_new), stop, |_| {})
    }
}
