//! LoRA fine-tuning of the Llama family on burn (ndarray, wgpu, optionally CUDA): Hugging Face
//! checkpoints in, PEFT adapters out, LLaMA-Factory's keys, data formats and logs.

pub mod config;
pub mod data;
pub mod error;
pub mod fused_ops;
pub mod generate;
pub mod lora;
pub mod merge;
pub mod model;
pub mod optim;
pub mod plot;
pub mod quant;
#[cfg(feature = "wgpu")]
mod quant_cube;
pub mod quant_ops;
pub mod quant_tune;
#[cfg(feature = "wgpu")]
mod quant_wgsl;
pub mod random;
pub mod trainer;
pub mod value_head;
pub mod weights;

pub use config::{Backend, TrainArgs};
pub use error::{Error, Result};
pub use lora::{Adapter, LoraSpec};
pub use model::{Model, ModelConfig};
pub use trainer::{Outcome, StepInfo, Summary, Trainer, make_device, make_plain_device};
#[cfg(feature = "wgpu")]
pub use trainer::{WgpuRuntime, wgpu_runtime};
