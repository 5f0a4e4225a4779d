//! QLoRA base weights on the device: bitsandbytes' packed 4-bit codes (NF4 / FP4), their absmax
//! scales (plain or double-quantized), dequantized with tensor ops on every use so that only
//! ~0.5 bytes per parameter (+ scales) stay resident. Quantization itself is lorafit-quant's,
//! bit-exact with bitsandbytes, and so is this dequantization (the same f32 multiplies and adds).

use burn::tensor::{Device, Int, Tensor, TensorData};
use lorafit_quant::{Absmax, QuantType, Quantized4bit};

use crate::error::{Error, Result};

/// How base weights are quantized (`quantization_bit: 4`, `quantization_type`, `double_quantization`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantSpec {
    pub quant_type: QuantType,
    pub double_quant: bool,
}

const BLOCK: usize = 64;

/// A 4-bit linear weight `[out, in]` resident on the device.
#[derive(Debug, Clone)]
pub struct Nf4Weight {
    /// 8 codes per i32 word, in bitsandbytes' byte order (element 2j in the high nibble of byte j).
    words: Tensor<1, Int>,
    /// The 16 code values.
    code: Tensor<1>,
    scales: Scales,
    out: usize,
    inp: usize,
}

#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per linear layer, never moved in a hot loop
enum Scales {
    Plain(Tensor<1>),
    Nested {
        /// One 8-bit code per block (as i32).
        codes: Tensor<1, Int>,
        /// 256 values.
        map: Tensor<1>,
        /// One per `nested_blocksize` blocks.
        nested: Tensor<1>,
        nested_blocksize: usize,
        offset: f32,
    },
}

impl Nf4Weight {
    /// Quantize a dense `[out, in]` weight like bitsandbytes (blocksize 64) and upload it.
    pub fn quantize(
        data: &[f32],
        out: usize,
        inp: usize,
        spec: QuantSpec,
        device: &Device,
    ) -> Result<Self> {
        let q =
            Quantized4bit::quantize(data, &[out, inp], spec.quant_type, BLOCK, spec.double_quant)
                .map_err(|e| Error::Invalid(format!("quantizing a [{out}, {inp}] weight: {e}")))?;
        Ok(Self::upload(&q, device))
    }

    /// Put already-quantized parts (e.g. from a `*-bnb-4bit` checkpoint) on the device.
    pub fn upload(q: &Quantized4bit, device: &Device) -> Self {
        let (out, inp) = (q.shape[0], q.shape.get(1).copied().unwrap_or(1));
        let n_blocks = (out * inp).div_ceil(q.blocksize);
        // Pad the codes to whole blocks of 64 (8 words each); the padding is sliced off after.
        let mut bytes = q.packed.clone();
        bytes.resize(n_blocks * q.blocksize / 2, 0);
        let words: Vec<i32> = bytes
            .chunks(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let n_words = words.len();
        let scales = match &q.absmax {
            Absmax::Plain(v) => Scales::Plain(Tensor::from_data(
                TensorData::new(v.clone(), [v.len()]),
                device,
            )),
            Absmax::Nested {
                codes,
                nested_absmax,
                code,
                nested_blocksize,
                offset,
            } => Scales::Nested {
                codes: Tensor::from_data(
                    TensorData::new(
                        codes.iter().map(|&c| c as i32).collect::<Vec<_>>(),
                        [codes.len()],
                    ),
                    device,
                ),
                map: Tensor::from_data(TensorData::new(code.clone(), [code.len()]), device),
                nested: Tensor::from_data(
                    TensorData::new(nested_absmax.clone(), [nested_absmax.len()]),
                    device,
                ),
                nested_blocksize: *nested_blocksize,
                offset: *offset,
            },
        };
        Nf4Weight {
            words: Tensor::from_data(TensorData::new(words, [n_words]), device),
            code: Tensor::from_data(TensorData::new(q.quant_type.code().to_vec(), [16]), device),
            scales,
            out,
            inp,
        }
    }

    pub fn shape(&self) -> (usize, usize) {
        (self.out, self.inp)
    }

    /// The fp32 scale of every block, `[blocks]`.
    fn block_scales(&self) -> Tensor<1> {
        match &self.scales {
            Scales::Plain(t) => t.clone(),
            Scales::Nested {
                codes,
                map,
                nested,
                nested_blocksize,
                offset,
            } => {
                let n = codes.dims()[0];
                let groups = n.div_ceil(*nested_blocksize);
                let vals = map.clone().select(0, codes.clone());
                // code[c] · nested_absmax[block / 256], then + offset, as bitsandbytes.
                let padded = groups * nested_blocksize;
                let vals = if padded > n {
                    let dev = vals.device();
                    Tensor::cat(vec![vals, Tensor::zeros([padded - n], &dev)], 0)
                } else {
                    vals
                };
                let scaled =
                    vals.reshape([groups, *nested_blocksize]) * nested.clone().reshape([groups, 1]);
                scaled.reshape([padded]).slice(0..n) + *offset
            }
        }
    }

    /// The dense weight `[out, in]` in f32, equal to bitsandbytes' `dequantize_4bit`.
    pub fn dequantize(&self) -> Tensor<2> {
        let n_words = self.words.dims()[0];
        // Element 8w + 2k sits in the high nibble of byte k of word w, 8w + 2k + 1 in its low nibble.
        let columns: Vec<Tensor<1, Int>> = (0..8)
            .map(|j| {
                let shift = 8 * (j / 2) + if j % 2 == 0 { 4 } else { 0 };
                self.words
                    .clone()
                    .bitwise_right_shift_scalar(shift)
                    .bitwise_and_scalar(15)
            })
            .collect();
        let codes = Tensor::stack::<2>(columns, 1).reshape([n_words * 8]);
        let values = self.code.clone().select(0, codes);
        let blocks = n_words * 8 / BLOCK;
        let dense = values.reshape([blocks, BLOCK]) * self.block_scales().reshape([blocks, 1]);
        let n = self.out * self.inp;
        dense
            .reshape([blocks * BLOCK])
            .slice(0..n)
            .reshape([self.out, self.inp])
    }
}
