//! Bit-exactness against real bitsandbytes 0.50.2 (fixtures from scripts/make_quant_fixtures.py).

use lorafit_quant::{Absmax, Error, QuantType, Quantized4bit, checkpoint, dynamic_map};
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

#[test]
fn dynamic_map_matches_bitsandbytes() {
    let st = SafeTensors::deserialize(FIXTURE).expect("fixture");
    assert_eq!(bits(&dynamic_map()), bits(&f32s(&st, "dynamic_map")));
}

#[test]
fn quantize_and_dequantize_are_bit_exact() {
    let st = SafeTensors::deserialize(FIXTURE).expect("fixture");
    let mut cases = 0;
    let mut offsets_exact = 0;
    for name in [
        "64x64", "3x50", "7x33", "128x96", "1x1", "96x160", "special",
    ] {
        let input = f32s(&st, &format!("{name}.input"));
        let shp = shape(&st, &format!("{name}.input"));
        for (qt, qn) in [(QuantType::Nf4, "nf4"), (QuantType::Fp4, "fp4")] {
            for dq in [false, true] {
                let case = format!("{name}_{qn}_{}", if dq { "dq" } else { "nodq" });
                let mut q = Quantized4bit::quantize(&input, &shp, qt, 64, dq).expect("quantize");
                if dq {
                    // The offset is torch's fp32 mean: equal, or one summation-order ulp away.
                    let theirs = f32s(&st, &format!("{case}.offset"))[0];
                    let Absmax::Nested { offset, .. } = &q.absmax else {
                        panic!("nested")
                    };
                    let ulps = (offset.to_bits() as i64 - theirs.to_bits() as i64).abs();
                    assert!(ulps <= 2, "{case}: offset {offset} vs {theirs}");
                    offsets_exact += usize::from(ulps == 0);
                    let plain = Quantized4bit::quantize(&input, &shp, qt, 64, false).expect("q");
                    let Absmax::Plain(a) = &plain.absmax else {
                        panic!("plain")
                    };
                    q.absmax = lorafit_quant::nest_with_offset(a, theirs);
                }
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
    println!("double-quant offsets bit-identical to torch's mean: {offsets_exact} of 14");
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
    let mut ours =
        Quantized4bit::quantize(&dense, &[40, 96], QuantType::Nf4, 64, false).expect("q");
    let (Absmax::Plain(a), Absmax::Nested { offset, .. }) = (&ours.absmax, &q.absmax) else {
        panic!("layout")
    };
    ours.absmax = lorafit_quant::nest_with_offset(a, *offset);
    assert_eq!(
        (&ours.packed, &ours.shape, ours.blocksize),
        (&q.packed, &q.shape, q.blocksize)
    );
    match (&ours.absmax, &q.absmax) {
        (
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
                code,
                ..
            },
        ) => {
            assert_eq!(a, x, "absmax codes");
            assert_eq!(bits(b), bits(y), "nested absmax");
            assert!(
                (c.to_bits() as i64 - z.to_bits() as i64).abs() <= 2,
                "offset {c} vs {z}"
            );
            assert_eq!(bits(code), bits(&dynamic_map()), "nested_quant_map");
        }
        other => panic!("both should be nested: {other:?}"),
    }
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
