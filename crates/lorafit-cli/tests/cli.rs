//! End-to-end runs of the `lorafit` binary: Contract 2's JSON, `--set`, model directories,
//! DeepSpeed files, and clear errors (exit code 2, no panic) on bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn lorafit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lorafit"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .output()
        .expect("run lorafit")
}

fn json(args: &[&str]) -> serde_json::Value {
    let out = lorafit(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

fn fails_with(args: &[&str], needle: &str) {
    let out = lorafit(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?} should fail cleanly; stderr: {err}"
    );
    assert!(
        err.contains(needle),
        "stderr `{err}` should mention `{needle}`"
    );
    assert!(!err.contains("panicked"), "{err}");
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lorafit-cli-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

#[test]
fn every_example_estimates_with_contract_fields() {
    for entry in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples"))
        .expect("examples")
    {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let p = path.to_string_lossy().to_string();
            let v = json(&["estimate", &p, "--json"]);
            for k in [
                "total_params",
                "trainable_params",
                "peak_allocated_bytes",
                "peak_reserved_bytes",
                "step_seconds",
                "fits",
            ] {
                assert!(v.get(k).is_some(), "{p}: {k}");
            }
            let b = &v["breakdown"];
            let sum: u64 = lorafit_core::memory::Breakdown::NAMES
                .iter()
                .map(|k| b[k].as_u64().expect("bytes are integers"))
                .sum();
            assert_eq!(sum, v["peak_reserved_bytes"].as_u64().expect("u64"), "{p}");
            // The lorafit stack: its parts add up where lorafit train runs the config, and
            // says why not elsewhere (the full fine-tune).
            let own = &v["lorafit_stack"];
            if p.contains("full") {
                assert!(own["unavailable"].as_str().is_some(), "{p}: {own}");
            } else {
                let part = |k: &str| {
                    own[k]
                        .as_u64()
                        .unwrap_or_else(|| panic!("{p}: {k} in {own}"))
                };
                assert_eq!(
                    part("weights_bytes") + part("adapter_bytes") + part("activation_bytes"),
                    part("peak_bytes"),
                    "{p}"
                );
            }
            // The table form works too.
            let out = lorafit(&["estimate", &p]);
            assert!(
                out.status.success()
                    && String::from_utf8_lossy(&out.stdout).contains("per-GPU memory")
            );
        }
    }
}

#[test]
fn set_overrides_the_file() {
    let a = json(&["estimate", "examples/qwen2.5-7b-qlora-4090.yaml", "--json"]);
    let b = json(&[
        "estimate",
        "examples/qwen2.5-7b-qlora-4090.yaml",
        "--json",
        "--set",
        "per_device_train_batch_size=8",
    ]);
    assert!(b["peak_reserved_bytes"].as_u64() > a["peak_reserved_bytes"].as_u64());
    let c = json(&[
        "estimate",
        "examples/qwen2.5-7b-qlora-4090.yaml",
        "--json",
        "--set",
        "gpu=H100-SXM",
    ]);
    assert_eq!(c["gpu"], "H100-SXM");
}

#[test]
fn a_model_directory_with_config_json_is_read() {
    let d = scratch("modeldir");
    let cfg = r#"{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","hidden_size":896,"intermediate_size":4864,
        "num_hidden_layers":24,"num_attention_heads":14,"num_key_value_heads":2,"vocab_size":151936,"tie_word_embeddings":true,
        "rope_theta":1000000.0,"max_position_embeddings":32768,"torch_dtype":"bfloat16"}"#;
    std::fs::write(d.join("config.json"), cfg).expect("write");
    let yaml = d.join("run.yaml");
    std::fs::write(
        &yaml,
        format!("model_name_or_path: {}\nbf16: true\n", d.display()),
    )
    .expect("write");
    let v = json(&["estimate", &yaml.to_string_lossy(), "--json"]);
    assert_eq!(v["total_params"], 494_032_768u64);
    assert_eq!(v["model_source"], "config_json");
    // A broken config.json is an error naming the problem.
    std::fs::write(d.join("config.json"), "{\"model_type\": \"qwen2\"").expect("write");
    fails_with(&["estimate", &yaml.to_string_lossy()], "not valid JSON");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn deepspeed_json_files_are_read() {
    let d = scratch("ds");
    std::fs::write(
        d.join("ds.json"),
        r#"{"zero_optimization":{"stage":3,"offload_optimizer":{"device":"cpu"}}}"#,
    )
    .expect("w");
    let yaml = d.join("run.yaml");
    std::fs::write(&yaml, "model_name_or_path: Qwen/Qwen2.5-7B\nfinetuning_type: full\nbf16: true\ndeepspeed: ds.json\nnum_gpus: 4\nper_device_train_batch_size: 1\n").expect("w");
    let v = json(&["estimate", &yaml.to_string_lossy(), "--json"]);
    assert!(v["host_ram_bytes"].as_u64().expect("u64") > 0);
    std::fs::write(
        &yaml,
        "model_name_or_path: Qwen/Qwen2.5-7B\nfinetuning_type: full\ndeepspeed: missing.json\n",
    )
    .expect("w");
    fails_with(
        &["estimate", &yaml.to_string_lossy()],
        "neither a readable file",
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn bad_input_is_a_clear_error() {
    fails_with(&["estimate", "no/such/file.yaml"], "cannot read config");
    let ex = "examples/qwen2.5-7b-qlora-4090.yaml";
    fails_with(
        &["estimate", ex, "--set", "per_device_train_batch_size=0"],
        "per_device_train_batch_size: 0",
    );
    fails_with(
        &["estimate", ex, "--set", "finetuning_type=full"],
        "quantization_bit needs finetuning_type: lora",
    );
    fails_with(
        &[
            "estimate",
            ex,
            "--set",
            "model_name_or_path=acme/NoSuchModel-7B",
        ],
        "unknown model",
    );
    fails_with(&["estimate", ex, "--set", "gpu=RTX-9999"], "unknown gpu");
    fails_with(&["estimate", ex, "--set", "lora_rank"], "key=value");
    let d = scratch("badyaml");
    std::fs::write(d.join("bad.yaml"), "model_name_or_path: [unclosed").expect("w");
    fails_with(
        &["estimate", &d.join("bad.yaml").to_string_lossy()],
        "does not parse",
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn unknown_keys_only_warn() {
    let d = scratch("unknown");
    std::fs::write(
        d.join("u.yaml"),
        "model_name_or_path: Qwen/Qwen2.5-0.5B\nsomething_new: 1\n",
    )
    .expect("w");
    let out = lorafit(&["estimate", &d.join("u.yaml").to_string_lossy(), "--json"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown key `something_new` ignored"));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn export_writes_llamafactory_yaml_and_deepspeed() {
    let out = lorafit(&["export", "examples/qwen2.5-7b-qlora-4090.yaml"]);
    let y = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && y.contains("quantization_bit: 4") && !y.contains("gpu:"),
        "{y}"
    );
    let out = lorafit(&[
        "export",
        "examples/qwen2.5-1.5b-full-zero3.yaml",
        "--deepspeed",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["zero_optimization"]["stage"], 3);
}

/// The bundled example end to end through the binary: random-weight model, alpaca data with the
/// qwen template, PEFT files, trainer_log.jsonl, training_loss.png, checkpoints; then Ctrl-C
/// (SIGINT) in a longer run saves a checkpoint, exits 130, and `resume_from_checkpoint` finishes it.
#[test]
fn train_example_then_interrupt_and_resume() {
    let dir = scratch("train");
    let model = dir.join("model");
    let out = lorafit(&[
        "random-model",
        "examples/tiny/model",
        model.to_str().expect("utf8"),
        "--seed",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(model.join("tokenizer.json").is_file());
    let model_s = format!("model_name_or_path={}", model.display());
    let out_dir = dir.join("run");
    let out_s = format!("output_dir={}", out_dir.display());
    let out = lorafit(&[
        "train",
        "examples/tiny/train.yaml",
        "--set",
        &model_s,
        "--set",
        &out_s,
        "--set",
        "max_steps=6",
        "--set",
        "save_steps=3",
        "--set",
        "logging_steps=2",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("estimate (lorafit-core"), "{err}");
    assert!(
        err.contains("lorafit train (this tool, f32): peak"),
        "{err}"
    );
    assert!(err.contains("peak memory: measured"), "{err}");
    for f in [
        "adapter_model.safetensors",
        "adapter_config.json",
        "trainer_log.jsonl",
        "training_loss.png",
        "checkpoint-3/optimizer.safetensors",
        "checkpoint-6/trainer_state.json",
    ] {
        assert!(out_dir.join(f).is_file(), "missing {f}; stderr: {err}");
    }
    let log = std::fs::read_to_string(out_dir.join("trainer_log.jsonl")).expect("log");
    let first: serde_json::Value =
        serde_json::from_str(log.lines().next().expect("a line")).expect("json");
    for key in [
        "current_steps",
        "total_steps",
        "loss",
        "lr",
        "epoch",
        "percentage",
        "elapsed_time",
        "remaining_time",
        "tokens_per_second",
    ] {
        assert!(
            first.get(key).is_some(),
            "trainer_log.jsonl lacks `{key}`: {first}"
        );
    }
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("adapter_config.json")).expect("cfg"),
    )
    .expect("json");
    assert_eq!(cfg["r"], 16);
    assert_eq!(cfg["peft_type"], "LORA");

    // Ctrl-C: a run long enough to interrupt.
    let run2 = dir.join("run2");
    let out2 = format!("output_dir={}", run2.display());
    // The interrupted run and its resumption take the same keys (the checkpoint checks them).
    let run2_args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["train", "examples/tiny/train.yaml"]
            .map(String::from)
            .to_vec();
        for kv in [
            model_s.as_str(),
            out2.as_str(),
            "logging_steps=1",
            "save_steps=1000",
            "max_steps=8",
            "per_device_train_batch_size=4",
        ]
        .into_iter()
        .chain(extra.iter().copied())
        {
            v.push("--set".into());
            v.push(kv.into());
        }
        v
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_lorafit"))
        .args(run2_args(&[]))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(stderr));
    let mut seen = String::new();
    for line in lines.by_ref() {
        let line = line.expect("line");
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("step 2/") {
            let ok = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .expect("kill");
            assert!(ok.success());
            break;
        }
    }
    for line in lines {
        seen.push_str(&line.expect("line"));
        seen.push('\n');
    }
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(seen.contains("resume with"), "{seen}");
    let ck = std::fs::read_dir(&run2)
        .expect("run2")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .find(|n| n.starts_with("checkpoint-"))
        .unwrap_or_else(|| panic!("no checkpoint after Ctrl-C: {seen}"));
    let n: u64 = ck.trim_start_matches("checkpoint-").parse().expect("step");
    let resume = run2_args(&["resume_from_checkpoint=true"]);
    let out = lorafit(&resume.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("resuming after step {n}")), "{err}");
    assert!(run2.join("adapter_model.safetensors").is_file());
    let log = std::fs::read_to_string(run2.join("trainer_log.jsonl")).expect("log");
    let last: serde_json::Value =
        serde_json::from_str(log.lines().last().expect("line")).expect("json");
    assert_eq!(last["current_steps"], last["total_steps"], "{last}");
    assert_eq!(
        log.lines().count() as u64,
        last["total_steps"].as_u64().expect("n"),
        "one log line per step after resume"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn train_rejects_bad_configs() {
    let dir = scratch("train-bad");
    let cfg = dir.join("c.yaml");
    std::fs::write(
        &cfg,
        "model_name_or_path: meta-llama/Llama-3.1-8B\ndataset: x\n",
    )
    .expect("write");
    fails_with(
        &["train", cfg.to_str().expect("utf8")],
        "needs a local checkpoint directory",
    );
    std::fs::write(&cfg, "model_name_or_path: examples/tiny/model\ndataset: arith\ndataset_dir: examples/tiny/data\nquantization_bit: 3\n").expect("write");
    fails_with(
        &["train", cfg.to_str().expect("utf8")],
        "`quantization_bit: 3` is not allowed: one of 4, 8",
    );
    std::fs::write(&cfg, "model_name_or_path: examples/tiny/model\ndataset: arith\ndataset_dir: examples/tiny/data\nmask_history: true\ntrain_on_prompt: true\n").expect("write");
    fails_with(
        &["train", cfg.to_str().expect("utf8")],
        "`mask_history: true` and `train_on_prompt: true` exclude each other",
    );
    std::fs::write(&cfg, "model_name_or_path: examples/tiny/model\ndataset: arith\ndataset_dir: examples/tiny/data\nlr_scheduler_type: wavy\n").expect("write");
    fails_with(&["train", cfg.to_str().expect("utf8")], "lr_scheduler_type");
    // A schedule transformers has but lorafit train does not run is refused by the trainer.
    std::fs::write(&cfg, "model_name_or_path: examples/tiny/model\ndataset: arith\ndataset_dir: examples/tiny/data\nlr_scheduler_type: cosine_with_min_lr\n").expect("write");
    fails_with(
        &["train", cfg.to_str().expect("utf8")],
        "`lr_scheduler_type: cosine_with_min_lr` is not one of",
    );
    // Stages and methods `lorafit estimate` knows but the trainer does not run.
    for (key, needle) in [
        (
            "stage: ppo\nreward_model: saves/rm",
            "lorafit train runs pretraining (pt), supervised fine-tuning (sft), reward modelling (rm), DPO (dpo) and KTO (kto)",
        ),
        (
            "stage: dpo\npref_loss: orpo",
            "lorafit train runs DPO's sigmoid loss",
        ),
        (
            "use_galore: true\nfinetuning_type: full",
            "`use_galore: true`: lorafit train implements adamw_torch",
        ),
        ("loraplus_lr_ratio: 16", "one learning rate for A and B"),
        (
            "finetuning_type: oft",
            "`finetuning_type: oft`: lorafit train runs LoRA",
        ),
        (
            "optim: sgd",
            "`optim: sgd`: lorafit train implements adamw_torch",
        ),
        (
            "quantization_bit: 4\nquantization_method: hqq",
            "quantization_method: bnb",
        ),
        (
            "add_special_tokens: <|tool|>",
            "keeps the checkpoint's vocabulary and tokenizer",
        ),
        (
            "additional_target: embed_tokens",
            "PEFT's modules_to_save is not implemented",
        ),
        ("resize_vocab: true", "modules_to_save"),
    ] {
        std::fs::write(&cfg, format!("model_name_or_path: examples/tiny/model\ndataset: arith\ndataset_dir: examples/tiny/data\n{key}\n")).expect("write");
        fails_with(&["train", cfg.to_str().expect("utf8")], needle);
    }
    // examples/tiny/model has a config but no weights.
    std::fs::write(&cfg, "model_name_or_path: examples/tiny/model\ndataset: arith\ndataset_dir: examples/tiny/data\nbackend: ndarray\n").expect("write");
    fails_with(
        &["train", cfg.to_str().expect("utf8")],
        "neither model.safetensors nor model.safetensors.index.json",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------- LLaMA-Factory-style configs (tests/configs/)

const GIB: f64 = (1u64 << 30) as f64;

fn config(name: &str) -> serde_json::Value {
    json(&[
        "estimate",
        &format!("crates/lorafit-cli/tests/configs/{name}.yaml"),
        "--json",
    ])
}

fn part(v: &serde_json::Value, name: &str) -> f64 {
    match name {
        "trainable" => v["trainable_params"].as_f64(),
        "peak" => v["peak_reserved_bytes"].as_f64(),
        "host" => v["host_ram_bytes"].as_f64(),
        _ => v["breakdown"][name].as_f64(),
    }
    .unwrap_or_else(|| panic!("no {name} in {v}"))
}

/// `part(a) − part(b)` equals `expected` bytes (or counts) within `tol` relative.
fn differs_by(a: &serde_json::Value, b: &serde_json::Value, name: &str, expected: f64, tol: f64) {
    let d = part(a, name) - part(b, name);
    assert!(
        (d - expected).abs() <= tol * expected.abs().max(1.0),
        "{name}: difference {d} expected {expected}"
    );
}

#[test]
fn llamafactory_style_configs_estimate_as_worked_out() {
    // Llama-3.1-8B: 8,030,261,248 parameters, hidden 4096, 32 layers, vocabulary 128,256,
    // batch 1 × 1024 tokens, bf16, gradient checkpointing, LoRA r8 on all 7 linears.
    let (total, vocab, h) = (8_030_261_248.0, 128_256.0, 4096.0);
    let tokens = 1024.0;
    let sft = config("sft_lora");
    let sft2 = config("sft_lora_batch2");
    assert_eq!(part(&sft, "trainable"), 20_971_520.0);

    // pt is sft's memory; LoRA+ and PiSSA change no byte.
    for same in ["pt_lora", "loraplus", "pissa", "syntax_mappings"] {
        assert_eq!(config(same)["breakdown"], sft["breakdown"], "{same}");
    }
    // flash_attn spellings: v1's flash_attention_2 is fa2.
    assert_eq!(
        config("syntax_mappings")["breakdown"],
        config("flash_fa2")["breakdown"]
    );

    // DPO with LoRA: chosen + rejected = sft at twice the batch, plus the reference forward
    // (adapter disabled, no copy) — bf16 logits, their fp32 copy and the log-softmax (10 B each).
    let dpo = config("dpo_lora");
    assert_eq!(dpo["breakdown"]["weights"], sft["breakdown"]["weights"]);
    assert_eq!(
        dpo["breakdown"]["activations"],
        sft2["breakdown"]["activations"]
    );
    differs_by(&dpo, &sft2, "logits", 10.0 * 2.0 * tokens * vocab, 1e-6);
    // KTO: the policy's batch keeps gradients, its KL half and the reference run without.
    let kto = config("kto_lora");
    assert_eq!(
        kto["breakdown"]["activations"],
        sft["breakdown"]["activations"]
    );
    differs_by(&kto, &sft, "logits", 10.0 * tokens * vocab, 1e-6);
    // Reward model: 2 sequences, a value head (h + 1 trained), logits made but not in the loss.
    let rm = config("rm_lora");
    differs_by(&rm, &sft, "trainable", h + 1.0, 0.0);
    assert_eq!(
        rm["breakdown"]["activations"],
        sft2["breakdown"]["activations"]
    );
    assert!((part(&rm, "logits") - 6.0 * 2.0 * tokens * vocab).abs() < 1e3);

    // DPO full fine-tuning adds a frozen bf16 reference copy; simpo (reference-free) does not.
    let full = config("sft_full");
    differs_by(&config("dpo_full"), &full, "weights", 2.0 * total, 1e-9);
    assert_eq!(
        config("dpo_full_simpo")["breakdown"]["weights"],
        full["breakdown"]["weights"]
    );

    // Offload: ZeRO-3 offload moves the optimizer off the GPU into host RAM: fp32 master, m and
    // v (12 B) + bf16 gradients (2 B) + bf16 parameters (2 B) per parameter.
    let z3 = config("z3_full");
    let z3o = config("z3_offload_full");
    assert_eq!(part(&z3o, "optimizer"), 0.0);
    assert!(part(&z3, "optimizer") > 10.0 * GIB);
    assert!((part(&z3o, "host") - 16.0 * total).abs() < 1e6);
    assert!(part(&z3o, "peak") < part(&z3, "peak"));
    // FSDP from an accelerate config (4 processes, FULL_SHARD): a quarter of the fp32 states and
    // gradients per GPU.
    let fsdp = config("fsdp_full");
    assert_eq!(fsdp["num_gpus"], 4);
    assert!((part(&fsdp, "gradients") - 4.0 * total / 4.0).abs() < 1e6);

    // Optimizers: Adam-mini keeps one fp32 state; GaLore r128 projects the 2-D states;
    // layer-wise APOLLO holds no gradients; BAdam updates one layer (218,112,000 parameters).
    let adam = part(&config("sft_full"), "optimizer");
    let mini = part(&config("adam_mini_full"), "optimizer");
    assert!((mini - 4.0 * total).abs() < 1e6, "{mini}");
    assert!(adam > 2.9 * mini);
    let galore = config("galore_full");
    assert!(part(&galore, "optimizer") < 0.2 * adam);
    assert_eq!(part(&config("apollo_full_layerwise"), "gradients"), 0.0);
    let badam = config("badam_full");
    assert!((part(&badam, "gradients") - 4.0 * 218_112_000.0).abs() < 1e3);
    let muon = part(&config("muon_full"), "optimizer");
    // Muon: one state for the 6.98 B hidden matrices, two for the 1.05 B others.
    assert!(
        (muon - 4.0 * (total + 1_050_939_392.0)).abs() < 1e7,
        "{muon}"
    );

    // OFT with block 32: in/32 blocks of 32·31/2 per module; Σ in = 6·4096 + 14336 per layer.
    assert_eq!(
        part(&config("oft"), "trainable"),
        32.0 * (6.0 * 4096.0 + 14336.0) / 32.0 * 496.0
    );
    // Freeze: the mlp of 2 layers + the embedding table.
    assert_eq!(
        part(&config("freeze_modules"), "trainable"),
        2.0 * 3.0 * 4096.0 * 14336.0 + vocab * h
    );
    // Quantization methods: bitsandbytes NF4 < HQQ 4-bit < EETQ int8 < bf16.
    let (nf4, hqq, eetq) = (
        part(&config("qlora_bnb"), "weights"),
        part(&config("qlora_hqq"), "weights"),
        part(&config("lora_eetq8"), "weights"),
    );
    assert!(nf4 < hqq && hqq < eetq && eetq < part(&sft, "weights"));
    // Liger's fused linear cross-entropy drops the logits for sft; DPO needs them, so none.
    assert!(part(&config("liger_sft"), "peak") < part(&sft, "peak") - GIB);
    assert_eq!(config("liger_dpo")["breakdown"], dpo["breakdown"]);
    // Unsloth's gradient checkpointing moves the checkpoints to host RAM.
    let uns = config("unsloth_gc");
    assert!((part(&uns, "host") - 32.0 * tokens * h * 2.0).abs() < 1.0);
    assert!(part(&uns, "activations") < part(&sft, "activations"));

    // v1 nested configs read into the same keys as their flat equivalents.
    for (v1, v0) in [
        ("v1_lora_sft", "v1_equivalent_v0"),
        ("v1_qlora", "v1_qlora_equivalent_v0"),
    ] {
        let (a, b) = (config(v1), config(v0));
        assert_eq!(a["breakdown"], b["breakdown"], "{v1}");
        assert_eq!(a["trainable_params"], b["trainable_params"], "{v1}");
    }
}

#[test]
fn unmodelled_features_warn_and_conflicts_are_errors() {
    let out = lorafit(&[
        "estimate",
        "crates/lorafit-cli/tests/configs/sft_lora.yaml",
        "--set",
        "fp8=true",
        "--set",
        "freeze_vision_tower=true",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("fp8: FP8 matmuls are not modelled"), "{text}");
    assert!(text.contains("freeze_vision_tower"), "{text}");
    let f = "crates/lorafit-cli/tests/configs/sft_lora.yaml";
    fails_with(
        &["estimate", f, "--set", "use_galore=true"],
        "use_galore / use_apollo / use_badam need finetuning_type full or freeze",
    );
    fails_with(
        &[
            "estimate",
            f,
            "--set",
            "finetuning_type=full",
            "--set",
            "use_dora=true",
        ],
        "`use_dora` is only valid with finetuning_type: lora",
    );
    fails_with(
        &["estimate", f, "--set", "stage=grpo"],
        "one of pt, sft, rm, ppo, dpo, kto",
    );
    fails_with(
        &["estimate", f, "--set", "pref_loss=magic"],
        "one of sigmoid, hinge, ipo, kto_pair, orpo, simpo",
    );
    fails_with(
        &["estimate", f, "--set", "val_size=lots"],
        "`val_size: lots` is not allowed: a number",
    );
    fails_with(&["estimate", f, "--set", "stage=ppo"], "reward_model");
}

// --------------------------------------------------- hub caches, variants, pre-quantized

/// `lorafit` with a temporary HOME (and no cache variables from the machine).
fn lorafit_home(home: &Path, extra_env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lorafit"));
    cmd.args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .env("HOME", home);
    for k in [
        "HF_HOME",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "XDG_CACHE_HOME",
        "MODELSCOPE_CACHE",
        "USE_MODELSCOPE_HUB",
    ] {
        cmd.env_remove(k);
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.output().expect("run lorafit")
}

#[test]
fn hub_ids_resolve_from_the_hf_and_modelscope_caches_before_the_catalog() {
    let home = scratch("hub-home");
    // A Qwen2.5-0.5B-shaped config under an id the catalog does not have, and one under a
    // catalog id with a different shape (the cache must win).
    let cfg = |layers: u64| {
        format!(
            r#"{{"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": {layers},
               "num_attention_heads": 14, "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": true}}"#
        )
    };
    let hf = home.join(".cache/huggingface/hub/models--acme--tiny-qwen");
    std::fs::create_dir_all(hf.join("snapshots/abc123")).expect("mkdir");
    std::fs::create_dir_all(hf.join("refs")).expect("mkdir");
    std::fs::write(hf.join("refs/main"), "abc123\n").expect("ref");
    std::fs::write(hf.join("snapshots/abc123/config.json"), cfg(24)).expect("cfg");
    let ms = home.join(".cache/modelscope/hub/models/acme/ms-only");
    std::fs::create_dir_all(&ms).expect("mkdir");
    std::fs::write(ms.join("config.json"), cfg(12)).expect("cfg");
    let over = home.join(".cache/huggingface/hub/models--Qwen--Qwen2.5-7B/snapshots/r1");
    std::fs::create_dir_all(&over).expect("mkdir");
    std::fs::write(over.join("config.json"), cfg(2)).expect("cfg");
    let yaml = home.join("c.yaml");
    let run = |model: &str, env: &[(&str, &Path)]| {
        std::fs::write(
            &yaml,
            format!("model_name_or_path: {model}\nfinetuning_type: lora\nbf16: true\n"),
        )
        .expect("yaml");
        let out = lorafit_home(
            &home,
            env,
            &["estimate", yaml.to_str().expect("utf8"), "--json"],
        );
        assert!(
            out.status.success(),
            "{model}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        (v, String::from_utf8_lossy(&out.stderr).to_string())
    };
    // 24 layers of Qwen2.5-0.5B: 494,032,768 parameters.
    let (v, err) = run("acme/tiny-qwen", &[]);
    assert_eq!(v["total_params"], 494_032_768);
    assert_eq!(v["model_source"], "config_json");
    assert!(
        v["model_config_path"]
            .as_str()
            .is_some_and(|p| p.ends_with("models--acme--tiny-qwen/snapshots/abc123/config.json")),
        "{v}"
    );
    assert!(err.contains("from the Hugging Face cache"), "{err}");
    // ModelScope's cache (newer `models/ORG/NAME` layout).
    let (v, err) = run("acme/ms-only", &[]);
    assert!(err.contains("from the ModelScope cache"), "{err}");
    let layer = (494_032_768 - 151_936 * 896 - 896) / 24;
    assert_eq!(v["total_params"], 151_936 * 896 + 896 + 12 * layer);
    // A cached catalog id wins over the catalog; HF_HUB_CACHE elsewhere hides it again.
    let (v, _) = run("Qwen/Qwen2.5-7B", &[]);
    assert_eq!(v["total_params"], 151_936 * 896 + 896 + 2 * layer);
    let empty = scratch("hub-empty");
    let (v, _) = run("Qwen/Qwen2.5-7B", &[("HF_HUB_CACHE", &empty)]);
    assert_eq!(v["model_source"], "catalog");
    assert_eq!(v["total_params"], 7_615_616_512u64);
    // MODELSCOPE_CACHE moves ModelScope's root; USE_MODELSCOPE_HUB puts it first.
    let msroot = scratch("hub-ms");
    std::fs::create_dir_all(msroot.join("acme/tiny-qwen")).expect("mkdir");
    std::fs::write(msroot.join("acme/tiny-qwen/config.json"), cfg(6)).expect("cfg");
    let (v, err) = run(
        "acme/tiny-qwen",
        &[
            ("MODELSCOPE_CACHE", &msroot),
            ("USE_MODELSCOPE_HUB", Path::new("1")),
        ],
    );
    assert!(err.contains("ModelScope"), "{err}");
    assert_eq!(v["total_params"], 151_936 * 896 + 896 + 6 * layer);
    for d in [home, empty, msroot] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn variants_and_prequantized_checkpoints() {
    let dir = scratch("variants");
    let yaml = dir.join("c.yaml");
    let est = |model: &str, extra: &str| {
        std::fs::write(
            &yaml,
            format!("model_name_or_path: {model}\nfinetuning_type: lora\nbf16: true\n{extra}"),
        )
        .expect("yaml");
        json(&["estimate", yaml.to_str().expect("utf8"), "--json"])
    };
    // LLaMA-Factory's example ids are catalog ids now, with their base's shape.
    for (variant, base) in [
        ("Qwen/Qwen3-4B-Instruct-2507", "Qwen/Qwen3-4B"),
        (
            "meta-llama/Meta-Llama-3-8B-Instruct",
            "meta-llama/Meta-Llama-3-8B",
        ),
        ("Qwen/Qwen2-1.5B-Instruct", "Qwen/Qwen2-1.5B"),
    ] {
        assert_eq!(
            est(variant, "")["breakdown"],
            est(base, "")["breakdown"],
            "{variant}"
        );
    }
    // AWQ / GPTQ 4-bit with group 128: 0.5 + 2.5/128 bytes per linear weight of the 6.98 B
    // decoder linears; bnb NF4 + double quant: 0.5 + 1.0156/64.
    let bf16 = est("meta-llama/Meta-Llama-3-8B", "");
    let awq = est("TechxGenus/Meta-Llama-3-8B-Instruct-AWQ", "");
    let linears = 6_979_321_856.0;
    let saved = bf16["breakdown"]["weights"].as_f64().expect("w")
        - awq["breakdown"]["weights"].as_f64().expect("w");
    assert!(
        (saved - linears * (2.0 - 0.5 - 2.5 / 128.0)).abs() < 1e4,
        "{saved}"
    );
    let bnb = est("unsloth/llama-3-8b-bnb-4bit", "");
    let qlora = est("meta-llama/Meta-Llama-3-8B", "quantization_bit: 4\n");
    assert_eq!(bnb["breakdown"]["weights"], qlora["breakdown"]["weights"]);
    // quantization_bit on a pre-quantized checkpoint is ignored, as in LLaMA-Factory.
    let both = est(
        "TechxGenus/Meta-Llama-3-8B-Instruct-GPTQ",
        "quantization_bit: 4\n",
    );
    assert!(
        both["warnings"].as_array().expect("w").iter().any(|w| w
            .as_str()
            .is_some_and(|w| w.contains("quantization_bit is ignored"))),
        "{both}"
    );
    // Full fine-tuning of a quantized checkpoint is refused.
    std::fs::write(
        &yaml,
        "model_name_or_path: Qwen/Qwen2.5-7B-Instruct-AWQ\nfinetuning_type: full\n",
    )
    .expect("yaml");
    fails_with(
        &["estimate", yaml.to_str().expect("utf8")],
        "pre-quantized (quant_method awq): train it with finetuning_type lora or oft",
    );
    // A config.json that carries its own quantization_config.
    let model = dir.join("gptq-model");
    std::fs::create_dir_all(&model).expect("mkdir");
    let cfg = serde_json::json!({
        "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "vocab_size": 128256, "tie_word_embeddings": false,
        "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": 128}
    });
    std::fs::write(model.join("config.json"), cfg.to_string()).expect("cfg");
    let local = est(model.to_str().expect("utf8"), "");
    assert_eq!(local["breakdown"]["weights"], awq["breakdown"]["weights"]);
    // `lorafit models --family` filters; an unknown family lists the families.
    let out = lorafit(&["models", "--family", "qwen3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Qwen/Qwen3-4B-Instruct-2507") && !text.contains("Llama"),
        "{text}"
    );
    assert!(text.lines().count() >= 20, "{text}");
    let all = lorafit(&["models"]);
    assert!(String::from_utf8_lossy(&all.stdout).lines().count() >= 220);
    fails_with(&["models", "--family", "nope"], "families: Llama 2");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A dataset-aware estimate: with the model's tokenizer beside its config.json, `lorafit
/// estimate` reads the data through lorafit-data. A short dataset at cutoff_len 2048 has a lower
/// peak than the cutoff-length estimate, and exactly the estimate at its longest micro-batch.
#[test]
fn short_dataset_lowers_the_peak_to_its_longest_batch() {
    let dir = scratch("dataset-aware");
    let model = dir.join("m");
    std::fs::create_dir_all(&model).expect("dir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(
            root.join("lorafit-data/tests/fixtures/tok").join(f),
            model.join(f),
        )
        .expect("copy");
    }
    let mut cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("lorafit-train/tests/fixtures/llama/config.json"))
            .expect("config"),
    )
    .expect("json");
    cfg["vocab_size"] = 1300.into();
    std::fs::write(model.join("config.json"), cfg.to_string()).expect("write");
    let data = root.join("lorafit-data/tests/fixtures/data");
    let yaml = dir.join("c.yaml");
    std::fs::write(
        &yaml,
        format!(
            "model_name_or_path: {}\nstage: sft\nfinetuning_type: lora\ndataset: alpaca_en_demo,glaive_toolcall_en_demo\n\
             dataset_dir: {}\ntemplate: qwen3\ncutoff_len: 2048\nper_device_train_batch_size: 2\ngpu: H100-SXM\n",
            model.display(),
            data.display()
        ),
    )
    .expect("write");
    let y = yaml.display().to_string();
    let with_data = json(&["estimate", &y, "--json"]);
    let d = &with_data["dataset"];
    assert_eq!(d["examples"], 7, "{d}");
    let longest = d["longest_batch_tokens"].as_u64().expect("longest");
    assert!(
        longest < 2048
            && longest.is_multiple_of(8)
            && longest >= d["max_tokens"].as_u64().expect("max"),
        "{d}"
    );
    assert_eq!(d["truncated"], 0);
    let at_cutoff = json(&["estimate", &y, "--json", "--no-data"]);
    let at_longest = json(&[
        "estimate",
        &y,
        "--json",
        "--no-data",
        "--set",
        &format!("cutoff_len={longest}"),
    ]);
    let peak = |v: &serde_json::Value| v["peak_reserved_bytes"].as_u64().expect("peak");
    assert!(
        peak(&with_data) < peak(&at_cutoff),
        "{} vs {}",
        peak(&with_data),
        peak(&at_cutoff)
    );
    assert_eq!(peak(&with_data), peak(&at_longest));
    assert!(with_data["total_seconds"].as_f64().expect("time") > 0.0);
    // A cutoff below the longest example truncates, and says how many.
    let short = json(&["estimate", &y, "--json", "--set", "cutoff_len=64"]);
    assert!(
        short["dataset"]["truncated"].as_u64().expect("truncated") > 0,
        "{}",
        short["dataset"]
    );
    assert!(short["dataset"]["max_tokens"].as_u64().expect("max") <= 64);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `lorafit export` of a config with `export_dir` merges the adapter (as `llamafactory-cli export`).
#[test]
fn export_with_export_dir_merges_the_adapter() {
    let dir = scratch("export-merge");
    let fx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lorafit-train/tests/fixtures");
    let yaml = dir.join("merge.yaml");
    let out = dir.join("merged");
    std::fs::write(
        &yaml,
        format!(
            "model_name_or_path: {}\nadapter_name_or_path: {}\ntemplate: llama3\nfinetuning_type: lora\nexport_dir: {}\nexport_size: 5\n",
            fx.join("llama").display(),
            fx.join("merge/lora").display(),
            out.display()
        ),
    )
    .expect("write");
    let o = lorafit(&["export", &yaml.display().to_string()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("merged 6 of 21 tensors"));
    assert!(out.join("model.safetensors").is_file() && out.join("config.json").is_file());
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        format!(
            "model_name_or_path: {}\nexport_dir: {}\n",
            fx.join("llama").display(),
            out.display()
        ),
    )
    .expect("write");
    fails_with(
        &["export", &bad.display().to_string()],
        "`adapter_name_or_path` is missing",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A random llama under `dir/model` whose vocabulary is lorafit-data's fixture tokenizer's (the
/// tokenizer files beside it).
fn random_model_with_fixture_tokenizer(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let src = dir.join("src");
    std::fs::create_dir_all(&src).expect("dir");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(
            root.join("lorafit-data/tests/fixtures/tok").join(f),
            src.join(f),
        )
        .expect("copy");
    }
    let mut cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("lorafit-train/tests/fixtures/llama/config.json"))
            .expect("config"),
    )
    .expect("json");
    cfg["vocab_size"] = 1300.into();
    std::fs::write(src.join("config.json"), cfg.to_string()).expect("write");
    let model = dir.join("model");
    let o = lorafit(&[
        "random-model",
        &src.display().to_string(),
        &model.display().to_string(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    model
}

/// `stage: rm` end to end: the value head is saved beside the adapter and in each checkpoint, a
/// run resumed from checkpoint-2 ends with the same value head and adapter as the uninterrupted
/// run, and `lorafit export` of the reward model copies the value head as LLaMA-Factory does.
#[test]
fn reward_model_trains_resumes_and_exports() {
    let dir = scratch("rm");
    let model = random_model_with_fixture_tokenizer(&dir);
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lorafit-data/tests/fixtures/data");
    let out = dir.join("out");
    let yaml = dir.join("rm.yaml");
    std::fs::write(
        &yaml,
        format!(
            "model_name_or_path: {}\nstage: rm\nfinetuning_type: lora\nlora_rank: 4\n\
             dataset: dpo_en_demo,dpo_zh_demo\ndataset_dir: {}\ntemplate: qwen3\ncutoff_len: 256\n\
             per_device_train_batch_size: 2\nmax_steps: 4\nsave_steps: 2\nlearning_rate: 1.0e-3\n\
             output_dir: {}\nbackend: ndarray\nplot_loss: false\n",
            model.display(),
            data.display(),
            out.display()
        ),
    )
    .expect("write");
    let y = yaml.display().to_string();
    let o = lorafit(&["train", &y]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in [
        "value_head.safetensors",
        "adapter_model.safetensors",
        "checkpoint-2/value_head.safetensors",
    ] {
        assert!(out.join(f).is_file(), "{f} is written");
    }
    let head = std::fs::read(out.join("value_head.safetensors")).expect("head");
    let adapter = std::fs::read(out.join("adapter_model.safetensors")).expect("adapter");
    // Interrupted after step 2: drop what came later and resume.
    std::fs::remove_dir_all(out.join("checkpoint-4")).expect("rm checkpoint-4");
    std::fs::remove_file(out.join("value_head.safetensors")).expect("rm head");
    let o = lorafit(&["train", &y, "--set", "resume_from_checkpoint=true"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(out.join("value_head.safetensors")).expect("head"),
        head,
        "the resumed run ends with the uninterrupted run's value head"
    );
    assert_eq!(
        std::fs::read(out.join("adapter_model.safetensors")).expect("adapter"),
        adapter
    );
    let merge = dir.join("merge.yaml");
    let export = dir.join("export");
    std::fs::write(
        &merge,
        format!(
            "model_name_or_path: {}\nadapter_name_or_path: {}\nstage: rm\ntemplate: qwen3\n\
             finetuning_type: lora\nexport_dir: {}\n",
            model.display(),
            out.display(),
            export.display()
        ),
    )
    .expect("write");
    let o = lorafit(&["export", &merge.display().to_string()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(export.join("value_head.safetensors")).expect("copied"),
        head
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `lorafit chat` answers a prompt through the template (a random model, so the answer is noise;
/// the decoding itself is checked against transformers in lorafit-train's tests/merge.rs).
#[test]
fn chat_answers_through_the_template() {
    let dir = scratch("chat");
    let model = random_model_with_fixture_tokenizer(&dir);
    let yaml = dir.join("chat.yaml");
    std::fs::write(
        &yaml,
        format!("model_name_or_path: {}\ntemplate: qwen3\n", model.display()),
    )
    .expect("write");
    let y = yaml.display().to_string();
    let chat = |extra: &[&str]| {
        let mut args = vec![
            "chat",
            y.as_str(),
            "--prompt",
            "你好",
            "--max-new-tokens",
            "6",
        ];
        args.extend_from_slice(extra);
        let o = lorafit(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (
            String::from_utf8_lossy(&o.stdout).to_string(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    // LLaMA-Factory's defaults: sampling at temperature 0.95, top_p 0.7, top_k 50; the seed
    // repeats the draw.
    let (a, err) = chat(&[]);
    assert!(
        err.contains("prompt tokens")
            && err.contains("sampling: temperature 0.95, top_p 0.7, top_k 50"),
        "{err}"
    );
    assert_eq!(chat(&[]).0, a, "the same seed draws the same answer");
    let (greedy, err) = chat(&["--set", "do_sample=false"]);
    assert!(
        err.contains("generated in") && err.contains(", greedy)"),
        "{err}"
    );
    // temperature 0 means greedy, as LLaMA-Factory's chat engine says.
    assert_eq!(chat(&["--set", "temperature=0"]).0, greedy);
    fails_with(
        &["chat", &y, "--prompt", "hi", "--set", "num_beams=2"],
        "beam search is not implemented",
    );
    fails_with(
        &["chat", &y, "--prompt", "hi", "--set", "top_p=1.5"],
        "`top_p: 1.5` is out of range",
    );
    // The conversation on standard input: `clear` forgets the history, so the same message then
    // gets the same greedy answer as the first time; `exit` ends.
    let mut child = Command::new(env!("CARGO_BIN_EXE_lorafit"))
        .arg("chat")
        .args([
            y.as_str(),
            "--set",
            "do_sample=false",
            "--max-new-tokens",
            "6",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn chat");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin
            .write_all("你好\nmore\nclear\n你好\nexit\nnever read\n".as_bytes())
            .expect("write stdin");
    }
    let o = child.wait_with_output().expect("chat output");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    // Three answers (each ends with a newline): the first and the last are the greedy answer.
    assert!(
        out.starts_with(&greedy) && out.ends_with(&greedy) && out.len() > 2 * greedy.len(),
        "after clear the history is gone: {out:?} vs {greedy:?}"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("History has been removed."), "{err}");
    std::fs::write(&yaml, format!("model_name_or_path: {}\n", model.display())).expect("write");
    fails_with(
        &["chat", &yaml.display().to_string(), "--prompt", "hi"],
        "`template` is missing",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_multimodal_datasets_images_and_videos_are_read_from_their_headers() {
    // LLaMA-Factory's mllm_video_demo shape, with real files (written by PyAV / Pillow:
    // scripts/make_media_fixtures.py) under media_dir: the row with the most tokens counts.
    let d = scratch("mllm-media");
    let media = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lorafit-data/tests/fixtures/media");
    std::fs::create_dir_all(d.join("data/clips")).expect("data dir");
    for f in ["a.png", "a.jpg", "clip.avi", "moov_at_end.mp4"] {
        std::fs::copy(media.join(f), d.join("data/clips").join(f)).expect("copy");
    }
    std::fs::write(
        d.join("data/dataset_info.json"),
        r#"{"mm": {"file_name": "mm.json", "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images", "videos": "videos"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}}"#,
    )
    .expect("dataset_info");
    let turn = |q: &str| {
        format!(
            r#"[{{"role": "user", "content": "{q}"}}, {{"role": "assistant", "content": "ok"}}]"#
        )
    };
    std::fs::write(
        d.join("data/mm.json"),
        format!(
            r#"[{{"messages": {}, "images": ["clips/a.png"], "videos": ["clips/clip.avi"]}},
               {{"messages": {}, "videos": [["clips/a.jpg", "clips/a.png", "clips/a.jpg"]]}},
               {{"messages": {}, "videos": ["clips/moov_at_end.mp4"]}},
               {{"messages": {}, "images": ["clips/gone.png"]}}]"#,
            turn("<image><video>"),
            turn("<video>"),
            turn("<video>"),
            turn("<image>")
        ),
    )
    .expect("rows");
    let cfg = d.join("vl.yaml");
    std::fs::write(
        &cfg,
        "model_name_or_path: Qwen/Qwen2.5-VL-7B-Instruct\nstage: sft\nfinetuning_type: lora\ndataset: mm\nbf16: true\ncutoff_len: 1024\n",
    )
    .expect("config");
    let out = lorafit(&["estimate", cfg.to_str().expect("utf-8"), "--json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("1 image(s) and 3 video(s) in 4 rows") && err.contains("gone.png"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    // Row 1 wins: a 53 × 37 PNG → 4 × 6 patches (6 pads + start/end); the 40 × 30, 2.5 s, 12 fps
    // AVI → 5 frames at video_fps 2, made 6 → 3 × 4 × 6 patches (18 pads + start/end).
    let vis = &v["vision"];
    assert_eq!(
        (
            vis["images_per_sample"].as_u64(),
            vis["image_tokens_per_sample"].as_u64(),
            vis["videos_per_sample"].as_u64(),
            vis["video_tokens_per_sample"].as_u64(),
            vis["video_frames"].as_u64(),
            vis["tower_patches_per_sample"].as_u64()
        ),
        (Some(1), Some(8), Some(1), Some(20), Some(6), Some(24 + 72)),
        "{vis}"
    );
    // An explicit key wins over the files.
    let v = json(&[
        "estimate",
        cfg.to_str().expect("utf-8"),
        "--json",
        "--set",
        "videos_per_sample=1",
    ]);
    assert_eq!(v["vision"]["video_tokens_per_sample"], 812);
    // InternVL with crop_to_patches: the 53 × 37 PNG (aspect 1.43) takes the 3 × 2 grid + a
    // thumbnail = 7 tiles of 256 tokens inside <img></img>; the AVI's 5 frames (no even count
    // outside the Qwen plugins) are a tile each, labelled `Frame1: ` … and joined by newlines:
    // 5 × 256 + 5 × 6 + 4.
    let internvl = d.join("internvl.yaml");
    std::fs::write(
        &internvl,
        "model_name_or_path: OpenGVLab/InternVL3-1B-hf\nstage: sft\nfinetuning_type: lora\ndataset: mm\nbf16: true\ncutoff_len: 4096\ncrop_to_patches: true\n",
    )
    .expect("config");
    let v = json(&["estimate", internvl.to_str().expect("utf-8"), "--json"]);
    let vis = &v["vision"];
    assert_eq!(
        (
            vis["image_tokens_per_sample"].as_u64(),
            vis["video_tokens_per_sample"].as_u64(),
            vis["video_frames"].as_u64(),
            vis["tower_patches_per_sample"].as_u64()
        ),
        (
            Some(7 * 256 + 2),
            Some(5 * 256 + 34),
            Some(5),
            Some(12 * 1025)
        ),
        "{vis}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn an_audio_datasets_audios_are_read_from_their_headers() {
    // LLaMA-Factory's mllm_audio_demo shape (sharegpt messages with `<audio>` and an `audios`
    // column) with real files (scripts/make_audio_fixtures.py): the row with the most audio
    // tokens counts.
    let d = scratch("mllm-audio");
    let audio = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lorafit-data/tests/fixtures/audio");
    std::fs::create_dir_all(d.join("data/sounds")).expect("data dir");
    for f in ["stereo44k.flac", "vbr16k.mp3", "speech.opus"] {
        std::fs::copy(audio.join(f), d.join("data/sounds").join(f)).expect("copy");
    }
    std::fs::write(
        d.join("data/dataset_info.json"),
        r#"{"mllm_audio_demo": {"file_name": "mllm_audio_demo.json", "formatting": "sharegpt",
            "columns": {"messages": "messages", "audios": "audios"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}}"#,
    )
    .expect("dataset_info");
    let turn = |q: &str| {
        format!(
            r#"[{{"role": "user", "content": "{q}What's that sound?"}}, {{"role": "assistant", "content": "Glass."}}]"#
        )
    };
    std::fs::write(
        d.join("data/mllm_audio_demo.json"),
        format!(
            r#"[{{"messages": {}, "audios": ["sounds/stereo44k.flac"]}},
               {{"messages": {}, "audios": ["sounds/vbr16k.mp3", "sounds/speech.opus"]}},
               {{"messages": {}, "audios": ["sounds/missing.wav"]}}]"#,
            turn("<audio>"),
            turn("<audio><audio>"),
            turn("<audio>")
        ),
    )
    .expect("rows");
    let cfg = d.join("audio.yaml");
    std::fs::write(
        &cfg,
        "model_name_or_path: Qwen/Qwen2-Audio-7B-Instruct\nstage: sft\nfinetuning_type: lora\ndataset: mllm_audio_demo\ntemplate: qwen2_audio\nbf16: true\ncutoff_len: 1024\n",
    )
    .expect("config");
    let out = lorafit(&["estimate", cfg.to_str().expect("utf-8"), "--json"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("3 audio(s) in 3 rows") && err.contains("missing.wav"),
        "{err}"
    );
    // Row 2 wins: the 2.6 s MP3 (65 pads) and the 1.25 s Opus file (48 kHz → 20 000 samples at
    // 16 kHz: 31 pads), each between <|audio_bos|> and <|audio_eos|> (LLaMA-Factory's plugin on
    // the same files: tests/fixtures/audio_tokens.json).
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let vis = &v["vision"];
    assert_eq!(
        (
            vis["audios_per_sample"].as_u64(),
            vis["audio_tokens_per_sample"].as_u64(),
            vis["images_per_sample"].as_u64()
        ),
        (Some(2), Some(65 + 31 + 4), Some(0)),
        "{vis}"
    );
    // The human-readable line names the audio encoder.
    let out = lorafit(&["estimate", cfg.to_str().expect("utf-8")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("audio        encoder 636968960 parameters (frozen)")
            && text.contains("2 audio(s) per sample = 100 tokens"),
        "{text}"
    );
    // The same dataset on a model without an audio encoder is LLaMA-Factory's error.
    std::fs::write(
        &cfg,
        "model_name_or_path: Qwen/Qwen2.5-VL-7B-Instruct\nstage: sft\nfinetuning_type: lora\ndataset: mllm_audio_demo\nbf16: true\n",
    )
    .expect("config");
    fails_with(
        &["estimate", cfg.to_str().expect("utf-8")],
        "the dataset has up to 2 audio(s) per sample, but this model has no audio encoder",
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_multimodal_dataset_means_one_image_per_sample() {
    // LLaMA-Factory's mllm_demo shape: sharegpt messages with an `images` column.
    let d = scratch("mllm");
    std::fs::create_dir_all(d.join("data")).expect("data dir");
    std::fs::write(
        d.join("data/dataset_info.json"),
        r#"{"mllm_demo": {"file_name": "mllm_demo.json", "formatting": "sharegpt",
            "columns": {"messages": "messages", "images": "images"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}},
           "identity": {"file_name": "identity.json"}}"#,
    )
    .expect("dataset_info");
    let cfg = d.join("vl.yaml");
    let write = |dataset: &str| {
        std::fs::write(
            &cfg,
            format!("model_name_or_path: Qwen/Qwen2.5-VL-7B-Instruct\nstage: sft\nfinetuning_type: lora\ndataset: {dataset}\nbf16: true\ncutoff_len: 2048\n"),
        )
        .expect("config");
    };
    let cfg_s = cfg.to_str().expect("utf-8 path");
    write("mllm_demo");
    let out = lorafit(&["estimate", cfg_s, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["vision"]["images_per_sample"], 1);
    assert_eq!(v["vision"]["image_tokens_per_sample"], 731);
    assert!(String::from_utf8_lossy(&out.stderr).contains("images_per_sample 1 assumed"));
    // An explicit key wins; a text-only dataset means text-only samples (and a note says so).
    let v = json(&["estimate", cfg_s, "--json", "--set", "images_per_sample=2"]);
    assert_eq!(v["vision"]["image_tokens_per_sample"], 2 * 731);
    write("identity");
    let v = json(&["estimate", cfg_s, "--json"]);
    assert_eq!(v["vision"]["images_per_sample"], 0);
    assert!(
        v["warnings"].to_string().contains("vision tower"),
        "{}",
        v["warnings"]
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    // `lorafit models | true`: the reader closes the pipe before lorafit writes (it is closed
    // right after the spawn, while the process is still starting); lorafit must stop with
    // status 0 and no panic, where std's println! panics on the broken pipe.
    for args in [
        &["models"][..],
        &["estimate", "examples/qwen2.5-7b-qlora-4090.yaml", "--json"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_lorafit"))
            .args(args)
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn lorafit");
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked"),
            "{args:?}: lorafit panicked: {stderr}"
        );
        assert!(
            out.status.success(),
            "{args:?}: status {:?}, stderr {stderr}",
            out.status
        );
    }
}
