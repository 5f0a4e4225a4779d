//! lorafit-train against PEFT: per-step losses and final adapters of the fixtures that
//! scripts/make_train_fixtures.py recorded with torch + transformers + PEFT.

use std::path::{Path, PathBuf};

use lorafit_core::Settings;
use lorafit_core::plan::Val;
use lorafit_train::config::Backend;
use lorafit_train::weights::Weights;
use lorafit_train::{Model, Summary, TrainArgs, Trainer, data, make_device};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn val(v: &Value) -> Val {
    match v {
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) if n.is_i64() => Val::Int(n.as_i64().unwrap_or_default()),
        Value::Number(n) => Val::Float(n.as_f64().unwrap_or_default()),
        Value::String(s) => Val::Str(s.clone()),
        other => Val::Str(other.to_string()),
    }
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lorafit-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The keys of a recorded run plus `extra`, with paths resolved against the fixtures.
fn settings(run: &Value, extra: &[(&str, Val)]) -> Settings {
    let mut s = Settings::default();
    for (k, v) in run["keys"].as_object().expect("keys") {
        s.set(k, val(v)).expect("fixture key");
    }
    s.set("dataset", Val::Str("data.jsonl".into())).expect("dataset");
    s.set("dataset_dir", Val::Str(fixtures().display().to_string())).expect("dataset_dir");
    s.set("logging_steps", Val::Int(1)).expect("logging");
    s.set("finetuning_type", Val::Str("lora".into())).expect("ft");
    for (k, v) in extra {
        s.set(k, v.clone()).expect("extra key");
    }
    s
}

fn run_with(name: &str, backend: Backend, extra: &[(&str, Val)], out: &Path) -> (Summary, Trainer<'static>) {
    let run: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(format!("runs/{name}.json"))).expect("run json"),
    )
    .expect("run json parses");
    let mut extra = extra.to_vec();
    extra.push(("output_dir", Val::Str(out.display().to_string())));
    extra.push(("backend", Val::Str(backend.name().into())));
    let s = settings(&run, &extra);
    let args = TrainArgs::from_settings(&s, &fixtures()).expect("args");
    let device = make_device(args.backend, args.gradient_checkpointing).expect("device");
    let model: &'static Model = Box::leak(Box::new(Model::load(&args.model_dir, &device).expect("model loads")));
    let examples = data::load_dataset(&args).expect("data");
    let mut trainer = Trainer::new(args, model, examples).expect("trainer");
    let summary = trainer.run(|_| {}).expect("training runs");
    (summary, trainer)
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

/// Train `name` on `backend` and compare every step's loss and the final adapter with PEFT's.
fn check_parity(name: &str, backend: Backend) {
    let run: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(format!("runs/{name}.json"))).expect("run json"),
    )
    .expect("parses");
    let out = tmp_dir(&format!("{name}-{}", backend.name()));
    let (summary, _) = run_with(name, backend, &[], &out);
    let want: Vec<f64> = run["losses"].as_array().expect("losses").iter().filter_map(Value::as_f64).collect();
    let want_lr: Vec<f64> = run["lrs"].as_array().expect("lrs").iter().filter_map(Value::as_f64).collect();
    assert_eq!(summary.steps.len(), want.len(), "{name}: number of steps");
    let mut worst = 0.0f64;
    for (i, (got, w)) in summary.steps.iter().zip(&want).enumerate() {
        let r = rel(got.loss, *w);
        worst = worst.max(r);
        assert!(r <= 1e-4, "{name} on {}: step {} loss {} vs PEFT {} (rel {r:.2e})", backend.name(), i + 1, got.loss, w);
        assert!((got.lr - want_lr[i]).abs() <= 1e-12 + 1e-9 * want_lr[i], "{name}: step {} lr {} vs {}", i + 1, got.lr, want_lr[i]);
    }
    let mut ours = Weights::load_file(&out.join("adapter_model.safetensors")).expect("our adapter");
    let theirs = Weights::load_file(&fixtures().join(format!("runs/{name}.adapter.safetensors"))).expect("PEFT adapter");
    let names: Vec<String> = theirs.names().map(str::to_string).collect();
    let mut worst_w = 0.0f64;
    for n in &names {
        let b = theirs.get(n).expect("tensor");
        let a = ours.take(n, &b.shape).unwrap_or_else(|e| panic!("{name}: our adapter: {e}"));
        for (x, y) in a.data.iter().zip(&b.data) {
            let d = (x - y).abs() as f64 / (y.abs() as f64).max(1.0);
            worst_w = worst_w.max(d);
        }
    }
    assert!(worst_w <= 1e-4, "{name} on {}: adapter differs from PEFT's by {worst_w:.2e}", backend.name());
    assert!(ours.names().next().is_none(), "{name}: extra tensors in our adapter");
    eprintln!("{name} on {}: {} steps, worst loss rel diff {worst:.2e}, worst adapter diff {worst_w:.2e}", backend.name(), want.len());
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn llama_constant_matches_peft_on_ndarray() {
    check_parity("llama_constant", Backend::NdArray);
}

#[test]
fn llama_cosine_clip_accumulation_matches_peft_on_ndarray() {
    check_parity("llama_cosine_clip_ga", Backend::NdArray);
}

#[test]
fn qwen2_bf16_tied_bias_rslora_matches_peft_on_ndarray() {
    check_parity("qwen2_linear_rslora", Backend::NdArray);
}

#[test]
fn qwen3_sharded_qk_norm_matches_peft_on_ndarray() {
    check_parity("qwen3_constant", Backend::NdArray);
}

/// A wgpu adapter (lavapipe on CI), or a printed reason to skip.
fn wgpu_available() -> bool {
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
        Ok(v) if v == 3.0 => true,
        _ => {
            eprintln!("skipped: no wgpu adapter (install mesa-vulkan-drivers for lavapipe)");
            false
        }
    }
}

#[test]
fn llama_cosine_clip_accumulation_matches_peft_on_wgpu() {
    if wgpu_available() {
        check_parity("llama_cosine_clip_ga", Backend::Wgpu);
    }
}

#[test]
fn qwen2_and_qwen3_match_peft_on_wgpu() {
    if wgpu_available() {
        check_parity("qwen2_linear_rslora", Backend::Wgpu);
        check_parity("qwen3_constant", Backend::Wgpu);
    }
}
