//! The page's state: the settings a share link (or the page's example) gives, the estimate
//! and the secondary figures computed from them, and the URL kept in step (Contract 4).

use lorafit_core::estimate::{self, Estimate};
use lorafit_core::plan::{Settings, Val};
use lorafit_core::{catalog, export};

use crate::i18n::Lang;
use crate::keys::*;

/// The page's defaults: what a user with one 24 GB card most often asks about.
pub fn default_settings() -> Settings {
    let mut s = Settings::default();
    for (k, v) in [
        (
            "model_name_or_path",
            Val::Str("Qwen/Qwen2.5-7B-Instruct".into()),
        ),
        ("finetuning_type", Val::Str("lora".into())),
        ("lora_rank", Val::Int(8)),
        ("lora_target", Val::Str("all".into())),
        ("bf16", Val::Bool(true)),
        ("per_device_train_batch_size", Val::Int(1)),
        ("gradient_accumulation_steps", Val::Int(8)),
        ("cutoff_len", Val::Int(2048)),
        ("num_train_epochs", Val::Float(3.0)),
        ("gpu", Val::Str("RTX-4090".into())),
        ("dataset_tokens", Val::Int(10_000_000)),
    ] {
        let _ = s.set(k, v);
    }
    s
}

/// The page's own `lang=zh|en` parameter, which is not a configuration key.
pub(crate) fn split_lang(query: &str) -> (String, Option<Lang>) {
    let mut lang = None;
    let rest: Vec<&str> = query
        .trim_start_matches('?')
        .split('&')
        .filter(|p| match *p {
            "lang=zh" => {
                lang = Some(Lang::Zh);
                false
            }
            "lang=en" => {
                lang = Some(Lang::En);
                false
            }
            _ => true,
        })
        .collect();
    (rest.join("&"), lang)
}

/// Settings from a share link's query string. An empty link shows the page's example; in a
/// non-empty one every absent key has LLaMA-Factory's default, as in a YAML file, so the page
/// and `lorafit estimate` of the same keys agree. Only the model, which LLaMA-Factory has no
/// default for, falls back to the example's (with a warning).
pub fn settings_from_query(query: &str) -> (Settings, Vec<String>) {
    let (query, _) = split_lang(query);
    if query.trim().is_empty() {
        return (default_settings(), Vec::new());
    }
    let (mut s, mut warnings) = export::from_query(&query);
    if s.get("model_name_or_path").is_none() {
        let example = default_settings();
        if let Some(m) = example.get("model_name_or_path") {
            let _ = s.set("model_name_or_path", m.clone());
            warnings.push(format!(
                "the link names no valid model_name_or_path: showing {m}"
            ));
        }
    }
    (s, warnings)
}

/// The estimate for the page's settings, or the error to show.
pub fn compute(s: &Settings) -> Result<Estimate, String> {
    compute_with(s, None)
}

/// The estimate with a pasted `config.json` standing in for the catalog model.
pub fn compute_with(s: &Settings, config_json: Option<&str>) -> Result<Estimate, String> {
    let plan = s.plan().map_err(|e| e.to_string())?;
    let (arch, src) = estimate::resolve_model(&plan, config_json).map_err(|e| e.to_string())?;
    estimate::estimate(&arch, src, &plan).map_err(|e| e.to_string())
}

/// What the page shows below the headline: full / freeze / LoRA / QLoRA side by side, and the
/// largest batch and cutoff_len that fit the chosen GPU.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Secondary {
    pub methods: Vec<(&'static str, Result<Estimate, String>)>,
    pub largest_batch: Option<u64>,
    pub longest_cutoff: Option<u64>,
}

impl Secondary {
    /// Compute it for the page's settings (and a pasted config.json).
    pub fn of(s: &Settings, config_json: Option<&str>) -> Secondary {
        let methods = [
            ("full", "Full"),
            ("freeze", "Freeze"),
            ("lora", "LoRA"),
            ("qlora4", "QLoRA 4-bit"),
        ]
        .into_iter()
        .map(|(m, label)| {
            let mut alt = s.clone();
            apply_method(&mut alt, m);
            (label, compute_with(&alt, config_json))
        })
        .collect();
        let searches = s.plan().ok().and_then(|p| {
            let (a, _) = estimate::resolve_model(&p, config_json).ok()?;
            let m = catalog::find_gpu(p.gpu.as_deref()?).ok()?.memory_bytes();
            Some((
                estimate::largest_batch(&a, &p, m),
                estimate::longest_cutoff(&a, &p, m),
            ))
        });
        let (largest_batch, longest_cutoff) = searches.unwrap_or((None, None));
        Secondary {
            methods,
            largest_batch,
            longest_cutoff,
        }
    }
}

/// Average milliseconds one estimate takes, for `cargo xtask bench-web`.
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn bench_recompute(iterations: u32) -> f64 {
    let s = default_settings();
    let now = || {
        web_sys::window()
            .and_then(|w| w.performance())
            .map(|p| p.now())
            .unwrap_or(0.0)
    };
    let t0 = now();
    for _ in 0..iterations.max(1) {
        let _ = compute(&s);
    }
    (now() - t0) / iterations.max(1) as f64
}

pub(crate) fn update_url(s: &Settings) {
    if let Some(h) = web_sys::window().and_then(|w| w.history().ok()) {
        let url = format!("?{}", export::to_query(s));
        let _ = h.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&url));
    }
}
