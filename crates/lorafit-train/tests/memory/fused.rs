//! What the fused ops keep for the backward pass (measured holding the pool lock).

use lorafit_train::config::Backend;
use lorafit_train::make_device;

use crate::common::wgpu_available;

/// What attention and the loss keep for the backward pass on wgpu, measured with burn's pool
/// counters after the forward: the decomposed attention keeps the `[heads, s, s]` probabilities
/// (×4 per doubling of s), the tiled op only its inputs, output and log-sum-exp (×2); the full
/// loss keeps `[tokens, vocab]` logits, the chunked one a log-sum-exp per token.
#[test]
fn fused_attention_and_loss_keep_memory_linear_in_length_on_wgpu() {
    let _pool = crate::pool_lock();
    use burn::backend::Dispatch;
    use burn::tensor::activation::log_softmax;
    use burn::tensor::{Int, Tensor, TensorData};
    use lorafit_train::fused_ops::{AttnOpts, FusedOps, loss_chunk};
    if !wgpu_available() {
        return;
    }
    let device = make_device(Backend::Wgpu, false).expect("device");
    let in_use = || {
        let _ = device.sync();
        device
            .memory_pool_usage()
            .map(|u| u.bytes_in_use)
            .unwrap_or(0) as f64
    };
    let (heads, hd) = (8, 32);
    let mut kept = Vec::new();
    for s in [128usize, 256, 512, 1024] {
        let mut row = Vec::new();
        // Decomposed, tiled tensor ops, `#[cube]` kernels.
        for variant in 0..3 {
            let base = in_use();
            let mk = |seed: f32| {
                Tensor::<4>::from_data(
                    TensorData::new(
                        (0..heads * s * hd)
                            .map(|i| (i as f32 * 0.37 + seed).sin())
                            .collect::<Vec<f32>>(),
                        [1, heads, s, hd],
                    ),
                    &device,
                )
                .require_grad()
            };
            let (q, k, v) = (mk(0.1), mk(0.2), mk(0.3));
            let o = AttnOpts {
                scale: 0.18,
                tile: 64,
                window: 0,
                packed: false,
                cube: variant == 2,
            };
            let inputs = in_use() - base;
            let out = if variant > 0 {
                let seg = Tensor::<2, Int>::ones([1, s], &device);
                Tensor::<4>::from_dispatch(Dispatch::flash_attention(
                    q.clone().into_dispatch(),
                    k.clone().into_dispatch(),
                    v.clone().into_dispatch(),
                    seg.into_dispatch(),
                    o,
                ))
            } else {
                crate::common::decomposed_attention(
                    q.clone(),
                    k.clone(),
                    v.clone(),
                    &[vec![1; s]],
                    &o,
                )
            };
            let loss = out.sum();
            let graph = in_use() - base - inputs;
            let grads = loss.backward();
            assert!(q.grad(&grads).is_some());
            drop(grads);
            row.push(graph);
        }
        eprintln!(
            "attention s = {s}: kept for backward {:.0} KiB decomposed, {:.0} KiB tiled, {:.0} KiB cube kernels",
            row[0] / 1024.0,
            row[1] / 1024.0,
            row[2] / 1024.0
        );
        kept.push(row);
    }
    let growth = |i: usize| kept[3][i] / kept[1][i];
    assert!(
        growth(0) > 10.0,
        "decomposed grew only {:.1}× from 256 to 1024",
        growth(0)
    );
    for (i, what) in [(1, "tiled"), (2, "cube kernels")] {
        assert!(
            growth(i) < 5.0,
            "{what} grew {:.1}× from 256 to 1024",
            growth(i)
        );
    }
    // Both keep the inputs, the output and the log-sum-exp (the kernels' inputs without the
    // tensor ops' reshaped copies of the query).
    assert!(
        kept[3][2] <= kept[3][1],
        "at 1024 cube kernels {} vs tiled {}",
        kept[3][2],
        kept[3][1]
    );
    assert!(
        kept[3][1] * 8.0 < kept[3][0],
        "at 1024 tiled {} vs decomposed {}",
        kept[3][1],
        kept[3][0]
    );

    let (n, h, vocab) = (512usize, 64usize, 8192usize);
    let w = Tensor::<2>::from_data(
        TensorData::new(
            (0..h * vocab)
                .map(|i| (i as f32 * 0.11).cos() * 0.1)
                .collect::<Vec<f32>>(),
            [h, vocab],
        ),
        &device,
    );
    let targets: Vec<i64> = (0..n as i64).map(|i| (i * 31) % vocab as i64).collect();
    let mut loss_kept = Vec::new();
    for chunked in [false, true] {
        let base = in_use();
        let hidden = Tensor::<2>::from_data(
            TensorData::new(
                (0..n * h)
                    .map(|i| (i as f32 * 0.29).sin())
                    .collect::<Vec<f32>>(),
                [n, h],
            ),
            &device,
        )
        .require_grad();
        let inputs = in_use() - base;
        let logp: Tensor<1> = if chunked {
            let t = Tensor::<1, Int>::from_data(TensorData::new(targets.clone(), [n]), &device);
            Tensor::from_dispatch(Dispatch::label_logprobs(
                hidden.clone().into_dispatch(),
                w.clone().into_dispatch(),
                t.into_dispatch(),
                loss_chunk(n, vocab, h),
            ))
        } else {
            let t = Tensor::<2, Int>::from_data(TensorData::new(targets.clone(), [n, 1]), &device);
            log_softmax(hidden.clone().matmul(w.clone()), 1)
                .gather(1, t)
                .reshape([n])
        };
        let loss = logp.sum();
        let graph = in_use() - base - inputs;
        let grads = loss.backward();
        assert!(hidden.grad(&grads).is_some());
        loss_kept.push(graph);
    }
    eprintln!(
        "loss over {n} tokens × {vocab} vocabulary: kept for backward {:.0} KiB full, {:.0} KiB chunked",
        loss_kept[0] / 1024.0,
        loss_kept[1] / 1024.0
    );
    let logits_bytes = (n * vocab * 4) as f64;
    assert!(
        loss_kept[0] >= logits_bytes,
        "the full loss keeps {} < logits {logits_bytes}",
        loss_kept[0]
    );
    assert!(
        loss_kept[1] < logits_bytes / 16.0,
        "the chunked loss keeps {}",
        loss_kept[1]
    );
}
