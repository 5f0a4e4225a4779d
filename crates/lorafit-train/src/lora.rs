//! Factored LoRA (`x·Aᵀ·Bᵀ·scale`, A·B never materialised) and PEFT adapter files: PEFT's
//! initialisation, rsLoRA, dropout on the LoRA input, `adapter_config.json` +
//! `adapter_model.safetensors` in and out.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::model::{Model, StepRng, target_paths};
use crate::value_head::{self, ValueHead};
use crate::weights::{HostTensor, Weights, save_f32, write_atomic};

/// Rank, alpha, dropout, rsLoRA and targets (`all` expanded to the model's linear names).
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub rslora: bool,
    /// Leaf module names (`q_proj`, …).
    pub targets: Vec<String>,
    /// DoRA (`use_dora`): a trainable magnitude per output row rescales the adapted weight.
    pub dora: bool,
}

impl LoraSpec {
    /// alpha / r, or alpha / √r with rsLoRA (PEFT).
    pub fn scale(&self) -> f64 {
        if self.rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }
}

/// One adapted layer: A `[r, in]`, B `[out, r]`, and with DoRA the magnitude `[1, out]`.
#[derive(Debug, Clone)]
pub struct LoraWeights {
    pub a: Tensor<2>,
    pub b: Tensor<2>,
    pub magnitude: Option<Tensor<2>>,
}

impl LoraWeights {
    /// x `[n, in]` → `[n, out]`: dropout(x)·Aᵀ·Bᵀ·scale.
    pub fn forward(&self, x: Tensor<2>, spec: &LoraSpec, rng: &mut StepRng) -> Tensor<2> {
        self.product(Self::dropout(x, spec, rng).0, spec)
    }

    /// x·Aᵀ·Bᵀ·scale, without dropout.
    pub fn product(&self, x: Tensor<2>, spec: &LoraSpec) -> Tensor<2> {
        x.matmul(self.a.clone().transpose())
            .matmul(self.b.clone().transpose())
            * spec.scale()
    }

    /// LoRA's input dropout (seeded by `rng`), and whether it was applied.
    pub fn dropout(x: Tensor<2>, spec: &LoraSpec, rng: &mut StepRng) -> (Tensor<2>, bool) {
        if spec.dropout > 0.0 && rng_active(rng) {
            (dropout(x, spec.dropout, rng), true)
        } else {
            (x, false)
        }
    }
}

/// Inverted dropout with probability `p`, the mask drawn from `rng` (kept elements scaled by
/// 1 / (1 − p)); shared by LoRA's input and the value head.
pub fn dropout(x: Tensor<2>, p: f64, rng: &mut StepRng) -> Tensor<2> {
    let [n, d] = x.dims();
    let keep = 1.0 - p as f32;
    let mask: Vec<f32> = (0..n * d)
        .map(|_| {
            if rng.next_f32() < keep {
                1.0 / keep
            } else {
                0.0
            }
        })
        .collect();
    let device = x.device();
    x * Tensor::<2>::from_data(TensorData::new(mask, [n, d]), &device)
}

fn rng_active(rng: &StepRng) -> bool {
    rng.active
}

/// The trainable LoRA weights of a model, keyed by HF module path.
#[derive(Debug, Clone)]
pub struct Adapter {
    spec: LoraSpec,
    layers: BTreeMap<String, LoraWeights>,
    /// `stage: rm`: the reward model's value head, trained and saved with the adapter.
    pub value_head: Option<ValueHead>,
}

/// The tensor names PEFT uses.
pub fn peft_key(path: &str, which: char) -> String {
    format!("base_model.model.{path}.lora_{which}.weight")
}

/// PEFT's name for DoRA's magnitude vector `[out]`.
pub fn magnitude_key(path: &str) -> String {
    format!("base_model.model.{path}.lora_magnitude_vector")
}

/// Copy a device tensor to the host as f32.
pub(crate) fn host_of(t: &Tensor<2>) -> Result<HostTensor> {
    let data = t.to_data();
    let shape = data.shape().to_vec();
    let v = data
        .try_into_vec_as::<f32>()
        .map_err(|e| Error::Device(format!("reading a tensor back: {e:?}")))?;
    Ok(HostTensor::new(shape, v))
}

impl Adapter {
    /// A fresh adapter with PEFT's default init: A kaiming-uniform(a=√5) = U(±1/√in), B = 0.
    pub fn init(model: &Model, spec: LoraSpec, seed: u64, device: &Device) -> Result<Self> {
        let paths = target_paths(model, &spec)?;
        let mut rng = StepRng::new(seed, u64::MAX, 0);
        let mut layers = BTreeMap::new();
        for path in paths {
            let (inp, out) = model
                .linear_shape(&path)
                .ok_or_else(|| Error::Invalid(format!("no linear layer `{path}`")))?;
            let bound = 1.0 / (inp as f32).sqrt();
            let a: Vec<f32> = (0..spec.rank * inp)
                .map(|_| (rng.next_f32() * 2.0 - 1.0) * bound)
                .collect();
            // DoRA starts from the magnitude of the base rows, ‖W + s·B·A‖ with B = 0 (PEFT).
            let magnitude = if spec.dora {
                Some(model.row_norms(&path)?.sqrt().detach())
            } else {
                None
            };
            layers.insert(
                path,
                LoraWeights {
                    a: Tensor::from_data(TensorData::new(a, [spec.rank, inp]), device),
                    b: Tensor::zeros([out, spec.rank], device),
                    magnitude,
                },
            );
        }
        Ok(Adapter {
            spec,
            layers,
            value_head: None,
        })
    }

    /// Read a PEFT adapter directory. Its own r / alpha / targets / rsLoRA win over the config's.
    pub fn load(dir: &Path, model: &Model, dropout: f64, device: &Device) -> Result<Self> {
        let cfg_path = dir.join("adapter_config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| Error::io(&cfg_path, e))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::ckpt(&cfg_path, format!("not valid JSON: {e}")))?;
        let bad = |msg: String| Error::ckpt(&cfg_path, msg);
        if let Some(t) = v.get("peft_type").and_then(Value::as_str)
            && t != "LORA"
        {
            return Err(bad(format!("peft_type `{t}` is not LORA")));
        }
        let dora = v.get("use_dora").and_then(Value::as_bool) == Some(true);
        for key in ["rank_pattern", "alpha_pattern"] {
            if v.get(key)
                .and_then(Value::as_object)
                .is_some_and(|m| !m.is_empty())
            {
                return Err(bad(format!("`{key}` (per-layer ranks) is not supported")));
            }
        }
        let rank =
            v.get("r")
                .and_then(Value::as_u64)
                .filter(|r| *r > 0)
                .ok_or_else(|| bad("`r` must be a positive integer".into()))? as usize;
        let alpha = v
            .get("lora_alpha")
            .and_then(Value::as_f64)
            .ok_or_else(|| bad("`lora_alpha` must be a number".into()))?;
        let rslora = v
            .get("use_rslora")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let targets: Vec<String> = match v.get("target_modules") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
            Some(Value::String(s)) if s == "all-linear" => model
                .config
                .arch
                .all_lora_targets()
                .iter()
                .map(|s| s.to_string())
                .collect(),
            _ => return Err(bad("`target_modules` must be a list of module names".into())),
        };
        let mut targets = targets;
        targets.sort();
        let spec = LoraSpec {
            rank,
            alpha,
            dropout,
            rslora,
            targets,
            dora,
        };
        let paths = target_paths(model, &spec)?;
        let st_path = dir.join("adapter_model.safetensors");
        let mut w = Weights::load_file(&st_path)?;
        let mut layers = BTreeMap::new();
        for path in paths {
            let (inp, out) = model
                .linear_shape(&path)
                .ok_or_else(|| Error::Invalid(format!("no linear layer `{path}`")))?;
            let a = w
                .take(&peft_key(&path, 'A'), &[rank, inp])
                .map_err(|e| Error::ckpt(&st_path, e.to_string()))?;
            let b = w
                .take(&peft_key(&path, 'B'), &[out, rank])
                .map_err(|e| Error::ckpt(&st_path, e.to_string()))?;
            let magnitude = if dora {
                let m = w
                    .take(&magnitude_key(&path), &[out])
                    .map_err(|e| Error::ckpt(&st_path, e.to_string()))?;
                Some(Tensor::from_data(TensorData::new(m.data, [1, out]), device))
            } else {
                None
            };
            layers.insert(
                path,
                LoraWeights {
                    a: Tensor::from_data(TensorData::new(a.data, a.shape), device),
                    b: Tensor::from_data(TensorData::new(b.data, b.shape), device),
                    magnitude,
                },
            );
        }
        if let Some(extra) = w.names().next() {
            return Err(Error::ckpt(
                &st_path,
                format!("tensor `{extra}` does not belong to a LoRA layer of this model"),
            ));
        }
        Ok(Adapter {
            spec,
            layers,
            value_head: None,
        })
    }

    /// No adapter: the base model's forward (for generation or evaluation without one).
    pub fn none() -> Adapter {
        Adapter {
            spec: LoraSpec {
                rank: 1,
                alpha: 1.0,
                dropout: 0.0,
                rslora: false,
                targets: Vec::new(),
                dora: false,
            },
            layers: BTreeMap::new(),
            value_head: None,
        }
    }

    /// The same adapter switched off (PEFT's `disable_adapter()`): the base model's forward, as
    /// DPO's reference.
    pub fn disabled(&self) -> Adapter {
        Adapter {
            spec: self.spec.clone(),
            layers: BTreeMap::new(),
            value_head: None,
        }
    }

    pub fn spec(&self) -> &LoraSpec {
        &self.spec
    }

    pub fn get(&self, path: &str) -> Option<&LoraWeights> {
        self.layers.get(path)
    }

    /// Trainable tensors in a fixed order (A, B, and DoRA's magnitude `[1, out]` per layer,
    /// layers sorted by path).
    /// Then the value head's weight and bias, when there is one.
    pub fn params(&self) -> Vec<(String, &Tensor<2>)> {
        let mut out: Vec<(String, &Tensor<2>)> = self
            .layers
            .iter()
            .flat_map(|(p, l)| {
                let mut v = vec![(peft_key(p, 'A'), &l.a), (peft_key(p, 'B'), &l.b)];
                if let Some(m) = &l.magnitude {
                    v.push((magnitude_key(p), m));
                }
                v
            })
            .collect();
        if let Some(h) = &self.value_head {
            out.push((value_head::WEIGHT.to_string(), &h.weight));
            out.push((value_head::BIAS.to_string(), &h.bias));
        }
        out
    }

    /// Replace the tensors, in the order of [`Adapter::params`].
    pub fn set_params(&mut self, mut new: Vec<Tensor<2>>) {
        new.reverse();
        for l in self.layers.values_mut() {
            if let (Some(a), Some(b)) = (new.pop(), new.pop()) {
                l.a = a;
                l.b = b;
            }
            if l.magnitude.is_some() {
                l.magnitude = new.pop();
            }
        }
        if let Some(h) = &mut self.value_head
            && let (Some(w), Some(b)) = (new.pop(), new.pop())
        {
            h.weight = w;
            h.bias = b;
        }
    }

    /// Number of trainable parameters.
    pub fn num_params(&self) -> usize {
        self.params()
            .iter()
            .map(|(_, t)| t.dims().iter().product::<usize>())
            .sum()
    }

    /// Host copies of every tensor under PEFT's names and shapes (the magnitude is `[out]`).
    pub fn to_host(&self) -> Result<BTreeMap<String, HostTensor>> {
        self.params()
            .into_iter()
            .filter(|(k, _)| !k.starts_with("v_head."))
            .map(|(k, t)| {
                let mut h = host_of(t)?;
                if k.ends_with("lora_magnitude_vector") {
                    h = HostTensor::new(vec![h.data.len()], h.data);
                }
                Ok((k, h))
            })
            .collect()
    }

    /// Write `adapter_config.json` + `adapter_model.safetensors` (and `value_head.safetensors`
    /// with a value head) into `dir`, each atomically.
    pub fn save(&self, dir: &Path, base_model: &str) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        save_f32(&dir.join("adapter_model.safetensors"), &self.to_host()?)?;
        if let Some(h) = &self.value_head {
            h.save(dir)?;
        }
        let cfg = json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model,
            "r": self.spec.rank,
            "lora_alpha": self.spec.alpha,
            "lora_dropout": self.spec.dropout,
            "target_modules": self.spec.targets,
            "use_rslora": self.spec.rslora,
            "use_dora": self.spec.dora,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "init_lora_weights": true,
            "modules_to_save": null,
            "layers_to_transform": null,
            "layers_pattern": null,
            "rank_pattern": {},
            "alpha_pattern": {},
            "revision": null,
        });
        let text = serde_json::to_string_pretty(&cfg).unwrap_or_default();
        write_atomic(&dir.join("adapter_config.json"), text.as_bytes())
    }

    /// Mark every tensor as a fresh autodiff leaf that keeps its gradient.
    pub fn require_grad(&mut self) {
        for l in self.layers.values_mut() {
            l.a = l.a.clone().detach().require_grad();
            l.b = l.b.clone().detach().require_grad();
            l.magnitude = l.magnitude.take().map(|m| m.detach().require_grad());
        }
        if let Some(h) = &mut self.value_head {
            h.weight = h.weight.clone().detach().require_grad();
            h.bias = h.bias.clone().detach().require_grad();
        }
    }
}
