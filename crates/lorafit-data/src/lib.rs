//! LLaMA-Factory's data pipeline without a tensor library, shared by `lorafit train` and
//! `lorafit estimate`: `dataset_info.json` and its files ([`info`]), the alpaca / sharegpt / openai
//! converters ([`convert`]), every registered chat template as data ([`template`]) with the tool
//! formats ([`tools`]), the tokenizer fixed for a template ([`tokenizer`]), the stage processors
//! ([`process`]), packing and pre-tokenized files ([`example`]), and the data order of training
//! ([`schedule`], [`rng`]). [`load::load`] runs it all.
//!
//! One direction only: `load` → `process` → `template` → `tools` / `tokenizer`; nothing here
//! knows about models or tensors.

pub mod audio;
mod bytes;
pub mod convert;
pub mod error;
pub mod example;
pub mod info;
pub mod json;
pub mod load;
pub mod media;
pub mod process;
pub mod rng;
pub mod schedule;
pub mod template;
pub mod tokenizer;
pub mod tools;

pub use error::{Error, Result};
pub use example::Example;
pub use load::{DataArgs, Encoded, Mix, Report, Stage, load};
pub use process::{Masking, Pair};
pub use rng::{Mt19937, NumpyRng, StepRng};
pub use schedule::Schedule;
pub use template::{Message, Role, Template};
pub use tokenizer::TextTokenizer;
