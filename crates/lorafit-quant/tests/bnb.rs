//! Bit-exactness against real bitsandbytes 0.50.2 (fixtures from scripts/make_quant_fixtures.py).

use lorafit_quant::{Absmax, DqRounding, Error, QuantType, Quantized4bit, checkpoint, dynamic_map};
use safetensors::SafeTensors;

const FIXTURE: &[u8] = include_bytes!("fixtures/bnb_4bit.safetensors");
const LINEAR: &[u8] = include_bytes!("fixtures/bnb_linear4bit.safetensors");

fn f32s(st: &SafeTensors<'_>, name: &str) -> Vec<f32> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    t.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn shape(st: &SafeTensors<'_>, name: &str) -> Vec<usize> {
    st.tensor(name).expect("tensor").shape().to_vec()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Where two double-quantized states differ (packed codes, absmax codes, nested absmax, offset),
/// or `None` when they are equal bit for bit.
fn nested_differences(ours: &Quantized4bit, theirs: &Quantized4bit) -> Option<String> {
    let (
        Absmax::Nested {
            codes: a,
            nested_absmax: b,
            offset: c,
            ..
        },
        Absmax::Nested {
            codes: x,
            nested_absmax: y,
            offset: z,
            ..
        },
    ) = (&ours.absmax, &theirs.absmax)
    else {
        return Some("not both double-quantized".into());
    };
    let differing = |p: &[u8], q: &[u8]| p.iter().zip(q).filter(|(u, v)| u != v).count();
    let equal =
        ours.packed == theirs.packed && a == x && bits(b) == bits(y) && c.to_bits() == z.to_bits();
    (!equal).then(|| {
        format!(
            "packed {} differ, absmax codes {} differ, nested absmax {}, offset {c} vs {z}",
            differing(&ours.packed, &theirs.packed),
            differing(a, x),
            if bits(b) == bits(y) {
                "equal"
            } else {
                "DIFFER"
            },
        )
    })
}

/// The inputs `scripts/make_cpu_order_fixtures.py` generates by formula, exact on both sides:
/// `k / 2^24 · 2^(i mod 7)` (signed: `(k / 2^24 · 2 − 1) · 2^(i mod 7)`), `k = i · 2654435761 mod 2^24`.
fn formula_vector(n: usize, signed: bool) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let k = ((i * 2654435761) % (1 << 24)) as f64 / (1u64 << 24) as f64;
            let v = if signed { k * 2.0 - 1.0 } else { k };
            (v * f64::from(1u32 << (i % 7))) as f32
        })
        .collect()
}

#[test]
fn dynamic_map_matches_bitsandbytes() {
    let st = SafeTensors::deserialize(FIXTURE).expect("fixture");
    assert_eq!(bits(&dynamic_map()), bits(&f32s(&st, "dynamic_map")));
}

#[test]
fn quantize_and_dequantize_are_bit_exact() {
    let st = SafeTensors::deserialize(FIXTURE).expect("fixture");
    let mut cases = 0;
    for name in [
        "64x64", "3x50", "7x33", "128x96", "1x1", "96x160", "special",
    ] {
        let input = f32s(&st, &format!("{name}.input"));
        let shp = shape(&st, &format!("{name}.input"));
        for (qt, qn) in [(QuantType::Nf4, "nf4"), (QuantType::Fp4, "fp4")] {
            for dq in [false, true] {
                let case = format!("{name}_{qn}_{}", if dq { "dq" } else { "nodq" });
                // The fixture was made on a CPU: double quantization through its lookup table.
                let q =
                    Quantized4bit::quantize_with(&input, &shp, qt, 64, dq, DqRounding::CpuTable)
                        .expect("quantize");
                let packed = st
                    .tensor(&format!("{case}.packed"))
                    .expect("packed")
                    .data()
                    .to_vec();
                let mismatched: Vec<usize> = (0..packed.len())
                    .filter(|&i| packed[i] != q.packed[i])
                    .collect();
                assert!(
                    mismatched.is_empty(),
                    "{case}: {} packed bytes differ, first at {:?}",
                    mismatched.len(),
                    mismatched.first()
                );
                match &q.absmax {
                    Absmax::Plain(a) => assert_eq!(
                        bits(a),
                        bits(&f32s(&st, &format!("{case}.absmax"))),
                        "{case} absmax"
                    ),
                    Absmax::Nested {
                        codes,
                        nested_absmax,
                        offset,
                        ..
                    } => {
                        assert_eq!(
                            offset.to_bits(),
                            f32s(&st, &format!("{case}.offset"))[0].to_bits(),
                            "{case} offset"
                        );
                        assert_eq!(
                            bits(nested_absmax),
                            bits(&f32s(&st, &format!("{case}.nested_absmax"))),
                            "{case} nested"
                        );
                        assert_eq!(
                            codes.as_slice(),
                            st.tensor(&format!("{case}.absmax")).expect("a").data(),
                            "{case} codes"
                        );
                    }
                }
                let deq = q.dequantize().expect("dequantize");
                assert_eq!(
                    bits(&deq),
                    bits(&f32s(&st, &format!("{case}.dequant"))),
                    "{case} dequant"
                );
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 28);
}

#[test]
fn a_real_linear4bit_checkpoint_loads_without_requantizing() {
    let st = SafeTensors::deserialize(LINEAR).expect("fixture");
    let name = "model.layers.0.mlp.down_proj.weight";
    assert!(checkpoint::is_quantized(&st, name));
    let q = checkpoint::load(&st, name).expect("load");
    assert_eq!(q.shape, vec![40, 96]);
    assert_eq!(q.quant_type, QuantType::Nf4);
    assert!(matches!(q.absmax, Absmax::Nested { .. }));
    let deq = q.dequantize().expect("deq");
    let reference = f32s(&st, "reference.dequant");
    let differing = (0..deq.len())
        .filter(|&i| deq[i].to_bits() != reference[i].to_bits())
        .count();
    assert_eq!(
        differing,
        0,
        "{differing} of {} dequantized values differ",
        deq.len()
    );
    // Re-quantizing the dense weight ourselves gives the same bytes.
    let dense = f32s(&st, "reference.dense");
    let ours = Quantized4bit::quantize_with(
        &dense,
        &[40, 96],
        QuantType::Nf4,
        64,
        true,
        DqRounding::CpuTable,
    )
    .expect("q");
    assert_eq!(
        (&ours.packed, &ours.shape, ours.blocksize),
        (&q.packed, &q.shape, q.blocksize)
    );
    if let Some(d) = nested_differences(&ours, &q) {
        panic!("re-quantized: {d}");
    }
    let Absmax::Nested { code, .. } = &q.absmax else {
        panic!("nested")
    };
    assert_eq!(bits(code), bits(&dynamic_map()), "nested_quant_map");
}

#[test]
fn bad_input_is_a_clear_error() {
    assert_eq!(
        Quantized4bit::quantize(&[1.0; 64], &[64], QuantType::Nf4, 48, false),
        Err(Error::Blocksize(48))
    );
    assert!(matches!(
        Quantized4bit::quantize(&[1.0; 10], &[3, 4], QuantType::Nf4, 64, false),
        Err(Error::Shape { .. })
    ));
    let e = Quantized4bit::quantize(&[1.0, f32::NAN], &[2], QuantType::Nf4, 64, false)
        .expect_err("nan");
    assert!(matches!(e, Error::NonFinite { index: 1, .. }), "{e}");
    assert!(e.to_string().contains("only finite values"), "{e}");
    let mut q =
        Quantized4bit::quantize(&[0.5; 128], &[2, 64], QuantType::Nf4, 64, true).expect("q");
    q.shape = vec![3, 64];
    let e = q.dequantize().expect_err("shape").to_string();
    assert!(e.contains("packed weight"), "{e}");
    let msg = Error::Blocksize(48).to_string();
    assert!(msg.contains("32, 64, 128"), "{msg}");
}

#[test]
fn corrupt_quant_state_is_a_clear_error() {
    // Rewrite the fixture with a broken quant_state JSON and with a mismatched shape.
    let st = SafeTensors::deserialize(LINEAR).expect("fixture");
    let name = "model.layers.0.mlp.down_proj.weight";
    let rewrite = |state: &[u8]| -> Vec<u8> {
        let mut tensors: Vec<(String, safetensors::tensor::TensorView<'_>)> = Vec::new();
        for (n, t) in st.tensors() {
            if n.ends_with("bitsandbytes__nf4") {
                continue;
            }
            tensors.push((n, t));
        }
        let sn = format!("{name}.quant_state.bitsandbytes__nf4");
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::U8, vec![state.len()], state)
                .expect("view");
        tensors.push((sn, view));
        safetensors::serialize(tensors, None).expect("serialize")
    };
    let broken = rewrite(b"{\"quant_type\": \"nf4\", \"blocksize\": ");
    let e = checkpoint::load(&SafeTensors::deserialize(&broken).expect("st"), name)
        .expect_err("corrupt")
        .to_string();
    assert!(e.contains("not the JSON bitsandbytes writes"), "{e}");
    let wrong_shape = rewrite(br#"{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [41, 96], "nested_blocksize": 256, "nested_offset": 0.01}"#);
    let e = checkpoint::load(&SafeTensors::deserialize(&wrong_shape).expect("st"), name)
        .expect_err("shape")
        .to_string();
    assert!(e.contains("[41, 96]"), "{e}");
    let bad_block = rewrite(br#"{"quant_type": "nf4", "blocksize": 48, "dtype": "float32", "shape": [40, 96], "nested_blocksize": 256, "nested_offset": 0.01}"#);
    let e = checkpoint::load(&SafeTensors::deserialize(&bad_block).expect("st"), name)
        .expect_err("blocksize")
        .to_string();
    assert!(e.contains("blocksize 48"), "{e}");
}

#[test]
fn quantization_config_parses() {
    let c = checkpoint::QuantizationConfig::from_config_json(
        r#"{"model_type":"llama","quantization_config":{"quant_method":"bitsandbytes","load_in_4bit":true,
        "bnb_4bit_quant_type":"nf4","bnb_4bit_use_double_quant":true,"bnb_4bit_compute_dtype":"bfloat16"}}"#,
    )
    .expect("ok")
    .expect("some");
    assert!(
        c.load_in_4bit && c.bnb_4bit_use_double_quant && c.bnb_4bit_quant_type == QuantType::Nf4
    );
    assert_eq!(
        checkpoint::QuantizationConfig::from_config_json(r#"{"model_type":"llama"}"#).expect("ok"),
        None
    );
    let e = checkpoint::QuantizationConfig::from_config_json(
        r#"{"quantization_config":{"quant_method":"gptq"}}"#,
    )
    .expect_err("gptq");
    assert!(e.to_string().contains("gptq"));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn dequantize_is_close_and_requantizing_is_idempotent(
            data in proptest::collection::vec(-100.0f32..100.0, 1..700), fp4: bool, dq: bool) {
            let qt = if fp4 { QuantType::Fp4 } else { QuantType::Nf4 };
            let q = Quantized4bit::quantize(&data, &[data.len()], qt, 64, dq).expect("q");
            let deq = q.dequantize().expect("d");
            let scales = q.absmax.to_f32();
            // Largest gap between neighbouring codes, as a fraction of absmax.
            let mut code = qt.code().to_vec();
            code.sort_by(f32::total_cmp);
            let gap = code.windows(2).map(|w| w[1] - w[0]).fold(0.0f32, f32::max);
            for (i, (&x, &y)) in data.iter().zip(&deq).enumerate() {
                let block_max = data[i / 64 * 64..((i / 64 + 1) * 64).min(data.len())].iter().fold(0.0f32, |m, v| m.max(v.abs()));
                // Double quantization perturbs the scale itself by up to half an 8-bit step.
                let tol = gap / 2.0 * block_max * 1.0001 + (scales[i / 64] - block_max).abs() + 1e-6;
                prop_assert!((x - y).abs() <= tol, "element {i}: {x} -> {y} (tol {tol})");
            }
            prop_assert_eq!(q.packed.len(), data.len().div_ceil(2));
            if !dq {
                let again = Quantized4bit::quantize(&deq, &[data.len()], qt, 64, false).expect("q");
                prop_assert_eq!(again.dequantize().expect("d"), deq);
            }
        }
    }
}

/// Quantizing at load equals what bitsandbytes stored: every decoder linear of the tiny llama
/// (lorafit-train's `llama_q` fixture) quantized by lorafit-quant, NF4 + double quant, against the
/// `*-bnb-4bit` checkpoint transformers saved from the same weights (`llama_q_bnb4`): packed codes,
/// absmax codes, nested absmax and offset bit for bit.
#[test]
fn quantizing_at_load_equals_the_stored_bnb_state() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../lorafit-train/tests/fixtures"
    );
    let dense_bytes = std::fs::read(format!("{dir}/llama_q/model.safetensors")).expect("llama_q");
    let stored_bytes =
        std::fs::read(format!("{dir}/llama_q_bnb4/model.safetensors")).expect("llama_q_bnb4");
    let dense = SafeTensors::deserialize(&dense_bytes).expect("dense");
    let stored = SafeTensors::deserialize(&stored_bytes).expect("stored");
    let mut names: Vec<String> = dense
        .names()
        .into_iter()
        .filter(|n| n.ends_with("proj.weight"))
        .map(|n| n.to_string())
        .collect();
    names.sort();
    assert_eq!(names.len(), 14);
    let mut report = Vec::new();
    for name in &names {
        let theirs = checkpoint::load(&stored, name).expect("stored state");
        let ours = Quantized4bit::quantize_with(
            &f32s(&dense, name),
            &shape(&dense, name),
            QuantType::Nf4,
            64,
            true,
            DqRounding::CpuTable,
        )
        .expect("quantize");
        if let Some(d) = nested_differences(&ours, &theirs) {
            report.push(format!("{name}: {d}"));
        }
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
}

/// lorafit's `torch_sum` equals torch's fp32 `Tensor.sum()` bit for bit, at every length and
/// thread count `scripts/make_cpu_order_fixtures.py` recorded (the double-quant offset's order).
#[test]
fn torch_sum_equals_torch() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/torch_sum.json"
    ))
    .expect("torch_sum.json");
    let fixture: serde_json::Value = serde_json::from_str(&text).expect("json");
    let cases = fixture["cases"].as_array().expect("cases");
    assert!(cases.len() > 300);
    let mut wrong = Vec::new();
    for case in cases {
        let n = case["n"].as_u64().expect("n") as usize;
        let threads = case["threads"].as_u64().expect("threads") as usize;
        let want = case["sum_bits"].as_u64().expect("sum_bits") as u32;
        let got = lorafit_quant::torch_sum(&formula_vector(n, false), threads);
        if got.to_bits() != want {
            wrong.push(format!(
                "n {n} threads {threads}: {got} vs {}",
                f32::from_bits(want)
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {}:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

/// [`DqRounding::CpuTable`] equals bitsandbytes 0.50.2's CPU `quantize_blockwise` (what double
/// quantization calls) on 131 172 values, and [`DqRounding::Nearest`] is its CUDA semantics: the
/// two disagree on a few tenths of a percent of values, so the fixture must tell them apart.
#[test]
fn cpu_blockwise_rounding_equals_bitsandbytes() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/bnb_cpu_blockwise.safetensors"
    ))
    .expect("bnb_cpu_blockwise.safetensors");
    let st = SafeTensors::deserialize(&bytes).expect("fixture");
    let want_codes = st.tensor("codes").expect("codes").data().to_vec();
    let want_absmax = f32s(&st, "absmax");
    let n = want_codes.len();
    let x = formula_vector(n, true);
    // Double quantization's blockwise step, with a zero offset, is exactly quantize_blockwise.
    let differ = |rounding| {
        let Absmax::Nested {
            codes,
            nested_absmax,
            ..
        } = lorafit_quant::nest_with_offset(&x, 0.0, rounding)
        else {
            panic!("nested")
        };
        assert_eq!(
            bits(&nested_absmax),
            bits(&want_absmax),
            "{rounding:?} absmax"
        );
        codes
            .iter()
            .zip(&want_codes)
            .filter(|(a, b)| a != b)
            .count()
    };
    assert_eq!(differ(DqRounding::CpuTable), 0, "CPU table codes");
    let nearest = differ(DqRounding::Nearest);
    assert!(
        nearest > 0 && nearest < n / 100,
        "nearest differs on {nearest} of {n}"
    );
}
