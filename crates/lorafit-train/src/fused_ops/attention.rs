//! Tiled causal attention with an online softmax (FlashAttention-2's forward and backward) on
//! burn's backend primitives.
//!
//! Query heads are grouped under their KV head (`[b, kv_heads, group · tile, hd]`), so K and V
//! are never repeated and dK / dV come out summed over the group. Masked scores are a large
//! negative number rather than −∞: a tile in which a row sees nothing yet contributes
//! `exp(NEG − m) = 0` once the row's first visible key arrives (every row sees its own key).

use burn::backend::{
    Backend, TensorMetadata, get_or_init_device_settings,
    tensor::{BoolTensor, FloatTensor, IntTensor},
};
use burn::tensor::{FloatDType, Shape, Slice, TensorData};

use super::tiles;

/// A masked score: `exp(NEG − x)` is 0 for any real score `x`, and `NEG − NEG` is 0.
const NEG: f32 = -1.0e30;

/// How attention is masked and tiled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttnOpts {
    /// The softmax scale (`1/√head_dim`).
    pub scale: f32,
    /// Queries and keys per tile.
    pub tile: usize,
    /// A key at distance ≥ `window` from the query is masked (mistral's / qwen2's sliding
    /// window); 0: none.
    pub window: usize,
    /// `segments` confine attention to each sub-sequence (neat_packing); false: ignored.
    pub packed: bool,
    /// Run the backend's own kernels where it has them (cubecl's runtimes: attention_cube.rs,
    /// `attention_kernel: cube`); false: these tiled tensor ops on every backend.
    pub cube: bool,
}

impl AttnOpts {
    /// Does the query tile at positions `[p0, p1)` see anything in keys `[kj, ke)`?
    fn sees(&self, (p0, p1): (usize, usize), (kj, ke): (usize, usize)) -> bool {
        kj < p1 && (self.window == 0 || p0 < ke - 1 + self.window)
    }
}

fn dims<const D: usize, B: Backend>(t: &FloatTensor<B>) -> [usize; D] {
    let s = t.shape();
    std::array::from_fn(|i| s[i])
}

/// Slices along `dim` of a tensor of shape `shape`.
fn along(shape: &[usize], dim: usize, (a, e): (usize, usize)) -> Vec<Slice> {
    shape
        .iter()
        .enumerate()
        .map(|(i, &n)| Slice::from(if i == dim { a..e } else { 0..n }))
        .collect()
}

/// Rows `[a, e)` of every head of `t` `[b, kv, g, s, x]`, as `[b, kv, g·(e−a), x]`.
fn group_rows<B: Backend>(t: &FloatTensor<B>, rows: (usize, usize)) -> FloatTensor<B> {
    let [b, kv, g, _, x] = dims::<5, B>(t);
    let shape = dims::<5, B>(t);
    let part = B::float_slice(t.clone(), &along(&shape, 3, rows));
    B::float_reshape(part, Shape::new([b, kv, g * (rows.1 - rows.0), x]))
}

/// Keys `[kj, ke)` of `t` `[b, kv, s, hd]`.
fn key_tile<B: Backend>(t: &FloatTensor<B>, keys: (usize, usize)) -> FloatTensor<B> {
    let shape = dims::<4, B>(t);
    B::float_slice(t.clone(), &along(&shape, 2, keys))
}

/// Scores `q·kᵀ·scale` `[b, kv, g·lq, lk]` of a query tile (positions `pos`) against keys
/// `keys`, masked with [`NEG`] where the query may not see the key.
fn scores<B: Backend>(
    qb: &FloatTensor<B>,
    kb: &FloatTensor<B>,
    group: usize,
    pos: (usize, usize),
    keys: (usize, usize),
    segments: &IntTensor<B>,
    opts: &AttnOpts,
) -> FloatTensor<B> {
    let s = B::float_mul_scalar(
        B::float_matmul(qb.clone(), B::float_swap_dims(kb.clone(), 2, 3)),
        opts.scale.into(),
    );
    match mask::<B>(qb, group, pos, keys, segments, opts) {
        Some(m) => B::float_mask_fill(s, m, NEG.into()),
        None => s,
    }
}

/// The masked entries of a tile `[b, kv, g·lq, lk]`, or None when it sees every key.
fn mask<B: Backend>(
    qb: &FloatTensor<B>,
    group: usize,
    (p0, p1): (usize, usize),
    (kj, ke): (usize, usize),
    segments: &IntTensor<B>,
    opts: &AttnOpts,
) -> Option<BoolTensor<B>> {
    let [b, kv, _, _] = dims::<4, B>(qb);
    let (lq, lk) = (p1 - p0, ke - kj);
    let device = qb.device();
    let bool_dtype = get_or_init_device_settings::<B>(&device).bool_dtype;
    let causal = ke - 1 > p0;
    let windowed = opts.window > 0 && p1 > kj + opts.window;
    let tile = Shape::new([b, 1, 1, lq, lk]);
    let positional = (causal || windowed).then(|| {
        let m: Vec<bool> = (0..lq * lk)
            .map(|i| {
                let (q, k) = (p0 + i / lk, kj + i % lk);
                k > q || (opts.window > 0 && q >= k + opts.window)
            })
            .collect();
        let data = TensorData::new(m, [1, 1, 1, lq, lk]).convert_dtype(bool_dtype.into());
        let m = B::bool_from_data(data, &device);
        B::bool_expand(m, tile.clone())
    });
    let segment = opts.packed.then(|| {
        let seg_shape = [b, segments.shape()[1]];
        let sq = B::int_slice(segments.clone(), &[Slice::from(0..b), Slice::from(p0..p1)]);
        let sk = B::int_slice(
            segments.clone(),
            &[Slice::from(0..seg_shape[0]), Slice::from(kj..ke)],
        );
        let sq = B::int_expand(
            B::int_reshape(sq, Shape::new([b, 1, 1, lq, 1])),
            tile.clone(),
        );
        let sk = B::int_expand(
            B::int_reshape(sk, Shape::new([b, 1, 1, 1, lk])),
            tile.clone(),
        );
        B::int_not_equal(sq, sk, bool_dtype)
    });
    let m = match (positional, segment) {
        (Some(a), Some(b)) => B::bool_or(a, b),
        (a, b) => a.or(b)?,
    };
    let m = B::bool_expand(m, Shape::new([b, kv, group, lq, lk]));
    Some(B::bool_reshape(m, Shape::new([b, kv, group * lq, lk])))
}

/// The output `[b, heads, sq, hd]` and the log-sum-exp of every row `[b, heads, sq, 1]`.
pub fn forward<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    segments: &IntTensor<B>,
    opts: &AttnOpts,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let [b, nh, sq, hd] = dims::<4, B>(&q);
    let [_, nkv, sk, _] = dims::<4, B>(&k);
    let g = nh / nkv;
    let off = sk - sq;
    let device = q.device();
    let bool_dtype = get_or_init_device_settings::<B>(&device).bool_dtype;
    let q5 = B::float_reshape(q, Shape::new([b, nkv, g, sq, hd]));
    let mut outs = Vec::new();
    let mut lses = Vec::new();
    for (qi, qe) in tiles(sq, opts.tile) {
        let rows = g * (qe - qi);
        let pos = (qi + off, qe + off);
        let qb = group_rows::<B>(&q5, (qi, qe));
        let row = Shape::new([b, nkv, rows, 1]);
        let mut m = B::float_full(row.clone(), NEG.into(), &device, FloatDType::F32);
        let mut l = B::float_zeros(row, &device, FloatDType::F32);
        let mut acc = B::float_zeros(Shape::new([b, nkv, rows, hd]), &device, FloatDType::F32);
        for keys in tiles(sk, opts.tile).filter(|&t| opts.sees(pos, t)) {
            let s = scores::<B>(&qb, &key_tile::<B>(&k, keys), g, pos, keys, segments, opts);
            let tile_max = B::float_max_dim(s.clone(), 3);
            let higher = B::float_greater(tile_max.clone(), m.clone(), bool_dtype);
            let m_new = B::float_mask_where(m.clone(), higher, tile_max);
            let p = B::float_exp(B::float_sub(s, m_new.clone()));
            let correction = B::float_exp(B::float_sub(m, m_new.clone()));
            l = B::float_add(
                B::float_mul(l, correction.clone()),
                B::float_sum_dim(p.clone(), 3),
            );
            acc = B::float_add(
                B::float_mul(acc, correction),
                B::float_matmul(p, key_tile::<B>(&v, keys)),
            );
            m = m_new;
        }
        let out = B::float_div(acc, l.clone());
        let lse = B::float_add(m, B::float_log(l));
        let lq = qe - qi;
        outs.push(B::float_reshape(out, Shape::new([b, nkv, g, lq, hd])));
        lses.push(B::float_reshape(lse, Shape::new([b, nkv, g, lq, 1])));
    }
    (
        B::float_reshape(B::float_cat(outs, 3), Shape::new([b, nh, sq, hd])),
        B::float_reshape(B::float_cat(lses, 3), Shape::new([b, nh, sq, 1])),
    )
}

/// dQ, dK, dV from the incoming gradient `dout` `[b, heads, sq, hd]`, recomputing each tile's
/// probabilities from the kept log-sum-exp.
pub fn backward<B: Backend>(
    [q, k, v]: [FloatTensor<B>; 3],
    out: FloatTensor<B>,
    lse: FloatTensor<B>,
    dout: FloatTensor<B>,
    segments: &IntTensor<B>,
    opts: &AttnOpts,
) -> [FloatTensor<B>; 3] {
    let [b, nh, sq, hd] = dims::<4, B>(&q);
    let [_, nkv, sk, _] = dims::<4, B>(&k);
    let g = nh / nkv;
    let off = sk - sq;
    let device = q.device();
    // D = rowsum(dO ∘ O), the softmax backward's per-row term.
    let delta = B::float_sum_dim(B::float_mul(dout.clone(), out), 3);
    let grouped = |t: FloatTensor<B>, x: usize| B::float_reshape(t, Shape::new([b, nkv, g, sq, x]));
    let (q5, do5) = (grouped(q, hd), grouped(dout, hd));
    let (lse5, delta5) = (grouped(lse, 1), grouped(delta, 1));
    struct QueryTile<B: Backend> {
        rows: (usize, usize),
        q: FloatTensor<B>,
        dout: FloatTensor<B>,
        lse: FloatTensor<B>,
        delta: FloatTensor<B>,
        dq: Option<FloatTensor<B>>,
    }
    let mut qtiles: Vec<QueryTile<B>> = tiles(sq, opts.tile)
        .map(|rows| QueryTile {
            rows,
            q: group_rows::<B>(&q5, rows),
            dout: group_rows::<B>(&do5, rows),
            lse: group_rows::<B>(&lse5, rows),
            delta: group_rows::<B>(&delta5, rows),
            dq: None,
        })
        .collect();
    let add = |acc: Option<FloatTensor<B>>, t: FloatTensor<B>| match acc {
        Some(a) => B::float_add(a, t),
        None => t,
    };
    let mut dks = Vec::new();
    let mut dvs = Vec::new();
    for keys in tiles(sk, opts.tile) {
        let kb = key_tile::<B>(&k, keys);
        let vb = key_tile::<B>(&v, keys);
        let (mut dk, mut dv) = (None, None);
        for t in &mut qtiles {
            let pos = (t.rows.0 + off, t.rows.1 + off);
            if !opts.sees(pos, keys) {
                continue;
            }
            let s = scores::<B>(&t.q, &kb, g, pos, keys, segments, opts);
            let p = B::float_exp(B::float_sub(s, t.lse.clone()));
            dv = Some(add(
                dv,
                B::float_matmul(B::float_swap_dims(p.clone(), 2, 3), t.dout.clone()),
            ));
            let dp = B::float_matmul(t.dout.clone(), B::float_swap_dims(vb.clone(), 2, 3));
            let ds = B::float_mul_scalar(
                B::float_mul(p, B::float_sub(dp, t.delta.clone())),
                opts.scale.into(),
            );
            t.dq = Some(add(t.dq.take(), B::float_matmul(ds.clone(), kb.clone())));
            dk = Some(add(
                dk,
                B::float_matmul(B::float_swap_dims(ds, 2, 3), t.q.clone()),
            ));
        }
        let zeros = || {
            B::float_zeros(
                Shape::new([b, nkv, keys.1 - keys.0, hd]),
                &device,
                FloatDType::F32,
            )
        };
        dks.push(dk.unwrap_or_else(zeros));
        dvs.push(dv.unwrap_or_else(zeros));
    }
    let dqs: Vec<FloatTensor<B>> = qtiles
        .into_iter()
        .map(|t| {
            let lq = t.rows.1 - t.rows.0;
            let dq = t.dq.unwrap_or_else(|| {
                B::float_zeros(Shape::new([b, nkv, g * lq, hd]), &device, FloatDType::F32)
            });
            B::float_reshape(dq, Shape::new([b, nkv, g, lq, hd]))
        })
        .collect();
    [
        B::float_reshape(B::float_cat(dqs, 3), Shape::new([b, nh, sq, hd])),
        B::float_cat(dks, 2),
        B::float_cat(dvs, 2),
    ]
}
