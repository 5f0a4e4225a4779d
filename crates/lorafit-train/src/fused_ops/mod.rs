//! Attention and the loss without their largest tensors: a burn backend extension whose two ops
//! keep, for the backward pass, only what FlashAttention and Liger's fused linear cross-entropy
//! keep, and recompute the rest tile by tile.
//!
//! - [`FusedOps::flash_attention`]: causal attention (GQA without repeating K/V, packed sequences,
//!   sliding window) over query × key tiles with an online softmax. The forward keeps the output
//!   and the log-sum-exp per row; the backward recomputes each tile's probabilities. No
//!   `[heads, s, s]` tensor exists at any point: the largest is one tile's scores.
//! - [`FusedOps::label_logprobs`]: `log softmax(h·Wᵀ)[label]` per token over token chunks; the
//!   backward recomputes each chunk's logits. The full `[tokens, vocab]` logits never exist.
//!
//! Both are written with burn's backend primitives, so every backend (ndarray, flex, wgpu, CUDA)
//! runs the same tiles; the autodiff impl below gives them their own backward. With
//! `AttnOpts::cube` (`attention_kernel: cube`), attention on cubecl's runtimes (wgpu's WGSL and
//! SPIR-V compilers, CUDA) runs as three `#[cube]` kernels instead (`attention_cube.rs`, through
//! [`AttentionKernels`]): one launch each for the forward, dQ and dK / dV, with no tile of scores
//! in memory at all.

#![allow(deprecated)] // burn-ndarray: deprecated upstream, still one of our backends

mod attention;
#[cfg(feature = "wgpu")]
mod attention_cube;
mod cross_entropy;

pub use attention::AttnOpts;
/// The tensor-op attention (every backend's default), for comparisons with a backend's own
/// [`AttentionKernels`] (`examples/bench_attention.rs`).
pub use attention::{backward as tiled_backward, forward as tiled_forward};
use cross_entropy::Head16;

use burn::backend::{
    Autodiff, Backend, TensorMetadata,
    autodiff::{
        checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
        grads::Gradients,
        ops::{Backward, Ops, OpsKind},
    },
    backend_extension,
    tensor::{FloatTensor, IntTensor},
};

/// The fused ops. Tensors, in order:
/// - `flash_attention`: `q` `[b, heads, sq, hd]`, `k` / `v` `[b, kv_heads, sk, hd]` (query `i` sits
///   at position `sk − sq + i`), `segments` `[b, sk]` (a key is seen only by queries of the same
///   segment; used when `opts.packed`), → `[b, heads, sq, hd]`;
/// - `label_logprobs`: `hidden` `[n, h]`, `lm_head_t` `[h, vocab]` (a constant), `targets` `[n]`
///   → `[n]`, in chunks of `chunk` tokens.
#[backend_extension(
    NdArray,
    Flex,
    Cube: cfg(any(feature = "wgpu", feature = "cuda")),
    Autodiff,
)]
pub trait FusedOps: Backend {
    fn flash_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        segments: IntTensor<Self>,
        opts: AttnOpts,
    ) -> FloatTensor<Self> {
        attention::forward::<Self>(q, k, v, &segments, &opts).0
    }

    fn label_logprobs(
        hidden: FloatTensor<Self>,
        lm_head_t: FloatTensor<Self>,
        targets: IntTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self> {
        cross_entropy::forward::<Self>(hidden, lm_head_t, &targets, chunk).0
    }

    /// [`FusedOps::label_logprobs`] for a head `[vocab, hidden]` stored 16-bit (`words`, two
    /// values each, widened through `table`), read `tile` vocabulary rows at a time.
    #[allow(clippy::too_many_arguments)]
    fn label_logprobs_h16(
        hidden: FloatTensor<Self>,
        words: IntTensor<Self>,
        table: FloatTensor<Self>,
        targets: IntTensor<Self>,
        vocab: usize,
        tile: usize,
        chunk: usize,
    ) -> FloatTensor<Self> {
        let head = Head16 {
            hidden: hidden.shape()[1],
            words,
            table,
            vocab,
            tile,
        };
        cross_entropy::forward_h16::<Self>(hidden, &head, &targets, chunk).0
    }
}

impl FusedOps for burn::backend::NdArray {}
impl FusedOps for burn::backend::Flex {}
#[cfg(all(feature = "cuda", not(feature = "wgpu")))]
impl FusedOps for burn::backend::Cube {}

/// Attention's forward (with the log-sum-exp the backward needs) and backward on one backend:
/// the tiled tensor ops of `attention.rs` by default; cubecl's runtimes run the `#[cube]`
/// kernels of `attention_cube.rs` instead. The autodiff op calls these.
pub trait AttentionKernels: Backend {
    fn attention_forward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        segments: &IntTensor<Self>,
        opts: &AttnOpts,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        attention::forward::<Self>(q, k, v, segments, opts)
    }

    fn attention_backward(
        qkv: [FloatTensor<Self>; 3],
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        dout: FloatTensor<Self>,
        segments: &IntTensor<Self>,
        opts: &AttnOpts,
    ) -> [FloatTensor<Self>; 3] {
        attention::backward::<Self>(qkv, out, lse, dout, segments, opts)
    }
}

impl AttentionKernels for burn::backend::NdArray {}
impl AttentionKernels for burn::backend::Flex {}
#[cfg(all(feature = "cuda", not(feature = "wgpu")))]
impl AttentionKernels for burn::backend::Cube {}

/// What attention's backward keeps: the inputs, the output and the log-sum-exp per row.
#[derive(Debug, Clone)]
struct AttnState<B: Backend> {
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    out: FloatTensor<B>,
    lse: FloatTensor<B>,
    segments: IntTensor<B>,
    opts: AttnOpts,
}

#[derive(Debug)]
struct FlashBackward;

impl<B: AttentionKernels> Backward<B, 3> for FlashBackward {
    type State = AttnState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let [dq, dk, dv] =
            B::attention_backward([s.q, s.k, s.v], s.out, s.lse, grad, &s.segments, &s.opts);
        for (parent, g) in ops.parents.into_iter().zip([dq, dk, dv]) {
            if let Some(node) = parent {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

/// What the loss's backward keeps: the hidden states, the (shared) head, the labels and the
/// log-sum-exp per token.
#[derive(Debug, Clone)]
struct LossState<B: Backend> {
    hidden: FloatTensor<B>,
    lm_head_t: FloatTensor<B>,
    targets: IntTensor<B>,
    lse: FloatTensor<B>,
    chunk: usize,
}

#[derive(Debug, Clone)]
struct LossH16State<B: Backend> {
    hidden: FloatTensor<B>,
    head: Head16<B>,
    targets: IntTensor<B>,
    lse: FloatTensor<B>,
    chunk: usize,
}

#[derive(Debug)]
struct LabelLogprobsH16Backward;

impl<B: Backend> Backward<B, 1> for LabelLogprobsH16Backward {
    type State = LossH16State<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let [parent] = ops.parents;
        if let Some(node) = parent {
            let g = cross_entropy::backward_h16::<B>(
                s.hidden, &s.head, &s.targets, s.lse, grad, s.chunk,
            );
            grads.register::<B>(node.id, g);
        }
    }
}

#[derive(Debug)]
struct LabelLogprobsBackward;

impl<B: Backend> Backward<B, 1> for LabelLogprobsBackward {
    type State = LossState<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let s = ops.state;
        let grad = grads.consume::<B>(&ops.node);
        let [parent] = ops.parents;
        if let Some(node) = parent {
            let g = cross_entropy::backward::<B>(
                s.hidden,
                s.lm_head_t,
                &s.targets,
                s.lse,
                grad,
                s.chunk,
            );
            grads.register::<B>(node.id, g);
        }
    }
}

impl<B: FusedOps + AttentionKernels, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn flash_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        segments: IntTensor<Self>,
        opts: AttnOpts,
    ) -> FloatTensor<Self> {
        let prep = FlashBackward
            .prepare::<C>([q.node(), k.node(), v.node()])
            .compute_bound()
            .stateful();
        let (q, k, v) = (q.into_primitive(), k.into_primitive(), v.into_primitive());
        match prep {
            OpsKind::Tracked(prep) => {
                let (out, lse) =
                    B::attention_forward(q.clone(), k.clone(), v.clone(), &segments, &opts);
                let state = AttnState {
                    q,
                    k,
                    v,
                    out: out.clone(),
                    lse,
                    segments,
                    opts,
                };
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::attention_forward(q, k, v, &segments, &opts).0)
            }
        }
    }

    fn label_logprobs(
        hidden: FloatTensor<Self>,
        lm_head_t: FloatTensor<Self>,
        targets: IntTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self> {
        // The head is frozen: a constant of the graph.
        let lm_head_t = lm_head_t.into_primitive();
        let prep = LabelLogprobsBackward
            .prepare::<C>([hidden.node()])
            .compute_bound()
            .stateful();
        let hidden = hidden.into_primitive();
        match prep {
            OpsKind::Tracked(prep) => {
                let (logp, lse) =
                    cross_entropy::forward::<B>(hidden.clone(), lm_head_t.clone(), &targets, chunk);
                let state = LossState {
                    hidden,
                    lm_head_t,
                    targets,
                    lse,
                    chunk,
                };
                prep.finish(state, logp)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(cross_entropy::forward::<B>(hidden, lm_head_t, &targets, chunk).0)
            }
        }
    }

    fn label_logprobs_h16(
        hidden: FloatTensor<Self>,
        words: IntTensor<Self>,
        table: FloatTensor<Self>,
        targets: IntTensor<Self>,
        vocab: usize,
        tile: usize,
        chunk: usize,
    ) -> FloatTensor<Self> {
        // The head and its table are frozen: constants of the graph.
        let head = Head16 {
            hidden: hidden.primitive().shape()[1],
            words,
            table: table.into_primitive(),
            vocab,
            tile,
        };
        let prep = LabelLogprobsH16Backward
            .prepare::<C>([hidden.node()])
            .compute_bound()
            .stateful();
        let hidden = hidden.into_primitive();
        match prep {
            OpsKind::Tracked(prep) => {
                let (logp, lse) =
                    cross_entropy::forward_h16::<B>(hidden.clone(), &head, &targets, chunk);
                let state = LossH16State {
                    hidden,
                    head,
                    targets,
                    lse,
                    chunk,
                };
                prep.finish(state, logp)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(cross_entropy::forward_h16::<B>(hidden, &head, &targets, chunk).0)
            }
        }
    }
}

/// Vocabulary rows a 16-bit head is widened by at a time in [`FusedOps::label_logprobs_h16`]
/// for `n` tokens: as many as there are tokens (the widened tile `[tile, hidden]` about the size
/// of the hidden states), at least 1024, at most the vocabulary.
pub fn vocab_tile(n: usize, vocab: usize) -> usize {
    n.max(1024).min(vocab.max(1))
}

/// The tokens per chunk of [`FusedOps::label_logprobs`] for `n` tokens: Liger's rule, so that a
/// chunk's logits `[chunk, vocab]` are about the size of the hidden states `[n, hidden]`.
pub fn loss_chunk(n: usize, vocab: usize, hidden: usize) -> usize {
    let factor = vocab.div_ceil(hidden.max(1)).max(1);
    n.div_ceil(factor).max(1).next_power_of_two()
}

/// `[start, end)` tiles of `len` in steps of `size`.
fn tiles(len: usize, size: usize) -> impl Iterator<Item = (usize, usize)> {
    let size = size.max(1);
    (0..len.div_ceil(size)).map(move |i| (i * size, ((i + 1) * size).min(len)))
}
