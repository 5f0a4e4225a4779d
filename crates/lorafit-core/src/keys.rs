//! Every key `llamafactory-cli train` accepts, as data: `data/llamafactory_keys.json`, extracted
//! from LLaMA-Factory's hparams dataclasses and transformers' `Seq2SeqTrainingArguments` by
//! `scripts/extract_lf_keys.py`. Keys lorafit does not type itself (plan.rs) are validated here
//! by the type LLaMA-Factory declares, so a bad value is an error and a real key is never "unknown".

use std::sync::OnceLock;

use serde::Deserialize;

use crate::error::Error;
use crate::plan::Val;

/// One declared key.
#[derive(Debug, Clone, Deserialize)]
pub struct LfKey {
    pub name: String,
    /// The dataclass that declares it (`FinetuningArguments`, `transformers … Seq2SeqTrainingArguments`, …;
    /// empty in the web page's copy).
    #[serde(default)]
    pub group: String,
    /// bool, int, float, str, enum or any.
    #[serde(rename = "type")]
    pub kind: String,
    /// The allowed values of an enum.
    #[serde(default)]
    pub choices: Vec<String>,
    /// The default as declared (null where none or not a literal; and in the web page's copy).
    #[serde(default)]
    pub default: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct Table {
    source: String,
    keys: Vec<LfKey>,
    v1_keys: Vec<LfKey>,
}

fn table() -> &'static Table {
    static T: OnceLock<Table> = OnceLock::new();
    T.get_or_init(|| {
        serde_json::from_str(include_str!(concat!(
            env!("OUT_DIR"),
            "/llamafactory_keys.json"
        )))
        .unwrap_or(Table {
            source: "unreadable".into(),
            keys: Vec::new(),
            v1_keys: Vec::new(),
        })
    })
}

/// Where the table was extracted from (LLaMA-Factory commit, transformers version).
pub fn source() -> &'static str {
    &table().source
}

/// Every key of LLaMA-Factory's (v0) hparams, sorted by name.
pub fn all() -> &'static [LfKey] {
    &table().keys
}

/// The top-level keys of LLaMA-Factory v1's configs (`model`, `peft_config`, `micro_batch_size`, …).
pub fn v1_all() -> &'static [LfKey] {
    &table().v1_keys
}

/// The declaration of `name`, if LLaMA-Factory has that key.
pub fn find(name: &str) -> Option<&'static LfKey> {
    let keys = all();
    keys.binary_search_by(|k| k.name.as_str().cmp(name))
        .ok()
        .map(|i| &keys[i])
}

/// Whether `name` is a top-level key of LLaMA-Factory v1's configs.
pub fn is_v1(name: &str) -> bool {
    v1_all().iter().any(|k| k.name == name)
}

/// Validate `v` against the type LLaMA-Factory declares for `key`, normalising YAML's readings
/// (`"true"`, `"1e-4"`). `any`-typed keys take every value.
pub fn check(key: &LfKey, v: Val) -> Result<Val, Error> {
    let bad = |v: &Val, allowed: String| Error::bad(&key.name, v, allowed);
    match key.kind.as_str() {
        "bool" => match &v {
            Val::Bool(_) => Ok(v),
            Val::Str(s) => crate::settings::yaml11_bool(s)
                .map(Val::Bool)
                .ok_or_else(|| bad(&v, "true or false".into())),
            _ => Err(bad(&v, "true or false".into())),
        },
        "int" => match &v {
            Val::Int(_) => Ok(v),
            Val::Float(f) if f.fract() == 0.0 && f.abs() < 9e15 => Ok(Val::Int(*f as i64)),
            Val::Str(s) => s
                .trim()
                .parse::<i64>()
                .map(Val::Int)
                .map_err(|_| bad(&v, "a whole number".into())),
            _ => Err(bad(&v, "a whole number".into())),
        },
        "float" => match &v {
            Val::Int(i) => Ok(Val::Float(*i as f64)),
            Val::Float(f) if f.is_finite() => Ok(v),
            Val::Str(s) => s
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .map(Val::Float)
                .ok_or_else(|| bad(&v, "a number".into())),
            _ => Err(bad(&v, "a number".into())),
        },
        "enum" => {
            let s = v.to_string();
            if key.choices.contains(&s) {
                Ok(Val::Str(s))
            } else {
                Err(bad(&v, format!("one of {}", key.choices.join(", "))))
            }
        }
        "str" => match v {
            Val::Str(s) if s.chars().any(char::is_control) => Err(bad(
                &Val::Str(s.escape_debug().to_string()),
                "text without control characters".into(),
            )),
            Val::Str(_) => Ok(v),
            other => Ok(Val::Str(other.to_string())),
        },
        _ => Ok(v),
    }
}
