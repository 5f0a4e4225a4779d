//! `stage: rm` with LoRA + value head against LLaMA-Factory's own `PairwiseTrainer.compute_loss` on
//! trl's value-head model (scripts/make_rm_fixtures.py); `stage: dpo` and `stage: kto` with LoRA against LLaMA-Factory's DPO / KTO steps built from
//! TRL 0.24's `dpo_loss` / `kto_loss` and LLaMA-Factory's `get_batch_logps` (fixtures from
//! scripts/make_dpo_fixtures.py and scripts/make_kto_fixtures.py): every step's loss, TRL's
//! metrics and the final adapter, on ndarray and wgpu; then the eval of the final adapter
//! (`eval_loss` and the `eval_*` metrics as LLaMA-Factory logs them) on the same data in batches
//! of 3.

use std::path::{Path, PathBuf};

use lorafit_core::Settings;
use lorafit_core::plan::Val;
use lorafit_train::config::Backend;
use lorafit_train::data::{Encoded, Example, Feedback, Pair};
use lorafit_train::weights::Weights;
use lorafit_train::{Model, TrainArgs, Trainer, make_device};
use serde_json::Value;

use crate::common::{tmp_dir, wgpu_available};

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

fn read_json(rel: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(rel)).expect(rel)).expect("json")
}

/// The training data of a fixture run, by stage.
enum Data {
    Pairs(Vec<Pair>),
    Feedback(Vec<Feedback>),
}

fn check(stage: &str, name: &str, backend: Backend, tol: f64) {
    let run = read_json(&format!("runs/{stage}_{name}.json"));
    let data = match stage {
        "dpo" | "rm" => Data::Pairs(
            read_json("runs/dpo_pairs.json")
                .as_array()
                .expect("pairs")
                .iter()
                .map(|p| Pair {
                    chosen: example(&p["chosen"]),
                    rejected: example(&p["rejected"]),
                })
                .collect(),
        ),
        _ => Data::Feedback(
            read_json("runs/kto_feedback.json")
                .as_array()
                .expect("feedback")
                .iter()
                .map(|f| Feedback {
                    example: example(&f["example"]),
                    kl: example(&f["kl"]),
                    desirable: f["desirable"].as_bool().expect("tag"),
                })
                .collect(),
        ),
    };
    let out = tmp_dir(&format!("{stage}-{name}-{}", backend.name()));
    let mut s = Settings::default();
    for (k, v) in run["keys"].as_object().expect("keys") {
        s.set(k, val(v)).expect("key");
    }
    for (k, v) in [
        ("dataset", Val::Str(format!("{stage}_data.json"))),
        ("output_dir", Val::Str(out.display().to_string())),
        ("backend", Val::Str(backend.name().into())),
        ("logging_steps", Val::Int(1)),
        ("finetuning_type", Val::Str("lora".into())),
        ("plot_loss", Val::Bool(false)),
        // Evaluate after the last step, on the fixture's data (given below, not read).
        ("eval_strategy", Val::Str("steps".into())),
        ("eval_steps", Val::Int(6)),
        ("per_device_eval_batch_size", Val::Int(3)),
        ("eval_dataset", Val::Str(format!("{stage}_data.json"))),
    ] {
        s.set(k, v).expect("key");
    }
    if stage == "rm" {
        // The run starts from the fixture's adapter and value head (LLaMA-Factory reads
        // value_head.safetensors from adapter_name_or_path).
        let start = out.with_extension("start");
        let init = fixtures().join("llama/adapter_init_llama_constant");
        std::fs::create_dir_all(&start).expect("dir");
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            std::fs::copy(init.join(f), start.join(f)).expect("copy");
        }
        std::fs::copy(
            fixtures().join("runs/rm_init.value_head.safetensors"),
            start.join("value_head.safetensors"),
        )
        .expect("copy");
        s.set(
            "adapter_name_or_path",
            Val::Str(start.display().to_string()),
        )
        .expect("key");
    }
    let mut args = TrainArgs::from_settings(&s, &fixtures()).expect("args");
    // The fixture turns trl's value-head dropout off (torch's masks cannot be replayed).
    args.value_head_dropout = 0.0;
    let device = make_device(args.backend, args.gradient_checkpointing).expect("device");
    let model = Model::load(&args.model_dir, &device).expect("model");
    let mut trainer = match data {
        Data::Pairs(p) => {
            Trainer::new_pairs(args, &model, p.clone()).map(|t| t.with_eval_data(Encoded::Pairs(p)))
        }
        Data::Feedback(f) => Trainer::new_feedback(args, &model, f.clone())
            .map(|t| t.with_eval_data(Encoded::Feedback(f))),
    }
    .expect("trainer");
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
            // KTO: a reward the step's micro-batches did not have is absent (0 here).
            let theirs = metrics[k.as_str()].as_f64().unwrap_or(0.0);
            assert!(
                (v - theirs).abs() <= tol * theirs.abs().max(1.0),
                "{stage} {name}: step {} {k} {v} vs TRL {theirs}",
                i + 1
            );
        }
        let n_metrics = match stage {
            "dpo" => 6,
            "kto" => 3,
            _ => 0,
        };
        assert_eq!(got.metrics.len(), n_metrics);
    }
    let mut files = vec![("adapter_model.safetensors", "adapter")];
    if stage == "rm" {
        files.push(("value_head.safetensors", "value_head"));
    }
    let mut worst_w = 0.0f64;
    for (ours_file, kind) in files {
        let mut ours = Weights::load_file(&out.join(ours_file)).expect("ours");
        let theirs =
            Weights::load_file(&fixtures().join(format!("runs/{stage}_{name}.{kind}.safetensors")))
                .expect("theirs");
        for n in theirs.names().map(str::to_string).collect::<Vec<_>>() {
            let b = theirs.get(&n).expect("t");
            let a = ours
                .take(&n, &b.shape)
                .unwrap_or_else(|e| panic!("{n}: {e}"));
            if n == "v_head.summary.bias" {
                // −log σ(chosen − rejected) does not depend on the bias: its gradient is zero
                // up to rounding, and Adam turns rounding noise into steps of up to lr. Both
                // runs move it by noise alone; bound that, do not compare it.
                let lr = run["keys"]["learning_rate"].as_f64().expect("lr");
                let steps = want.len() as f64;
                assert!(
                    ((a.data[0] - b.data[0]).abs() as f64) <= 2.0 * lr * steps,
                    "the value head's bias moved by more than noise: {} vs {}",
                    a.data[0],
                    b.data[0]
                );
                continue;
            }
            for (x, y) in a.data.iter().zip(&b.data) {
                worst_w = worst_w.max((x - y).abs() as f64 / (y.abs() as f64).max(1.0));
            }
        }
    }
    // The reward model converges to losses of ~0.03 within 6 steps at lr 5e-3, where Adam turns
    // the tiny gradients' rounding into relative noise of ~1e-4 on ndarray (1e-5 on wgpu).
    let tol_w = if stage == "rm" { 3.0 * tol } else { tol };
    assert!(
        worst_w <= tol_w,
        "{name} on {}: adapter differs from TRL's by {worst_w:.2e}",
        backend.name()
    );
    let log = std::fs::read_to_string(out.join("trainer_log.jsonl")).expect("log");
    let first: Value = serde_json::from_str(log.lines().next().expect("line")).expect("json");
    if stage == "kto" {
        // trainer_log.jsonl (logging_steps 1) carries what LLaMA-Factory's KTO `log` prints.
        let want_log = run["lf_log"].as_array().expect("the fixture's LF log");
        let lines: Vec<Value> = log
            .lines()
            .filter(|l| l.contains("\"loss\""))
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), want_log.len());
        for (i, (ours, theirs)) in lines.iter().zip(want_log).enumerate() {
            for k in [
                "kl",
                "rewards/chosen",
                "rewards/rejected",
                "rewards/margins",
            ] {
                match theirs[k].as_f64() {
                    None => assert!(
                        ours.get(k).is_none(),
                        "step {}: {k} is absent in LF's log",
                        i + 1
                    ),
                    Some(t) => {
                        let o = ours[k]
                            .as_f64()
                            .unwrap_or_else(|| panic!("step {}: {k} missing", i + 1));
                        assert!(
                            (o - t).abs() <= tol * t.abs().max(1.0),
                            "kto {name}: step {} log {k} {o} vs LLaMA-Factory {t}",
                            i + 1
                        );
                    }
                }
            }
        }
    }
    let logged = match stage {
        "dpo" => first["rewards/margins"].is_number() && first["accuracy"].is_number(),
        "kto" => first["kl"].is_number(),
        _ => first["loss"].is_number(),
    };
    assert!(logged, "{first}");
    let eval_line = log
        .lines()
        .find(|l| l.contains("\"eval_loss\""))
        .expect("an eval entry after step 6");
    let ev: Value = serde_json::from_str(eval_line).expect("json");
    let want_eval = run["eval"].as_object().expect("the fixture's eval");
    let mut worst_eval = 0.0f64;
    for (k, theirs) in want_eval {
        let theirs = theirs.as_f64().expect("number");
        let key = if k == "eval_loss" {
            "eval_loss_exact"
        } else {
            k
        };
        let ours = ev[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{stage} {name}: `{key}` missing from {ev}"));
        let r = (ours - theirs).abs() / theirs.abs().max(1.0);
        worst_eval = worst_eval.max(r);
        assert!(
            r <= tol,
            "{stage} {name} on {}: {k} {ours} vs LLaMA-Factory/TRL {theirs}",
            backend.name()
        );
    }
    eprintln!(
        "{stage} {name} on {}: worst loss rel {worst:.2e}, adapter {worst_w:.2e}, eval {worst_eval:.2e}",
        backend.name()
    );
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(out.with_extension("start"));
}

#[test]
fn dpo_matches_trl_on_ndarray() {
    check("dpo", "sigmoid", Backend::NdArray, 1e-4);
    check("dpo", "ftx_smooth_clip", Backend::NdArray, 1e-4);
}

#[test]
fn dpo_matches_trl_on_wgpu() {
    if !wgpu_available() {
        return;
    }
    check("dpo", "sigmoid", Backend::Wgpu, 1e-4);
    check("dpo", "ftx_smooth_clip", Backend::Wgpu, 1e-4);
}

#[test]
fn kto_matches_trl_on_ndarray() {
    check("kto", "plain", Backend::NdArray, 1e-4);
    check("kto", "ftx_weights_clip", Backend::NdArray, 1e-4);
}

#[test]
fn kto_matches_trl_on_wgpu() {
    if !wgpu_available() {
        return;
    }
    check("kto", "plain", Backend::Wgpu, 1e-4);
    check("kto", "ftx_weights_clip", Backend::Wgpu, 1e-4);
}

#[test]
fn rm_matches_llamafactory_on_ndarray() {
    check("rm", "plain", Backend::NdArray, 1e-4);
    check("rm", "decay_clip", Backend::NdArray, 1e-4);
}

#[test]
fn rm_matches_llamafactory_on_wgpu() {
    if !wgpu_available() {
        return;
    }
    check("rm", "plain", Backend::Wgpu, 1e-4);
    check("rm", "decay_clip", Backend::Wgpu, 1e-4);
}
