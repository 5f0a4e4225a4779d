//! LLaMA-Factory v1's configs (`model:`, `peft_config:`, `quant_config:`, `kernel_config:`,
//! `dist_config:`, `optim_config:`, `micro_batch_size:` …) read into the same flat keys as v0's,
//! with v1's own defaults (bf16 on, micro-batch 1, LoRA dropout 0.05), so both estimate alike.

use serde_yaml_ng::Value as Y;

use crate::error::Error;

type Flat = Vec<(String, Y)>;

/// Whether a config is v1's: it has a key v1 declares that v0 does not (`model`, `peft_config`, …).
pub fn is_v1(flat: &[(String, Y)]) -> bool {
    flat.iter()
        .any(|(k, _)| crate::keys::find(k).is_none() && crate::keys::is_v1(k))
}

/// v1 keys that change nothing lorafit estimates.
const NO_EFFECT: &[&str] = &[
    "model_class",
    "init_config",
    "custom_chat_template",
    "sample_backend",
    "batching_workers",
    "dist_timeout",
    "full_determinism",
    "save_ckpt_as_hf",
    "save_epochs",
];

fn plugin_name(key: &str, m: &serde_yaml_ng::Mapping) -> Result<String, Error> {
    match m.get("name").and_then(Y::as_str) {
        Some(n) => Ok(n.to_string()),
        None => Err(Error::bad(
            key,
            "(a mapping without `name`)",
            "a plugin mapping with a `name:` field",
        )),
    }
}

fn show(v: &Y) -> String {
    serde_yaml_ng::to_string(v)
        .map(|t| t.trim_end().to_string())
        .unwrap_or_default()
}

fn s(v: &str) -> Y {
    Y::String(v.into())
}

/// Read a v1 config's keys into v0's. Notes on what was assumed go to `notes`.
pub fn flatten(flat: Flat, notes: &mut Vec<String>) -> Result<Flat, Error> {
    let mut out: Flat = Vec::new();
    let has = |k: &str| flat.iter().any(|(n, _)| n == k);
    let get = |k: &str| flat.iter().find(|(n, _)| n == k).map(|(_, v)| v);
    notes.push("read as a LLaMA-Factory v1 config (nested peft_config / dist_config …)".into());
    if !has("peft_config") {
        out.push(("finetuning_type".into(), s("full")));
    }
    if !has("model") && !has("model_name_or_path") {
        // v1's ModelArguments default.
        out.push((
            "model_name_or_path".into(),
            s("Qwen/Qwen3-4B-Instruct-2507"),
        ));
        notes.push("v1: no `model`, so v1's default Qwen/Qwen3-4B-Instruct-2507".into());
    }
    if !has("bf16") {
        out.push(("bf16".into(), Y::Bool(true)));
    }
    if !has("micro_batch_size") {
        out.push(("per_device_train_batch_size".into(), Y::Number(1.into())));
    }
    if !has("stage") {
        let dpo = get("train_dataset")
            .and_then(Y::as_str)
            .is_some_and(|d| d.contains("dpo"));
        let stage = if dpo { "dpo" } else { "sft" };
        out.push(("stage".into(), s(stage)));
        notes.push(format!(
            "v1: the stage is the llamafactory-cli command (sft, dpo, rm); estimated as {stage}{} — \
             --set stage=… to choose",
            if dpo { " from the dataset's name" } else { "" }
        ));
    }
    for (key, v) in flat.iter().cloned() {
        match key.as_str() {
            "model" => out.push(("model_name_or_path".into(), v)),
            "micro_batch_size" => out.push(("per_device_train_batch_size".into(), v)),
            "train_dataset" => out.push(("dataset".into(), v)),
            "global_batch_size" => {
                let micro = get("micro_batch_size")
                    .and_then(Y::as_u64)
                    .unwrap_or(1)
                    .max(1);
                let gpus = get("num_gpus").and_then(Y::as_u64).unwrap_or(1).max(1);
                let Some(global) = v.as_u64().filter(|g| *g > 0) else {
                    if !v.is_null() {
                        return Err(Error::bad(&key, show(&v), "a positive whole number"));
                    }
                    continue;
                };
                let accum = (global / (micro * gpus)).max(1);
                if global % (micro * gpus) != 0 {
                    notes.push(format!(
                        "v1: global_batch_size {global} is not a multiple of micro_batch_size × num_gpus = {}",
                        micro * gpus
                    ));
                }
                out.push((
                    "gradient_accumulation_steps".into(),
                    Y::Number(accum.into()),
                ));
            }
            "enable_activation_checkpointing" => {
                if v.as_bool() == Some(false) {
                    out.push(("disable_gradient_checkpointing".into(), Y::Bool(true)));
                }
            }
            "peft_config" => peft(&key, &v, &mut out, notes)?,
            "quant_config" => {
                if let Y::Mapping(m) = &v {
                    let name = plugin_name(&key, m)?;
                    out.push(("quantization_method".into(), s("bnb")));
                    if name != "bnb" && name != "auto" {
                        notes.push(format!("v1 quant_config `{name}` read as bitsandbytes"));
                    }
                    let bit = m
                        .get("quantization_bit")
                        .cloned()
                        .unwrap_or(Y::Number(4.into()));
                    out.push(("quantization_bit".into(), bit));
                    for k in ["quantization_type", "double_quantization"] {
                        if let Some(x) = m.get(k) {
                            out.push((k.into(), x.clone()));
                        }
                    }
                }
            }
            "kernel_config" => {
                if let Y::Mapping(m) = &v {
                    let name = plugin_name(&key, m)?;
                    if name == "liger_kernel" {
                        out.push(("enable_liger_kernel".into(), Y::Bool(true)));
                    } else if name != "auto" {
                        notes.push(format!("v1 kernel_config `{name}`: memory as without it"));
                    }
                }
            }
            "dist_config" => {
                if let Y::Mapping(m) = &v {
                    match plugin_name(&key, m)?.as_str() {
                        "deepspeed" => {
                            let file = m
                                .get("config_file")
                                .cloned()
                                .unwrap_or_else(|| s("ds_z3_config.json"));
                            out.push(("deepspeed".into(), file));
                        }
                        // FSDP2 shards parameters, gradients and states like ZeRO-3.
                        "fsdp2" | "fsdpturbo" | "fsdp" => {
                            out.push(("fsdp".into(), s("full_shard")));
                        }
                        other => notes.push(format!("v1 dist_config `{other}` not modelled")),
                    }
                }
            }
            "optim_config" => {
                if let Y::Mapping(m) = &v {
                    let name = plugin_name(&key, m)?;
                    match name.as_str() {
                        "muon" => out.push(("use_muon".into(), Y::Bool(true))),
                        n if crate::plan::OPTIMIZERS.contains(&n) => {
                            out.push(("optim".into(), s(n)))
                        }
                        "adamw" | "adam" => out.push(("optim".into(), s("adamw_torch"))),
                        other => notes.push(format!("v1 optim_config `{other}`: memory as AdamW")),
                    }
                }
            }
            "lr_scheduler_config" => {
                if let Y::Mapping(m) = &v {
                    out.push(("lr_scheduler_type".into(), s(&plugin_name(&key, m)?)));
                }
            }
            "cp_size" | "dp_size" | "mp_replicate_size" | "mp_shard_size" | "cp_mode" => {
                if v.as_u64().is_some_and(|n| n > 1) {
                    notes.push(format!(
                        "v1 {key}: {} — context / model parallelism is not modelled (per-GPU memory as without it)",
                        show(&v)
                    ));
                }
            }
            "batching_strategy" => {
                if v.as_str().is_some_and(|b| b != "normal") {
                    notes.push(format!(
                        "v1 batching_strategy {}: memory for micro_batch_size × cutoff_len tokens",
                        show(&v)
                    ));
                }
            }
            k if NO_EFFECT.contains(&k) => {}
            _ => out.push((key, v)),
        }
    }
    Ok(out)
}

fn peft(key: &str, v: &Y, out: &mut Flat, notes: &mut Vec<String>) -> Result<(), Error> {
    let Y::Mapping(m) = v else {
        // `peft_config: null`: full fine-tuning.
        out.push(("finetuning_type".into(), s("full")));
        return Ok(());
    };
    let name = plugin_name(key, m)?;
    match name.as_str() {
        "lora" => {
            out.push(("finetuning_type".into(), s("lora")));
            if m.get("lora_dropout").is_none() {
                out.push((
                    "lora_dropout".into(),
                    Y::Number(serde_yaml_ng::Number::from(0.05)),
                ));
            }
            if m.get("lora_alpha").is_none() {
                let r = m.get("r").and_then(Y::as_u64).unwrap_or(8);
                out.push(("lora_alpha".into(), Y::Number((2 * r).into())));
            }
            for (k, x) in m {
                let Some(k) = k.as_str() else { continue };
                let mapped = match k {
                    "name" => continue,
                    "r" => "lora_rank",
                    "target_modules" => "lora_target",
                    "lora_alpha"
                    | "lora_dropout"
                    | "use_rslora"
                    | "use_dora"
                    | "adapter_name_or_path"
                    | "export_dir"
                    | "export_size" => k,
                    "modules_to_save" => "additional_target",
                    "export_hub_model_id" | "infer_dtype" | "export_legacy_format" => continue,
                    other => {
                        notes.push(format!("v1 peft_config key `{other}` ignored"));
                        continue;
                    }
                };
                out.push((mapped.into(), x.clone()));
            }
        }
        "freeze" => {
            out.push(("finetuning_type".into(), s("freeze")));
            for (k, x) in m {
                let Some(k) = k.as_str() else { continue };
                match k {
                    "name" | "cast_trainable_params_to_fp32" => {}
                    "freeze_trainable_layers"
                    | "freeze_trainable_modules"
                    | "freeze_extra_modules" => out.push((k.into(), x.clone())),
                    other => notes.push(format!("v1 peft_config key `{other}` ignored")),
                }
            }
        }
        other => {
            return Err(Error::bad(
                "peft_config.name",
                other,
                "lora or freeze (LLaMA-Factory v1's PEFT plugins)",
            ));
        }
    }
    Ok(())
}
