//! The reward model's value head for `stage: rm`, as LLaMA-Factory builds it with trl's
//! `AutoModelForCausalLMWithValueHead`: dropout (trl's `summary_dropout_prob`, 0.1) then
//! `Linear(hidden, 1)` on the last hidden state, trained in f32 beside the LoRA adapter and saved
//! as `value_head.safetensors` (`v_head.summary.weight` `[1, hidden]`, `v_head.summary.bias` `[1]`).

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};

use crate::error::{Error, Result};
use crate::lora::host_of;
use crate::model::StepRng;
use crate::weights::{HostTensor, Weights, save_f32};

/// LLaMA-Factory's file name for the value head.
pub const FILE: &str = "value_head.safetensors";
pub const WEIGHT: &str = "v_head.summary.weight";
pub const BIAS: &str = "v_head.summary.bias";

/// `summary.weight` stored transposed `[hidden, 1]` and `summary.bias` as `[1, 1]`, both trainable.
#[derive(Debug, Clone)]
pub struct ValueHead {
    pub weight: Tensor<2>,
    pub bias: Tensor<2>,
    /// Dropout on the hidden states before the linear layer (trl's default 0.1).
    pub dropout: f64,
}

impl ValueHead {
    /// torch's `nn.Linear` initialisation (weight and bias uniform in ±1/√hidden), from `seed`.
    pub fn init(hidden: usize, seed: u64, dropout: f64, device: &Device) -> Self {
        let mut rng = StepRng::new(seed, u64::MAX, 1);
        let bound = 1.0 / (hidden as f32).sqrt();
        let mut draw = || (rng.next_f32() * 2.0 - 1.0) * bound;
        let w: Vec<f32> = (0..hidden).map(|_| draw()).collect();
        let b = vec![draw()];
        ValueHead {
            weight: Tensor::from_data(TensorData::new(w, [hidden, 1]), device),
            bias: Tensor::from_data(TensorData::new(b, [1, 1]), device),
            dropout,
        }
    }

    /// `dir/value_head.safetensors` if it is there (LLaMA-Factory's `load_valuehead_params`).
    pub fn load(dir: &Path, hidden: usize, dropout: f64, device: &Device) -> Result<Option<Self>> {
        let path = dir.join(FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let mut w = Weights::load_file(&path)?;
        let weight = w
            .take(WEIGHT, &[1, hidden])
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        let bias = w
            .take(BIAS, &[1])
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        Ok(Some(ValueHead {
            weight: Tensor::from_data(TensorData::new(weight.data, [hidden, 1]), device),
            bias: Tensor::from_data(TensorData::new(bias.data, [1, 1]), device),
            dropout,
        }))
    }

    /// Write `dir/value_head.safetensors` in LLaMA-Factory's layout (atomically).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let host = |t: &Tensor<2>| -> Result<Vec<f32>> { Ok(host_of(t)?.data) };
        let w = host(&self.weight)?;
        let mut m = BTreeMap::new();
        m.insert(WEIGHT.to_string(), HostTensor::new(vec![1, w.len()], w));
        m.insert(
            BIAS.to_string(),
            HostTensor::new(vec![1], host(&self.bias)?),
        );
        save_f32(&dir.join(FILE), &m)
    }

    /// Values `[rows, 1]` of hidden states `[rows, hidden]`: dropout (when `rng` is active),
    /// then the linear layer.
    pub fn forward(&self, hidden: Tensor<2>, rng: &mut StepRng) -> Tensor<2> {
        let x = if self.dropout > 0.0 && rng.active {
            crate::lora::dropout(hidden, self.dropout, rng)
        } else {
            hidden
        };
        x.matmul(self.weight.clone()) + self.bias.clone()
    }
}
