//! `lorafit export` merging: the merged checkpoint gives PEFT's logits of base + adapter (LoRA and
//! DoRA with rsLoRA; fixtures from scripts/make_merge_fixtures.py), keeps the base's dtype, shards by
//! export_size with an index the loader reads, and refuses what cannot be merged.

use std::path::{Path, PathBuf};

use lorafit_train::data::{Example, StepRng};
use lorafit_train::lora::Adapter;
use lorafit_train::merge::merge;
use lorafit_train::weights::Weights;
use lorafit_train::{Model, make_plain_device};
use safetensors::{Dtype, SafeTensors};

use crate::common::tmp_dir;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn logits_of(dir: &Path, ids: &[Vec<u32>]) -> Vec<f32> {
    let device = make_plain_device(lorafit_train::Backend::NdArray).expect("device");
    let model = Model::load(dir, &device).expect("merged model loads");
    let none = Adapter::none();
    let ex: Vec<Example> = ids
        .iter()
        .map(|i| Example {
            input_ids: i.clone(),
            ..Default::default()
        })
        .collect();
    let logits = model.logits(&ex.iter().collect::<Vec<_>>(), &none, &mut StepRng::eval());
    logits.into_data().try_into_vec_as::<f32>().expect("logits")
}

#[test]
fn merged_checkpoints_give_peft_logits() {
    let refs = Weights::load_file(&fixtures().join("merge/logits.safetensors")).expect("fixture");
    let ids_t = refs.get("input_ids").expect("ids");
    let (rows, len) = (ids_t.shape[0], ids_t.shape[1]);
    let ids: Vec<Vec<u32>> = (0..rows)
        .map(|r| {
            ids_t.data[r * len..(r + 1) * len]
                .iter()
                .map(|&x| x as u32)
                .collect()
        })
        .collect();
    for (name, size_gb) in [("lora", 5.0), ("dora", 0.00002)] {
        let out = tmp_dir(&format!("merge-{name}"));
        let m = merge(
            &fixtures().join("llama"),
            &fixtures().join("merge").join(name),
            &out,
            size_gb,
        )
        .expect("merge");
        assert!(m.merged > 0 && m.dtype == "float32", "{m:?}");
        if size_gb < 1.0 {
            assert!(
                out.join("model.safetensors.index.json").is_file(),
                "sharded by export_size"
            );
            assert!(!out.join("model.safetensors").exists());
        }
        assert!(out.join("config.json").is_file());
        let got = logits_of(&out, &ids);
        let want = &refs.get(&format!("{name}.adapter")).expect("ref").data;
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst < 1e-5,
            "{name}: merged logits differ from PEFT's by {worst}"
        );
        eprintln!(
            "{name}: {} tensors merged, {} files, max |logit diff| vs PEFT {worst:.2e}",
            m.merged,
            m.files.len()
        );
        let _ = std::fs::remove_dir_all(&out);
    }
}

#[test]
fn merge_keeps_a_bf16_base_in_bf16() {
    // The f32 fixture base written as bf16.
    let base = tmp_dir("merge-bf16-base");
    std::fs::create_dir_all(&base).expect("dir");
    std::fs::copy(
        fixtures().join("llama/config.json"),
        base.join("config.json"),
    )
    .expect("config");
    let bytes = std::fs::read(fixtures().join("llama/model.safetensors")).expect("base");
    let st = SafeTensors::deserialize(&bytes).expect("st");
    let mut owned = Vec::new();
    for (name, v) in st.tensors() {
        let data: Vec<u8> = v
            .data()
            .chunks_exact(4)
            .flat_map(|c| {
                half::bf16::from_f32(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes()
            })
            .collect();
        owned.push((name, v.shape().to_vec(), data));
    }
    let views: Vec<_> = owned
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(Dtype::BF16, s.clone(), d).expect("view"),
            )
        })
        .collect();
    std::fs::write(
        base.join("model.safetensors"),
        safetensors::serialize(views, None).expect("ser"),
    )
    .expect("write");
    let out = tmp_dir("merge-bf16-out");
    let m = merge(&base, &fixtures().join("merge/lora"), &out, 5.0).expect("merge");
    assert_eq!(m.dtype, "bfloat16");
    let merged = std::fs::read(out.join("model.safetensors")).expect("out");
    let st = SafeTensors::deserialize(&merged).expect("st");
    let q = st
        .tensor("model.layers.0.self_attn.q_proj.weight")
        .expect("q");
    assert_eq!(q.dtype(), Dtype::BF16);
    let k = st
        .tensor("model.layers.0.self_attn.k_proj.weight")
        .expect("k");
    let orig = owned
        .iter()
        .find(|(n, _, _)| n == "model.layers.0.self_attn.k_proj.weight")
        .expect("k");
    assert_eq!(
        k.data(),
        &orig.2[..],
        "untargeted weights are copied bit for bit"
    );
    assert_ne!(
        q.data(),
        &owned
            .iter()
            .find(|(n, _, _)| n == "model.layers.0.self_attn.q_proj.weight")
            .expect("q")
            .2[..]
    );
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&base);
}

#[test]
fn unmergeable_inputs_are_clear_errors() {
    let out = tmp_dir("merge-bad");
    // An adapter for another model shape.
    let other = tmp_dir("merge-bad-adapter");
    std::fs::create_dir_all(&other).expect("dir");
    std::fs::copy(
        fixtures().join("merge/lora/adapter_config.json"),
        other.join("adapter_config.json"),
    )
    .expect("cfg");
    let st = std::fs::read(fixtures().join("merge/lora/adapter_model.safetensors")).expect("read");
    let parsed = SafeTensors::deserialize(&st).expect("st");
    let renamed: Vec<(String, Vec<usize>, Vec<u8>)> = parsed
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n.replace("layers.0.", "layers.7."),
                v.shape().to_vec(),
                v.data().to_vec(),
            )
        })
        .collect();
    let views: Vec<_> = renamed
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), d).expect("view"),
            )
        })
        .collect();
    std::fs::write(
        other.join("adapter_model.safetensors"),
        safetensors::serialize(views, None).expect("ser"),
    )
    .expect("write");
    let e = merge(&fixtures().join("llama"), &other, &out, 5.0)
        .expect_err("missing target")
        .to_string();
    assert!(e.contains("layers.7") && e.contains("does not have"), "{e}");
    let e = merge(
        &fixtures().join("llama_q_bnb4"),
        &fixtures().join("merge/lora"),
        &out,
        5.0,
    )
    .expect_err("quantized")
    .to_string();
    assert!(e.contains("unquantized base"), "{e}");
    let e = merge(
        &fixtures().join("llama"),
        &fixtures().join("nope"),
        &out,
        5.0,
    )
    .expect_err("no adapter")
    .to_string();
    assert!(e.contains("adapter_config.json"), "{e}");
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&other);
}
