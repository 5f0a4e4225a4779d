//! lorafit-core: model descriptions and the memory / time / cost accounting of LLM fine-tuning,
//! shared by the `lorafit` binary and the web page. Pure: no IO, no burn, no web-sys; it builds
//! for `wasm32-unknown-unknown`.
//!
//! Flow: [`plan::Settings`] (LLaMA-Factory keys) → [`plan::Plan`] → [`estimate::resolve_model`]
//! → [`estimate::estimate`] (memory from [`memory`], time from [`throughput`], prices from
//! [`catalog`]).

pub mod arch;
pub mod baselines;
pub mod catalog;
pub mod chart;
pub mod error;
pub mod estimate;
pub mod export;
pub mod keys;
pub mod lorafit_stack;
pub mod memory;
pub mod plan;
pub mod settings;
pub mod throughput;
#[doc(hidden)]
pub mod unread_keys;
pub mod v1;
pub mod validation;

pub use arch::ModelArch;
pub use error::Error;
pub use estimate::{Estimate, estimate as estimate_plan, resolve_model};
pub use plan::{Plan, Settings};
