//! Reading Hugging Face safetensors checkpoints (one file or a sharded index) into f32 host arrays,
//! with errors that name the file and tensor when a file is truncated, corrupt or mismatched.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// A host tensor in f32, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        HostTensor { shape, data }
    }
}

/// All tensors of a checkpoint by name, plus where each came from (for error messages).
#[derive(Debug, Default)]
pub struct Weights {
    tensors: BTreeMap<String, HostTensor>,
    files: BTreeMap<String, PathBuf>,
    /// 4-bit weights stored as bitsandbytes saves them (`*-bnb-4bit`): weight name → file.
    quantized: BTreeMap<String, PathBuf>,
    /// The bytes of the files holding those, kept to read their parts on demand.
    raw: BTreeMap<PathBuf, Vec<u8>>,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Decode one safetensors view into f32 (bf16, f16, f32 and f64 are accepted).
pub(crate) fn to_f32(path: &Path, name: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>> {
    let bad = |what: &str| Error::ckpt(path, format!("tensor `{name}`: {what}"));
    Ok(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect(),
        other => {
            return Err(bad(&format!(
                "dtype {other:?} is not a float type lorafit reads (bf16, f16, f32, f64)"
            )));
        }
    })
}

impl Weights {
    /// Load every tensor of one `.safetensors` file.
    pub fn load_file(path: &Path) -> Result<Self> {
        let mut w = Weights::default();
        w.add_file(path)?;
        Ok(w)
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
        let bytes = read(path)?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| {
            Error::ckpt(
                path,
                format!("not a valid safetensors file (truncated or corrupt?): {e}"),
            )
        })?;
        // bitsandbytes 4-bit weights: `W` (packed uint8) plus `W.absmax`, `W.quant_map`,
        // `W.nested_*` and `W.quant_state.bitsandbytes__{nf4,fp4}`; read later, not as f32.
        let quantized: Vec<String> = st
            .names()
            .into_iter()
            .filter_map(|n| {
                let (base, _) = n.rsplit_once(".quant_state.bitsandbytes__")?;
                Some(base.to_string())
            })
            .collect();
        for (name, view) in st.tensors() {
            if quantized
                .iter()
                .any(|q| name == *q || name.starts_with(&format!("{q}.")))
            {
                continue;
            }
            let data = to_f32(path, &name, view.dtype(), view.data())?;
            let shape = view.shape().to_vec();
            self.files.insert(name.clone(), path.to_path_buf());
            self.tensors.insert(name, HostTensor::new(shape, data));
        }
        if !quantized.is_empty() {
            for q in quantized {
                self.quantized.insert(q, path.to_path_buf());
            }
            self.raw.insert(path.to_path_buf(), bytes);
        }
        Ok(())
    }

    /// The 4-bit weight `name` as stored (no re-quantization), if the checkpoint holds it so.
    pub fn take_quantized(&mut self, name: &str) -> Option<Result<lorafit_quant::Quantized4bit>> {
        let path = self.quantized.remove(name)?;
        let bytes = self.raw.get(&path)?;
        Some(
            SafeTensors::deserialize(bytes)
                .map_err(|e| Error::ckpt(&path, e.to_string()))
                .and_then(|st| {
                    lorafit_quant::checkpoint::load(&st, name)
                        .map_err(|e| Error::ckpt(&path, format!("`{name}`: {e}")))
                }),
        )
    }

    /// Load a checkpoint directory: `model.safetensors`, or `model.safetensors.index.json` and its shards.
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        if index.exists() {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| Error::ckpt(&index, format!("not valid JSON: {e}")))?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| Error::ckpt(&index, "has no `weight_map` object"))?;
            let mut shards: Vec<&str> = map.values().filter_map(|f| f.as_str()).collect();
            shards.sort_unstable();
            shards.dedup();
            let mut w = Weights::default();
            for shard in shards {
                if shard.contains('/') || shard.contains("..") {
                    return Err(Error::ckpt(
                        &index,
                        format!("shard name `{shard}` must be a file in the same directory"),
                    ));
                }
                w.add_file(&dir.join(shard))?;
            }
            for (name, file) in map {
                if !w.tensors.contains_key(name) {
                    return Err(Error::ckpt(
                        &index,
                        format!(
                            "lists tensor `{name}` in {}, which does not contain it",
                            file.as_str().unwrap_or("?")
                        ),
                    ));
                }
            }
            Ok(w)
        } else if single.exists() {
            Weights::load_file(&single)
        } else {
            Err(Error::ckpt(
                dir,
                "has neither model.safetensors nor model.safetensors.index.json",
            ))
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.tensors.get(name)
    }

    /// Names of the dense tensors not taken yet, then of the 4-bit ones.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors
            .keys()
            .chain(self.quantized.keys())
            .map(String::as_str)
    }

    /// Take a tensor out, checking its shape.
    pub fn take(&mut self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        let t = self.tensors.remove(name).ok_or_else(|| {
            Error::Invalid(format!(
                "the checkpoint has no tensor `{name}` (expected shape {shape:?})"
            ))
        })?;
        if t.shape != shape {
            let file = self
                .files
                .get(name)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            return Err(Error::Invalid(format!(
                "{file}: tensor `{name}` has shape {:?}, but config.json implies {shape:?}",
                t.shape
            )));
        }
        Ok(t)
    }
}

/// Write f32 tensors to a safetensors file atomically (temporary file, then rename).
pub fn save_f32(path: &Path, tensors: &BTreeMap<String, HostTensor>) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(k, t)| {
            let b = t.data.iter().flat_map(|x| x.to_le_bytes()).collect();
            (k.clone(), b, t.shape.clone())
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
        .iter()
        .map(|(k, b, s)| {
            safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), b)
                .map(|v| (k.clone(), v))
                .map_err(|e| Error::Invalid(format!("tensor `{k}`: {e}")))
        })
        .collect::<Result<_>>()?;
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    let out = safetensors::serialize(views, Some(meta))
        .map_err(|e| Error::Invalid(format!("serializing {}: {e}", path.display())))?;
    write_atomic(path, &out)
}

/// Write a file so that a crash leaves either the old file or the new one, never half of it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!(
        "{}.tmp{}",
        path.extension().and_then(|e| e.to_str()).unwrap_or(""),
        std::process::id()
    ));
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
