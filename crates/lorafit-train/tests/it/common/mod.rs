//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Tensor, TensorData};
use lorafit_train::fused_ops::AttnOpts;

use lorafit_train::config::Backend;
use lorafit_train::make_device;

/// A fresh scratch directory, unique within this process (the tests of one binary share it).
pub fn tmp_dir(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("lorafit-test-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// A wgpu adapter (lavapipe on CI), or a printed reason to skip.
pub fn wgpu_available() -> bool {
    if cfg!(not(feature = "wgpu")) {
        eprintln!("skipped: built without the wgpu feature");
        return false;
    }
    let ok = std::panic::catch_unwind(|| {
        let device = make_device(Backend::Wgpu, false).expect("device");
        let t = burn::tensor::Tensor::<1>::from_floats([1.0, 2.0], &device);
        t.sum().into_scalar::<f32>()
    });
    match ok {
        Ok(3.0) => true,
        _ => {
            eprintln!("skipped: no wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
            false
        }
    }
}

/// Attention as it was written before the fused op: K/V repeated per query head, the full
/// `[b, heads, sq, sk]` scores masked with −∞, softmax, times V.
pub fn decomposed_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    segments: &[Vec<i64>],
    opts: &AttnOpts,
) -> Tensor<4> {
    let [b, nh, sq, _] = q.dims();
    let [_, nkv, sk, hd] = k.dims();
    let g = nh / nkv;
    let rep = |x: Tensor<4>| {
        x.unsqueeze_dim::<5>(2)
            .expand([b, nkv, g, sk, hd])
            .reshape([b, nh, sk, hd])
    };
    let off = sk - sq;
    let masked: Vec<bool> = (0..b)
        .flat_map(|r| {
            (0..sq * sk).map(move |i| {
                let (qp, kp) = (off + i / sk, i % sk);
                kp > qp
                    || (opts.window > 0 && qp >= kp + opts.window)
                    || (opts.packed && segments[r][qp] != segments[r][kp])
            })
        })
        .collect();
    let mask = Tensor::<4, Bool>::from_data(TensorData::new(masked, [b, 1, sq, sk]), &q.device())
        .expand([b, nh, sq, sk]);
    let scores = q.matmul(rep(k).swap_dims(2, 3)) * opts.scale;
    softmax(scores.mask_fill(mask, f32::NEG_INFINITY), 3).matmul(rep(v))
}
