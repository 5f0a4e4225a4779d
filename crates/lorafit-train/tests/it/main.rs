//! lorafit-train's integration tests, in one binary (one link of burn + wgpu instead of one per
//! file): training and resuming against PEFT / LLaMA-Factory fixtures, the preference stages,
//! LLaMA-Factory's demo data, merging, generation, the fused ops and the quantized kernels.

mod common;

mod demo_data;
mod fused_ops;
mod generate;
mod merge;
mod preference;
mod quant_kernels;
mod train;
