//! Base weights stored below f32 on the device. QLoRA: bitsandbytes' packed 4-bit codes (NF4 /
//! FP4), their absmax scales (plain or double-quantized), dequantized on every use so that only
//! ~0.5 bytes per parameter (+ scales) stay resident; quantization itself is lorafit-quant's,
//! bit-exact with bitsandbytes, and so is the dequantization (the same f32 multiplies and adds).
//! int8: bitsandbytes' row-wise codes. 16-bit (`bf16` / `fp16`): the weight rounded as torch
//! casts it, 2 bytes per parameter, widened exactly to f32 for each product.

use burn::backend::Dispatch;
use burn::tensor::{Device, Int, Tensor, TensorData};
use lorafit_quant::{Absmax, DqRounding, QuantType, Quantized4bit, Quantized8bit};

use crate::error::{Error, Result};
use crate::quant_ops::{Half, Q4Meta, QuantOps};

/// How the decoder's linear weights are stored on the device (`None`: f32).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QuantSpec {
    /// `quantization_bit: 4` with `quantization_type` and `double_quantization`.
    FourBit {
        quant_type: QuantType,
        double_quant: bool,
        /// `bnb_rounding`: how double quantization rounds (bitsandbytes' CUDA or CPU kernel).
        rounding: DqRounding,
    },
    /// `quantization_bit: 8`: bitsandbytes' row-wise int8.
    Int8,
    /// `bf16: true` / `fp16: true` without quantization: 16-bit storage, f32 arithmetic.
    Half(Half),
}

const BLOCK: usize = 64;

/// A 4-bit linear weight `[out, in]` resident on the device.
#[derive(Debug, Clone)]
pub struct Nf4Weight {
    /// 8 codes per i32 word, in bitsandbytes' byte order (element 2j in the high nibble of byte j),
    /// padded to whole blocks.
    words: Tensor<1, Int>,
    /// One f32 scale per block, or with double quantization one nested absmax per group.
    absmax: Tensor<1>,
    /// Double quantization: the 8-bit scale codes, 4 per i32 word (a placeholder otherwise).
    scale_codes: Tensor<1, Int>,
    /// The 16 code values.
    code: Tensor<1>,
    /// Double quantization: the 256-value nested map (a placeholder otherwise).
    map: Tensor<1>,
    meta: Q4Meta,
}

impl Nf4Weight {
    /// Quantize a dense `[out, in]` weight like bitsandbytes (blocksize 64) and upload it.
    pub fn quantize(
        data: &[f32],
        out: usize,
        inp: usize,
        quant_type: QuantType,
        double_quant: bool,
        rounding: DqRounding,
        device: &Device,
    ) -> Result<Self> {
        let q = Quantized4bit::quantize_with(
            data,
            &[out, inp],
            quant_type,
            BLOCK,
            double_quant,
            rounding,
        )
        .map_err(|e| Error::Invalid(format!("quantizing a [{out}, {inp}] weight: {e}")))?;
        Self::upload(&q, device)
    }

    /// Put already-quantized parts (e.g. from a `*-bnb-4bit` checkpoint) on the device.
    pub fn upload(q: &Quantized4bit, device: &Device) -> Result<Self> {
        let p = Q4Parts::of(q)?;
        let floats =
            |v: &[f32]| Tensor::<1>::from_data(TensorData::new(v.to_vec(), [v.len()]), device);
        let ints =
            |v: &[i32]| Tensor::<1, Int>::from_data(TensorData::new(v.to_vec(), [v.len()]), device);
        Ok(Nf4Weight {
            words: ints(&p.words),
            absmax: floats(&p.absmax),
            scale_codes: ints(&p.scale_codes),
            code: floats(&p.code),
            map: floats(&p.map),
            meta: p.meta,
        })
    }

    pub fn shape(&self) -> (usize, usize) {
        (self.meta.out, self.meta.inp)
    }

    /// Let `tuner` pick how this weight's products are computed (src/quant_tune.rs).
    pub fn set_tuner(&mut self, tuner: crate::quant_tune::TunerId) {
        self.meta.tuner = Some(tuner);
    }

    /// The dense weight `[out, in]` in f32, equal to bitsandbytes' `dequantize_4bit` (on wgpu by
    /// shaders/nf4_dequant.wgsl and nested_absmax.wgsl).
    pub fn dequantize(&self) -> Tensor<2> {
        Tensor::from_dispatch(Dispatch::q4_dequantize(
            self.words.clone().into_dispatch(),
            self.absmax.clone().into_dispatch(),
            self.scale_codes.clone().into_dispatch(),
            self.code.clone().into_dispatch(),
            self.map.clone().into_dispatch(),
            self.meta,
        ))
    }

    /// `x·Wᵀ` for x `[n, in]` without materialising W (on wgpu by shaders/q4_matmul.wgsl); its
    /// gradient with respect to x re-dequantizes in the backward pass.
    pub fn matmul(&self, x: Tensor<2>) -> Tensor<2> {
        self.product(x, true)
    }

    /// `g·W` for g `[n, out]` → `[n, in]`, the input-gradient product.
    pub fn matmul_untransposed(&self, g: Tensor<2>) -> Tensor<2> {
        self.product(g, false)
    }

    fn product(&self, a: Tensor<2>, transposed: bool) -> Tensor<2> {
        Tensor::from_dispatch(Dispatch::q4_matmul(
            a.into_dispatch(),
            self.words.clone().into_dispatch(),
            self.absmax.clone().into_dispatch(),
            self.scale_codes.clone().into_dispatch(),
            self.code.clone().into_dispatch(),
            self.map.clone().into_dispatch(),
            self.meta,
            transposed,
        ))
    }
}

/// Bytes as little-endian i32 words, zero-padded to a whole word.
/// A 4-bit weight's parts as the kernels read them, on the host: the codes padded to whole blocks
/// as 32-bit words, the block scales (or double quant's nested scales, 8-bit codes four to a word
/// and their code table; a placeholder each without double quant), the 4-bit code table.
#[derive(Debug, Clone)]
pub(crate) struct Q4Parts {
    pub words: Vec<i32>,
    pub absmax: Vec<f32>,
    pub scale_codes: Vec<i32>,
    pub code: Vec<f32>,
    pub map: Vec<f32>,
    pub meta: Q4Meta,
}

impl Q4Parts {
    pub fn of(q: &Quantized4bit) -> Result<Self> {
        let (out, inp) = (q.shape[0], q.shape.get(1).copied().unwrap_or(1));
        if q.blocksize == 0 || !q.blocksize.is_multiple_of(8) {
            return Err(Error::Invalid(format!(
                "a 4-bit weight [{out}, {inp}] has blocksize {}; it must be a multiple of 8",
                q.blocksize
            )));
        }
        let blocks = (out * inp).div_ceil(q.blocksize);
        // Pad the codes to whole blocks (blocksize / 8 words each).
        let mut bytes = q.packed.clone();
        bytes.resize(blocks * q.blocksize / 2, 0);
        let (absmax, scale_codes, map, nested_blocksize, offset) = match &q.absmax {
            Absmax::Plain(v) => (v.clone(), vec![0], vec![0.0], 0, 0.0),
            Absmax::Nested {
                codes,
                nested_absmax,
                code,
                nested_blocksize,
                offset,
            } => (
                nested_absmax.clone(),
                words_of(codes),
                code.clone(),
                *nested_blocksize,
                *offset,
            ),
        };
        Ok(Q4Parts {
            words: words_of(&bytes),
            absmax,
            scale_codes,
            code: q.quant_type.code().to_vec(),
            map,
            meta: Q4Meta {
                out,
                inp,
                blocksize: q.blocksize,
                nested_blocksize,
                offset,
                tuner: None,
            },
        })
    }
}

pub(crate) fn words_of(bytes: &[u8]) -> Vec<i32> {
    bytes
        .chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            i32::from_le_bytes(w)
        })
        .collect()
}

/// An int8 linear weight `[out, in]` resident on the device (`quantization_bit: 8`): bitsandbytes'
/// row-wise codes, 4 per 32-bit word, and one f32 multiplier per row.
#[derive(Debug, Clone)]
pub struct Int8Weight {
    words: Tensor<1, Int>,
    scales: Tensor<1>,
    out: usize,
    inp: usize,
}

impl Int8Weight {
    /// Quantize a dense `[out, in]` weight as bitsandbytes' `Int8Params` does and upload it.
    pub fn quantize(data: &[f32], out: usize, inp: usize, device: &Device) -> Result<Self> {
        let q = Quantized8bit::quantize(data, out, inp).map_err(|e| {
            Error::Invalid(format!("quantizing a [{out}, {inp}] weight to int8: {e}"))
        })?;
        Ok(Self::upload(&q, device))
    }

    pub fn upload(q: &Quantized8bit, device: &Device) -> Self {
        let bytes: Vec<u8> = q.cb.iter().map(|&c| c as u8).collect();
        let words = words_of(&bytes);
        let n = words.len();
        let scales = q.row_scales();
        Int8Weight {
            words: Tensor::from_data(TensorData::new(words, [n]), device),
            scales: Tensor::from_data(TensorData::new(scales, [q.rows]), device),
            out: q.rows,
            inp: q.cols,
        }
    }

    pub fn shape(&self) -> (usize, usize) {
        (self.out, self.inp)
    }

    /// The f32 weight `[out, in]` bitsandbytes trains with on the CPU.
    pub fn dequantize(&self) -> Tensor<2> {
        Tensor::from_dispatch(Dispatch::q8_dequantize(
            self.words.clone().into_dispatch(),
            self.scales.clone().into_dispatch(),
            self.out,
            self.inp,
        ))
    }

    /// `x·Wᵀ` for x `[n, in]`; the backward re-dequantizes instead of keeping W.
    pub fn matmul(&self, x: Tensor<2>) -> Tensor<2> {
        Tensor::from_dispatch(Dispatch::q8_matmul(
            x.into_dispatch(),
            self.words.clone().into_dispatch(),
            self.scales.clone().into_dispatch(),
            self.out,
            self.inp,
            true,
        ))
    }
}

/// A linear weight `[out, in]` stored as 16-bit floats on the device (2 per 32-bit word), as the
/// checkpoint or torch's cast to `bf16` / `fp16` has it; every product widens it to f32 exactly
/// (shaders/h16_widen.wgsl on wgpu), and the backward widens it again rather than keeping it.
#[derive(Debug, Clone)]
pub struct HalfWeight {
    words: Tensor<1, Int>,
    /// [`Half::table`], shared by every weight of the model.
    table: Tensor<1>,
    kind: Half,
    out: usize,
    inp: usize,
}

impl HalfWeight {
    /// The widening table of `kind` on `device` (one per model; 256 KiB).
    pub fn table(kind: Half, device: &Device) -> Tensor<1> {
        Tensor::from_data(TensorData::new(kind.table(), [1 << 16]), device)
    }

    /// Round a dense `[out, in]` weight to `kind` (nearest even) and upload it with `table`
    /// (from [`HalfWeight::table`] for the same kind).
    pub fn upload(data: &[f32], out: usize, inp: usize, kind: Half, table: &Tensor<1>) -> Self {
        let words: Vec<i32> = data
            .chunks(2)
            .map(|pair| {
                let low = u32::from(kind.bits_of(pair[0]));
                let high = pair.get(1).map_or(0, |&x| u32::from(kind.bits_of(x)));
                (low | high << 16) as i32
            })
            .collect();
        let n = words.len();
        HalfWeight {
            words: Tensor::from_data(TensorData::new(words, [n]), &table.device()),
            table: table.clone(),
            kind,
            out,
            inp,
        }
    }

    pub fn shape(&self) -> (usize, usize) {
        (self.out, self.inp)
    }

    /// The packed words and the widening table (what a fused op reads directly).
    pub fn parts(&self) -> (Tensor<1, Int>, Tensor<1>) {
        (self.words.clone(), self.table.clone())
    }

    /// The f32 weight `[out, in]`.
    pub fn widen(&self) -> Tensor<2> {
        Tensor::from_dispatch(Dispatch::h16_widen(
            self.words.clone().into_dispatch(),
            self.table.clone().into_dispatch(),
            self.kind,
            self.out,
            self.inp,
        ))
    }

    /// Rows `idx` `[n]` of the weight, widened to `[n, in]` (an embedding lookup): only those
    /// rows' words are gathered and widened. `in` is even, so every row is whole words.
    pub fn rows(&self, idx: Tensor<1, Int>) -> Tensor<2> {
        let [n] = idx.dims();
        let per_row = self.inp / 2;
        let words = self
            .words
            .clone()
            .reshape([self.out, per_row])
            .select(0, idx)
            .reshape([n * per_row]);
        Tensor::from_dispatch(Dispatch::h16_widen(
            words.into_dispatch(),
            self.table.clone().into_dispatch(),
            self.kind,
            n,
            self.inp,
        ))
    }

    /// `x·Wᵀ` for x `[n, in]`; the backward widens W again instead of keeping it.
    pub fn matmul(&self, x: Tensor<2>) -> Tensor<2> {
        Tensor::from_dispatch(Dispatch::h16_matmul(
            x.into_dispatch(),
            self.words.clone().into_dispatch(),
            self.table.clone().into_dispatch(),
            self.kind,
            self.out,
            self.inp,
            true,
        ))
    }
}
