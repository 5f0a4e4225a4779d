//! The model and GPU catalogs, compiled in from `data/models.json` (Hugging Face config.json
//! blocks) and `data/gpus.json` (memory, bf16 TFLOPS, bandwidth, prices with their sources).

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::arch::ModelArch;
use crate::error::Error;

/// One catalog model: its HF id and its `config.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatalogModel {
    pub id: String,
    pub family: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub config: serde_json::Value,
    /// Published variants with this shape (Instruct / Chat / -it / -2507 / distills /
    /// pre-quantized repos), as the hub spells them; each becomes a catalog entry of its own.
    #[serde(default, skip_serializing)]
    pub variants: Vec<Variant>,
    /// For a variant: the id whose config block it shares.
    #[serde(default)]
    pub variant_of: Option<String>,
}

/// A variant: an id, or an object with the id and, for a pre-quantized repo, the name of the
/// `quantization_config` its config.json carries (a key of the file's `quantization_presets`),
/// and/or its own `family` where it was published under another name than its base (Qwen3.6 on
/// Qwen3.5's config).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Variant {
    Id(String),
    Entry {
        id: String,
        #[serde(default)]
        quantization: Option<String>,
        #[serde(default)]
        family: Option<String>,
    },
}

impl CatalogModel {
    /// The parsed architecture (catalog entries are checked by a test to parse).
    pub fn arch(&self) -> Result<ModelArch, Error> {
        ModelArch::from_config_value(&self.config)
    }
}

/// One listed price of a GPU-hour.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Price {
    pub provider: String,
    pub usd_per_hour: f64,
    /// on-demand, spot or marketplace.
    pub kind: String,
    /// Where the price was read.
    pub source: String,
    /// The date that page gave for it.
    pub as_of: String,
}

/// One GPU type.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Gpu {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Total memory as nvidia-smi reports it (MiB).
    pub memory_mib: u64,
    pub memory_source: String,
    /// Dense bf16 (fp16 where no bf16) tensor-core peak.
    pub bf16_tflops: f64,
    pub memory_bandwidth_gbps: f64,
    /// Whether the card has bf16 tensor cores.
    pub bf16: bool,
    #[serde(default)]
    pub prices: Vec<Price>,
}

impl Gpu {
    /// Total device memory in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.memory_mib * 1024 * 1024
    }
    /// The cheapest listed price, if any.
    pub fn cheapest_price(&self) -> Option<&Price> {
        self.prices
            .iter()
            .min_by(|a, b| a.usd_per_hour.total_cmp(&b.usd_per_hour))
    }
}

#[derive(Deserialize)]
struct ModelsFile {
    #[serde(default)]
    quantization_presets: std::collections::BTreeMap<String, serde_json::Value>,
    models: Vec<CatalogModel>,
}

#[derive(Deserialize)]
struct GpusFile {
    gpus: Vec<Gpu>,
}

/// All catalog models, each variant an entry of its own right after its base.
pub fn models() -> &'static [CatalogModel] {
    static M: OnceLock<Vec<CatalogModel>> = OnceLock::new();
    M.get_or_init(|| {
        let Ok(file) = serde_json::from_str::<ModelsFile>(include_str!(concat!(
            env!("OUT_DIR"),
            "/models.json"
        ))) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for m in file.models {
            let variants = m.variants.clone();
            let (id, family, config) = (m.id.clone(), m.family.clone(), m.config.clone());
            out.push(m);
            for v in variants {
                let (vid, quant, vfamily) = match v {
                    Variant::Id(i) => (i, None, None),
                    // A test checks every preset name resolves.
                    Variant::Entry {
                        id,
                        quantization,
                        family,
                    } => (
                        id,
                        quantization.and_then(|q| file.quantization_presets.get(&q).cloned()),
                        family,
                    ),
                };
                let mut cfg = config.clone();
                if let (Some(q), Some(obj)) = (quant, cfg.as_object_mut()) {
                    obj.insert("quantization_config".into(), q);
                }
                out.push(CatalogModel {
                    id: vid,
                    family: vfamily.unwrap_or_else(|| family.clone()),
                    aliases: Vec::new(),
                    config: cfg,
                    variants: Vec::new(),
                    variant_of: Some(id.clone()),
                });
            }
        }
        out
    })
}

/// The catalog's families, in catalog order.
pub fn families() -> Vec<&'static str> {
    let mut out: Vec<&str> = Vec::new();
    for m in models() {
        if !out.contains(&m.family.as_str()) {
            out.push(&m.family);
        }
    }
    out
}

/// All catalog GPUs.
pub fn gpus() -> &'static [Gpu] {
    static G: OnceLock<Vec<Gpu>> = OnceLock::new();
    G.get_or_init(|| {
        serde_json::from_str::<GpusFile>(include_str!(concat!(env!("OUT_DIR"), "/gpus.json")))
            .map(|f| f.gpus)
            .unwrap_or_default()
    })
}

fn norm(s: &str) -> String {
    s.trim().to_ascii_lowercase()
}

fn suggestions<'a>(id: &str, names: impl Iterator<Item = &'a str>) -> String {
    let needle = norm(id);
    let tail = needle.rsplit('/').next().unwrap_or(&needle).to_string();
    let close: Vec<&str> = names
        .filter(|n| {
            let n = norm(n);
            !tail.is_empty()
                && (n.contains(&tail) || tail.contains(n.rsplit('/').next().unwrap_or(&n)))
        })
        .take(5)
        .collect();
    if close.is_empty() {
        String::new()
    } else {
        format!("; did you mean: {}?", close.join(", "))
    }
}

/// Lower-cased ids and aliases → index in [`models`], built once (the page looks models up on
/// every input).
fn model_index() -> &'static std::collections::HashMap<String, usize> {
    static I: OnceLock<std::collections::HashMap<String, usize>> = OnceLock::new();
    I.get_or_init(|| {
        let mut map = std::collections::HashMap::new();
        for (i, m) in models().iter().enumerate() {
            for name in std::iter::once(&m.id).chain(&m.aliases) {
                map.entry(norm(name)).or_insert(i);
            }
        }
        // The repo name alone (`Qwen2.5-7B-Instruct` for `Qwen/Qwen2.5-7B-Instruct`), where no
        // id or alias claims it: the first entry with that name wins.
        for (i, m) in models().iter().enumerate() {
            if let Some((_, name)) = m.id.rsplit_once('/') {
                map.entry(norm(name)).or_insert(i);
            }
        }
        map
    })
}

/// Find a catalog model by HF id, alias or the id's repo name alone (case-insensitive).
pub fn find_model(id: &str) -> Result<&'static CatalogModel, Error> {
    model_index()
        .get(&norm(id))
        .map(|&i| &models()[i])
        .ok_or_else(|| Error::Unknown {
            kind: "model",
            id: id.to_string(),
            hint: {
                let s = suggestions(id, models().iter().map(|m| m.id.as_str()));
                if s.is_empty() {
                    "; give a catalog id (`lorafit models` lists them) or a directory holding config.json".into()
                } else {
                    s
                }
            },
        })
}

/// Find a GPU by id or alias (case-insensitive).
pub fn find_gpu(id: &str) -> Result<&'static Gpu, Error> {
    let n = norm(id);
    gpus()
        .iter()
        .find(|g| norm(&g.id) == n || g.aliases.iter().any(|a| norm(a) == n))
        .ok_or_else(|| Error::Unknown {
            kind: "gpu",
            id: id.to_string(),
            hint: format!(
                "; allowed: {}",
                gpus()
                    .iter()
                    .map(|g| g.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}
