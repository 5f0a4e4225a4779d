//! The 4-bit operations of src/quant_ops.rs on every backend: dequantization bit-exact with
//! lorafit-quant's CPU reference (itself bit-exact with bitsandbytes), and the fused
//! dequant-matmul and its backward equal to the dense product. On wgpu these run the WGSL kernels
//! of shaders/ (nested_absmax, nf4_dequant, q4_matmul) as burn custom kernels; on ndarray and flex
//! the tensor-op bodies.

use burn::tensor::{Device, Tensor, TensorData};
use lorafit_quant::{QuantType, Quantized4bit, Quantized8bit};
use lorafit_train::config::Backend;
use lorafit_train::make_device;
use lorafit_train::model::StepRng;
use lorafit_train::quant::{HalfWeight, Int8Weight, Nf4Weight};
use lorafit_train::quant_ops::Half;

use crate::common::wgpu_available;

fn devices() -> Vec<(&'static str, Device)> {
    let mut v = vec![
        (
            "ndarray",
            make_device(Backend::NdArray, false).expect("ndarray"),
        ),
        ("flex", make_device(Backend::Flex, false).expect("flex")),
    ];
    if wgpu_available() {
        v.push(("wgpu", make_device(Backend::Wgpu, false).expect("wgpu")));
    }
    v
}

fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = StepRng::new(seed, 0, 0);
    (0..n).map(|_| rng.next_f32() * 2.0 - 1.0).collect()
}

fn vec_of<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec_as::<f32>().expect("f32")
}

/// Shapes with partial blocks, rows that straddle blocks, and (1024 × 4160) one large enough
/// for a two-row dispatch grid.
const SHAPES: [(usize, usize); 5] = [(64, 64), (32, 64), (3, 40), (128, 72), (1024, 4160)];

#[test]
fn dequant_is_bit_exact_on_every_backend() {
    for (name, device) in devices() {
        for (out, inp) in SHAPES {
            let data = random(out * inp, 3);
            for qt in [QuantType::Nf4, QuantType::Fp4] {
                for dq in [false, true] {
                    let q = Quantized4bit::quantize(&data, &[out, inp], qt, 64, dq).expect("q");
                    let want = q.dequantize().expect("dq");
                    let w = Nf4Weight::upload(&q, &device).expect("upload");
                    let got = vec_of(w.dequantize());
                    let bad = got
                        .iter()
                        .zip(&want)
                        .filter(|(a, b)| a.to_bits() != b.to_bits())
                        .count();
                    assert_eq!(
                        bad,
                        0,
                        "{name} [{out}, {inp}] {qt:?} dq={dq}: {bad} of {} differ; first {:?} vs {:?}",
                        want.len(),
                        &got[..4],
                        &want[..4]
                    );
                }
            }
        }
    }
}

/// Largest difference relative to the largest magnitude of `want`.
fn max_rel(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    got.iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

/// The f64 products `x·Wᵀ` `[m, out]` and `r·W` `[m, inp]` of a dense row-major W `[out, inp]`.
fn reference(
    xs: &[f32],
    r: &[f32],
    w: &[f32],
    m: usize,
    out: usize,
    inp: usize,
) -> (Vec<f32>, Vec<f32>) {
    let mut y = vec![0f32; m * out];
    let mut gx = vec![0f32; m * inp];
    for i in 0..m {
        for o in 0..out {
            y[i * out + o] = (0..inp)
                .map(|k| xs[i * inp + k] as f64 * w[o * inp + k] as f64)
                .sum::<f64>() as f32;
        }
        for k in 0..inp {
            gx[i * inp + k] = (0..out)
                .map(|o| r[i * out + o] as f64 * w[o * inp + k] as f64)
                .sum::<f64>() as f32;
        }
    }
    (y, gx)
}

/// `x·Wᵀ` and, through autodiff, `g·W` equal the dense products of the dequantized weight, for
/// shapes that leave partial 64 × 64 tiles and 16-deep slices on every side; m ≤ 16 takes the
/// few-rows kernel (q4_gemv.wgsl) on wgpu, larger m the tiled one (q4_matmul.wgsl).
#[test]
fn fused_matmul_and_its_backward_equal_the_dense_product() {
    for (name, device) in devices() {
        let ad = device.clone().autodiff();
        for (m, out, inp) in [
            (5, 64, 64),
            (12, 72, 40),
            (7, 24, 36),
            (37, 72, 40),
            (130, 96, 200),
            (64, 128, 64),
        ] {
            for (qt, dq) in [(QuantType::Nf4, true), (QuantType::Fp4, false)] {
                let q = Quantized4bit::quantize(&random(out * inp, 7), &[out, inp], qt, 64, dq)
                    .expect("q");
                let dense = q.dequantize().expect("dq");
                let w = Nf4Weight::upload(&q, &ad).expect("upload");
                let xs = random(m * inp, 11);
                let r = random(m * out, 13);

                let x = Tensor::<2>::from_data(TensorData::new(xs.clone(), [m, inp]), &ad)
                    .require_grad();
                let rt = Tensor::<2>::from_data(TensorData::new(r.clone(), [m, out]), &ad);
                let y = w.matmul(x.clone());
                let loss = (y.clone() * rt).sum();
                let grads = loss.backward();
                let gx = vec_of(x.grad(&grads).expect("x has a gradient"));
                let y = vec_of(y);

                let (want_y, want_gx) = reference(&xs, &r, &dense, m, out, inp);
                let (ey, eg) = (max_rel(&y, &want_y), max_rel(&gx, &want_gx));
                eprintln!(
                    "{name} m={m} [{out}, {inp}] {qt:?} dq={dq}: forward {ey:.2e}, input gradient {eg:.2e}"
                );
                assert!(ey < 1e-5, "{name} forward off by {ey}");
                assert!(eg < 1e-5, "{name} input gradient off by {eg}");

                // The untransposed product directly, without autodiff.
                let g = Tensor::<2>::from_data(TensorData::new(r.clone(), [m, out]), &device);
                let wq = Nf4Weight::upload(&q, &device).expect("upload");
                let e = max_rel(&vec_of(wq.matmul_untransposed(g)), &want_gx);
                assert!(e < 1e-5, "{name} g·W off by {e}");
            }
        }
    }
}

/// Bad parts of a 4-bit weight are errors naming what is wrong, not panics in a kernel.
#[test]
fn unusable_blocksize_is_a_clear_error() {
    let device = make_device(Backend::NdArray, false).expect("ndarray");
    let mut q = Quantized4bit::quantize(&random(64 * 64, 1), &[64, 64], QuantType::Nf4, 64, false)
        .expect("q");
    q.blocksize = 12;
    let err = Nf4Weight::upload(&q, &device)
        .expect_err("blocksize 12")
        .to_string();
    assert!(err.contains("blocksize 12"), "{err}");
}

/// lorafit-quant's int8 quantization equals what bitsandbytes 0.50.2 stored for every linear of
/// the tiny llama (`CB`, `SCB` in fixtures/llama_q_int8.safetensors, made by
/// `scripts/make_train_fixtures.py only llama_int8`).
#[test]
fn int8_quantization_equals_bitsandbytes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let model = std::fs::read(dir.join("llama_q/model.safetensors")).expect("model");
    let model = safetensors::SafeTensors::deserialize(&model).expect("st");
    let bnb = std::fs::read(dir.join("llama_q_int8.safetensors")).expect("bnb");
    let bnb = safetensors::SafeTensors::deserialize(&bnb).expect("st");
    let mut n = 0;
    for name in bnb.names() {
        let Some(layer) = name.strip_suffix(".CB") else {
            continue;
        };
        let w = model.tensor(&format!("{layer}.weight")).expect("weight");
        let (rows, cols) = (w.shape()[0], w.shape()[1]);
        let data: Vec<f32> = w
            .data()
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let q = Quantized8bit::quantize(&data, rows, cols).expect("quantize");
        let cb: Vec<i8> = bnb
            .tensor(name)
            .expect("CB")
            .data()
            .iter()
            .map(|&b| b as i8)
            .collect();
        let scb: Vec<f32> = bnb
            .tensor(&format!("{layer}.SCB"))
            .expect("SCB")
            .data()
            .chunks(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let bad: Vec<usize> = (0..cb.len()).filter(|&i| q.cb[i] != cb[i]).collect();
        assert!(
            bad.is_empty(),
            "{layer}: {} of {} CB codes differ, first at {:?}",
            bad.len(),
            cb.len(),
            bad.first().map(|&i| (i, q.cb[i], cb[i]))
        );
        assert_eq!(
            q.scb.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            scb.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{layer}: SCB"
        );
        n += 1;
    }
    assert_eq!(n, 14, "linears compared");
}

/// The device int8 dequantization equals lorafit-quant's bit for bit, and the int8 product and its
/// backward equal the f64 product of the dequantized weight.
#[test]
fn int8_dequant_and_matmul_on_every_backend() {
    for (name, device) in devices() {
        let ad = device.clone().autodiff();
        for (m, out, inp) in [(5, 64, 64), (37, 72, 41), (3, 1, 7)] {
            let mut data = random(out * inp, 17);
            data[..inp.min(3)].fill(0.0);
            let q = Quantized8bit::quantize(&data, out, inp).expect("q");
            let dense = q.dequantize();
            let got = vec_of(Int8Weight::upload(&q, &device).dequantize());
            assert!(
                got.iter()
                    .zip(&dense)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{name} [{out}, {inp}]: int8 dequantization differs"
            );
            let w = Int8Weight::upload(&q, &ad);
            let xs = random(m * inp, 19);
            let r = random(m * out, 23);
            let x =
                Tensor::<2>::from_data(TensorData::new(xs.clone(), [m, inp]), &ad).require_grad();
            let rt = Tensor::<2>::from_data(TensorData::new(r.clone(), [m, out]), &ad);
            let y = w.matmul(x.clone());
            let grads = (y.clone() * rt).sum().backward();
            let gx = vec_of(x.grad(&grads).expect("x has a gradient"));
            let y = vec_of(y);
            let (want_y, want_gx) = reference(&xs, &r, &dense, m, out, inp);
            let (ey, eg) = (max_rel(&y, &want_y), max_rel(&gx, &want_gx));
            assert!(
                ey < 1e-5 && eg < 1e-5,
                "{name} [{out}, {inp}]: forward {ey}, gradient {eg}"
            );
        }
    }
}

/// 16-bit storage widens every one of the 65536 bit patterns of bf16 and of f16 to the f32 the
/// `half` crate gives (zeros, subnormals, infinities, NaNs included), on every backend: the
/// tensor-op lookup on ndarray / flex, shaders/h16_widen.wgsl's bit arithmetic on wgpu. An odd
/// element count leaves half of the last word unused.
#[test]
fn half_widening_is_exact_for_every_bit_pattern() {
    for (name, device) in devices() {
        for kind in [Half::Bf16, Half::F16] {
            let want = kind.table();
            let table = HalfWeight::table(kind, &device);
            // Every pattern, as its own f32 value: rounding it back to `kind` is the identity
            // (NaNs aside, whose payload the round trip may quiet).
            let values: Vec<f32> = want.clone();
            for (out, inp) in [(256, 256), (3, 5)] {
                let n = out * inp;
                let w = HalfWeight::upload(&values[..n], out, inp, kind, &table);
                let got = vec_of(w.widen());
                let bad: Vec<usize> = (0..n)
                    .filter(|&i| {
                        let (g, e) = (got[i], want[i]);
                        if e.is_nan() {
                            !g.is_nan()
                        } else {
                            g.to_bits() != e.to_bits()
                        }
                    })
                    .collect();
                assert!(
                    bad.is_empty(),
                    "{name} {kind:?} [{out}, {inp}]: {} of {n} values differ, first at pattern {:#06x}: {:e} vs {:e}",
                    bad.len(),
                    bad[0],
                    got[bad[0]],
                    want[bad[0]]
                );
            }
        }
    }
}

/// The spacing of f16 values at `v` (one unit in the last place, away from zero).
fn f16_ulp(v: f32) -> f32 {
    let h = half::f16::from_f32(v.abs());
    (half::f16::from_bits(h.to_bits() + 1).to_f32() - h.to_f32()).abs()
}

/// The 16-bit product `x·Wᵀ` and its input gradient `g·W`. Weights are rounded to the nearest
/// even pattern as torch's `.to(torch.bfloat16)` / `.half()` do. In f32 arithmetic (bf16
/// everywhere, f16 on ndarray / flex) they equal the f64 products of the widened weight; with f16
/// arithmetic (fp16 on wgpu: the adapter's shader-f16) every element is within one f16 unit of
/// the f64 product of the f16-rounded operands, as an f16 matmul with f32 accumulators gives —
/// and measurably away from the f32 product, so the f16 path did run.
#[test]
fn half_matmul_and_its_backward_equal_the_dense_product() {
    let round = |kind: Half, v: &[f32]| -> Vec<f32> {
        v.iter()
            .map(|&x| match kind {
                Half::Bf16 => half::bf16::from_f32(x).to_f32(),
                Half::F16 => half::f16::from_f32(x).to_f32(),
            })
            .collect()
    };
    for (name, device) in devices() {
        let ad = device.clone().autodiff();
        for kind in [Half::Bf16, Half::F16] {
            let f16_arithmetic = name == "wgpu" && kind == Half::F16;
            let table = HalfWeight::table(kind, &ad);
            for (m, out, inp) in [(5, 64, 64), (37, 72, 41), (3, 2, 7)] {
                let data = random(out * inp, 29);
                let rounded = round(kind, &data);
                let w = HalfWeight::upload(&data, out, inp, kind, &table);
                let widened = vec_of(w.widen());
                assert!(
                    widened
                        .iter()
                        .zip(&rounded)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{name} {kind:?}: stored weight is not the nearest-even rounding"
                );
                let xs = random(m * inp, 31);
                let r = random(m * out, 37);
                let x = Tensor::<2>::from_data(TensorData::new(xs.clone(), [m, inp]), &ad)
                    .require_grad();
                let rt = Tensor::<2>::from_data(TensorData::new(r.clone(), [m, out]), &ad);
                let y = w.matmul(x.clone());
                let grads = (y.clone() * rt).sum().backward();
                let gx = vec_of(x.grad(&grads).expect("x has a gradient"));
                let y = vec_of(y);
                let (want_y, want_gx) = reference(&xs, &r, &rounded, m, out, inp);
                let (ey, eg) = (max_rel(&y, &want_y), max_rel(&gx, &want_gx));
                if !f16_arithmetic {
                    assert!(
                        ey < 1e-5 && eg < 1e-5,
                        "{name} {kind:?} m={m} [{out}, {inp}]: forward {ey}, gradient {eg}"
                    );
                    continue;
                }
                let (y16, gx16) =
                    reference(&round(kind, &xs), &round(kind, &r), &rounded, m, out, inp);
                for (what, got, want) in [("forward", &y, &y16), ("input gradient", &gx, &gx16)] {
                    for (g, e) in got.iter().zip(want) {
                        assert!(
                            (g - e).abs() <= f16_ulp(*e),
                            "{name} f16 m={m} [{out}, {inp}] {what}: {g} vs {e} (f16 unit {})",
                            f16_ulp(*e)
                        );
                    }
                }
                eprintln!(
                    "{name} f16 arithmetic m={m} [{out}, {inp}]: vs the f32 product forward {ey:.1e}, gradient {eg:.1e}"
                );
                if out * inp > 64 {
                    assert!(ey > 1e-5, "{name}: f16 arithmetic should round ({ey})");
                }
            }
        }
    }
}

/// The f16 products scale their input per tensor (≈ 2^k, largest element ≈ 2^8) before rounding
/// it to f16: activations past f16's 65504 and gradients below its 6e-8 keep f16's relative
/// precision instead of turning into inf or 0.
#[test]
fn f16_products_keep_precision_far_outside_f16_range() {
    if !wgpu_available() {
        return;
    }
    let device = make_device(Backend::Wgpu, false).expect("wgpu");
    let ad = device.clone().autodiff();
    let table = HalfWeight::table(Half::F16, &ad);
    let (m, out, inp) = (6, 48, 64);
    let data = random(out * inp, 41);
    let w = HalfWeight::upload(&data, out, inp, Half::F16, &table);
    let rounded = vec_of(w.widen());
    for magnitude in [1e6f32, 1e-9] {
        let xs: Vec<f32> = random(m * inp, 43).iter().map(|v| v * magnitude).collect();
        let r: Vec<f32> = random(m * out, 47).iter().map(|v| v * magnitude).collect();
        let x = Tensor::<2>::from_data(TensorData::new(xs.clone(), [m, inp]), &ad).require_grad();
        let rt = Tensor::<2>::from_data(TensorData::new(r.clone(), [m, out]), &ad);
        let y = w.matmul(x.clone());
        let grads = (y.clone() * rt).sum().backward();
        let gx = vec_of(x.grad(&grads).expect("x has a gradient"));
        let y = vec_of(y);
        let (want_y, want_gx) = reference(&xs, &r, &rounded, m, out, inp);
        let (ey, eg) = (max_rel(&y, &want_y), max_rel(&gx, &want_gx));
        eprintln!("inputs ×{magnitude:e}: forward {ey:.1e}, input gradient {eg:.1e}");
        assert!(
            y.iter().chain(&gx).all(|v| v.is_finite()) && ey < 2e-3 && eg < 2e-3,
            "inputs ×{magnitude:e}: forward {ey}, gradient {eg}"
        );
    }
}
