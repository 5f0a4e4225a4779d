//! The page's compound inputs and the LLaMA-Factory keys behind them: precision, method,
//! optimizer family and sharding each read from and written to several keys.

use lorafit_core::plan::{Settings, Val};

use crate::format::*;

pub(crate) fn precision_of(s: &Settings) -> &'static str {
    if s.get("pure_bf16") == Some(&Val::Bool(true)) {
        "pure_bf16"
    } else if s.get("fp16") == Some(&Val::Bool(true)) {
        "fp16"
    } else if s.get("bf16") == Some(&Val::Bool(true)) {
        "bf16"
    } else {
        "fp32"
    }
}

pub(crate) fn apply_precision(s: &mut Settings, p: &str) {
    for k in ["bf16", "fp16", "pure_bf16"] {
        s.unset(k);
    }
    if p != "fp32" {
        let _ = s.set(p, Val::Bool(true));
    }
}

/// The method selector folds finetuning_type and quantization_bit into one choice.
pub(crate) fn method_of(s: &Settings) -> &'static str {
    match (
        get_str(s, "finetuning_type").as_str(),
        get_str(s, "quantization_bit").as_str(),
    ) {
        ("full", _) if s.get("pure_bf16") == Some(&Val::Bool(true)) => "full_pure",
        ("full", _) => "full",
        ("freeze", _) => "freeze",
        ("oft", _) => "oft",
        (_, "4") => "qlora4",
        (_, "8") => "qlora8",
        _ => "lora",
    }
}

pub(crate) fn apply_method(s: &mut Settings, m: &str) {
    s.unset("quantization_bit");
    s.unset("pure_bf16");
    let ft = match m {
        "full" | "full_pure" => "full",
        "freeze" => "freeze",
        "oft" => "oft",
        _ => "lora",
    };
    let _ = s.set("finetuning_type", Val::Str(ft.into()));
    match m {
        "qlora4" => {
            let _ = s.set("quantization_bit", Val::Int(4));
        }
        "qlora8" => {
            let _ = s.set("quantization_bit", Val::Int(8));
        }
        "full_pure" => {
            s.unset("bf16");
            let _ = s.set("pure_bf16", Val::Bool(true));
        }
        _ => {}
    }
}

/// The optimizer selector folds `optim` and LLaMA-Factory's `use_galore` / `use_apollo` /
/// `use_badam` / `use_adam_mini` / `use_muon` switches into one choice.
pub(crate) const OPTIMIZER_SWITCHES: [(&str, &str); 5] = [
    ("galore", "use_galore"),
    ("apollo", "use_apollo"),
    ("badam", "use_badam"),
    ("adam_mini", "use_adam_mini"),
    ("muon", "use_muon"),
];

pub(crate) fn optimizer_of(s: &Settings) -> String {
    OPTIMIZER_SWITCHES
        .iter()
        .find(|(_, k)| s.get(k) == Some(&Val::Bool(true)))
        .map(|(v, _)| v.to_string())
        .unwrap_or_else(|| {
            s.get("optim")
                .map(|v| v.to_string())
                .unwrap_or_else(|| "adamw_torch".into())
        })
}

pub(crate) fn apply_optimizer(s: &mut Settings, v: &str) {
    s.unset("optim");
    for (_, k) in OPTIMIZER_SWITCHES {
        s.unset(k);
    }
    match OPTIMIZER_SWITCHES.iter().find(|(name, _)| *name == v) {
        Some((_, k)) => {
            let _ = s.set(k, Val::Bool(true));
        }
        None if v != "adamw_torch" => {
            let _ = s.set("optim", Val::Str(v.into()));
        }
        None => {}
    }
}

/// The sharding selector: LLaMA-Factory's DeepSpeed files, or FSDP (transformers' `fsdp`).
pub(crate) fn sharding_of(s: &Settings) -> String {
    match (s.get("deepspeed"), s.get("fsdp")) {
        (Some(d), _) => d.to_string(),
        (None, Some(f)) => format!("fsdp:{f}"),
        _ => String::new(),
    }
}

pub(crate) fn apply_sharding(s: &mut Settings, v: &str) {
    s.unset("deepspeed");
    s.unset("fsdp");
    if let Some(f) = v.strip_prefix("fsdp:") {
        let _ = s.set("fsdp", Val::Str(f.into()));
    } else if !v.is_empty() {
        let _ = s.set("deepspeed", Val::Str(v.into()));
    }
}
