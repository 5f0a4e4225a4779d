//! Throughput of the 4-bit kernels (run by `cargo xtask bench-quant`; figures in docs/benchmarks.md).
//!
//! For an NF4 + double-quant weight `[out, in]` on the chosen backend (`BENCH_BACKEND`, default
//! wgpu): dequantization (GB/s of packed bytes read + f32 written), and the fused dequant-matmul
//! `x·Wᵀ` / `g·W` for several row counts m against dequantize-then-matmul with burn's own matmul
//! and a dense f32 matmul of the same shape. For m = 1 the fused product is bound by reading the
//! weight: its GB/s (packed bytes / time) is the figure to hold against the device's memory
//! bandwidth; a host memcpy measured here is the ceiling on a CPU device such as lavapipe.
//! `BENCH_SHAPE=4096x4096`, `BENCH_M=1,16,256` and `BENCH_REPS` change the sizes.

use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use lorafit_quant::{QuantType, Quantized4bit};
use lorafit_train::config::Backend;
use lorafit_train::model::StepRng;
use lorafit_train::quant::Nf4Weight;

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

/// Median seconds of `reps` runs of `f` (after one warm-up), each synchronised with the device.
fn time<T>(device: &Device, reps: usize, mut f: impl FnMut() -> T) -> f64 {
    let _ = f();
    let _ = device.sync();
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            let out = f();
            let _ = device.sync();
            drop(out);
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[reps / 2]
}

fn host_memcpy_gbs() -> f64 {
    let n = 64 << 20;
    let src = vec![1u8; n];
    let mut dst = vec![0u8; n];
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        dst.copy_from_slice(&src);
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&dst);
    2.0 * n as f64 / best / 1e9
}

fn main() {
    let backend = match env_or("BENCH_BACKEND", "wgpu").as_str() {
        "wgpu" => Backend::Wgpu,
        "ndarray" => Backend::NdArray,
        "flex" => Backend::Flex,
        "vulkan" => Backend::Vulkan,
        "cuda" => Backend::Cuda,
        other => panic!("BENCH_BACKEND={other}: one of wgpu, vulkan, ndarray, flex, cuda"),
    };
    let shape = env_or("BENCH_SHAPE", "4096x4096");
    let (out, inp) = shape
        .split_once('x')
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
        .expect("BENCH_SHAPE=OUTxIN");
    let ms: Vec<usize> = env_or("BENCH_M", "1,16,256")
        .split(',')
        .map(|m| m.trim().parse().expect("BENCH_M"))
        .collect();
    let reps: usize = env_or("BENCH_REPS", "5").parse().expect("BENCH_REPS");
    let device = lorafit_train::make_plain_device(backend).expect("device");

    let mut rng = StepRng::new(1, 0, 0);
    let data: Vec<f32> = (0..out * inp).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
    let q =
        Quantized4bit::quantize(&data, &[out, inp], QuantType::Nf4, 64, true).expect("quantize");
    let w = Nf4Weight::upload(&q, &device).expect("upload");
    let packed = (out * inp) as f64 / 2.0 + (out * inp) as f64 / 64.0; // codes + 8-bit scale codes
    let dense_bytes = 4.0 * (out * inp) as f64;
    let dense = Tensor::<2>::from_data(
        TensorData::new(q.dequantize().expect("dq"), [out, inp]),
        &device,
    );

    println!(
        "backend {}, weight [{out}, {in_}] NF4 + double quant, median of {reps}",
        backend.name(),
        in_ = inp
    );
    println!("host memcpy: {:.1} GB/s", host_memcpy_gbs());
    println!();
    println!("| operation | m | median | GB/s | GFLOP/s |");
    println!("|---|---|---|---|---|");
    let s = time(&device, reps, || w.dequantize());
    println!(
        "| dequantize (packed read + f32 written) | | {:.2} ms | {:.2} | |",
        s * 1e3,
        (packed + dense_bytes) / s / 1e9,
    );
    for &m in &ms {
        let x = Tensor::<2>::from_data(
            TensorData::new(
                (0..m * inp).map(|_| rng.next_f32()).collect::<Vec<_>>(),
                [m, inp],
            ),
            &device,
        );
        let g = Tensor::<2>::from_data(
            TensorData::new(
                (0..m * out).map(|_| rng.next_f32()).collect::<Vec<_>>(),
                [m, out],
            ),
            &device,
        );
        let flops = 2.0 * (m * out * inp) as f64;
        let row = |what: &str, secs: f64, bytes: f64| {
            println!(
                "| {what} | {m} | {:.2} ms | {:.2} | {:.2} |",
                secs * 1e3,
                bytes / secs / 1e9,
                flops / secs / 1e9
            )
        };
        row(
            "fused x·Wᵀ (GB/s: packed weight read)",
            time(&device, reps, || w.matmul(x.clone())),
            packed,
        );
        row(
            "fused g·W (GB/s: packed weight read)",
            time(&device, reps, || w.matmul_untransposed(g.clone())),
            packed,
        );
        row(
            "dequantize, then burn matmul",
            time(&device, reps, || {
                x.clone().matmul(w.dequantize().transpose())
            }),
            packed,
        );
        row(
            "dense f32 burn matmul (GB/s: f32 weight read)",
            time(&device, reps, || {
                x.clone().matmul(dense.clone().transpose())
            }),
            dense_bytes,
        );
    }
}
