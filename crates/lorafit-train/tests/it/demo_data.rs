//! `lorafit train` on LLaMA-Factory's demo datasets as its users name them (identity,
//! alpaca_en/zh_demo, glaive_toolcall_en/zh_demo, c4_demo, wiki_demo, dpo_en_demo, …: small files of
//! our own in the same formats, lorafit-data's fixtures) with several templates each, pt, dpo and kto
//! included: a few steps on
//! a tiny random llama whose vocabulary is the fixture tokenizer's, on ndarray.

use std::path::{Path, PathBuf};

use lorafit_core::Settings;
use lorafit_core::plan::Val;
use lorafit_train::data::Encoded;
use lorafit_train::model::BaseWeight;
use lorafit_train::{Model, TrainArgs, Trainer, data, make_device};

use crate::common::tmp_dir;

fn data_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../lorafit-data/tests/fixtures")
}

/// A 2-layer llama with the fixture tokenizer beside it.
fn tiny_model() -> PathBuf {
    let dir = tmp_dir("demo-model");
    std::fs::create_dir_all(&dir).expect("dir");
    let tok = data_fixtures().join("tok");
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(tok.join(f), dir.join(f)).expect("copy tokenizer");
    }
    let vocab = lorafit_data::TextTokenizer::load(&dir, None)
        .expect("tokenizer")
        .vocab_size();
    let config = format!(
        r#"{{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32,
        "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 8, "vocab_size": {vocab}, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "max_position_embeddings": 2048, "tie_word_embeddings": false,
        "hidden_act": "silu", "attention_bias": false, "mlp_bias": false}}"#
    );
    lorafit_train::random::write_random_checkpoint(&dir, &config, 3).expect("checkpoint");
    dir
}

fn train(model: &Path, keys: &[(&str, Val)]) -> Result<Vec<f64>, String> {
    train_log(model, keys).map(|(losses, _)| losses)
}

/// A short run as `lorafit train` does it (data by stage, `val_size` / `eval_dataset` split):
/// each step's loss and the trainer_log.jsonl written.
fn train_log(model: &Path, keys: &[(&str, Val)]) -> Result<(Vec<f64>, String), String> {
    let out = tmp_dir("demo-run");
    let mut s = Settings::default();
    for (k, v) in [
        ("model_name_or_path", Val::Str(model.display().to_string())),
        (
            "dataset_dir",
            Val::Str(data_fixtures().join("data").display().to_string()),
        ),
        ("output_dir", Val::Str(out.display().to_string())),
        ("finetuning_type", Val::Str("lora".into())),
        ("lora_rank", Val::Int(4)),
        ("per_device_train_batch_size", Val::Int(2)),
        ("max_steps", Val::Int(2)),
        ("logging_steps", Val::Int(1)),
        ("learning_rate", Val::Float(1e-3)),
        ("cutoff_len", Val::Int(256)),
        ("backend", Val::Str("ndarray".into())),
        ("plot_loss", Val::Bool(false)),
    ]
    .into_iter()
    .chain(keys.iter().cloned())
    {
        s.set(k, v).map_err(|e| e.to_string())?;
    }
    let args = TrainArgs::from_settings(&s, model).map_err(|e| e.to_string())?;
    let device = make_device(args.backend, false).map_err(|e| e.to_string())?;
    let m =
        Model::load_quantized(&args.model_dir, &device, args.quant).map_err(|e| e.to_string())?;
    let quantized = m
        .linears()
        .iter()
        .any(|l| !matches!(l.weight, BaseWeight::Dense(_)));
    assert_eq!(
        quantized,
        args.quant.is_some(),
        "quantization_bit loads a quantized base"
    );
    let err = |e: lorafit_train::Error| e.to_string();
    let encoded = if args.dpo.is_some() || args.stage == "rm" {
        Encoded::Pairs(data::load_pairs_report(&args).map_err(err)?.0)
    } else if args.kto.is_some() {
        Encoded::Feedback(data::load_feedback_report(&args).map_err(err)?.0)
    } else {
        Encoded::Examples(data::load_dataset(&args).map_err(err)?)
    };
    let (train, eval) = data::split_eval_data(&args, encoded).map_err(err)?;
    let t = match train {
        Encoded::Pairs(p) => Trainer::new_pairs(args, &m, p),
        Encoded::Feedback(f) => Trainer::new_feedback(args, &m, f),
        Encoded::Examples(e) => Trainer::new(args, &m, e),
    };
    let mut t = t.map_err(err)?.with_eval_data(eval);
    let summary = t.run(|_| {}).map_err(err)?;
    let log = std::fs::read_to_string(out.join("trainer_log.jsonl")).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&out);
    Ok((summary.steps.iter().map(|s| s.loss).collect(), log))
}

#[test]
fn demo_datasets_train_with_their_templates() {
    let model = tiny_model();
    let s = |x: &str| Val::Str(x.into());
    let runs: Vec<Vec<(&str, Val)>> = vec![
        vec![("dataset", s("identity")), ("template", s("qwen3"))],
        vec![
            ("dataset", s("identity,alpaca_en_demo")),
            ("template", s("llama3")),
        ],
        vec![("dataset", s("alpaca_en_demo")), ("template", s("gemma3"))],
        vec![("dataset", s("alpaca_zh_demo")), ("template", s("glm4"))],
        vec![
            ("dataset", s("alpaca_zh_demo")),
            ("template", s("qwen3_nothink")),
        ],
        vec![
            ("dataset", s("glaive_toolcall_en_demo")),
            ("template", s("qwen3_5")),
        ],
        vec![
            ("dataset", s("glaive_toolcall_en_demo")),
            ("template", s("mistral")),
        ],
        vec![
            ("dataset", s("glaive_toolcall_zh_demo")),
            ("template", s("glm4_moe")),
        ],
        vec![
            ("dataset", s("glaive_toolcall_zh_demo")),
            ("template", s("llama3")),
        ],
        vec![
            ("dataset", s("sharegpt_demo")),
            ("template", s("deepseekr1")),
            ("mask_history", Val::Bool(true)),
        ],
        vec![("dataset", s("sharegpt_demo")), ("template", s("gpt_oss"))],
        vec![("dataset", s("csv_demo")), ("template", s("chatml"))],
        vec![("dataset", s("openai_demo")), ("template", s("qwen"))],
        vec![
            ("dataset", s("c4_demo")),
            ("stage", s("pt")),
            ("cutoff_len", Val::Int(16)),
        ],
        vec![
            ("dataset", s("wiki_demo")),
            ("stage", s("pt")),
            ("template", s("llama3")),
            ("cutoff_len", Val::Int(16)),
        ],
        vec![
            ("dataset", s("c4_demo,wiki_demo")),
            ("stage", s("pt")),
            ("packing", Val::Bool(false)),
        ],
    ];
    for keys in &runs {
        let what: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let losses = train(&model, keys).unwrap_or_else(|e| panic!("{}: {e}", what.join(" ")));
        assert_eq!(losses.len(), 2, "{}", what.join(" "));
        assert!(
            losses.iter().all(|l| l.is_finite() && *l > 0.0),
            "{}: {losses:?}",
            what.join(" ")
        );
    }
    // DPO on the pairwise demo data (chosen and rejected through the template), LoRA and QLoRA
    // (the reference is the 4-bit base with the adapter disabled).
    for (template, bits) in [("qwen3", 0), ("llama3", 0), ("qwen3", 4)] {
        let mut keys = vec![
            ("dataset", s("dpo_en_demo,dpo_zh_demo")),
            ("template", s(template)),
            ("stage", s("dpo")),
            ("pref_beta", Val::Float(0.1)),
        ];
        if bits > 0 {
            keys.push(("quantization_bit", Val::Int(bits)));
        }
        let losses = train(&model, &keys).unwrap_or_else(|e| panic!("dpo {template}: {e}"));
        assert!(
            losses.iter().all(|l| l.is_finite() && *l > 0.0),
            "dpo {template}: {losses:?}"
        );
    }
    // Evaluation with the preference stages: val_size holds pairs / feedback out as LLaMA-Factory
    // does, and the eval entry carries TRL's eval metrics.
    for (stage, dataset, metric) in [
        ("dpo", "dpo_en_demo", "eval_rewards/accuracies"),
        ("kto", "kto_en_demo", "eval_kl"),
    ] {
        let keys = [
            ("dataset", s(dataset)),
            ("template", s("qwen3")),
            ("stage", s(stage)),
            ("val_size", Val::Float(0.25)),
            ("eval_strategy", s("steps")),
            ("eval_steps", Val::Int(2)),
            ("per_device_eval_batch_size", Val::Int(4)),
        ];
        let (_, log) = train_log(&model, &keys).unwrap_or_else(|e| panic!("{stage} eval: {e}"));
        let evals: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("\"eval_loss\""))
            .collect();
        assert_eq!(evals.len(), 1, "{stage}: one eval at step 2: {log}");
        assert!(evals[0].contains(metric), "{stage}: {}", evals[0]);
    }
    // KTO on kto_en_demo (desirable / undesirable through the template, rotated KL answers).
    let losses = train(
        &model,
        &[
            ("dataset", s("kto_en_demo")),
            ("template", s("qwen3")),
            ("stage", s("kto")),
            ("pref_beta", Val::Float(0.1)),
        ],
    )
    .unwrap_or_else(|e| panic!("kto: {e}"));
    assert!(
        losses.iter().all(|l| l.is_finite() && *l > 0.0),
        "kto: {losses:?}"
    );
    // A reward model (LoRA + value head) on the pairwise demo data, evaluated on a held-out
    // quarter: the eval entry has LLaMA-Factory's eval_accuracy.
    let (losses, log) = train_log(
        &model,
        &[
            ("dataset", s("dpo_en_demo,dpo_zh_demo")),
            ("template", s("qwen3")),
            ("stage", s("rm")),
            ("val_size", Val::Float(0.25)),
            ("eval_strategy", s("steps")),
            ("eval_steps", Val::Int(2)),
        ],
    )
    .unwrap_or_else(|e| panic!("rm: {e}"));
    assert!(
        losses.iter().all(|l| l.is_finite() && *l > 0.0),
        "rm: {losses:?}"
    );
    assert!(log.contains("eval_accuracy"), "{log}");
    // ppo is estimated, not trained.
    let e = train(
        &model,
        &[
            ("dataset", s("dpo_en_demo")),
            ("template", s("qwen3")),
            ("stage", s("ppo")),
            ("reward_model", s("saves/rm")),
        ],
    )
    .expect_err("ppo");
    assert!(e.contains("`stage: ppo`") && e.contains("rm"), "{e}");
    let _ = std::fs::remove_dir_all(&model);
}

/// `preprocessing_batch_size` is LLaMA-Factory's `datasets.map` batch, and pretraining text is
/// concatenated and cut into cutoff_len blocks per batch, each batch's remainder dropped: a
/// smaller batch drops more, so the same text gives fewer blocks. The trainer
/// reads the key as `lorafit estimate` does (one `config::data_args`; it used to fix 1000).
#[test]
fn preprocessing_batch_size_changes_the_packs_as_in_llamafactory() {
    let model = tiny_model();
    let packs = |batch: i64| {
        let mut s = Settings::default();
        for (k, v) in [
            ("model_name_or_path", Val::Str(model.display().to_string())),
            (
                "dataset_dir",
                Val::Str(data_fixtures().join("data").display().to_string()),
            ),
            ("dataset", Val::Str("c4_demo,wiki_demo".into())),
            ("stage", Val::Str("pt".into())),
            ("finetuning_type", Val::Str("lora".into())),
            ("cutoff_len", Val::Int(8)),
            ("preprocessing_batch_size", Val::Int(batch)),
        ] {
            s.set(k, v).expect("key");
        }
        let args = TrainArgs::from_settings(&s, &model).expect("args");
        assert_eq!(args.data_args().preprocessing_batch_size, batch as usize);
        let plan = s.plan().expect("plan");
        let estimate_side = lorafit_train::config::data_args(
            &s,
            &plan,
            args.dataset_dir.clone(),
            args.model_dir.clone(),
        )
        .expect("data args");
        assert_eq!(
            format!("{estimate_side:?}"),
            format!("{:?}", args.data_args()),
            "estimate and train read the data keys alike"
        );
        data::load_dataset(&args).expect("data").len()
    };
    let (whole, small) = (packs(1000), packs(2));
    assert!(
        small < whole,
        "blocks per 2 rows: {small}, per 1000 rows: {whole}"
    );
}
