//! Attention's forward and backward on a cubecl runtime (run by `cargo xtask bench-attention`;
//! figures in docs/benchmarks.md): the `#[cube]` kernels lorafit trains with against the tiled
//! tensor-op version every other backend runs, on the same device, tile chosen as the model
//! chooses it. Causal, GQA, one sequence. `BENCH_SEQ=256,512,1024`, `BENCH_HEADS=8x2` (query
//! heads × KV heads), `BENCH_HD=64` and `BENCH_REPS=3` change the sizes; a `--features vulkan`
//! build runs on cubecl's SPIR-V compiler.

use std::time::Instant;

use burn::backend::ops::{FloatTensorOps, IntTensorOps};
use burn::backend::{Backend, Cube};
use burn::tensor::TensorData;
use lorafit_train::fused_ops::{AttentionKernels, AttnOpts, tiled_backward, tiled_forward};
use lorafit_train::model::{StepRng, attention_tile};

type F = burn::backend::tensor::FloatTensor<Cube>;
type Device = burn::backend::tensor::Device<Cube>;

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_string())
}

/// Median seconds of `reps` runs of `f` (after one warm-up, which compiles the pipelines), each
/// synchronised with the device.
fn time<T>(device: &Device, reps: usize, mut f: impl FnMut() -> T) -> f64 {
    let sync = || {
        let _ = <Cube as Backend>::sync(device);
    };
    drop(f());
    sync();
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = Instant::now();
            let out = f();
            sync();
            drop(out);
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[reps / 2]
}

fn upload(shape: [usize; 4], rng: &mut StepRng, device: &Device) -> F {
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect();
    Cube::float_from_data(TensorData::new(v, shape), device)
}

fn host(t: F) -> Vec<f32> {
    let data = burn::tensor::try_read_sync(Cube::float_into_data(t))
        .expect("read back")
        .expect("read back");
    data.try_to_vec::<f32>().expect("f32")
}

fn max_diff(a: F, b: F) -> f32 {
    host(a)
        .iter()
        .zip(host(b))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn main() {
    let seqs: Vec<usize> = env_or("BENCH_SEQ", "256,512,1024")
        .split(',')
        .map(|s| s.trim().parse().expect("BENCH_SEQ"))
        .collect();
    let (heads, kv_heads) = env_or("BENCH_HEADS", "8x2")
        .split_once('x')
        .and_then(|(a, b)| Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?)))
        .expect("BENCH_HEADS=QxKV");
    let hd: usize = env_or("BENCH_HD", "64").parse().expect("BENCH_HD");
    let reps: usize = env_or("BENCH_REPS", "3").parse().expect("BENCH_REPS");
    let device = Device::default();
    let runtime = lorafit_train::wgpu_runtime()
        .map(|r| r.name)
        .unwrap_or_else(|| "no adapter".into());
    println!(
        "runtime {runtime}, causal attention, {heads} query heads / {kv_heads} KV heads, \
         head_dim {hd}, batch 1, median of {reps} (ms)"
    );
    println!();
    println!(
        "| s | tile | kernels fwd | kernels bwd | tensor ops fwd | tensor ops bwd | speed-up fwd+bwd | max diff out / dq |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut rng = StepRng::new(1, 0, 0);
    for &s in &seqs {
        let q = upload([1, heads, s, hd], &mut rng, &device);
        let k = upload([1, kv_heads, s, hd], &mut rng, &device);
        let v = upload([1, kv_heads, s, hd], &mut rng, &device);
        let dout = upload([1, heads, s, hd], &mut rng, &device);
        let segments = Cube::int_from_data(TensorData::new(vec![1i32; s], [1, s]), &device);
        let opts = AttnOpts {
            scale: 1.0 / (hd as f32).sqrt(),
            tile: attention_tile(1, heads),
            window: 0,
            packed: false,
            cube: true,
        };
        let (ko, kl) = Cube::attention_forward(q.clone(), k.clone(), v.clone(), &segments, &opts);
        let (to, tl) = tiled_forward::<Cube>(q.clone(), k.clone(), v.clone(), &segments, &opts);
        let kernels_fwd = time(&device, reps, || {
            Cube::attention_forward(q.clone(), k.clone(), v.clone(), &segments, &opts)
        });
        let ops_fwd = time(&device, reps, || {
            tiled_forward::<Cube>(q.clone(), k.clone(), v.clone(), &segments, &opts)
        });
        let qkv = [q.clone(), k.clone(), v.clone()];
        let kernels_bwd = time(&device, reps, || {
            Cube::attention_backward(
                qkv.clone(),
                ko.clone(),
                kl.clone(),
                dout.clone(),
                &segments,
                &opts,
            )
        });
        let ops_bwd = time(&device, reps, || {
            tiled_backward::<Cube>(
                qkv.clone(),
                to.clone(),
                tl.clone(),
                dout.clone(),
                &segments,
                &opts,
            )
        });
        let [kdq, ..] =
            Cube::attention_backward(qkv.clone(), ko.clone(), kl, dout.clone(), &segments, &opts);
        let [tdq, ..] = tiled_backward::<Cube>(qkv, to.clone(), tl, dout, &segments, &opts);
        println!(
            "| {s} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2}× | {:.1e} / {:.1e} |",
            opts.tile,
            kernels_fwd * 1e3,
            kernels_bwd * 1e3,
            ops_fwd * 1e3,
            ops_bwd * 1e3,
            (ops_fwd + ops_bwd) / (kernels_fwd + kernels_bwd),
            max_diff(ko, to),
            max_diff(kdq, tdq),
        );
    }
}
