//! Exports of a configuration: LLaMA-Factory YAML (round-trips through [`Settings::from_yaml`]),
//! a DeepSpeed JSON for the chosen ZeRO stage, the `lorafit train` command line, and the share
//! link's query string (Contract 4).

use crate::error::Error;
use crate::plan::{Origin, Settings, Val, Zero};

fn yaml_value(key: &str, v: &Val) -> String {
    match v {
        Val::Bool(b) => b.to_string(),
        Val::Int(i) => i.to_string(),
        Val::Float(f) => {
            let s = format!("{f:?}");
            if s.contains('e') && !s.contains('.') {
                s.replacen('e', ".0e", 1)
            } else {
                s
            }
        }
        Val::Str(s) => {
            // Enum values such as quantization_bit are numbers in LLaMA-Factory's YAML; text
            // (`model_name_or_path: '-0'`) stays text.
            if s.parse::<i64>().is_ok() && !crate::settings::is_text_key(key) {
                return s.clone();
            }
            yaml_string(s)
        }
    }
}

/// A YAML string scalar that PyYAML (LLaMA-Factory's YAML 1.1 reader) and lorafit read back as
/// this text: plain when it starts with a letter, `_` or `/` and holds only letters, digits and
/// `_ . / - , +` (no YAML 1.1 boolean or null word), else double-quoted with JSON's escapes, which
/// YAML's double-quoted style shares (checked against PyYAML on 200 000 random strings of
/// printable ASCII, controls, line separators and astral characters when written).
fn yaml_string(s: &str) -> String {
    let safe_start = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '/');
    let safe_rest = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_./-,+".contains(c));
    let keyword = matches!(
        s.to_ascii_lowercase().as_str(),
        "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null"
    );
    if safe_start && safe_rest && !keyword {
        return s.to_string();
    }
    // JSON escapes the C0 controls; YAML also refuses DEL, the C1 controls, the BOM and the two
    // non-characters raw, and folds U+2028 / U+2029 as line breaks.
    let quoted = serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"));
    let mut out = String::with_capacity(quoted.len());
    for c in quoted.chars() {
        match c as u32 {
            0x7f..=0x9f | 0x2028 | 0x2029 | 0xfeff | 0xfffe | 0xffff => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            _ => out.push(c),
        }
    }
    out
}

/// LLaMA-Factory YAML. With `lorafit_keys`, lorafit's own keys (gpu, num_gpus, …) are written too
/// (lorafit reads them back); without, the file is exactly what `llamafactory-cli train` accepts,
/// which rejects unknown keys.
pub fn to_llamafactory_yaml(settings: &Settings, lorafit_keys: bool) -> String {
    let mut out = String::from("### written by lorafit\n");
    // LLaMA-Factory wants the stage and do_train spelled out; adding them to a copy keeps the
    // canonical key order, so exporting what was read back writes the same text.
    let mut full = settings.clone();
    if full.get("stage").is_none() {
        let _ = full.set("stage", Val::Str("sft".into()));
    }
    if full.get("do_train").is_none() {
        let _ = full.set("do_train", Val::Bool(true));
    }
    for (k, origin, v) in full.iter() {
        if origin == Origin::Lorafit && !lorafit_keys {
            continue;
        }
        out.push_str(&format!("{k}: {}\n", yaml_value(k, v)));
    }
    out
}

/// A DeepSpeed config for `zero` in the form LLaMA-Factory's examples/deepspeed files use.
pub fn to_deepspeed_json(zero: &Zero) -> String {
    let mut zo = serde_json::json!({
        "stage": zero.stage,
        "overlap_comm": false,
        "contiguous_gradients": true,
        "reduce_bucket_size": 5e8,
    });
    if zero.stage == 3 {
        zo["stage3_prefetch_bucket_size"] = serde_json::json!(5e8);
        zo["stage3_param_persistence_threshold"] = serde_json::json!(1e6);
        zo["stage3_gather_16bit_weights_on_model_save"] = serde_json::json!(true);
    }
    if let Some(n) = zero.sub_group_size {
        zo["sub_group_size"] = serde_json::json!(n);
    }
    if zero.offload_optimizer {
        zo["offload_optimizer"] = serde_json::json!({"device": "cpu", "pin_memory": true});
    }
    if zero.offload_param {
        zo["offload_param"] = serde_json::json!({"device": "cpu", "pin_memory": true});
    }
    let v = serde_json::json!({
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_allow_untested_optimizer": true,
        "fp16": {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 1000, "initial_scale_power": 16, "hysteresis": 2, "min_loss_scale": 1},
        "bf16": {"enabled": "auto"},
        "zero_optimization": zo,
    });
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// The file name LLaMA-Factory ships for a stage (`ds_z3_offload_config.json`, …).
pub fn deepspeed_file_name(zero: &Zero) -> String {
    format!(
        "ds_z{}{}_config.json",
        zero.stage,
        if zero.offload_optimizer {
            "_offload"
        } else {
            ""
        }
    )
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// `lorafit train config.yaml --set …` for settings that differ from a saved file: here, every key.
pub fn to_train_command(settings: &Settings, config_path: &str) -> String {
    let mut cmd = format!("lorafit train {}", shell_quote(config_path));
    for (k, _, v) in settings.iter() {
        cmd.push_str(&format!(" --set {}", shell_quote(&format!("{k}={v}"))));
    }
    cmd
}

/// Percent-encode everything but unreserved characters, `/` and `,` (query values, data: URLs).
pub fn pct_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/,".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn pct_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'%' => return None,
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The share link's query string (without `?`): Contract 1 keys, canonical order.
pub fn to_query(settings: &Settings) -> String {
    settings
        .iter()
        .map(|(k, _, v)| format!("{k}={}", pct_encode(&v.to_string())))
        .collect::<Vec<_>>()
        .join("&")
}

/// Read a share link's query string. Good keys are applied; every bad field (unknown key, bad
/// value, broken encoding) becomes a warning and keeps the default, so a hostile link never fails.
pub fn from_query(query: &str) -> (Settings, Vec<String>) {
    let mut s = Settings::default();
    let mut warnings = Vec::new();
    for part in query
        .trim_start_matches('?')
        .split('&')
        .filter(|p| !p.is_empty())
        .take(200)
    {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let (Some(k), Some(v)) = (pct_decode(k), pct_decode(v)) else {
            warnings.push(format!(
                "ignored a badly encoded parameter `{}`",
                part.chars().take(60).collect::<String>()
            ));
            continue;
        };
        if let Err(e) = s.set_text(&k, &v) {
            warnings.push(format!("{e}; the default is used"));
        }
    }
    warnings.append(&mut s.warnings);
    (s, warnings)
}

/// Validate a round trip: what `to_llamafactory_yaml` writes parses back to the same settings.
pub fn yaml_round_trip(settings: &Settings) -> Result<Settings, Error> {
    Settings::from_yaml(&to_llamafactory_yaml(settings, true))
}
