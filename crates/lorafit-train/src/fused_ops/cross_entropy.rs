//! Label log-probabilities over token chunks (Liger's fused linear cross-entropy): the
//! `[chunk, vocab]` logits of one chunk at a time, recomputed in the backward.

use burn::backend::get_or_init_device_settings;
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

/// A frozen lm_head `[vocab, hidden]` stored 16-bit (two values a word, element 2i in the low
/// half; `table` the f32 value of each pattern), read `tile` vocabulary rows at a time: only one
/// tile is ever widened to f32.
#[derive(Debug, Clone)]
pub struct Head16<B: Backend> {
    pub words: IntTensor<B>,
    pub table: FloatTensor<B>,
    pub vocab: usize,
    pub hidden: usize,
    pub tile: usize,
}

impl<B: Backend> Head16<B> {
    /// Rows `[a, e)` widened and transposed: `[hidden, e − a]`.
    fn tile_t(&self, (a, e): (usize, usize)) -> FloatTensor<B> {
        let per_row = self.hidden / 2;
        let words = B::int_slice(self.words.clone(), &[Slice::from(a * per_row..e * per_row)]);
        let w = crate::quant_ops::widen16_ops::<B>(words, self.table.clone(), e - a, self.hidden);
        B::float_transpose(w)
    }

    fn single(&self) -> bool {
        self.tile >= self.vocab
    }

    /// The head rows of `targets` `[n]`, widened: `[n, hidden]`.
    fn target_rows(&self, targets: &IntTensor<B>) -> FloatTensor<B> {
        let n = targets.shape()[0];
        let per_row = self.hidden / 2;
        let words = B::int_reshape(self.words.clone(), Shape::new([self.vocab, per_row]));
        let picked = B::int_select(words, 0, targets.clone());
        let words = B::int_reshape(picked, Shape::new([n * per_row]));
        crate::quant_ops::widen16_ops::<B>(words, self.table.clone(), n, self.hidden)
    }
}

/// Targets `[a, e)` as `[e − a]`.
fn target_slice<B: Backend>(t: &IntTensor<B>, (a, e): (usize, usize)) -> IntTensor<B> {
    B::int_slice(t.clone(), &[Slice::from(a..e)])
}

/// [`forward`] with a 16-bit head read in vocabulary tiles: each token chunk's log-sum-exp is
/// combined across tiles online (running max and rescaled sum); its target logit is the dot
/// product with the target's own head row. One tile covering the vocabulary is [`forward`] on
/// the widened head.
pub fn forward_h16<B: Backend>(
    hidden: FloatTensor<B>,
    head: &Head16<B>,
    targets: &IntTensor<B>,
    chunk: usize,
) -> (FloatTensor<B>, FloatTensor<B>) {
    if head.single() {
        return forward::<B>(hidden, head.tile_t((0, head.vocab)), targets, chunk);
    }
    let n = hidden.shape()[0];
    let device = hidden.device();
    let bool_dtype = get_or_init_device_settings::<B>(&device).bool_dtype;
    let chunks: Vec<_> = tiles(n, chunk).collect();
    // Per chunk: running max and rescaled sum of exponentials.
    let mut state: Vec<Option<(FloatTensor<B>, FloatTensor<B>)>> = vec![None; chunks.len()];
    for v in tiles(head.vocab, head.tile) {
        let wt = head.tile_t(v);
        for (i, &c) in chunks.iter().enumerate() {
            let logits = B::float_matmul(rows::<B>(&hidden, c), wt.clone());
            let tmax = B::float_max_dim(logits.clone(), 1);
            state[i] = Some(match state[i].take() {
                None => {
                    let s = B::float_sum_dim(B::float_exp(B::float_sub(logits, tmax.clone())), 1);
                    (tmax, s)
                }
                Some((m, s)) => {
                    let higher = B::float_greater(tmax.clone(), m.clone(), bool_dtype);
                    let m_new = B::float_mask_where(m.clone(), higher, tmax);
                    let rescaled = B::float_mul(s, B::float_exp(B::float_sub(m, m_new.clone())));
                    let add =
                        B::float_sum_dim(B::float_exp(B::float_sub(logits, m_new.clone())), 1);
                    (m_new, B::float_add(rescaled, add))
                }
            });
        }
    }
    let mut logps = Vec::new();
    let mut lses = Vec::new();
    for (&c, st) in chunks.iter().zip(state) {
        let Some((m, sum)) = st else { continue };
        let lse = B::float_add(m, B::float_log(sum));
        let w = head.target_rows(&target_slice::<B>(targets, c));
        let picked = B::float_sum_dim(B::float_mul(rows::<B>(&hidden, c), w), 1);
        logps.push(B::float_sub(picked, lse.clone()));
        lses.push(lse);
    }
    (
        B::float_reshape(B::float_cat(logps, 0), Shape::new([n])),
        B::float_cat(lses, 0),
    )
}

/// [`backward`] with a 16-bit head read in vocabulary tiles: `g·W[target] − Σ_tiles (p·g)·W_tile`,
/// each tile widened once.
pub fn backward_h16<B: Backend>(
    hidden: FloatTensor<B>,
    head: &Head16<B>,
    targets: &IntTensor<B>,
    lse: FloatTensor<B>,
    grad: FloatTensor<B>,
    chunk: usize,
) -> FloatTensor<B> {
    if head.single() {
        return backward::<B>(
            hidden,
            head.tile_t((0, head.vocab)),
            targets,
            lse,
            grad,
            chunk,
        );
    }
    let n = hidden.shape()[0];
    let grad = B::float_reshape(grad, Shape::new([n, 1]));
    let chunks: Vec<_> = tiles(n, chunk).collect();
    let mut dh: Vec<FloatTensor<B>> = chunks
        .iter()
        .map(|&c| {
            let w = head.target_rows(&target_slice::<B>(targets, c));
            B::float_mul(w, rows::<B>(&grad, c))
        })
        .collect();
    for v in tiles(head.vocab, head.tile) {
        let wt = head.tile_t(v);
        let w = B::float_transpose(wt.clone());
        for (i, &c) in chunks.iter().enumerate() {
            let logits = B::float_matmul(rows::<B>(&hidden, c), wt.clone());
            let p = B::float_exp(B::float_sub(logits, rows::<B>(&lse, c)));
            let pg = B::float_mul(p, rows::<B>(&grad, c));
            let part = B::float_matmul(pg, w.clone());
            dh[i] = B::float_sub(dh[i].clone(), part);
        }
    }
    B::float_cat(dh, 0)
}
