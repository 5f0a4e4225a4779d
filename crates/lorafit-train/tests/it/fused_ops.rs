//! The fused ops against the decomposed computations they replace, values and gradients, on
//! ndarray and wgpu (lavapipe on CI): tiled attention (several tiles with a ragged tail, GQA,
//! packed sequences, sliding window, a query block after cached keys) and the chunked label
//! log-probabilities, with an f32 head and with a 16-bit head read in vocabulary tiles.

use burn::backend::Dispatch;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use lorafit_train::config::Backend;
use lorafit_train::fused_ops::{AttnOpts, FusedOps, loss_chunk, vocab_tile};
use lorafit_train::make_device;
use lorafit_train::quant::HalfWeight;
use lorafit_train::quant_ops::Half;

use crate::common::{decomposed_attention as decomposed, wgpu_available};

fn devices() -> Vec<(&'static str, Device)> {
    let mut v = vec![(
        "ndarray",
        make_device(Backend::NdArray, false).expect("ndarray"),
    )];
    if wgpu_available() {
        v.push(("wgpu", make_device(Backend::Wgpu, false).expect("wgpu")));
    }
    v
}

/// Attention's paths: the tiled tensor ops on ndarray and wgpu, and wgpu's `#[cube]` kernels
/// (`AttnOpts::cube`; the CPU backends have none).
fn attention_paths() -> Vec<(&'static str, Device, bool)> {
    let mut v = Vec::new();
    for (name, device) in devices() {
        if name == "wgpu" {
            v.push(("wgpu tensor ops", device.clone(), false));
            v.push(("wgpu cube kernels", device, true));
        } else {
            v.push((name, device, false));
        }
    }
    v
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn tensor<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    let n = shape.iter().product();
    Tensor::from_data(TensorData::new(values(n, seed), shape), device)
}

fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32")
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn fused(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, seg: Tensor<2, Int>, o: AttnOpts) -> Tensor<4> {
    Tensor::from_dispatch(Dispatch::flash_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        seg.into_dispatch(),
        o,
    ))
}

struct Case {
    name: &'static str,
    b: usize,
    heads: usize,
    kv_heads: usize,
    sq: usize,
    sk: usize,
    hd: usize,
    tile: usize,
    window: usize,
    packed: bool,
}

const CASES: &[Case] = &[
    Case {
        name: "one tile",
        b: 1,
        heads: 2,
        kv_heads: 2,
        sq: 12,
        sk: 12,
        hd: 8,
        tile: 64,
        window: 0,
        packed: false,
    },
    Case {
        name: "tiles with a ragged tail, GQA 4:2",
        b: 2,
        heads: 4,
        kv_heads: 2,
        sq: 37,
        sk: 37,
        hd: 8,
        tile: 8,
        window: 0,
        packed: false,
    },
    Case {
        name: "GQA 6:1, tile 1",
        b: 1,
        heads: 6,
        kv_heads: 1,
        sq: 9,
        sk: 9,
        hd: 4,
        tile: 1,
        window: 0,
        packed: false,
    },
    Case {
        name: "packed segments",
        b: 2,
        heads: 4,
        kv_heads: 2,
        sq: 30,
        sk: 30,
        hd: 8,
        tile: 8,
        window: 0,
        packed: true,
    },
    Case {
        name: "sliding window 5",
        b: 2,
        heads: 2,
        kv_heads: 1,
        sq: 29,
        sk: 29,
        hd: 8,
        tile: 4,
        window: 5,
        packed: false,
    },
    Case {
        name: "window + packed",
        b: 1,
        heads: 4,
        kv_heads: 4,
        sq: 33,
        sk: 33,
        hd: 8,
        tile: 8,
        window: 7,
        packed: true,
    },
    // Longer than the `#[cube]` kernels' 64-row blocks and their shared-memory tiles (32 keys
    // and 31 queries at head_dim 64, 16 and 15 at 128), ragged at both.
    Case {
        name: "three row blocks, window 70, GQA 4:2, head_dim 64",
        b: 2,
        heads: 4,
        kv_heads: 2,
        sq: 150,
        sk: 150,
        hd: 64,
        tile: 32,
        window: 70,
        packed: false,
    },
    // Mesa 22.3's lavapipe ran blocks that saw more than ~200 keys at head_dim 128 (~450 at
    // 64) without writing them (loops indexing a private array by a run-time index; the
    // kernels unroll them now).
    Case {
        name: "five row blocks, head_dim 128",
        b: 1,
        heads: 2,
        kv_heads: 1,
        sq: 260,
        sk: 260,
        hd: 128,
        tile: 128,
        window: 0,
        packed: false,
    },
    Case {
        name: "two row blocks, packed, head_dim 128",
        b: 1,
        heads: 2,
        kv_heads: 1,
        sq: 100,
        sk: 100,
        hd: 128,
        tile: 64,
        window: 0,
        packed: true,
    },
];

/// Segment ids per row: a few sub-sequences, then padding (0).
fn segments_of(b: usize, sk: usize) -> Vec<Vec<i64>> {
    (0..b)
        .map(|r| {
            (0..sk)
                .map(|t| match t {
                    t if t + 3 + r >= sk => 0,
                    t => 1 + ((t + 5 * r) / 7) as i64,
                })
                .collect()
        })
        .collect()
}

#[test]
fn tiled_attention_equals_decomposed_attention_with_gradients() {
    for (dev_name, device, cube) in attention_paths() {
        for c in CASES {
            let o = AttnOpts {
                scale: 1.0 / (c.hd as f32).sqrt(),
                tile: c.tile,
                window: c.window,
                packed: c.packed,
                cube,
            };
            let segs = segments_of(c.b, c.sk);
            let seg =
                Tensor::<2, Int>::from_data(TensorData::new(segs.concat(), [c.b, c.sk]), &device);
            let mk = |seed| {
                (
                    tensor([c.b, c.heads, c.sq, c.hd], seed, &device).require_grad(),
                    tensor([c.b, c.kv_heads, c.sk, c.hd], seed + 1, &device).require_grad(),
                    tensor([c.b, c.kv_heads, c.sk, c.hd], seed + 2, &device).require_grad(),
                )
            };
            let r = tensor([c.b, c.heads, c.sq, c.hd], 99, &device);
            let (q1, k1, v1) = mk(7);
            let (q2, k2, v2) = mk(7);
            let want = decomposed(q1.clone(), k1.clone(), v1.clone(), &segs, &o);
            let got = fused(q2.clone(), k2.clone(), v2.clone(), seg.clone(), o);
            let d = max_diff(&host(want.clone()), &host(got.clone()));
            assert!(d < 2e-6, "{dev_name} {}: output differs by {d}", c.name);
            let g_want = (want * r.clone()).sum().backward();
            let g_got = (got * r.clone()).sum().backward();
            for (what, a, b) in [("dq", &q1, &q2), ("dk", &k1, &k2), ("dv", &v1, &v2)] {
                let ga = host(a.grad(&g_want).expect("grad"));
                let gb = host(b.grad(&g_got).expect("grad"));
                let d = max_diff(&ga, &gb);
                assert!(d < 5e-6, "{dev_name} {}: {what} differs by {d}", c.name);
            }
            eprintln!("{dev_name} {}: equal", c.name);
        }
    }
}

/// A query block after cached keys (generation's prefill in pieces): query `i` at position
/// `sk − sq + i`, forward only.
#[test]
fn tiled_attention_after_cached_keys() {
    for (dev_name, device, cube) in attention_paths() {
        // A few queries, and more queries than one 64-row block after more keys than one tile.
        for (b, nh, nkv, sq, sk, hd) in [
            (1, 4, 2, 5, 23, 8),
            (1, 2, 1, 70, 200, 32),
            (1, 1, 1, 300, 600, 128),
        ] {
            let o = AttnOpts {
                scale: 0.35,
                tile: 4,
                window: 0,
                packed: false,
                cube,
            };
            let q = tensor([b, nh, sq, hd], 3, &device);
            let k = tensor([b, nkv, sk, hd], 4, &device);
            let v = tensor([b, nkv, sk, hd], 5, &device);
            let seg = Tensor::<2, Int>::ones([b, sk], &device);
            let want = decomposed(q.clone(), k.clone(), v.clone(), &[vec![1; sk]], &o);
            let d = max_diff(&host(want), &host(fused(q, k, v, seg, o)));
            assert!(d < 2e-6, "{dev_name} {sq} after {sk}: differs by {d}");
        }
    }
}

#[test]
fn chunked_label_logprobs_equal_log_softmax_with_gradients() {
    for (dev_name, device) in devices() {
        let (n, h, vocab) = (45, 16, 300);
        let targets: Vec<i64> = (0..n as i64)
            .map(|i| (i * 37 + 11) % vocab as i64)
            .collect();
        let w = tensor([h, vocab], 2, &device);
        let r = tensor([n], 3, &device);
        for chunk in [1, 7, loss_chunk(n, vocab, h), n, 4 * n] {
            let h1 = (tensor([n, h], 1, &device) * 3.0).require_grad();
            let h2 = (tensor([n, h], 1, &device) * 3.0).require_grad();
            let t = Tensor::<2, Int>::from_data(TensorData::new(targets.clone(), [n, 1]), &device);
            let want = log_softmax(h1.clone().matmul(w.clone()), 1)
                .gather(1, t)
                .reshape([n]);
            let t = Tensor::<1, Int>::from_data(TensorData::new(targets.clone(), [n]), &device);
            let got: Tensor<1> = Tensor::from_dispatch(Dispatch::label_logprobs(
                h2.clone().into_dispatch(),
                w.clone().into_dispatch(),
                t.into_dispatch(),
                chunk,
            ));
            let d = max_diff(&host(want.clone()), &host(got.clone()));
            assert!(d < 2e-6, "{dev_name} chunk {chunk}: logp differs by {d}");
            let ga = host(h1.grad(&(want * r.clone()).sum().backward()).expect("grad"));
            let gb = host(h2.grad(&(got * r.clone()).sum().backward()).expect("grad"));
            let d = max_diff(&ga, &gb);
            assert!(
                d < 2e-6,
                "{dev_name} chunk {chunk}: gradient differs by {d}"
            );
        }
    }
    // Liger's rule: chunk logits about the size of the hidden states.
    assert_eq!(loss_chunk(4096, 151_936, 4096), 128);
    assert_eq!(loss_chunk(10, 300, 16), 1);
    assert_eq!(loss_chunk(45, 16, 300), 64);
}

#[test]
fn vocabulary_tiled_16_bit_head_equals_the_widened_head_with_gradients() {
    for (dev_name, device) in devices() {
        let (n, h, vocab) = (45, 16, 300);
        let targets: Vec<i64> = (0..n as i64)
            .map(|i| (i * 37 + 11) % vocab as i64)
            .collect();
        for kind in [Half::Bf16, Half::F16] {
            // The head `[vocab, hidden]`, rounded to `kind` on upload; the reference uses its
            // exact widening, transposed, through the f32 op.
            let dense: Vec<f32> = values(vocab * h, 2).iter().map(|x| x * 4.0).collect();
            let table = HalfWeight::table(kind, &device);
            let w16 = HalfWeight::upload(&dense, vocab, h, kind, &table);
            let wt = w16.widen().transpose();
            let r = tensor([n], 3, &device);
            // Tiles: ragged (7 × 43 = 301), one row, several, exactly the vocabulary (one tile).
            for (tile, chunk) in [(43, 7), (1, 64), (128, loss_chunk(n, 128, h)), (vocab, 16)] {
                let h1 = (tensor([n, h], 1, &device) * 3.0).require_grad();
                let h2 = (tensor([n, h], 1, &device) * 3.0).require_grad();
                let t = Tensor::<1, Int>::from_data(TensorData::new(targets.clone(), [n]), &device);
                let want: Tensor<1> = Tensor::from_dispatch(Dispatch::label_logprobs(
                    h1.clone().into_dispatch(),
                    wt.clone().into_dispatch(),
                    t.clone().into_dispatch(),
                    chunk,
                ));
                let (words, tab) = w16.parts();
                let got: Tensor<1> = Tensor::from_dispatch(Dispatch::label_logprobs_h16(
                    h2.clone().into_dispatch(),
                    words.into_dispatch(),
                    tab.into_dispatch(),
                    t.into_dispatch(),
                    vocab,
                    tile,
                    chunk,
                ));
                let ctx = format!("{dev_name} {kind:?} tile {tile} chunk {chunk}");
                let d = max_diff(&host(want.clone()), &host(got.clone()));
                let one_tile = tile >= vocab;
                // One tile is the f32 op on the widened head, bit for bit; several combine the
                // log-sum-exp online and pick the target logit by a dot product.
                assert!(
                    if one_tile { d == 0.0 } else { d < 1e-5 },
                    "{ctx}: logp differs by {d}"
                );
                let ga = host(h1.grad(&(want * r.clone()).sum().backward()).expect("grad"));
                let gb = host(h2.grad(&(got * r.clone()).sum().backward()).expect("grad"));
                let d = max_diff(&ga, &gb);
                assert!(
                    if one_tile { d == 0.0 } else { d < 1e-5 },
                    "{ctx}: gradient differs by {d}"
                );
            }
        }
    }
    // A tile about the size of the hidden states: as many rows as tokens, 1024 to the vocabulary.
    assert_eq!(vocab_tile(4096, 151_936), 4096);
    assert_eq!(vocab_tile(10, 151_936), 1024);
    assert_eq!(vocab_tile(4096, 300), 300);
}

/// Sliding-window models as transformers runs them (eager attention): mistral windowed on every
/// layer, qwen2 with `use_sliding_window` from `max_window_layers` on (fixtures from
/// scripts/make_window_fixtures.py; the sequence is longer than the window). Without the window
/// the logits are far off, so the comparison sees it.
#[test]
fn sliding_window_models_match_transformers() {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/window");
    let device = lorafit_train::make_plain_device(Backend::NdArray).expect("device");
    for (name, windows) in [("mistral", vec![4, 4]), ("qwen2", vec![0, 5])] {
        let dir = fixtures.join(name);
        let mut model = lorafit_train::Model::load(&dir, &device).expect("model");
        assert_eq!(model.config.windows, windows, "{name}");
        let text = std::fs::read_to_string(dir.join("logits.json")).expect("logits");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        let ids: Vec<u32> = v["input_ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|x| x.as_u64().expect("id") as u32)
            .collect();
        let want: Vec<f32> = v["logits"]
            .as_array()
            .expect("rows")
            .iter()
            .flat_map(|r| {
                r.as_array()
                    .expect("row")
                    .iter()
                    .map(|x| x.as_f64().expect("f") as f32)
            })
            .collect();
        let e = lorafit_train::data::Example {
            input_ids: ids.clone(),
            ..Default::default()
        };
        let adapter = lorafit_train::Adapter::none();
        let logits = |m: &lorafit_train::Model| {
            host(m.logits(&[&e], &adapter, &mut lorafit_train::data::StepRng::eval()))
        };
        let d = max_diff(&logits(&model), &want);
        assert!(d < 2e-5, "{name}: logits differ from transformers' by {d}");
        model.config.windows = vec![0; windows.len()];
        let full = max_diff(&logits(&model), &want);
        assert!(
            full > 1e-2,
            "{name}: without the window the logits differ by only {full}"
        );
        eprintln!("{name}: windowed {d:.2e} from transformers, full attention {full:.2e}");
    }
}
