//! Label log-probabilities over token chunks (Liger's fused linear cross-entropy): the
//! `[chunk, vocab]` logits of one chunk at a time, recomputed in the backward.

use burn::backend::{
    Backend, TensorMetadata,
    tensor::{FloatTensor, IntTensor},
};
use burn::tensor::{IndexingUpdateOp, Shape, Slice};

use super::tiles;

/// Rows `[a, e)` of a 2-D tensor.
fn rows<B: Backend>(t: &FloatTensor<B>, (a, e): (usize, usize)) -> FloatTensor<B> {
    let cols = t.shape()[1];
    B::float_slice(t.clone(), &[Slice::from(a..e), Slice::from(0..cols)])
}

/// Targets `[a, e)` as `[e − a, 1]`.
fn targets_of<B: Backend>(t: &IntTensor<B>, (a, e): (usize, usize)) -> IntTensor<B> {
    B::int_reshape(
        B::int_slice(t.clone(), &[Slice::from(a..e)]),
        Shape::new([e - a, 1]),
    )
}

/// `log softmax(h·Wᵀ)[target]` `[n]` and the log-sum-exp of every token `[n, 1]`.
pub fn forward<B: Backend>(
    hidden: FloatTensor<B>,
    lm_head_t: FloatTensor<B>,
    targets: &IntTensor<B>,
    chunk: usize,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let n = hidden.shape()[0];
    let mut logps = Vec::new();
    let mut lses = Vec::new();
    for c in tiles(n, chunk) {
        let logits = B::float_matmul(rows::<B>(&hidden, c), lm_head_t.clone());
        let m = B::float_max_dim(logits.clone(), 1);
        let sum = B::float_sum_dim(B::float_exp(B::float_sub(logits.clone(), m.clone())), 1);
        let lse = B::float_add(m, B::float_log(sum));
        let picked = B::float_gather(1, logits, targets_of::<B>(targets, c));
        logps.push(B::float_sub(picked, lse.clone()));
        lses.push(lse);
    }
    (
        B::float_reshape(B::float_cat(logps, 0), Shape::new([n])),
        B::float_cat(lses, 0),
    )
}

/// d/dh of `Σ g·logp`: per chunk `(onehot(target) − softmax)·g · W`.
pub fn backward<B: Backend>(
    hidden: FloatTensor<B>,
    lm_head_t: FloatTensor<B>,
    targets: &IntTensor<B>,
    lse: FloatTensor<B>,
    grad: FloatTensor<B>,
    chunk: usize,
) -> FloatTensor<B> {
    let n = hidden.shape()[0];
    let grad = B::float_reshape(grad, Shape::new([n, 1]));
    let head = B::float_transpose(lm_head_t.clone());
    let mut parts = Vec::new();
    for c in tiles(n, chunk) {
        let logits = B::float_matmul(rows::<B>(&hidden, c), lm_head_t.clone());
        let p = B::float_exp(B::float_sub(logits, rows::<B>(&lse, c)));
        let g = rows::<B>(&grad, c);
        let dlogits = B::float_mul(B::float_neg(p), g.clone());
        let dlogits = B::float_scatter(
            1,
            dlogits,
            targets_of::<B>(targets, c),
            g,
            IndexingUpdateOp::Add,
        );
        parts.push(B::float_matmul(dlogits, head.clone()));
    }
    B::float_cat(parts, 0)
}
