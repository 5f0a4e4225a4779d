//! The `*-bnb-4bit` checkpoint layout transformers writes: for a weight `W`, the tensors `W`
//! (packed uint8), `W.absmax`, `W.quant_map`, `W.nested_absmax`, `W.nested_quant_map` and
//! `W.quant_state.bitsandbytes__nf4` (a JSON object stored as uint8 bytes), plus config.json's
//! `quantization_config`. Pure: callers hand in the safetensors bytes.

use safetensors::{Dtype, SafeTensors};
use serde::Deserialize;

use crate::{Absmax, Error, QuantType, Quantized4bit};

/// The JSON packed into `…quant_state.bitsandbytes__{nf4,fp4}`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PackedQuantState {
    pub quant_type: QuantType,
    pub blocksize: usize,
    /// Dtype of the dense tensor (`bfloat16`, `float16`, `float32`).
    pub dtype: String,
    pub shape: Vec<usize>,
    #[serde(default)]
    pub nested_blocksize: Option<usize>,
    #[serde(default)]
    pub nested_offset: Option<f32>,
}

/// `quantization_config` of a bnb 4-bit checkpoint's config.json.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct QuantizationConfig {
    #[serde(default)]
    pub quant_method: Option<String>,
    #[serde(default)]
    pub load_in_4bit: bool,
    #[serde(default)]
    pub load_in_8bit: bool,
    #[serde(default = "default_qt")]
    pub bnb_4bit_quant_type: QuantType,
    #[serde(default)]
    pub bnb_4bit_use_double_quant: bool,
    #[serde(default)]
    pub bnb_4bit_compute_dtype: Option<String>,
    /// Modules left unquantized (lm_head, …).
    #[serde(default)]
    pub llm_int8_skip_modules: Option<Vec<String>>,
}

fn default_qt() -> QuantType {
    QuantType::Fp4
}

impl QuantizationConfig {
    /// Read `quantization_config` from config.json text; `None` when the checkpoint is not quantized.
    pub fn from_config_json(text: &str) -> Result<Option<Self>, Error> {
        let v: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::Checkpoint(format!("config.json is not valid JSON: {e}")))?;
        match v.get("quantization_config") {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(q) => {
                let c: QuantizationConfig = serde_json::from_value(q.clone())
                    .map_err(|e| Error::Checkpoint(format!("quantization_config: {e}")))?;
                if c.quant_method
                    .as_deref()
                    .is_some_and(|m| m != "bitsandbytes")
                {
                    return Err(Error::Checkpoint(format!(
                        "quantization_config.quant_method `{}` is not supported; only bitsandbytes",
                        c.quant_method.as_deref().unwrap_or_default()
                    )));
                }
                Ok(Some(c))
            }
        }
    }
}

fn f32s(st: &SafeTensors<'_>, name: &str) -> Result<Vec<f32>, Error> {
    let t = st
        .tensor(name)
        .map_err(|e| Error::Checkpoint(format!("`{name}`: {e}")))?;
    if t.dtype() != Dtype::F32 {
        return Err(Error::Checkpoint(format!(
            "`{name}` must be F32, is {:?}",
            t.dtype()
        )));
    }
    Ok(t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn u8s(st: &SafeTensors<'_>, name: &str) -> Result<Vec<u8>, Error> {
    let t = st
        .tensor(name)
        .map_err(|e| Error::Checkpoint(format!("`{name}`: {e}")))?;
    if t.dtype() != Dtype::U8 {
        return Err(Error::Checkpoint(format!(
            "`{name}` must be U8, is {:?}",
            t.dtype()
        )));
    }
    Ok(t.data().to_vec())
}

/// Whether `name` is stored 4-bit in this file (its quant_state tensor is present).
pub fn is_quantized(st: &SafeTensors<'_>, name: &str) -> bool {
    ["nf4", "fp4"].iter().any(|q| {
        st.tensor(&format!("{name}.quant_state.bitsandbytes__{q}"))
            .is_ok()
    })
}

/// Load the 4-bit weight `name` as stored, without re-quantizing.
pub fn load(st: &SafeTensors<'_>, name: &str) -> Result<Quantized4bit, Error> {
    let (state_name, bytes) = ["nf4", "fp4"]
        .iter()
        .map(|q| format!("{name}.quant_state.bitsandbytes__{q}"))
        .find_map(|n| u8s(st, &n).ok().map(|b| (n, b)))
        .ok_or_else(|| {
            Error::Checkpoint(format!(
                "`{name}` has no quant_state.bitsandbytes__nf4/fp4 tensor"
            ))
        })?;
    let state: PackedQuantState = serde_json::from_slice(&bytes).map_err(|e| {
        Error::QuantState(format!(
            "`{state_name}` is not the JSON bitsandbytes writes: {e}"
        ))
    })?;
    if !state_name.ends_with(state.quant_type.name()) {
        return Err(Error::QuantState(format!(
            "`{state_name}` says quant_type {:?}",
            state.quant_type
        )));
    }
    let quant_map = f32s(st, &format!("{name}.quant_map"))?;
    if quant_map.as_slice() != state.quant_type.code().as_slice() {
        return Err(Error::QuantState(format!(
            "`{name}.quant_map` is not bitsandbytes' {} code",
            state.quant_type.name()
        )));
    }
    let absmax = match state.nested_blocksize {
        Some(nested_blocksize) => Absmax::Nested {
            codes: u8s(st, &format!("{name}.absmax"))?,
            nested_absmax: f32s(st, &format!("{name}.nested_absmax"))?,
            code: f32s(st, &format!("{name}.nested_quant_map"))?,
            nested_blocksize,
            offset: state.nested_offset.ok_or_else(|| {
                Error::QuantState("nested_blocksize given without nested_offset".into())
            })?,
        },
        None => Absmax::Plain(f32s(st, &format!("{name}.absmax"))?),
    };
    let q = Quantized4bit {
        quant_type: state.quant_type,
        blocksize: state.blocksize,
        shape: state.shape,
        packed: u8s(st, name)?,
        absmax,
    };
    q.validate()?;
    Ok(q)
}
