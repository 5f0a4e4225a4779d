//! `stage: dpo` with LoRA against LLaMA-Factory's DPO step built from TRL 0.24's `dpo_loss` and
//! LLaMA-Factory's `get_batch_logps` (fixtures from scripts/make_dpo_fixtures.py): every step's
//! loss, TRL's reward metrics and the final adapter, on ndarray and wgpu.

use std::path::{Path, PathBuf};

use lorafit_core::Settings;
use lorafit_core::plan::Val;
use lorafit_train::config::Backend;
use lorafit_train::data::{Example, Pair};
use lorafit_train::weights::Weights;
use lorafit_train::{Model, TrainArgs, Trainer, make_device};
use serde_json::Value;

mod common;
use common::{tmp_dir, wgpu_available};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn example(v: &Value) -> Example {
    let ints = |k: &str| -> Vec<i64> {
        v[k].as_array()
            .expect("list")
            .iter()
            .map(|x| x.as_i64().expect("int"))
            .collect()
    };
    Example {
        input_ids: ints("input_ids").into_iter().map(|x| x as u32).collect(),
        labels: ints("labels"),
        ..Default::default()
    }
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

fn check(name: &str, backend: Backend, tol: f64) {
    let run: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join(format!("runs/dpo_{name}.json"))).expect("run"),
    )
    .expect("json");
    let pairs_json: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("runs/dpo_pairs.json")).expect("pairs"),
    )
    .expect("json");
    let pairs: Vec<Pair> = pairs_json
        .as_array()
        .expect("pairs")
        .iter()
        .map(|p| Pair {
            chosen: example(&p["chosen"]),
            rejected: example(&p["rejected"]),
        })
        .collect();
    let out = tmp_dir(&format!("dpo-{name}-{}", backend.name()));
    let mut s = Settings::default();
    for (k, v) in run["keys"].as_object().expect("keys") {
        s.set(k, val(v)).expect("key");
    }
    for (k, v) in [
        ("dataset", Val::Str("dpo_pairs.json".into())),
        ("output_dir", Val::Str(out.display().to_string())),
        ("backend", Val::Str(backend.name().into())),
        ("logging_steps", Val::Int(1)),
        ("finetuning_type", Val::Str("lora".into())),
        ("plot_loss", Val::Bool(false)),
    ] {
        s.set(k, v).expect("key");
    }
    let args = TrainArgs::from_settings(&s, &fixtures()).expect("args");
    let device = make_device(args.backend, args.gradient_checkpointing).expect("device");
    let model = Model::load(&args.model_dir, &device).expect("model");
    let mut trainer = Trainer::new_pairs(args, &model, pairs).expect("trainer");
    let summary = trainer.run(|_| {}).expect("runs");
    let want: Vec<f64> = run["losses"]
        .as_array()
        .expect("losses")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert_eq!(summary.steps.len(), want.len());
    let mut worst = 0.0f64;
    for (i, (got, w)) in summary.steps.iter().zip(&want).enumerate() {
        let r = (got.loss - w).abs() / w.abs().max(1e-12);
        worst = worst.max(r);
        assert!(
            r <= tol,
            "{name} on {}: step {} loss {} vs TRL {w} (rel {r:.2e})",
            backend.name(),
            i + 1,
            got.loss
        );
        let metrics = &run["metrics"][i];
        for (k, v) in &got.metrics {
            let theirs = metrics[k.as_str()]
                .as_f64()
                .unwrap_or_else(|| panic!("metric {k}"));
            assert!(
                (v - theirs).abs() <= tol * theirs.abs().max(1.0),
                "{name}: step {} {k} {v} vs TRL {theirs}",
                i + 1
            );
        }
        assert_eq!(got.metrics.len(), 6);
    }
    let mut ours = Weights::load_file(&out.join("adapter_model.safetensors")).expect("ours");
    let theirs =
        Weights::load_file(&fixtures().join(format!("runs/dpo_{name}.adapter.safetensors")))
            .expect("theirs");
    let mut worst_w = 0.0f64;
    for n in theirs.names().map(str::to_string).collect::<Vec<_>>() {
        let b = theirs.get(&n).expect("t");
        let a = ours
            .take(&n, &b.shape)
            .unwrap_or_else(|e| panic!("{n}: {e}"));
        for (x, y) in a.data.iter().zip(&b.data) {
            worst_w = worst_w.max((x - y).abs() as f64 / (y.abs() as f64).max(1.0));
        }
    }
    assert!(
        worst_w <= tol,
        "{name} on {}: adapter differs from TRL's by {worst_w:.2e}",
        backend.name()
    );
    let log = std::fs::read_to_string(out.join("trainer_log.jsonl")).expect("log");
    let first: Value = serde_json::from_str(log.lines().next().expect("line")).expect("json");
    assert!(
        first["rewards/margins"].is_number() && first["accuracy"].is_number(),
        "{first}"
    );
    eprintln!(
        "dpo {name} on {}: worst loss rel {worst:.2e}, adapter {worst_w:.2e}",
        backend.name()
    );
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn dpo_matches_trl_on_ndarray() {
    check("sigmoid", Backend::NdArray, 1e-4);
    check("ftx_smooth_clip", Backend::NdArray, 1e-4);
}

#[test]
fn dpo_matches_trl_on_wgpu() {
    if !wgpu_available() {
        return;
    }
    check("sigmoid", Backend::Wgpu, 1e-4);
    check("ftx_smooth_clip", Backend::Wgpu, 1e-4);
}
