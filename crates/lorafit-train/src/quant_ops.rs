//! The frozen-weight operations as a burn backend extension: 4-bit / int8 dequantize, 16-bit
//! (bf16 / f16) widening, and the products `a·Wᵀ` / `a·W` whose autodiff backward re-dequantizes
//! (or re-widens) instead of keeping the f32 weight.
//!
//! Every backend gets the tensor-op bodies below (the same f32 multiplies and adds as
//! bitsandbytes, so dequantization is bit-exact); the wgpu runtime replaces them with the WGSL
//! kernels in shaders/ (src/quant_wgsl.rs). Autodiff wraps `q4_matmul` with its own backward:
//! the gradient of `a` is `q4_matmul` of the incoming gradient with the other orientation, so a
//! step's memory holds the packed codes, never a dequantized weight.

#![allow(clippy::too_many_arguments)] // the parts of a quantized weight, spelled out for the macro
#![allow(deprecated)] // burn-ndarray: deprecated upstream, still one of our backends

use burn::backend::{
    Autodiff, AutodiffBackend, Backend, TensorMetadata,
    autodiff::{
        checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
        grads::Gradients,
        ops::{Backward, Ops, OpsKind, unary},
    },
    backend_extension,
    tensor::{FloatTensor, IntTensor},
};
use burn::tensor::{FloatDType, Shape, Slice, TensorData};

/// Shape and scale layout of a 4-bit weight `[out, inp]` in bitsandbytes' storage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Q4Meta {
    pub out: usize,
    pub inp: usize,
    /// bitsandbytes' quantization block (64).
    pub blocksize: usize,
    /// Double quantization: scales are 8-bit codes into a 256-value map, times one nested
    /// absmax per `nested_blocksize` blocks, plus `offset`. 0 when the scales are plain f32.
    pub nested_blocksize: usize,
    pub offset: f32,
    /// The trainer's tuner, which picks the fused or the dequantize-then-matmul path where
    /// shaders/'s kernels run (src/quant_tune.rs); None: fused.
    pub tuner: Option<crate::quant_tune::TunerId>,
}

impl Q4Meta {
    /// Number of quantization blocks, `ceil(out·inp / blocksize)`.
    pub fn blocks(&self) -> usize {
        (self.out * self.inp).div_ceil(self.blocksize)
    }
}

/// A 16-bit float format a base weight is stored in (`bf16: true` / `fp16: true`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    Bf16,
    F16,
}

impl Half {
    /// The f32 value of every 16-bit pattern (what widening computes: exact, NaNs quieted as the
    /// `half` crate and x86's F16C do).
    pub fn table(self) -> Vec<f32> {
        (0..=u16::MAX)
            .map(|bits| match self {
                Half::Bf16 => half::bf16::from_bits(bits).to_f32(),
                Half::F16 => half::f16::from_bits(bits).to_f32(),
            })
            .collect()
    }

    /// The 16-bit pattern nearest `x` (round to nearest even, as torch's `.to(bfloat16)`).
    pub fn bits_of(self, x: f32) -> u16 {
        match self {
            Half::Bf16 => half::bf16::from_f32(x).to_bits(),
            Half::F16 => half::f16::from_f32(x).to_bits(),
        }
    }
}

/// The frozen-weight operations. 4-bit tensors, in order:
/// - `words`: the packed codes, 8 per 32-bit word (bitsandbytes' byte order), padded to whole blocks;
/// - `absmax`: f32 scales, one per block, or with double quantization one per nested group;
/// - `scale_codes`: with double quantization the 8-bit scale codes, 4 per 32-bit word (else unused);
/// - `code`: the 16 values of NF4 or FP4; `map`: the 256 values of the nested map (else unused).
#[backend_extension(
    NdArray,
    Flex,
    Cube: cfg(any(feature = "wgpu", feature = "cuda")),
    Autodiff,
)]
pub trait QuantOps: Backend {
    /// The dense weight `[out, inp]`, equal to bitsandbytes' `dequantize_4bit`.
    fn q4_dequantize(
        words: IntTensor<Self>,
        absmax: FloatTensor<Self>,
        scale_codes: IntTensor<Self>,
        code: FloatTensor<Self>,
        map: FloatTensor<Self>,
        meta: Q4Meta,
    ) -> FloatTensor<Self> {
        dequantize_ops::<Self>(words, absmax, scale_codes, code, map, &meta)
    }

    /// `a·Wᵀ` (`transposed`, a `[m, inp]` → `[m, out]`) or `a·W` (a `[m, out]` → `[m, inp]`).
    fn q4_matmul(
        a: FloatTensor<Self>,
        words: IntTensor<Self>,
        absmax: FloatTensor<Self>,
        scale_codes: IntTensor<Self>,
        code: FloatTensor<Self>,
        map: FloatTensor<Self>,
        meta: Q4Meta,
        transposed: bool,
    ) -> FloatTensor<Self> {
        let w = dequantize_ops::<Self>(words, absmax, scale_codes, code, map, &meta);
        dense_product::<Self>(a, w, transposed)
    }

    /// The int8 weight `[out, inp]` as bitsandbytes trains with it on the CPU:
    /// `f32(CB) · scales[row]` (`words`: 4 codes per 32-bit word, row-major, little-endian).
    fn q8_dequantize(
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        out: usize,
        inp: usize,
    ) -> FloatTensor<Self> {
        dequantize8_ops::<Self>(words, scales, out, inp)
    }

    /// `a·Wᵀ` (`transposed`) or `a·W` for an int8 weight, like [`Self::q4_matmul`].
    fn q8_matmul(
        a: FloatTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        out: usize,
        inp: usize,
        transposed: bool,
    ) -> FloatTensor<Self> {
        let w = dequantize8_ops::<Self>(words, scales, out, inp);
        dense_product::<Self>(a, w, transposed)
    }

    /// The f32 weight `[out, inp]` of a weight stored 16-bit: `words` hold two values each
    /// (element 2i in the low half), `table` the f32 value of each of the 65536 patterns of `kind`
    /// ([`Half::table`]). Widening is exact.
    fn h16_widen(
        words: IntTensor<Self>,
        table: FloatTensor<Self>,
        kind: Half,
        out: usize,
        inp: usize,
    ) -> FloatTensor<Self> {
        let _ = kind;
        widen16_ops::<Self>(words, table, out, inp)
    }

    /// `a·Wᵀ` (`transposed`) or `a·W` for a 16-bit weight, in f32.
    fn h16_matmul(
        a: FloatTensor<Self>,
        words: IntTensor<Self>,
        table: FloatTensor<Self>,
        kind: Half,
        out: usize,
        inp: usize,
        transposed: bool,
    ) -> FloatTensor<Self> {
        let w = Self::h16_widen(words, table, kind, out, inp);
        dense_product::<Self>(a, w, transposed)
    }
}

/// 16-bit widening with tensor ops, on any backend: each half of each word looked up in `table`.
pub fn widen16_ops<B: Backend>(
    words: IntTensor<B>,
    table: FloatTensor<B>,
    out: usize,
    inp: usize,
) -> FloatTensor<B> {
    let n_words = words.shape()[0];
    let low = B::bitwise_and_scalar(words.clone(), 0xffff.into());
    // i32 words: the shift may sign-extend, the mask undoes it.
    let high = B::bitwise_and_scalar(
        B::bitwise_right_shift_scalar(words, 16.into()),
        0xffff.into(),
    );
    let halves = B::int_cat(
        vec![
            B::int_reshape(low, Shape::new([n_words, 1])),
            B::int_reshape(high, Shape::new([n_words, 1])),
        ],
        1,
    );
    let codes = B::int_slice(
        B::int_reshape(halves, Shape::new([n_words * 2])),
        &[Slice::from(0..out * inp)],
    );
    let values = B::float_select(table, 0, codes);
    B::float_reshape(values, Shape::new([out, inp]))
}

/// `a·Wᵀ` (`transposed`) or `a·W` for a dense `w` `[out, inp]`.
pub fn dense_product<B: Backend>(
    a: FloatTensor<B>,
    w: FloatTensor<B>,
    transposed: bool,
) -> FloatTensor<B> {
    let w = if transposed { B::float_transpose(w) } else { w };
    B::float_matmul(a, w)
}

/// Int8 dequantization with tensor ops, on any backend.
pub fn dequantize8_ops<B: Backend>(
    words: IntTensor<B>,
    scales: FloatTensor<B>,
    out: usize,
    inp: usize,
) -> FloatTensor<B> {
    let n_words = words.shape()[0];
    let bytes: Vec<IntTensor<B>> = (0..4)
        .map(|k| {
            // Byte k of each word, sign-extended: ((b + 128) & 255) - 128.
            let b = B::bitwise_right_shift_scalar(words.clone(), (8 * k).into());
            let b = B::bitwise_and_scalar(B::int_add_scalar(b, 128.into()), 255.into());
            B::int_reshape(B::int_sub_scalar(b, 128.into()), Shape::new([n_words, 1]))
        })
        .collect();
    let codes = B::int_reshape(B::int_cat(bytes, 1), Shape::new([n_words * 4]));
    let codes = B::int_slice(codes, &[Slice::from(0..out * inp)]);
    let values = B::int_into_float(codes, FloatDType::F32);
    B::float_mul(
        B::float_reshape(values, Shape::new([out, inp])),
        B::float_reshape(scales, Shape::new([out, 1])),
    )
}

/// The f32 scale of every block: `absmax` itself, or undoing double quantization as bitsandbytes
/// does (`map[code] · nested_absmax[block / nested_blocksize] + offset`).
pub fn block_scales_ops<B: Backend>(
    absmax: FloatTensor<B>,
    scale_codes: IntTensor<B>,
    map: FloatTensor<B>,
    meta: &Q4Meta,
) -> FloatTensor<B> {
    if meta.nested_blocksize == 0 {
        return absmax;
    }
    let n = meta.blocks();
    let n_words = scale_codes.shape()[0];
    let bytes: Vec<IntTensor<B>> = (0..4)
        .map(|k| {
            let shifted = B::bitwise_right_shift_scalar(scale_codes.clone(), (8 * k).into());
            B::int_reshape(
                B::bitwise_and_scalar(shifted, 255.into()),
                Shape::new([n_words, 1]),
            )
        })
        .collect();
    let codes = B::int_reshape(B::int_cat(bytes, 1), Shape::new([n_words * 4]));
    let vals = B::float_select(map, 0, codes);
    let groups = n.div_ceil(meta.nested_blocksize);
    let padded = groups * meta.nested_blocksize;
    let vals = fit::<B>(vals, padded);
    let scaled = B::float_mul(
        B::float_reshape(vals, Shape::new([groups, meta.nested_blocksize])),
        B::float_reshape(absmax, Shape::new([groups, 1])),
    );
    let scaled = B::float_slice(
        B::float_reshape(scaled, Shape::new([padded])),
        &[Slice::from(0..n)],
    );
    B::float_add_scalar(scaled, meta.offset.into())
}

/// `t` (1-D) cut or zero-padded to `len`.
fn fit<B: Backend>(t: FloatTensor<B>, len: usize) -> FloatTensor<B> {
    let have = t.shape()[0];
    if have > len {
        B::float_slice(t, &[Slice::from(0..len)])
    } else if have < len {
        let device = t.device();
        let zeros = B::float_from_data(
            TensorData::new(vec![0f32; len - have], [len - have]),
            &device,
        );
        B::float_cat(vec![t, zeros], 0)
    } else {
        t
    }
}

/// Dequantization with tensor ops, on any backend.
pub fn dequantize_ops<B: Backend>(
    words: IntTensor<B>,
    absmax: FloatTensor<B>,
    scale_codes: IntTensor<B>,
    code: FloatTensor<B>,
    map: FloatTensor<B>,
    meta: &Q4Meta,
) -> FloatTensor<B> {
    let n_words = words.shape()[0];
    // Element 8w + 2k sits in the high nibble of byte k of word w, 8w + 2k + 1 in its low nibble.
    let columns: Vec<IntTensor<B>> = (0..8)
        .map(|j| {
            let shift = 8 * (j / 2) + if j % 2 == 0 { 4 } else { 0 };
            let nib = B::bitwise_and_scalar(
                B::bitwise_right_shift_scalar(words.clone(), shift.into()),
                15.into(),
            );
            B::int_reshape(nib, Shape::new([n_words, 1]))
        })
        .collect();
    let codes = B::int_reshape(B::int_cat(columns, 1), Shape::new([n_words * 8]));
    let values = B::float_select(code, 0, codes);
    let blocks = n_words * 8 / meta.blocksize;
    let scales = fit::<B>(
        block_scales_ops::<B>(absmax, scale_codes, map, meta),
        blocks,
    );
    let dense = B::float_mul(
        B::float_reshape(values, Shape::new([blocks, meta.blocksize])),
        B::float_reshape(scales, Shape::new([blocks, 1])),
    );
    let n = meta.out * meta.inp;
    let dense = B::float_slice(
        B::float_reshape(dense, Shape::new([blocks * meta.blocksize])),
        &[Slice::from(0..n)],
    );
    B::float_reshape(dense, Shape::new([meta.out, meta.inp]))
}

impl QuantOps for burn::backend::NdArray {}
impl QuantOps for burn::backend::Flex {}

#[cfg(all(feature = "cuda", not(feature = "wgpu")))]
impl QuantOps for burn::backend::Cube {}

/// A frozen quantized weight as the backward pass keeps it (handles to the resident tensors,
/// no copies).
#[derive(Debug, Clone)]
enum Frozen<B: Backend> {
    Q4 {
        words: IntTensor<B>,
        absmax: FloatTensor<B>,
        scale_codes: IntTensor<B>,
        code: FloatTensor<B>,
        map: FloatTensor<B>,
        meta: Q4Meta,
    },
    Q8 {
        words: IntTensor<B>,
        scales: FloatTensor<B>,
        out: usize,
        inp: usize,
    },
    H16 {
        words: IntTensor<B>,
        table: FloatTensor<B>,
        kind: Half,
        out: usize,
        inp: usize,
    },
}

impl<B: QuantOps> Frozen<B> {
    /// `a·Wᵀ` (`transposed`) or `a·W` on the inner backend.
    fn product(self, a: FloatTensor<B>, transposed: bool) -> FloatTensor<B> {
        match self {
            Frozen::Q4 {
                words,
                absmax,
                scale_codes,
                code,
                map,
                meta,
            } => B::q4_matmul(a, words, absmax, scale_codes, code, map, meta, transposed),
            Frozen::Q8 {
                words,
                scales,
                out,
                inp,
            } => B::q8_matmul(a, words, scales, out, inp, transposed),
            Frozen::H16 {
                words,
                table,
                kind,
                out,
                inp,
            } => B::h16_matmul(a, words, table, kind, out, inp, transposed),
        }
    }
}

#[derive(Debug)]
struct FrozenMatmulBackward;

impl<B: QuantOps> Backward<B, 1> for FrozenMatmulBackward {
    type State = (Frozen<B>, bool);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (w, transposed) = ops.state;
        // d(a·Wᵀ)/da = g·W and d(a·W)/da = g·Wᵀ: the same kernel, the other orientation.
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            w.product(grad, !transposed)
        });
    }
}

/// The product of a tracked `a` and a frozen weight, whose backward re-dequantizes: the graph
/// keeps only the quantized parts.
fn frozen_matmul<B: QuantOps, C: CheckpointStrategy>(
    a: FloatTensor<Autodiff<B, C>>,
    w: Frozen<B>,
    transposed: bool,
) -> FloatTensor<Autodiff<B, C>> {
    match FrozenMatmulBackward
        .prepare::<C>([a.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let out = w.clone().product(a.into_primitive(), transposed);
            prep.finish((w, transposed), out)
        }
        OpsKind::UnTracked(prep) => prep.finish(w.product(a.into_primitive(), transposed)),
    }
}

impl<B: QuantOps, C: CheckpointStrategy> QuantOps for Autodiff<B, C> {
    fn h16_widen(
        words: IntTensor<Self>,
        table: FloatTensor<Self>,
        kind: Half,
        out: usize,
        inp: usize,
    ) -> FloatTensor<Self> {
        let dense = B::h16_widen(words, table.into_primitive(), kind, out, inp);
        <Self as AutodiffBackend>::from_inner(dense)
    }

    fn h16_matmul(
        a: FloatTensor<Self>,
        words: IntTensor<Self>,
        table: FloatTensor<Self>,
        kind: Half,
        out: usize,
        inp: usize,
        transposed: bool,
    ) -> FloatTensor<Self> {
        let w = Frozen::H16 {
            words,
            table: table.into_primitive(),
            kind,
            out,
            inp,
        };
        frozen_matmul::<B, C>(a, w, transposed)
    }

    fn q8_dequantize(
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        out: usize,
        inp: usize,
    ) -> FloatTensor<Self> {
        let dense = B::q8_dequantize(words, scales.into_primitive(), out, inp);
        <Self as AutodiffBackend>::from_inner(dense)
    }

    fn q8_matmul(
        a: FloatTensor<Self>,
        words: IntTensor<Self>,
        scales: FloatTensor<Self>,
        out: usize,
        inp: usize,
        transposed: bool,
    ) -> FloatTensor<Self> {
        let w = Frozen::Q8 {
            words,
            scales: scales.into_primitive(),
            out,
            inp,
        };
        frozen_matmul::<B, C>(a, w, transposed)
    }

    fn q4_dequantize(
        words: IntTensor<Self>,
        absmax: FloatTensor<Self>,
        scale_codes: IntTensor<Self>,
        code: FloatTensor<Self>,
        map: FloatTensor<Self>,
        meta: Q4Meta,
    ) -> FloatTensor<Self> {
        // A frozen weight: the result is a constant of the graph.
        let dense = B::q4_dequantize(
            words,
            absmax.into_primitive(),
            scale_codes,
            code.into_primitive(),
            map.into_primitive(),
            meta,
        );
        <Self as AutodiffBackend>::from_inner(dense)
    }

    fn q4_matmul(
        a: FloatTensor<Self>,
        words: IntTensor<Self>,
        absmax: FloatTensor<Self>,
        scale_codes: IntTensor<Self>,
        code: FloatTensor<Self>,
        map: FloatTensor<Self>,
        meta: Q4Meta,
        transposed: bool,
    ) -> FloatTensor<Self> {
        let w = Frozen::Q4 {
            words,
            absmax: absmax.into_primitive(),
            scale_codes,
            code: code.into_primitive(),
            map: map.into_primitive(),
            meta,
        };
        frozen_matmul::<B, C>(a, w, transposed)
    }
}
