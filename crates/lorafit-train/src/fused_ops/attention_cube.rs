//! [`FusedOps::flash_attention`] as three `#[cube]` kernels, so cubecl compiles them for every
//! runtime (WGSL, SPIR-V, CUDA): the forward and the two halves of the backward each run in one
//! launch, where the tensor-op version (`attention.rs`) launches a dozen ops per query × key tile
//! and holds each tile's scores in a buffer of its own.
//!
//! - forward: one unit per query row (64 per cube), K / V read in key tiles staged in shared
//!   memory; an online softmax per row (FlashAttention's), the output and the row's log-sum-exp
//!   written once.
//! - backward, dQ: the same layout; each row recomputes its probabilities from the kept
//!   log-sum-exp and writes `D = rowsum(dO ∘ O)` for the next kernel.
//! - backward, dK / dV: one unit per key row of a KV head, query tiles (Q, dO, log-sum-exp, D)
//!   staged in shared memory; the unit sums over every query head of its group (GQA without
//!   repeating K / V) and writes its gradients once. No atomics.
//!
//! Masking is the tensor-op version's: causal (query `i` at position `sk − sq + i`), a sliding
//! window, and with `packed` the segment ids (a key is seen only by queries of its segment).
//! Masked keys are skipped, which is what `exp(NEG − m) = 0` gives the tiled version. The
//! largest buffer any launch allocates is the output (`[b, heads, sq, hd]`): memory is linear in
//! the sequence length, with no tile of scores at all.

use burn::backend::Cube;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::backend::wgpu::{CubeTensor, into_contiguous};
use burn::tensor::{DType, Shape};
use burn_cubecl::cubecl::{self, CubeCount, CubeDim, prelude::*};

use super::attention::{self, AttnOpts};
use super::{AttentionKernels, FusedOps};
use crate::quant_cube::empty_f32;

/// Query (forward, dQ) or key (dK / dV) rows per cube: one unit each.
const ROWS: usize = 64;

/// Shared memory per cube, in f32 values: 16 KiB, WebGPU's guaranteed minimum.
const SHARED_F32: usize = 4096;

/// Keys staged per tile by the forward and dQ kernels (K and V: `2 · tile · hd` values).
fn key_tile(hd: usize) -> usize {
    (SHARED_F32 / (2 * hd)).clamp(1, ROWS)
}

/// Queries staged per tile by the dK / dV kernel (Q and dO rows, a log-sum-exp and a D each).
fn query_tile(hd: usize) -> usize {
    (SHARED_F32 / (2 * hd + 2)).clamp(1, ROWS)
}

/// The shapes and masks every kernel reads, as run-time scalars.
#[derive(CubeType, CubeLaunch, Clone, Copy)]
struct Dims {
    /// Queries and keys per sequence (`sk ≥ sq`).
    sq: u32,
    sk: u32,
    /// Query heads and query heads per KV head.
    heads: u32,
    group: u32,
    /// The sliding window (0: none) and whether segments mask (0 / 1).
    window: u32,
    packed: u32,
    scale: f32,
}

/// Does the query at position `pos` see the key at `key`? (Causal, window, segment.)
#[cube]
fn visible(dims: &Dims, segments: &[i32], seg_base: usize, pos: usize, key: usize) -> bool {
    let window = dims.window as usize;
    let mut seen = key <= pos && (window == 0 || pos < key + window);
    if seen && dims.packed == 1 {
        seen = segments[seg_base + key] == segments[seg_base + pos];
    }
    seen
}

/// Where a forward / dQ unit's query row is (cube `(x, y, z)` = (query block, head, batch row),
/// unit x = the row in the block), and the keys `[first, end)` any row of its block can see.
#[derive(CubeType)]
struct QueryRow {
    /// The row exists (the last block may be ragged).
    valid: bool,
    /// Its position among the keys (`sk − sq + i`).
    pos: usize,
    /// Its index into `[b, heads, sq]`.
    row: usize,
    /// Where its KV head's keys start in `[b, kv_heads, sk, hd]`, and its segment ids in `[b, sk]`.
    kv_base: usize,
    seg_base: usize,
    first: usize,
    end: usize,
}

#[cube]
fn query_row(dims: &Dims, #[comptime] hd: usize) -> QueryRow {
    let (sq, sk) = (dims.sq as usize, dims.sk as usize);
    let (b, h) = (CUBE_POS_Z as usize, CUBE_POS_Y as usize);
    let heads_kv = dims.heads as usize / dims.group as usize;
    let off = sk - sq;
    let i = CUBE_POS_X as usize * ROWS + UNIT_POS_X as usize;
    // The block's first position, and the window's reach below it.
    let p0 = off + CUBE_POS_X as usize * ROWS;
    let window = dims.window as usize;
    let mut first = 0usize;
    if window > 0 && p0 + 1 > window {
        first = p0 + 1 - window;
    }
    QueryRow {
        valid: i < sq,
        pos: off + i,
        row: (b * dims.heads as usize + h) * sq + i,
        kv_base: (b * heads_kv + h / dims.group as usize) * sk * hd,
        seg_base: b * sk,
        first,
        end: (p0 + ROWS).min(sk),
    }
}

/// Stage keys `[kt, kt + tile)` (those below `end`) of one KV head's K and V in shared memory.
#[cube]
#[allow(clippy::too_many_arguments)]
fn stage_keys(
    k: &[f32],
    v: &[f32],
    ks: &mut Shared<[f32]>,
    vs: &mut Shared<[f32]>,
    kv_base: usize,
    kt: usize,
    end: usize,
    #[comptime] hd: usize,
    #[comptime] tile: usize,
) {
    let mut idx = UNIT_POS_X as usize;
    while idx < tile * hd {
        let key = kt + idx / hd;
        if key < end {
            let src = kv_base + key * hd + idx % hd;
            ks[idx] = k[src];
            vs[idx] = v[src];
        }
        idx += ROWS;
    }
}

/// The output and log-sum-exp of each query row ([`QueryRow`]'s layout).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn forward_kernel(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    segments: &[i32],
    out: &mut [f32],
    lse: &mut [f32],
    dims: Dims,
    #[comptime] hd: usize,
    #[comptime] tile: usize,
) {
    let QueryRow {
        valid,
        pos,
        row,
        kv_base,
        seg_base,
        first,
        end,
    } = query_row(&dims, hd);

    let mut qr = Array::<f32>::new(hd);
    let mut acc = Array::<f32>::new(hd);
    #[unroll]
    for d in 0..hd {
        qr[d] = 0.0;
        acc[d] = 0.0;
        if valid {
            qr[d] = q[row * hd + d];
        }
    }
    let mut m = f32::new(-1.0e30);
    let mut l = f32::new(0.0);

    let mut ks = Shared::<[f32]>::new_slice(tile * hd);
    let mut vs = Shared::<[f32]>::new_slice(tile * hd);
    let mut kt = first;
    while kt < end {
        stage_keys(k, v, &mut ks, &mut vs, kv_base, kt, end, hd, tile);
        sync_cube();
        if valid {
            let n = tile.min(end - kt);
            for j in 0..n {
                let key = kt + j;
                if visible(&dims, segments, seg_base, pos, key) {
                    let mut s = f32::new(0.0);
                    #[unroll]
                    for d in 0..hd {
                        s += qr[d] * ks[j * hd + d];
                    }
                    s *= dims.scale;
                    let m_new = f32::max(m, s);
                    let c = f32::exp(m - m_new);
                    let p = f32::exp(s - m_new);
                    l = l * c + p;
                    #[unroll]
                    for d in 0..hd {
                        acc[d] = acc[d] * c + p * vs[j * hd + d];
                    }
                    m = m_new;
                }
            }
        }
        sync_cube();
        kt += tile;
    }
    if valid {
        #[unroll]
        for d in 0..hd {
            out[row * hd + d] = acc[d] / l;
        }
        lse[row] = m + f32::ln(l);
    }
}

/// dQ (and `D` per row for [`dkdv_kernel`]); [`QueryRow`]'s layout.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn dq_kernel(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    dout: &[f32],
    lse: &[f32],
    segments: &[i32],
    dq: &mut [f32],
    delta: &mut [f32],
    dims: Dims,
    #[comptime] hd: usize,
    #[comptime] tile: usize,
) {
    let QueryRow {
        valid,
        pos,
        row,
        kv_base,
        seg_base,
        first,
        end,
    } = query_row(&dims, hd);

    let mut qr = Array::<f32>::new(hd);
    let mut dor = Array::<f32>::new(hd);
    let mut acc = Array::<f32>::new(hd);
    let mut dl = f32::new(0.0);
    let mut lse_i = f32::new(0.0);
    #[unroll]
    for d in 0..hd {
        qr[d] = 0.0;
        dor[d] = 0.0;
        acc[d] = 0.0;
        if valid {
            qr[d] = q[row * hd + d];
            dor[d] = dout[row * hd + d];
            dl += dor[d] * out[row * hd + d];
        }
    }
    if valid {
        lse_i = lse[row];
        delta[row] = dl;
    }

    let mut ks = Shared::<[f32]>::new_slice(tile * hd);
    let mut vs = Shared::<[f32]>::new_slice(tile * hd);
    let mut kt = first;
    while kt < end {
        stage_keys(k, v, &mut ks, &mut vs, kv_base, kt, end, hd, tile);
        sync_cube();
        if valid {
            let n = tile.min(end - kt);
            for j in 0..n {
                let key = kt + j;
                if visible(&dims, segments, seg_base, pos, key) {
                    let mut s = f32::new(0.0);
                    let mut dp = f32::new(0.0);
                    #[unroll]
                    for d in 0..hd {
                        s += qr[d] * ks[j * hd + d];
                        dp += dor[d] * vs[j * hd + d];
                    }
                    let p = f32::exp(s * dims.scale - lse_i);
                    let ds = p * (dp - dl) * dims.scale;
                    #[unroll]
                    for d in 0..hd {
                        acc[d] += ds * ks[j * hd + d];
                    }
                }
            }
        }
        sync_cube();
        kt += tile;
    }
    if valid {
        #[unroll]
        for d in 0..hd {
            dq[row * hd + d] = acc[d];
        }
    }
}

/// Cube `(x, y, z)` = (key block, KV head, batch row); unit x = the key row in the block.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn dkdv_kernel(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    dout: &[f32],
    lse: &[f32],
    delta: &[f32],
    segments: &[i32],
    dk: &mut [f32],
    dv: &mut [f32],
    dims: Dims,
    #[comptime] hd: usize,
    #[comptime] tile: usize,
) {
    let (sq, sk) = (dims.sq as usize, dims.sk as usize);
    let (b, kvh) = (CUBE_POS_Z as usize, CUBE_POS_Y as usize);
    let group = dims.group as usize;
    let heads_kv = dims.heads as usize / group;
    let off = sk - sq;
    let j = CUBE_POS_X as usize * ROWS + UNIT_POS_X as usize;
    let valid = j < sk;
    let kv_row = (b * heads_kv + kvh) * sk + j;
    let seg_base = b * sk;

    let mut kr = Array::<f32>::new(hd);
    let mut vr = Array::<f32>::new(hd);
    let mut dkr = Array::<f32>::new(hd);
    let mut dvr = Array::<f32>::new(hd);
    #[unroll]
    for d in 0..hd {
        kr[d] = 0.0;
        vr[d] = 0.0;
        dkr[d] = 0.0;
        dvr[d] = 0.0;
        if valid {
            kr[d] = k[kv_row * hd + d];
            vr[d] = v[kv_row * hd + d];
        }
    }

    // The queries that see any key of this block: positions from its first key (causal) up to
    // its last key + window − 1, as query indices.
    let k0 = CUBE_POS_X as usize * ROWS;
    let k_last = (k0 + ROWS).min(sk) - 1;
    let mut i_first = 0usize;
    if k0 > off {
        i_first = k0 - off;
    }
    let window = dims.window as usize;
    let mut i_end = sq;
    if window > 0 {
        if k_last + window > off {
            i_end = sq.min(k_last + window - off);
        } else {
            i_end = 0;
        }
    }

    let mut qs = Shared::<[f32]>::new_slice(tile * hd);
    let mut dos = Shared::<[f32]>::new_slice(tile * hd);
    let mut lses = Shared::<[f32]>::new_slice(tile);
    let mut deltas = Shared::<[f32]>::new_slice(tile);
    for hg in 0..group {
        let h = kvh * group + hg;
        let q_base = (b * dims.heads as usize + h) * sq;
        let mut it = i_first;
        while it < i_end {
            let mut idx = UNIT_POS_X as usize;
            while idx < tile * hd {
                let i = it + idx / hd;
                if i < i_end {
                    let src = (q_base + i) * hd + idx % hd;
                    qs[idx] = q[src];
                    dos[idx] = dout[src];
                }
                idx += ROWS;
            }
            let mut r = UNIT_POS_X as usize;
            while r < tile {
                if it + r < i_end {
                    lses[r] = lse[q_base + it + r];
                    deltas[r] = delta[q_base + it + r];
                }
                r += ROWS;
            }
            sync_cube();
            if valid {
                let n = tile.min(i_end - it);
                for t in 0..n {
                    let pos = off + it + t;
                    if visible(&dims, segments, seg_base, pos, j) {
                        let mut s = f32::new(0.0);
                        let mut dp = f32::new(0.0);
                        #[unroll]
                        for d in 0..hd {
                            s += qs[t * hd + d] * kr[d];
                            dp += dos[t * hd + d] * vr[d];
                        }
                        let p = f32::exp(s * dims.scale - lses[t]);
                        let ds = p * (dp - deltas[t]) * dims.scale;
                        #[unroll]
                        for d in 0..hd {
                            dvr[d] += p * dos[t * hd + d];
                            dkr[d] += ds * qs[t * hd + d];
                        }
                    }
                }
            }
            sync_cube();
            it += tile;
        }
    }
    if valid {
        #[unroll]
        for d in 0..hd {
            dk[kv_row * hd + d] = dkr[d];
            dv[kv_row * hd + d] = dvr[d];
        }
    }
}

/// Tensors these kernels take: f32 values, i32 segment ids (anything else runs the tensor ops).
fn kernel_dtypes(floats: &[&CubeTensor], segments: &CubeTensor) -> bool {
    floats.iter().all(|t| t.dtype == DType::F32) && segments.dtype == DType::I32
}

fn shape4(t: &CubeTensor) -> [usize; 4] {
    let s = t.meta.shape();
    [s[0], s[1], s[2], s[3]]
}

fn dims_arg(q: &CubeTensor, k: &CubeTensor, opts: &AttnOpts) -> DimsLaunch {
    let [_, heads, sq, _] = shape4(q);
    let [_, kv_heads, sk, _] = shape4(k);
    DimsLaunch::new(
        sq as u32,
        sk as u32,
        heads as u32,
        (heads / kv_heads) as u32,
        opts.window as u32,
        opts.packed as u32,
        opts.scale,
    )
}

/// The output `[b, heads, sq, hd]` and log-sum-exp `[b, heads, sq, 1]`.
pub fn forward(
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    segments: &CubeTensor,
    opts: &AttnOpts,
) -> (CubeTensor, CubeTensor) {
    if !opts.cube || !kernel_dtypes(&[&q, &k, &v], segments) {
        return attention::forward::<Cube>(q, k, v, segments, opts);
    }
    let (q, k, v) = (into_contiguous(q), into_contiguous(k), into_contiguous(v));
    let segments = into_contiguous(segments.clone());
    let [b, heads, sq, hd] = shape4(&q);
    let out = empty_f32(&q, Shape::new([b, heads, sq, hd]));
    let lse = empty_f32(&q, Shape::new([b, heads, sq, 1]));
    let dims = dims_arg(&q, &k, opts);
    forward_kernel::launch(
        &q.client,
        CubeCount::Static(sq.div_ceil(ROWS) as u32, heads as u32, b as u32),
        CubeDim::new_1d(ROWS as u32),
        q.clone().into_buffer_arg(),
        k.into_buffer_arg(),
        v.into_buffer_arg(),
        segments.into_buffer_arg(),
        out.clone().into_buffer_arg(),
        lse.clone().into_buffer_arg(),
        dims,
        hd,
        key_tile(hd),
    );
    (out, lse)
}

/// dQ, dK, dV from the incoming gradient `dout`.
pub fn backward(
    [q, k, v]: [CubeTensor; 3],
    out: CubeTensor,
    lse: CubeTensor,
    dout: CubeTensor,
    segments: &CubeTensor,
    opts: &AttnOpts,
) -> [CubeTensor; 3] {
    if !opts.cube || !kernel_dtypes(&[&q, &k, &v, &out, &lse, &dout], segments) {
        return attention::backward::<Cube>([q, k, v], out, lse, dout, segments, opts);
    }
    let [q, k, v, out, lse, dout] = [q, k, v, out, lse, dout].map(into_contiguous);
    let segments = into_contiguous(segments.clone());
    let [b, heads, sq, hd] = shape4(&q);
    let [_, kv_heads, sk, _] = shape4(&k);
    let dq = empty_f32(&q, Shape::new([b, heads, sq, hd]));
    let delta = empty_f32(&q, Shape::new([b, heads, sq, 1]));
    let dk = empty_f32(&q, Shape::new([b, kv_heads, sk, hd]));
    let dv = empty_f32(&q, Shape::new([b, kv_heads, sk, hd]));
    let client = q.client.clone();
    dq_kernel::launch(
        &client,
        CubeCount::Static(sq.div_ceil(ROWS) as u32, heads as u32, b as u32),
        CubeDim::new_1d(ROWS as u32),
        q.clone().into_buffer_arg(),
        k.clone().into_buffer_arg(),
        v.clone().into_buffer_arg(),
        out.into_buffer_arg(),
        dout.clone().into_buffer_arg(),
        lse.clone().into_buffer_arg(),
        segments.clone().into_buffer_arg(),
        dq.clone().into_buffer_arg(),
        delta.clone().into_buffer_arg(),
        dims_arg(&q, &k, opts),
        hd,
        key_tile(hd),
    );
    dkdv_kernel::launch(
        &client,
        CubeCount::Static(sk.div_ceil(ROWS) as u32, kv_heads as u32, b as u32),
        CubeDim::new_1d(ROWS as u32),
        q.clone().into_buffer_arg(),
        k.clone().into_buffer_arg(),
        v.into_buffer_arg(),
        dout.into_buffer_arg(),
        lse.into_buffer_arg(),
        delta.into_buffer_arg(),
        segments.into_buffer_arg(),
        dk.clone().into_buffer_arg(),
        dv.clone().into_buffer_arg(),
        dims_arg(&q, &k, opts),
        hd,
        query_tile(hd),
    );
    [dq, dk, dv]
}

impl AttentionKernels for Cube {
    fn attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        segments: &IntTensor<Self>,
        opts: &AttnOpts,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        forward(q, k, v, segments, opts)
    }

    fn attention_backward(
        qkv: [FloatTensor<Self>; 3],
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        segments: &IntTensor<Self>,
        opts: &AttnOpts,
    ) -> [FloatTensor<Self>; 3] {
        backward(qkv, out, lse, dout, segments, opts)
    }
}

impl FusedOps for Cube {
    fn flash_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        segments: IntTensor<Self>,
        opts: AttnOpts,
    ) -> FloatTensor<Self> {
        forward(q, k, v, &segments, &opts).0
    }
}
