//! The WGSL kernels of shaders/ as burn custom kernels on the wgpu runtime: double-quant scales
//! (nested_absmax.wgsl), dequantization (nf4_dequant.wgsl), the fused dequant-matmul
//! (q4_matmul.wgsl, and q4_gemv.wgsl for a few rows) and 16-bit widening (h16_widen.wgsl, then
//! burn's f32 matmul). Where cubecl compiles to something other than WGSL (CUDA; SPIR-V, whose
//! compiler refuses precompiled text kernels) the `#[cube]` kernels of src/quant_cube.rs
//! dequantize into a buffer for burn's matmul instead.

use burn::backend::Backend;
use burn::backend::Cube;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::{
    CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous,
};
use burn::tensor::{DType, FloatDType, Shape};
use burn_cubecl::cubecl::{CubeCount, CubeDim, prelude::KernelId, server::KernelArguments};

use crate::quant_cube;
use crate::quant_ops::{Half, Q4Meta, QuantOps, dense_product, dequantize_ops, widen16_ops};
use crate::quant_tune::{self, Q4Path, ShapeKey};

const NF4_DEQUANT: &str = include_str!("../../../shaders/nf4_dequant.wgsl");
const NESTED_ABSMAX: &str = include_str!("../../../shaders/nested_absmax.wgsl");
const Q4_MATMUL: &str = include_str!("../../../shaders/q4_matmul.wgsl");
const Q4_GEMV: &str = include_str!("../../../shaders/q4_gemv.wgsl");
const H16_WIDEN: &str = include_str!("../../../shaders/h16_widen.wgsl");

/// Up to this many rows of `a`, the column-per-workgroup kernel (q4_gemv.wgsl) is used.
const GEMV_MAX_ROWS: usize = 16;

/// One of the shader files, launched as written (its entry point is `main`).
struct Wgsl {
    name: &'static str,
    source: &'static str,
}

impl Wgsl {
    fn new(name: &'static str, source: &'static str) -> Self {
        Wgsl { name, source }
    }
}

impl KernelSource for Wgsl {
    fn source(&self) -> SourceTemplate {
        SourceTemplate::new(self.source)
    }

    fn id(&self) -> KernelId {
        KernelId::new::<Self>().info(self.name)
    }

    fn lang(&self) -> &'static str {
        "wgsl"
    }
}

/// Which kernels serve a frozen-weight operation on these tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernels {
    /// shaders/'s WGSL: the wgpu runtime compiling to WGSL.
    Wgsl,
    /// src/quant_cube.rs: any other cubecl runtime (CUDA, wgpu's SPIR-V compiler).
    Cube,
    /// The tensor-op bodies of [`QuantOps`]: elements that are not 4 bytes wide.
    TensorOps,
}

/// The kernels for `tensors` (all on one device): every element 4 bytes wide, and the runtime's
/// compiler — the one kind of WGSL source kernel it can launch.
fn kernels(tensors: &[&CubeTensor]) -> Kernels {
    if !tensors
        .iter()
        .all(|t| matches!(t.dtype, DType::F32 | DType::I32 | DType::U32))
    {
        return Kernels::TensorOps;
    }
    let wgsl = tensors.iter().all(|t| t.client.name() == WGSL_RUNTIME);
    if wgsl { Kernels::Wgsl } else { Kernels::Cube }
}

/// The runtime name cubecl-wgpu gives a device whose kernels compile to WGSL (`wgpu<spirv>`
/// when its SPIR-V compiler serves a Vulkan adapter, which launches no WGSL text).
const WGSL_RUNTIME: &str = "wgpu<wgsl>";

/// Launch `kernel` with `inputs` (the first one names the device), a params buffer and a new f32
/// output of `out_shape`, bound in that order.
fn launch(
    kernel: Wgsl,
    cube_dim: CubeDim,
    count: CubeCount,
    inputs: &[&CubeTensor],
    params: &[u32],
    out_shape: Shape,
) -> CubeTensor {
    let like = inputs[0];
    let client = &like.client;
    let params = client.create_from_slice(bytemuck::cast_slice(params));
    let out = quant_cube::empty_f32(like, out_shape);
    let mut bindings: Vec<_> = inputs.iter().map(|t| t.handle.clone().binding()).collect();
    bindings.push(params.binding());
    bindings.push(out.handle.clone().binding());
    client.launch(
        Box::new(SourceKernel::new(kernel, cube_dim)),
        count,
        KernelArguments::new().with_buffers(bindings),
    );
    out
}

/// A 1-D dispatch of 64-wide workgroups over `n` items, folded into rows for large `n`.
fn grid_1d(n: usize) -> (CubeCount, u32) {
    let groups = n.div_ceil(64).max(1);
    let x = groups.min(32768);
    let y = groups.div_ceil(x);
    (CubeCount::Static(x as u32, y as u32, 1), (x * 64) as u32)
}

/// The f32 scale of every block, on the device.
fn block_scales(
    absmax: CubeTensor,
    scale_codes: CubeTensor,
    map: CubeTensor,
    meta: &Q4Meta,
) -> CubeTensor {
    if meta.nested_blocksize == 0 {
        return absmax;
    }
    let blocks = meta.blocks();
    let (count, row_stride) = grid_1d(blocks);
    let params = [
        blocks as u32,
        meta.nested_blocksize as u32,
        meta.offset.to_bits(),
        row_stride,
    ];
    launch(
        Wgsl::new("nested_absmax", NESTED_ABSMAX),
        CubeDim::new_1d(64),
        count,
        &[&scale_codes, &absmax, &map],
        &params,
        Shape::new([blocks]),
    )
}

/// Contiguous codes, the f32 scale of every block (by `kernels`' double-quant kernel), and the
/// code table: what the dequantizing kernels read.
fn kernel_inputs(
    kernels: Kernels,
    words: CubeTensor,
    absmax: CubeTensor,
    scale_codes: CubeTensor,
    code: CubeTensor,
    map: CubeTensor,
    meta: &Q4Meta,
) -> (CubeTensor, CubeTensor, CubeTensor) {
    let parts = (
        into_contiguous(absmax),
        into_contiguous(scale_codes),
        into_contiguous(map),
    );
    let scales = match kernels {
        Kernels::Cube => quant_cube::block_scales(parts.0, parts.1, parts.2, meta),
        _ => block_scales(parts.0, parts.1, parts.2, meta),
    };
    (into_contiguous(words), scales, into_contiguous(code))
}

/// The dense weight by src/quant_cube.rs's kernels (runtimes that launch no WGSL text).
fn cube_dequantize(
    words: CubeTensor,
    absmax: CubeTensor,
    scale_codes: CubeTensor,
    code: CubeTensor,
    map: CubeTensor,
    meta: &Q4Meta,
) -> CubeTensor {
    let (words, scales, code) =
        kernel_inputs(Kernels::Cube, words, absmax, scale_codes, code, map, meta);
    quant_cube::dequantize(words, scales, code, meta)
}

fn cast<B: Backend>(t: FloatTensor<B>, dtype: FloatDType) -> FloatTensor<B> {
    B::float_cast(t, dtype)
}

/// The largest |element| of an f16 product's `a` after scaling: 2^8 leaves f16's range
/// (65504) for sums of a few hundred large terms and keeps 22 binades above its normal minimum.
const F16_SCALE_TARGET: f64 = 8.0;

/// `a·Wᵀ` / `a·W` for an f16 `w` with `a` scaled by ≈ 2^k before the cast, so that its largest
/// element is ≈ 2^8, and the product unscaled after: per-tensor scaling in place of transformers'
/// GradScaler, which also serves the backward's incoming gradients (tiny values that f16 would
/// flush to zero) and large activations (that f16 would overflow). On the device: no host sync.
fn scaled_f16_product<B: Backend>(
    a: FloatTensor<B>,
    w: FloatTensor<B>,
    transposed: bool,
) -> FloatTensor<B> {
    let ln2 = std::f64::consts::LN_2;
    let amax = B::float_clamp_min(B::float_max_abs(a.clone()), 1e-30.into());
    let amax = B::float_reshape(amax, Shape::new([1, 1]));
    let e = B::float_ceil(B::float_mul_scalar(B::float_log(amax), (1.0 / ln2).into()));
    let scale = B::float_exp(B::float_add_scalar(
        B::float_mul_scalar(e, (-ln2).into()),
        (F16_SCALE_TARGET * ln2).into(),
    ));
    let a16 = cast::<B>(B::float_mul(a, scale.clone()), FloatDType::F16);
    let y = cast::<B>(dense_product::<B>(a16, w, transposed), FloatDType::F32);
    B::float_div(y, scale)
}

/// Whether the f16 arithmetic path applies: a cubecl runtime (WGSL or SPIR-V on wgpu, CUDA) whose
/// device has f16 arithmetic (`shader-f16`: Mesa's lavapipe has it), and an f16 weight with an
/// even element count (its words are then an f16 array as they stand).
fn f16_arithmetic(a: &CubeTensor, words: &CubeTensor, kind: Half, out: usize, inp: usize) -> bool {
    kind == Half::F16
        && (out * inp).is_multiple_of(2)
        && kernels(&[a, words]) != Kernels::TensorOps
        && <Cube as Backend>::supports_dtype(&a.device, DType::F16)
}

impl QuantOps for Cube {
    /// fp16 on an adapter with f16 arithmetic: `a` rounded to f16, the stored f16 weight read in
    /// place, burn's f16 matmul (cubek: f16 operands, f32 accumulators, f16 result) and the result
    /// widened — what torch's fp16 autocast does for a linear layer. Otherwise widen and multiply in f32.
    fn h16_matmul(
        a: FloatTensor<Self>,
        words: IntTensor<Self>,
        table: FloatTensor<Self>,
        kind: Half,
        out: usize,
        inp: usize,
        transposed: bool,
    ) -> FloatTensor<Self> {
        if f16_arithmetic(&a, &words, kind, out, inp) {
            let words = into_contiguous(words);
            let w = CubeTensor::new_contiguous(
                words.client.clone(),
                words.device.clone(),
                Shape::new([out, inp]),
                words.handle.clone(),
                DType::F16,
            );
            return scaled_f16_product::<Self>(a, w, transposed);
        }
        let w = Self::h16_widen(words, table, kind, out, inp);
        dense_product::<Self>(a, w, transposed)
    }

    fn h16_widen(
        words: IntTensor<Self>,
        table: FloatTensor<Self>,
        kind: Half,
        out: usize,
        inp: usize,
    ) -> FloatTensor<Self> {
        match kernels(&[&words, &table]) {
            Kernels::TensorOps => return widen16_ops::<Self>(words, table, out, inp),
            Kernels::Cube => {
                let (words, table) = (into_contiguous(words), into_contiguous(table));
                return quant_cube::widen16(words, table, out, inp);
            }
            Kernels::Wgsl => {}
        }
        let words = into_contiguous(words);
        let numel = out * inp;
        let (count, row_stride) = grid_1d(numel.div_ceil(2));
        let params = [numel as u32, (kind == Half::F16) as u32, row_stride, 0];
        launch(
            Wgsl::new("h16_widen", H16_WIDEN),
            CubeDim::new_1d(64),
            count,
            &[&words],
            &params,
            Shape::new([out, inp]),
        )
    }

    fn q4_dequantize(
        words: IntTensor<Self>,
        absmax: FloatTensor<Self>,
        scale_codes: IntTensor<Self>,
        code: FloatTensor<Self>,
        map: FloatTensor<Self>,
        meta: Q4Meta,
    ) -> FloatTensor<Self> {
        match kernels(&[&words, &absmax, &scale_codes, &code, &map]) {
            Kernels::TensorOps => {
                return dequantize_ops::<Self>(words, absmax, scale_codes, code, map, &meta);
            }
            Kernels::Cube => return cube_dequantize(words, absmax, scale_codes, code, map, &meta),
            Kernels::Wgsl => {}
        }
        let (words, scales, code) =
            kernel_inputs(Kernels::Wgsl, words, absmax, scale_codes, code, map, &meta);
        let numel = meta.out * meta.inp;
        // One invocation per packed word (8 elements).
        let (count, row_stride) = grid_1d(numel.div_ceil(8));
        let params = [numel as u32, meta.blocksize as u32, row_stride, 0];
        launch(
            Wgsl::new("nf4_dequant", NF4_DEQUANT),
            CubeDim::new_1d(64),
            count,
            &[&words, &scales, &code],
            &params,
            Shape::new([meta.out, meta.inp]),
        )
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
        match kernels(&[&a, &words, &absmax, &scale_codes, &code, &map]) {
            Kernels::TensorOps => {
                let w = dequantize_ops::<Self>(words, absmax, scale_codes, code, map, &meta);
                return dense_product::<Self>(a, w, transposed);
            }
            Kernels::Cube => {
                let w = cube_dequantize(words, absmax, scale_codes, code, map, &meta);
                return dense_product::<Self>(a, w, transposed);
            }
            Kernels::Wgsl => {}
        }
        let m = a.meta.shape()[0];
        let key = ShapeKey::new(m, meta.out, meta.inp, transposed);
        let device = a.device.clone();
        let parts = (words, absmax, scale_codes, code, map);
        let run = |path: Q4Path| {
            let (words, absmax, scale_codes, code, map) = parts.clone();
            match path {
                Q4Path::Fused => fused_q4_matmul(
                    a.clone(),
                    words,
                    absmax,
                    scale_codes,
                    code,
                    map,
                    meta,
                    transposed,
                ),
                Q4Path::Dequantize => {
                    let w = Self::q4_dequantize(words, absmax, scale_codes, code, map, meta);
                    dense_product::<Self>(a.clone(), w, transposed)
                }
            }
        };
        let path = quant_tune::path(meta.tuner, key, |p| device_seconds(&device, || run(p)));
        run(path)
    }
}

/// Median seconds of 3 runs of `f` after a warm-up (which compiles its pipelines), each
/// synchronised with the device.
fn device_seconds(device: &burn_cubecl::CubeDevice, f: impl Fn() -> CubeTensor) -> f64 {
    let sync = || {
        let _ = <Cube as Backend>::sync(device);
    };
    drop(f());
    sync();
    let mut times: Vec<f64> = (0..3)
        .map(|_| {
            let t = std::time::Instant::now();
            let out = f();
            sync();
            drop(out);
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[1]
}

/// shaders/'s fused `a·Wᵀ` / `a·W` for a 4-bit weight: q4_gemv.wgsl for a few rows, q4_matmul.wgsl
/// above.
#[allow(clippy::too_many_arguments)]
fn fused_q4_matmul(
    a: CubeTensor,
    words: CubeTensor,
    absmax: CubeTensor,
    scale_codes: CubeTensor,
    code: CubeTensor,
    map: CubeTensor,
    meta: Q4Meta,
    transposed: bool,
) -> CubeTensor {
    let a = into_contiguous(a);
    let (words, scales, code) =
        kernel_inputs(Kernels::Wgsl, words, absmax, scale_codes, code, map, &meta);
    let dims = a.meta.shape().clone();
    let m = dims[0];
    let (t, j) = if transposed {
        (meta.inp, meta.out)
    } else {
        (meta.out, meta.inp)
    };
    assert_eq!(
        dims[1], t,
        "q4_matmul: a is {dims:?}, the weight is [{}, {}]",
        meta.out, meta.inp
    );
    let params = [
        m as u32,
        t as u32,
        j as u32,
        meta.inp as u32,
        meta.blocksize as u32,
        transposed as u32,
        0,
        0,
    ];
    if m <= GEMV_MAX_ROWS && j <= 65535 {
        launch(
            Wgsl::new("q4_gemv", Q4_GEMV),
            CubeDim::new_1d(64),
            CubeCount::Static(j as u32, m.div_ceil(8) as u32, 1),
            &[&a, &words, &scales, &code],
            &params,
            Shape::new([m, j]),
        )
    } else {
        launch(
            Wgsl::new("q4_matmul", Q4_MATMUL),
            CubeDim::new_2d(16, 16),
            CubeCount::Static(j.div_ceil(64) as u32, m.div_ceil(64) as u32, 1),
            &[&a, &words, &scales, &code],
            &params,
            Shape::new([m, j]),
        )
    }
}
