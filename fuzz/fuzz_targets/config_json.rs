//! The model config.json reader: any text is a model or an error, never a panic, and a model
//! that parses gets an estimate or an error for LoRA, QLoRA and full fine-tuning.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lorafit_core::{ModelArch, Settings, estimate, plan::Val};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(arch) = ModelArch::from_config_json(text) else {
        return;
    };
    let _ = (arch.total_params(), arch.active_params());
    for ft in ["lora", "full", "freeze"] {
        let mut s = Settings::default();
        let _ = s.set("model_name_or_path", Val::Str("fuzzed".into()));
        let _ = s.set("finetuning_type", Val::Str(ft.into()));
        let _ = s.set("bf16", Val::Bool(true));
        if let Ok(plan) = s.plan() {
            let _ = estimate::estimate(&arch, estimate::ModelSource::ConfigJson, &plan);
        }
    }
});
