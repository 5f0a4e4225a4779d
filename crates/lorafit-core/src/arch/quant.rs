//! Pre-quantized checkpoints: what `quantization_config` in a config.json says about the stored
//! bytes of the decoder linears.

use serde::Serialize;
use serde_json::Value;

use super::get_bool;
use crate::error::Error;

/// The decoder linears as a pre-quantized checkpoint stores them (`quantization_config` in its
/// config.json: bitsandbytes, AWQ, GPTQ, HQQ, FP8, AQLM, MXFP4).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredQuant {
    /// `quant_method` as written.
    pub method: String,
    /// Bits of the codes.
    pub bits: f64,
    /// Bytes per linear weight parameter, scales and zeros included.
    pub bytes_per_param: f64,
    /// The method is not one lorafit knows: 2 bytes per parameter assumed (a note says so).
    pub assumed: bool,
}

pub(super) fn parse_quantization_config(
    q: &serde_json::Map<String, Value>,
    hidden: u64,
) -> Result<StoredQuant, Error> {
    let method = q
        .get("quant_method")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_ascii_lowercase();
    let num = |k: &str| q.get(k).and_then(Value::as_f64);
    let group = |default: f64| match num("group_size") {
        Some(g) if g > 0.0 => g,
        Some(_) => hidden as f64, // -1: one scale per output channel
        None => default,
    };
    let (bits, bytes) = match method.as_str() {
        "bitsandbytes" | "bnb" => {
            if get_bool(q, "load_in_8bit") == Some(true) {
                (8.0, 1.0 + 4.0 / hidden as f64)
            } else {
                let dq = get_bool(q, "bnb_4bit_use_double_quant").unwrap_or(false);
                (
                    4.0,
                    0.5 + if dq {
                        (1.0 + 4.0 / 256.0) / 64.0
                    } else {
                        4.0 / 64.0
                    },
                )
            }
        }
        "awq" | "gptq" | "autoround" | "auto-round" => {
            let b = num("bits").unwrap_or(4.0);
            (b, b / 8.0 + (2.0 + b / 8.0) / group(128.0))
        }
        "hqq" => {
            let b = q
                .get("quant_config")
                .and_then(|c| c.get("weight_quant_params"))
                .and_then(|w| w.get("nbits"))
                .and_then(Value::as_f64)
                .or_else(|| num("nbits"))
                .unwrap_or(4.0);
            (b, b / 8.0 + 4.0 / group(64.0))
        }
        "fp8" => {
            let block: f64 = q
                .get("weight_block_size")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_f64).product())
                .unwrap_or(hidden as f64);
            (8.0, 1.0 + 4.0 / block.max(1.0))
        }
        "fbgemm_fp8" => (8.0, 1.0 + 4.0 / hidden as f64),
        "aqlm" => {
            let b = num("num_codebooks").unwrap_or(1.0) * num("nbits_per_codebook").unwrap_or(16.0)
                / num("in_group_size").unwrap_or(8.0).max(1.0);
            (b, b / 8.0 + 2.0 / hidden as f64)
        }
        "mxfp4" => (4.0, 0.5 + 1.0 / 32.0),
        _ => {
            return Ok(StoredQuant {
                method: if method.is_empty() {
                    "unknown".into()
                } else {
                    method
                },
                bits: 16.0,
                bytes_per_param: 2.0,
                assumed: true,
            });
        }
    };
    if !(bits.is_finite() && bits > 0.0 && bits <= 16.0) {
        return Err(Error::ModelConfig(format!(
            "quantization_config: {bits} bits per weight is not a quantization (1–16 allowed)"
        )));
    }
    Ok(StoredQuant {
        method,
        bits,
        bytes_per_param: bytes,
        assumed: false,
    })
}
