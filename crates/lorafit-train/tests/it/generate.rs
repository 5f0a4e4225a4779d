//! Generation: the KV cache gives the logits of recomputing the whole sequence, greedy decoding
//! (with the cache) reproduces transformers' `generate(do_sample=False)` on base + adapter and on
//! the merged model, and the logits processors equal transformers' (fixtures from
//! scripts/make_merge_fixtures.py and scripts/make_generation_fixtures.py).

use std::path::{Path, PathBuf};

use lorafit_train::data::{Example, StepRng};
use lorafit_train::generate::{GenConfig, repetition_penalty, warp};
use lorafit_train::lora::Adapter;
use lorafit_train::merge::merge;
use lorafit_train::{Model, make_plain_device};

use crate::common::tmp_dir;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Incremental decoding through the cache (prompt prefilled, then one token at a time) gives
/// the rows of one forward over the whole sequence, for GQA + llama3 RoPE (llama), q/k/v biases
/// (qwen2) and q/k norms (qwen3), with and without an adapter.
#[test]
fn kv_cache_logits_equal_the_full_forward() {
    let device = make_plain_device(lorafit_train::Backend::NdArray).expect("device");
    for name in ["llama", "qwen2", "qwen3"] {
        let model = Model::load(&fixtures().join(name), &device).expect("model");
        let vocab = model.config.arch.vocab_size as u32;
        let adapters = if name == "llama" {
            vec![
                Adapter::none(),
                Adapter::load(&fixtures().join("merge/lora"), &model, 0.0, &device)
                    .expect("adapter"),
            ]
        } else {
            vec![Adapter::none()]
        };
        let ids: Vec<u32> = (0..23u32).map(|i| (i * 37 + 5) % vocab).collect();
        for adapter in &adapters {
            let e = Example {
                input_ids: ids.clone(),
                ..Default::default()
            };
            let full: Vec<f32> = model
                .logits(&[&e], adapter, &mut StepRng::eval())
                .into_data()
                .iter::<f32>()
                .collect();
            let mut cache = model.kv_cache();
            let mut inc: Vec<f32> = Vec::new();
            // A 9-token prefill, then single tokens, then a 4-token chunk (a chunked prefill).
            for chunk in [
                &ids[..9],
                &ids[9..10],
                &ids[10..11],
                &ids[11..19],
                &ids[19..],
            ] {
                inc.extend(
                    model
                        .logits_cached(chunk, &mut cache, adapter)
                        .into_data()
                        .iter::<f32>(),
                );
            }
            assert_eq!(cache.len(), ids.len());
            assert_eq!(inc.len(), full.len());
            let worst = full
                .iter()
                .zip(&inc)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                worst < 1e-5,
                "{name}: cached logits {worst} from the full forward"
            );
        }
    }
}

/// Greedy decoding with base + adapter reproduces transformers' `generate(do_sample=False)`
/// (`make_merge_fixtures.py generate`), and the merged checkpoint decodes the same.
#[test]
fn greedy_generation_matches_transformers() {
    let want: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("merge/generate.json")).expect("fixture"),
    )
    .expect("json");
    let device = make_plain_device(lorafit_train::Backend::NdArray).expect("device");
    let model = Model::load(&fixtures().join("llama"), &device).expect("model");
    let adapter =
        Adapter::load(&fixtures().join("merge/lora"), &model, 0.0, &device).expect("adapter");
    let out = tmp_dir("merge-generate");
    merge(
        &fixtures().join("llama"),
        &fixtures().join("merge/lora"),
        &out,
        5.0,
    )
    .expect("merge");
    let merged = Model::load(&out, &device).expect("merged");
    let none = Adapter::none();
    for case in want["cases"].as_array().expect("cases") {
        let ids = |k: &str| -> Vec<u32> {
            case[k]
                .as_array()
                .expect("ids")
                .iter()
                .map(|x| x.as_u64().expect("id") as u32)
                .collect()
        };
        let (prompt, greedy) = (ids("prompt"), ids("greedy"));
        assert_eq!(
            model.generate_greedy(&prompt, &adapter, greedy.len(), &[]),
            greedy,
            "base + adapter"
        );
        assert_eq!(
            merged.generate_greedy(&prompt, &none, greedy.len(), &[]),
            greedy,
            "merged"
        );
        let stop = greedy[3];
        let first_stop = greedy.iter().position(|&t| t == stop).expect("in") + 1;
        assert_eq!(
            model.generate_greedy(&prompt, &adapter, greedy.len(), &[stop]),
            greedy[..first_stop].to_vec()
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}

/// Repetition penalty, temperature, top-k and top-p as transformers' processors compute them, in
/// `generate`'s order, on random scores (LLaMA-Factory's default 0.95 / 50 / 0.7 among them).
#[test]
fn logits_processors_equal_transformers() {
    let want: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("generate/warpers.json")).expect("fixture"),
    )
    .expect("json");
    let cases = want["cases"].as_array().expect("cases");
    assert!(cases.len() >= 10);
    for (i, c) in cases.iter().enumerate() {
        let f = |k: &str| c[k].as_f64().expect("number");
        let mut scores: Vec<f32> = c["scores"]
            .as_array()
            .expect("scores")
            .iter()
            .map(|v| v.as_f64().expect("score") as f32)
            .collect();
        let seen: Vec<u32> = c["seen"]
            .as_array()
            .expect("seen")
            .iter()
            .map(|v| v.as_u64().expect("id") as u32)
            .collect();
        repetition_penalty(&mut scores, &seen, f("repetition_penalty"));
        warp(
            &mut scores,
            f("temperature"),
            f("top_k") as usize,
            f("top_p"),
        );
        let expect = c["want"].as_array().expect("want");
        let kept = expect.iter().filter(|v| !v.is_null()).count();
        assert!(
            kept >= 1 && kept < scores.len(),
            "case {i} filters something"
        );
        for (j, (got, w)) in scores.iter().zip(expect).enumerate() {
            match w.as_f64() {
                None => assert_eq!(*got, f32::NEG_INFINITY, "case {i} token {j} filtered"),
                Some(w) => assert!(
                    (*got as f64 - w).abs() <= 1e-6 * w.abs().max(1.0),
                    "case {i} token {j}: {got} vs transformers' {w}"
                ),
            }
        }
    }
}

/// Sampling draws only what the filters keep: top_k 1 is greedy; the seed repeats a draw.
#[test]
fn sampling_keeps_to_the_filters_and_the_seed() {
    let device = make_plain_device(lorafit_train::Backend::NdArray).expect("device");
    let model = Model::load(&fixtures().join("llama"), &device).expect("model");
    let none = Adapter::none();
    let prompt = [3u32, 17, 42, 5, 9];
    let greedy = model.generate_greedy(&prompt, &none, 10, &[]);
    let sample = |top_k: usize, seed: u64| {
        let cfg = GenConfig {
            do_sample: true,
            temperature: 0.95,
            top_p: 0.7,
            top_k,
            repetition_penalty: 1.0,
            max_new_tokens: 10,
            seed,
        };
        model.generate(&prompt, &none, &cfg, &[], |_| {})
    };
    assert_eq!(sample(1, 7), greedy, "top_k 1 leaves only the argmax");
    let a = sample(50, 7);
    assert_eq!(a.len(), 10);
    assert_eq!(sample(50, 7), a, "the same seed draws the same tokens");
    let mut streamed = Vec::new();
    let cfg = GenConfig::greedy(10);
    let out = model.generate(&prompt, &none, &cfg, &[greedy[2]], |t| streamed.push(t));
    let first = greedy.iter().position(|&t| t == greedy[2]).expect("in") + 1;
    assert_eq!(
        out,
        greedy[..first].to_vec(),
        "stops at (and with) the stop token"
    );
    assert_eq!(streamed, out, "every token is streamed");
}
