//! `llamafactory-cli export` for LoRA: a PEFT adapter merged into its base checkpoint
//! (`W + scale·B·A`, DoRA's magnitude rescaling), written as safetensors in the base's dtype,
//! sharded by `export_size` (GB) with an index, beside the base's config, generation config and
//! tokenizer files. Host-only: no device, no burn.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::weights::{Weights, write_atomic};

/// What `merge` wrote.
#[derive(Debug, Clone)]
pub struct Merged {
    pub export_dir: PathBuf,
    /// Base tensors the adapter changed.
    pub merged: usize,
    pub tensors: usize,
    pub files: Vec<PathBuf>,
    pub dtype: String,
    pub total_bytes: u64,
}

/// The base checkpoint's safetensors files (one, or the shards of its index).
fn base_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::ckpt(&index, format!("not valid JSON: {e}")))?;
        let mut files: Vec<String> = v
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::ckpt(&index, "has no `weight_map` object"))?
            .values()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect();
        files.sort();
        files.dedup();
        if let Some(bad) = files.iter().find(|f| f.contains('/') || f.contains("..")) {
            return Err(Error::ckpt(
                &index,
                format!("shard name `{bad}` must be a file in the same directory"),
            ));
        }
        Ok(files.into_iter().map(|f| dir.join(f)).collect())
    } else if single.is_file() {
        Ok(vec![single])
    } else {
        Err(Error::ckpt(
            dir,
            "has neither model.safetensors nor model.safetensors.index.json",
        ))
    }
}

fn encode(dtype: Dtype, data: &[f32]) -> Result<Vec<u8>> {
    Ok(match dtype {
        Dtype::F32 => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        // half rounds to nearest, ties to even, as torch's casts do.
        Dtype::BF16 => data
            .iter()
            .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
            .collect(),
        Dtype::F16 => data
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect(),
        other => {
            return Err(Error::Unsupported(format!(
                "merging into {other:?} weights"
            )));
        }
    })
}

fn dtype_name(d: Dtype) -> &'static str {
    match d {
        Dtype::F32 => "float32",
        Dtype::BF16 => "bfloat16",
        Dtype::F16 => "float16",
        _ => "other",
    }
}

/// Merge `adapter_dir` into `base_dir` and write the result to `export_dir`.
pub fn merge(
    base_dir: &Path,
    adapter_dir: &Path,
    export_dir: &Path,
    export_size_gb: f64,
) -> Result<Merged> {
    let cfg_path = base_dir.join("config.json");
    let cfg_text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
    let cfg: Value = serde_json::from_str(&cfg_text)
        .map_err(|e| Error::ckpt(&cfg_path, format!("not valid JSON: {e}")))?;
    if cfg.get("quantization_config").is_some() {
        return Err(Error::Unsupported(format!(
            "{} is a quantized checkpoint: merge the adapter into the unquantized base (as LLaMA-Factory asks)",
            base_dir.display()
        )));
    }
    let acfg_path = adapter_dir.join("adapter_config.json");
    let acfg_text = std::fs::read_to_string(&acfg_path).map_err(|e| Error::io(&acfg_path, e))?;
    let acfg: Value = serde_json::from_str(&acfg_text)
        .map_err(|e| Error::ckpt(&acfg_path, format!("not valid JSON: {e}")))?;
    if acfg
        .get("peft_type")
        .and_then(Value::as_str)
        .is_some_and(|t| t != "LORA")
    {
        return Err(Error::Unsupported(format!(
            "{}: only LoRA adapters are merged",
            acfg_path.display()
        )));
    }
    let r = acfg
        .get("r")
        .and_then(Value::as_f64)
        .ok_or_else(|| Error::ckpt(&acfg_path, "has no `r`"))?;
    let alpha = acfg.get("lora_alpha").and_then(Value::as_f64).unwrap_or(r);
    let rslora = acfg
        .get("use_rslora")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let dora = acfg
        .get("use_dora")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if acfg
        .get("fan_in_fan_out")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        return Err(Error::Unsupported(format!(
            "{}: fan_in_fan_out adapters",
            acfg_path.display()
        )));
    }
    let scale = if rslora { alpha / r.sqrt() } else { alpha / r };
    let adapter = Weights::load_file(&adapter_dir.join("adapter_model.safetensors"))?;
    // PEFT's names: base_model.model.<path>.lora_A.weight → <path>.weight.
    let mut pairs: BTreeMap<String, (String, String, Option<String>)> = BTreeMap::new();
    for name in adapter.names() {
        if let Some(path) = name
            .strip_prefix("base_model.model.")
            .and_then(|n| n.strip_suffix(".lora_A.weight"))
        {
            let mag = format!("base_model.model.{path}.lora_magnitude_vector");
            pairs.insert(
                format!("{path}.weight"),
                (
                    name.to_string(),
                    format!("base_model.model.{path}.lora_B.weight"),
                    adapter.contains(&mag).then_some(mag),
                ),
            );
        }
    }
    if pairs.is_empty() {
        return Err(Error::ckpt(
            adapter_dir,
            "adapter_model.safetensors holds no lora_A / lora_B weights",
        ));
    }
    if dora && pairs.values().any(|(_, _, m)| m.is_none()) {
        return Err(Error::ckpt(
            adapter_dir,
            "use_dora is set but lora_magnitude_vector weights are missing",
        ));
    }

    // Every base tensor, merged where the adapter targets it, in the base's dtype.
    let mut out: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut merged = 0usize;
    let mut dtypes = std::collections::BTreeSet::new();
    for file in base_files(base_dir)? {
        let bytes = std::fs::read(&file).map_err(|e| Error::io(&file, e))?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::ckpt(&file, format!("not a valid safetensors file: {e}")))?;
        let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
        names.sort();
        for name in names {
            let view = st
                .tensor(&name)
                .map_err(|e| Error::ckpt(&file, format!("`{name}`: {e}")))?;
            let shape = view.shape().to_vec();
            let Some((a_name, b_name, mag)) = pairs.remove(&name) else {
                out.push((name, view.dtype(), shape, view.data().to_vec()));
                continue;
            };
            let bad = |m: String| Error::ckpt(adapter_dir, format!("`{name}`: {m}"));
            let (a, b) = (
                adapter
                    .get(&a_name)
                    .ok_or_else(|| bad("lora_A missing".into()))?,
                adapter
                    .get(&b_name)
                    .ok_or_else(|| bad(format!("{b_name} is missing")))?,
            );
            if shape.len() != 2
                || a.shape.len() != 2
                || b.shape.len() != 2
                || a.shape[1] != shape[1]
                || b.shape[0] != shape[0]
                || a.shape[0] != b.shape[1]
            {
                return Err(bad(format!(
                    "shapes do not fit: weight {shape:?}, lora_A {:?}, lora_B {:?}",
                    a.shape, b.shape
                )));
            }
            let (rows, cols, rank) = (shape[0], shape[1], a.shape[0]);
            let mut w = crate::weights::to_f32(&file, &name, view.dtype(), view.data())?;
            // W + scale·(B·A), accumulated in f64 per element, added in f32.
            for i in 0..rows {
                let brow = &b.data[i * rank..(i + 1) * rank];
                for j in 0..cols {
                    let mut acc = 0f64;
                    for (k, bk) in brow.iter().enumerate() {
                        acc += f64::from(*bk) * f64::from(a.data[k * cols + j]);
                    }
                    w[i * cols + j] += (acc * scale) as f32;
                }
            }
            if let Some(m) = mag {
                // DoRA: each row rescaled to its magnitude: m / ‖W + ΔW‖ · (W + ΔW).
                let m = adapter
                    .get(&m)
                    .ok_or_else(|| bad("magnitude missing".into()))?;
                if m.data.len() != rows {
                    return Err(bad(format!(
                        "lora_magnitude_vector has {} entries for {rows} rows",
                        m.data.len()
                    )));
                }
                for i in 0..rows {
                    let row = &mut w[i * cols..(i + 1) * cols];
                    let norm = row
                        .iter()
                        .map(|x| f64::from(*x) * f64::from(*x))
                        .sum::<f64>()
                        .sqrt();
                    let f = (f64::from(m.data[i]) / norm.max(f64::MIN_POSITIVE)) as f32;
                    row.iter_mut().for_each(|x| *x *= f);
                }
            }
            merged += 1;
            dtypes.insert(view.dtype());
            out.push((name, view.dtype(), shape, encode(view.dtype(), &w)?));
        }
    }
    if let Some(missing) = pairs.keys().next() {
        return Err(Error::ckpt(
            adapter_dir,
            format!(
                "targets `{missing}`, which {} does not have",
                base_dir.display()
            ),
        ));
    }

    // Shards of at most export_size GB (10⁹ bytes, as transformers' max_shard_size), in name order.
    std::fs::create_dir_all(export_dir).map_err(|e| Error::io(export_dir, e))?;
    let limit = (export_size_gb * 1e9).max(1.0) as u64;
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut size = 0u64;
    for (i, (_, _, _, bytes)) in out.iter().enumerate() {
        let n = bytes.len() as u64;
        if size > 0 && size + n > limit {
            shards.push(Vec::new());
            size = 0;
        }
        size += n;
        if let Some(s) = shards.last_mut() {
            s.push(i);
        }
    }
    let total: u64 = out.iter().map(|t| t.3.len() as u64).sum();
    let mut files = Vec::new();
    let mut weight_map = serde_json::Map::new();
    let count = shards.len();
    let meta: Option<std::collections::HashMap<String, String>> = Some(
        [("format".to_string(), "pt".to_string())]
            .into_iter()
            .collect(),
    );
    for (k, shard) in shards.iter().enumerate() {
        let fname = if count == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{count:05}.safetensors", k + 1)
        };
        let views = shard
            .iter()
            .map(|&i| {
                let (name, dtype, shape, bytes) = &out[i];
                weight_map.insert(name.clone(), json!(fname));
                TensorView::new(*dtype, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| Error::ckpt(export_dir, format!("`{name}`: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bytes = safetensors::serialize(views, meta.clone())
            .map_err(|e| Error::ckpt(export_dir, format!("writing {fname}: {e}")))?;
        let path = export_dir.join(&fname);
        write_atomic(&path, &bytes)?;
        files.push(path);
    }
    let index = export_dir.join("model.safetensors.index.json");
    if count > 1 {
        let v = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        write_atomic(
            &index,
            serde_json::to_string_pretty(&v)
                .unwrap_or_default()
                .as_bytes(),
        )?;
        files.push(index);
    } else if index.exists() {
        std::fs::remove_file(&index).map_err(|e| Error::io(&index, e))?;
    }
    // A stale single file next to new shards would be read instead of them.
    if count > 1 && export_dir.join("model.safetensors").exists() {
        let p = export_dir.join("model.safetensors");
        std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
    }
    for f in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "tokenizer.model",
        "vocab.json",
        "merges.txt",
        "chat_template.jinja",
    ] {
        let src = base_dir.join(f);
        if src.is_file() {
            let bytes = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
            let dst = export_dir.join(f);
            write_atomic(&dst, &bytes)?;
            files.push(dst);
        }
    }
    let dtype = match dtypes.iter().next() {
        Some(d) if dtypes.len() == 1 => dtype_name(*d).to_string(),
        _ => "mixed".into(),
    };
    Ok(Merged {
        export_dir: export_dir.to_path_buf(),
        merged,
        tensors: out.len(),
        files,
        dtype,
        total_bytes: total,
    })
}
