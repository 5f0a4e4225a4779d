//! lorafit-core's one integration-test binary: parameter counts, config parsing and its errors,
//! the validation against measured GPU memory, exports, and property tests.

use lorafit_core::arch::media::ImageKeys;
use lorafit_core::arch::{ModelArch, VisionKind};
use lorafit_core::estimate::{self, ModelSource};
use lorafit_core::plan::{Settings, Val, Zero};
use lorafit_core::{catalog, export, validation};

#[path = "it/audio.rs"]
mod audio;
#[path = "it/vocab.rs"]
mod vocab;

fn settings(yaml: &str) -> Settings {
    Settings::from_yaml(yaml).expect("test YAML parses")
}

/// The vision tower of catalog model `id`.
fn tower(id: &str) -> lorafit_core::arch::Vision {
    catalog::find_model(id)
        .expect(id)
        .arch()
        .expect("arch")
        .vision
        .expect("tower")
}

fn est(yaml: &str) -> lorafit_core::Estimate {
    let plan = settings(yaml).plan().expect("plan");
    let (arch, src) = estimate::resolve_model(&plan, None).expect("model");
    estimate::estimate(&arch, src, &plan).expect("estimate")
}

// ---------------------------------------------------------------- parameter counts

fn check_params(id: &str, expected: u64) {
    let m = catalog::find_model(id).unwrap_or_else(|e| panic!("{id}: {e}"));
    assert_eq!(m.arch().expect("arch").total_params(), expected, "{id}");
}

#[test]
fn parameter_counts_match_published_totals() {
    // Published totals (model cards / issue 2).
    check_params("meta-llama/Llama-2-7b-hf", 6_738_415_616);
    check_params("meta-llama/Llama-3.1-8B", 8_030_261_248);
    check_params("mistralai/Mistral-7B-v0.1", 7_241_732_096);
    check_params("Qwen/Qwen2.5-7B", 7_615_616_512);
    check_params("meta-llama/Llama-2-13b-hf", 13_015_864_320);
    check_params("meta-llama/Llama-2-70b-hf", 68_976_648_192);
    check_params("meta-llama/Meta-Llama-3-70B", 70_553_706_496);
    check_params("mistralai/Mixtral-8x7B-v0.1", 46_702_792_704);
    check_params("google/gemma-7b", 8_537_680_896);
    check_params("google/gemma-2b", 2_506_172_416);
    check_params("microsoft/Phi-3-mini-4k-instruct", 3_821_079_552);
    check_params("Qwen/Qwen3-8B", 8_190_735_360);
    check_params("Qwen/Qwen3-0.6B", 596_049_920);
    check_params("google/gemma-2-9b", 9_241_705_984);
    check_params("google/gemma-2-2b", 2_614_341_888);
    check_params("Qwen/Qwen3-30B-A3B", 30_532_122_624);
    // Qwen3-235B-A22B: 235,093,634,560 (the model card's safetensors total).
    check_params("Qwen/Qwen3-235B-A22B", 235_093_634_560);
    // Active parameters: the model cards say 3.3 B and 22 B activated.
    let active = |id: &str| {
        catalog::find_model(id)
            .expect("id")
            .arch()
            .expect("arch")
            .active_params() as f64
    };
    assert!((active("Qwen/Qwen3-30B-A3B") / 3.3e9 - 1.0).abs() < 0.02);
    assert!((active("Qwen/Qwen3-235B-A22B") / 22.0e9 - 1.0).abs() < 0.01);
    // gpt-oss: attention sinks, biases on q/k/v/o, the router and the experts; OpenAI's model
    // card: 20.91 B total / 3.61 B active, 116.83 B / 5.13 B (active counts the unembedding only).
    check_params("openai/gpt-oss-20b", 20_914_757_184);
    check_params("openai/gpt-oss-120b", 116_829_156_672);
    for (id, published) in [
        ("openai/gpt-oss-20b", 3.61e9),
        ("openai/gpt-oss-120b", 5.13e9),
    ] {
        let a = catalog::find_model(id).expect("id").arch().expect("arch");
        let active = (a.active_params() - a.embedding_params()) as f64;
        assert!((active / published - 1.0).abs() < 0.005, "{id}: {active}");
        // PEFT's `all` finds only the attention projections: router and experts are not nn.Linear.
        assert_eq!(
            a.all_lora_targets(),
            vec!["q_proj", "k_proj", "v_proj", "o_proj"]
        );
    }
    // GLM-4-0414 (fused gate_up, q/k/v bias, 4 norms per layer): 9.4 B on its model card.
    check_params("THUDM/GLM-4-9B-0414", 9_400_279_040);
    // OLMo 2 (full-width q/k norms, post-norms): 7.30 B and 13.7 B.
    check_params("allenai/OLMo-2-1124-7B", 7_298_617_344);
    let olmo13 = catalog::find_model("allenai/OLMo-2-1124-13B")
        .expect("id")
        .arch()
        .expect("arch")
        .total_params() as f64;
    assert!((olmo13 / 13.7e9 - 1.0).abs() < 0.005, "{olmo13}");
    // Granite 3.1: 8.17 B and 2.53 B.
    check_params("ibm-granite/granite-3.1-8b-instruct", 8_170_848_256);
    check_params("ibm-granite/granite-3.1-2b-instruct", 2_533_531_648);
}

#[test]
fn parameter_counts_match_torch_on_the_gpu_runs() {
    // sum(p.numel()) that PyTorch reported for full fine-tuning in the H100 measurements.
    check_params("Qwen/Qwen2.5-0.5B", 494_032_768);
    check_params("meta-llama/Llama-3.2-1B", 1_235_814_400);
    check_params("Qwen/Qwen2.5-1.5B", 1_543_714_304);
    check_params("meta-llama/Llama-3.2-3B", 3_212_749_824);
}

/// The repo name alone finds a model (what a user types after `llamafactory-cli` examples drop
/// the org), unless an id or alias claims it; every catalog entry is reachable that way or by id.
#[test]
fn repo_names_alone_find_their_model() {
    for (name, id) in [
        ("Llama-3.1-70B", "meta-llama/Llama-3.1-70B"),
        ("qwen2.5-7b-instruct", "Qwen/Qwen2.5-7B-Instruct"),
        ("glm-4-9b-chat", "zai-org/glm-4-9b-chat"),
        ("Phi-3.5-MoE-instruct", "microsoft/Phi-3.5-MoE-instruct"),
        // An explicit alias wins over a repo name.
        ("gpt2", "openai-community/gpt2"),
    ] {
        assert_eq!(catalog::find_model(name).expect(name).id, id, "{name}");
    }
    for m in catalog::models() {
        let tail = m.id.rsplit('/').next().expect("tail");
        let found = catalog::find_model(tail).expect(tail);
        // Where two orgs publish the same repo name, the first entry answers; it must at least
        // have the same architecture.
        assert_eq!(
            found.arch().expect("arch").total_params(),
            m.arch().expect("arch").total_params(),
            "{} vs {}",
            found.id,
            m.id
        );
    }
}

#[test]
fn catalog_is_complete_and_parses() {
    let models = catalog::models();
    assert!(models.len() >= 40, "{} models", models.len());
    for m in models {
        let a = m.arch().unwrap_or_else(|e| panic!("{}: {e}", m.id));
        assert!(a.total_params() > 100_000_000, "{}", m.id);
    }
    for fam in [
        "Llama 2",
        "Llama 3.1",
        "Llama 3.2",
        "Llama 3.3",
        "Qwen2",
        "Qwen2.5",
        "Qwen3",
        "Mistral",
        "Mixtral",
        "DeepSeek-R1-Distill",
        "Gemma",
        "Phi-3",
        "Yi",
    ] {
        assert!(
            models.iter().any(|m| m.family == fam),
            "missing family {fam}"
        );
    }
    let gpus = catalog::gpus();
    assert!(gpus.len() >= 10);
    let priced: Vec<_> = gpus.iter().filter(|g| !g.prices.is_empty()).collect();
    assert!(priced.len() >= 10);
    for g in &priced {
        for p in &g.prices {
            assert!(
                p.source.starts_with("https://") && !p.as_of.is_empty() && p.usd_per_hour > 0.0,
                "{}",
                g.id
            );
        }
    }
    let providers: std::collections::BTreeSet<_> = priced
        .iter()
        .flat_map(|g| g.prices.iter().map(|p| &p.provider))
        .collect();
    assert!(providers.len() >= 3, "{providers:?}");
}

#[test]
fn trainable_params_match_peft_counts() {
    // PEFT's trainable counts from the H100 runs, for LoRA rank 8 on all linear layers.
    for p in validation::parse_points(validation::MEASURED_H100).expect("points") {
        let c = validation::compare(&p).expect("compare");
        assert_eq!(c.trainable_params, p.measured.trainable_params, "{}", p.id);
    }
}

// ---------------------------------------------------------------- config.json parsing

#[test]
fn rope_scaling_and_v5_rope_parameters_both_parse() {
    let v4 = r#"{"model_type":"llama","hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,
        "num_attention_heads":32,"num_key_value_heads":8,"vocab_size":128256,"rope_theta":500000.0,
        "rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,
        "original_max_position_embeddings":8192}}"#;
    let v5 = r#"{"model_type":"llama","hidden_size":4096,"intermediate_size":14336,"num_hidden_layers":32,
        "num_attention_heads":32,"num_key_value_heads":8,"vocab_size":128256,
        "rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,"factor":8.0,"low_freq_factor":1.0,
        "high_freq_factor":4.0,"original_max_position_embeddings":8192}}"#;
    let a = ModelArch::from_config_json(v4).expect("v4");
    let b = ModelArch::from_config_json(v5).expect("v5");
    assert_eq!(a.rope_scaling, b.rope_scaling);
    assert_eq!(a.rope_theta, Some(500000.0));
    assert_eq!(b.rope_theta, Some(500000.0));
    assert_eq!(a.total_params(), 8_030_261_248);
}

#[test]
fn qwen2_biases_and_tied_embeddings_count() {
    let a = catalog::find_model("Qwen/Qwen2.5-0.5B")
        .expect("m")
        .arch()
        .expect("a");
    assert!(a.qkv_bias && a.tie_word_embeddings);
    assert_eq!(a.lm_head_params(), 0);
    assert_eq!(a.kv_dim(), 128); // GQA: 2 kv heads × 64
}

fn check_config_err(json: &str, needle: &str) {
    let e = ModelArch::from_config_json(json)
        .expect_err(json)
        .to_string();
    assert!(e.contains(needle), "error `{e}` should mention `{needle}`");
}

#[test]
fn bad_config_json_is_a_clear_error() {
    check_config_err("{", "not valid JSON");
    check_config_err("[1]", "JSON object");
    check_config_err(r#"{"model_type":"llama"}"#, "`hidden_size` is missing");
    check_config_err(r#"{"model_type":"bert","hidden_size":1}"#, "not supported");
    check_config_err(
        r#"{"model_type":"llama","hidden_size":4096,"intermediate_size":1,"num_hidden_layers":2,"num_attention_heads":32,"num_key_value_heads":5,"vocab_size":10}"#,
        "multiple of num_key_value_heads",
    );
    check_config_err(
        r#"{"model_type":"llama","hidden_size":-3,"intermediate_size":1,"num_hidden_layers":2,"num_attention_heads":32,"vocab_size":10}"#,
        "non-negative integer",
    );
    check_config_err(
        r#"{"model_type":"llama","hidden_size":4096,"intermediate_size":1,"num_hidden_layers":2000000,"num_attention_heads":32,"vocab_size":10}"#,
        "absurd",
    );
    check_config_err(
        r#"{"model_type":"llama","hidden_size":64,"intermediate_size":1,"num_hidden_layers":2,"num_attention_heads":2,"vocab_size":10,"rope_scaling":{"rope_type":"weird","factor":2}}"#,
        "rope_type `weird`",
    );
}

// ---------------------------------------------------------------- Contract 1 keys

fn check_settings_err(yaml: &str, needle: &str) {
    let e = match Settings::from_yaml(yaml).and_then(|s| s.plan()) {
        Ok(_) => panic!("`{yaml}` should fail"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains(needle), "error `{e}` should mention `{needle}`");
}

#[test]
fn bad_values_name_the_key_and_what_is_allowed() {
    let m = "model_name_or_path: Qwen/Qwen2.5-7B\n";
    check_settings_err(
        &format!("{m}per_device_train_batch_size: 0"),
        "per_device_train_batch_size: 0",
    );
    check_settings_err(&format!("{m}per_device_train_batch_size: 0"), "from 1 to");
    check_settings_err(&format!("{m}lora_rank: 1000000000"), "lora_rank");
    check_settings_err(&format!("{m}cutoff_len: -5"), "cutoff_len");
    check_settings_err(
        &format!("{m}finetuning_type: ful"),
        "one of full, freeze, lora",
    );
    check_settings_err(&format!("{m}quantization_bit: 3"), "quantization_bit");
    check_settings_err(&format!("{m}learning_rate: .nan"), "learning_rate");
    check_settings_err(
        &format!("{m}finetuning_type: full\nquantization_bit: 4"),
        "quantization_bit needs finetuning_type: lora",
    );
    check_settings_err(&format!("{m}bf16: true\nfp16: true"), "bf16 and fp16");
    check_settings_err(&format!("{m}gpu: TPU-v9"), "unknown gpu `TPU-v9`");
    check_settings_err(&format!("{m}bf16: maybe"), "true or false");
    check_settings_err("lora_rank: 8", "`model_name_or_path` is required");
    check_settings_err("- a\n- b", "mapping");
    check_settings_err("model_name_or_path: [", "does not parse");
    // An accelerate config (as `accelerate config` writes them) given where a training YAML goes.
    check_settings_err(
        "compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\nfsdp_config:\n  fsdp_version: 2\nnum_processes: 2",
        "accelerate config (`distributed_type: FSDP`), not a training config",
    );
}

#[test]
fn unknown_models_and_absurd_sizes_are_errors() {
    let plan = settings("model_name_or_path: nobody/Nothing-7B")
        .plan()
        .expect("plan");
    let e = estimate::resolve_model(&plan, None)
        .expect_err("unknown")
        .to_string();
    assert!(e.contains("unknown model `nobody/Nothing-7B`"), "{e}");
    let plan = settings("model_name_or_path: 1000000B")
        .plan()
        .expect("plan");
    let e = estimate::resolve_model(&plan, None)
        .expect_err("10^15")
        .to_string();
    assert!(e.contains("between 1e6 and 2e12"), "{e}");
    // A raw parameter count works.
    let plan = settings("model_name_or_path: 7B").plan().expect("plan");
    let (a, src) = estimate::resolve_model(&plan, None).expect("7B");
    assert_eq!(src, ModelSource::ParamCount);
    let p = a.total_params() as f64;
    assert!((p / 7e9 - 1.0).abs() < 0.1, "{p}");
    // Rank larger than the model's hidden size.
    let plan = settings("model_name_or_path: Qwen/Qwen2.5-0.5B\nlora_rank: 4096")
        .plan()
        .expect("plan");
    let (a, _) = estimate::resolve_model(&plan, None).expect("m");
    let e = estimate::memory(&a, &plan).expect_err("rank").to_string();
    assert!(
        e.contains("lora_rank") && e.contains("hidden size 896"),
        "{e}"
    );
    // A target the model does not have.
    let plan = settings("model_name_or_path: Qwen/Qwen2.5-0.5B\nlora_target: q_proj,qkv")
        .plan()
        .expect("plan");
    let e = estimate::memory(&a, &plan).expect_err("target").to_string();
    assert!(e.contains("`lora_target: qkv`"), "{e}");
}

#[test]
fn every_contract_1_key_is_known_and_explained() {
    let keys: Vec<_> = lorafit_core::plan::known_keys().collect();
    for k in [
        "model_name_or_path",
        "adapter_name_or_path",
        "finetuning_type",
        "freeze_trainable_layers",
        "lora_rank",
        "lora_alpha",
        "lora_dropout",
        "lora_target",
        "use_rslora",
        "use_dora",
        "quantization_bit",
        "quantization_type",
        "double_quantization",
        "dataset",
        "dataset_dir",
        "template",
        "cutoff_len",
        "max_samples",
        "packing",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "learning_rate",
        "num_train_epochs",
        "max_steps",
        "lr_scheduler_type",
        "warmup_steps",
        "warmup_ratio",
        "max_grad_norm",
        "weight_decay",
        "adam_beta1",
        "adam_beta2",
        "adam_epsilon",
        "optim",
        "bf16",
        "fp16",
        "pure_bf16",
        "flash_attn",
        "disable_gradient_checkpointing",
        "deepspeed",
        "seed",
        "logging_steps",
        "save_steps",
        "output_dir",
        "resume_from_checkpoint",
        "plot_loss",
        "gpu",
        "num_gpus",
        "shuffle",
        "backend",
        "dataset_tokens",
        "price_per_hour",
    ] {
        let found = keys.iter().find(|(name, _, _)| *name == k);
        assert!(
            found.is_some_and(|(_, _, help)| !help.is_empty()),
            "key {k} missing or without help"
        );
    }
}

#[test]
fn unknown_keys_warn_and_set_overrides() {
    let mut s = settings(
        "model_name_or_path: Qwen/Qwen2.5-7B\nmy_custom_key: 3\nreport_to: none\nlora_rank: 8",
    );
    assert_eq!(
        s.warnings,
        vec![
            "unknown key `my_custom_key` ignored (neither LLaMA-Factory nor lorafit has it)"
                .to_string()
        ]
    );
    s.set_assignment("lora_rank=32").expect("set");
    s.set_assignment("quantization_bit=4").expect("set");
    assert!(s.set_assignment("lora_rank").is_err());
    let p = s.plan().expect("plan");
    assert_eq!(p.lora_rank, 32);
    assert_eq!(p.lora_alpha, 64.0);
    assert_eq!(p.quant.map(|q| q.bits), Some(4));
}

#[test]
fn deepspeed_files_and_names() {
    assert_eq!(
        Zero::from_llamafactory_name("examples/deepspeed/ds_z3_offload_config.json"),
        Some(Zero {
            stage: 3,
            offload_optimizer: true,
            offload_param: true,
            deepspeed: true,
            fsdp: false,
            sub_group_size: None,
        })
    );
    assert_eq!(
        Zero::from_llamafactory_name("ds_z2_config.json").map(|z| z.stage),
        Some(2)
    );
    assert_eq!(Zero::from_llamafactory_name("my.json"), None);
    let z = Zero::from_deepspeed_json(
        r#"{"zero_optimization":{"stage":2,"offload_optimizer":{"device":"cpu"}}}"#,
    )
    .expect("ds");
    assert!(z.stage == 2 && z.offload_optimizer && !z.offload_param);
    assert!(Zero::from_deepspeed_json(r#"{"zero_optimization":{"stage":7}}"#).is_err());
    // `sub_group_size`: JSON writes it as a float; DeepSpeed's default (1e9) is kept as None.
    let sub = |v: &str| {
        Zero::from_deepspeed_json(&format!(
            r#"{{"zero_optimization":{{"stage":3,"sub_group_size":{v}}}}}"#
        ))
    };
    assert_eq!(sub("1e8").expect("1e8").sub_group_size, Some(100_000_000));
    assert_eq!(sub("1e9").expect("1e9").sub_group_size, None);
    assert!(sub("\"big\"").is_err() && sub("0").is_err());
    // The ZeRO-3 step converts one sub-group of gradients to fp32 at a time: a smaller one lowers
    // a full fine-tune's step peak (Qwen2.5-7B on 2 GPUs: 3.8 B elements a rank).
    let mut p = settings(
        "model_name_or_path: Qwen/Qwen2.5-7B\nfinetuning_type: full\nbf16: true\nnum_gpus: 2\ndeepspeed: ds_z3_config.json\nper_device_train_batch_size: 1\ncutoff_len: 512\n",
    )
    .plan()
    .expect("plan");
    let (a, _) = estimate::resolve_model(&p, None).expect("model");
    let default = estimate::memory(&a, &p).expect("memory");
    p.zero.sub_group_size = Some(100_000_000);
    // The exported DeepSpeed JSON keeps it.
    assert_eq!(
        Zero::from_deepspeed_json(&export::to_deepspeed_json(&p.zero)).expect("round trip"),
        p.zero
    );
    let small = estimate::memory(&a, &p).expect("memory");
    // 6 bytes per element of the slice: 1e9 − 1e8 elements fewer at the step.
    let saved = default.peak_allocated_bytes as f64 - small.peak_allocated_bytes as f64;
    assert!((saved / 5.4e9 - 1.0).abs() < 0.01, "{saved}");
    // Round trip through our own export.
    let z3 = Zero {
        stage: 3,
        offload_optimizer: true,
        offload_param: true,
        deepspeed: true,
        fsdp: false,
        sub_group_size: None,
    };
    assert_eq!(
        Zero::from_deepspeed_json(&export::to_deepspeed_json(&z3)).expect("rt"),
        z3
    );
    assert_eq!(
        export::deepspeed_file_name(&z3),
        "ds_z3_offload_config.json"
    );
}

// ---------------------------------------------------------------- exports

const FULL_YAML: &str = "model_name_or_path: Qwen/Qwen2.5-7B-Instruct
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 16
lora_alpha: 32
lora_target: q_proj,v_proj
quantization_bit: 4
quantization_type: nf4
dataset: alpaca_zh_demo,identity
template: qwen
cutoff_len: 1024
per_device_train_batch_size: 2
gradient_accumulation_steps: 8
learning_rate: 1.0e-4
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
output_dir: saves/qwen 7b/lora
gpu: RTX-4090
price_per_hour: 0.5
";

#[test]
fn yaml_export_round_trips() {
    let s = settings(FULL_YAML);
    let back = export::yaml_round_trip(&s).expect("round trip");
    assert_eq!(back, s);
    let lf = export::to_llamafactory_yaml(&s, false);
    assert!(
        !lf.contains("gpu:") && !lf.contains("price_per_hour"),
        "{lf}"
    );
    assert!(lf.contains("quantization_bit: 4\n"), "{lf}");
    assert!(lf.contains("learning_rate: 0.0001\n"), "{lf}");
    let cmd = export::to_train_command(&s, "cfg.yaml");
    assert!(
        cmd.starts_with("lorafit train cfg.yaml --set model_name_or_path=Qwen/Qwen2.5-7B-Instruct"),
        "{cmd}"
    );
    assert!(cmd.contains("'output_dir=saves/qwen 7b/lora'"), "{cmd}");
}

#[test]
fn share_link_query_round_trips_and_survives_hostile_links() {
    let s = settings(FULL_YAML);
    let q = export::to_query(&s);
    let (back, warnings) = export::from_query(&q);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(back, s);
    let (s2, w) = export::from_query(
        "model_name_or_path=Qwen%2FQwen2.5-7B&lora_rank=-3&cutoff_len=abc&evil=%3Cscript%3Ealert(1)%3C%2Fscript%3E&gpu=%E0%A4&per_device_train_batch_size=4",
    );
    assert_eq!(w.len(), 4, "{w:?}");
    assert_eq!(s2.get("per_device_train_batch_size"), Some(&Val::Int(4)));
    assert_eq!(s2.get("lora_rank"), None);
    assert!(s2.plan().is_ok());
}

// ---------------------------------------------------------------- estimates

#[test]
fn breakdown_adds_up_and_json_has_contract_fields() {
    let e = est(FULL_YAML);
    assert_eq!(e.breakdown.total(), e.peak_reserved_bytes);
    assert!(
        e.peak_allocated_bytes < e.torch_reserved_bytes
            && e.torch_reserved_bytes < e.peak_reserved_bytes
    );
    let v = serde_json::to_value(&e).expect("json");
    for k in [
        "total_params",
        "trainable_params",
        "peak_allocated_bytes",
        "peak_reserved_bytes",
        "breakdown",
        "step_seconds",
        "total_seconds",
        "cost_usd",
        "fits",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    for k in lorafit_core::memory::Breakdown::NAMES {
        assert!(v["breakdown"].get(k).is_some(), "missing breakdown.{k}");
    }
    assert_eq!(e.fits, Some(true));
}

#[test]
fn method_ordering_matches_intuition() {
    let common = "model_name_or_path: meta-llama/Llama-3.1-8B\nper_device_train_batch_size: 1\ncutoff_len: 2048\n";
    let base = format!("{common}bf16: true\n");
    let full = est(&format!("{base}finetuning_type: full")).peak_reserved_bytes;
    let pure = est(&format!("{common}finetuning_type: full\npure_bf16: true")).peak_reserved_bytes;
    let freeze = est(&format!("{base}finetuning_type: freeze")).peak_reserved_bytes;
    let lora = est(&format!("{base}finetuning_type: lora")).peak_reserved_bytes;
    let qlora =
        est(&format!("{base}finetuning_type: lora\nquantization_bit: 4")).peak_reserved_bytes;
    let q8 = est(&format!("{base}finetuning_type: lora\nquantization_bit: 8")).peak_reserved_bytes;
    assert!(
        full > pure && pure > freeze && freeze > lora && lora > q8 && q8 > qlora,
        "{full} {pure} {freeze} {lora} {q8} {qlora}"
    );
    // ZeRO-3 over 8 GPUs shrinks full fine-tuning per GPU; offload shrinks it more and needs host RAM.
    let z3 = est(&format!(
        "{base}finetuning_type: full\ndeepspeed: ds_z3_config.json\nnum_gpus: 8"
    ));
    let z3o = est(&format!(
        "{base}finetuning_type: full\ndeepspeed: ds_z3_offload_config.json\nnum_gpus: 8"
    ));
    assert!(
        z3.peak_reserved_bytes * 3 < full,
        "{} vs {full}",
        z3.peak_reserved_bytes
    );
    assert!(
        z3o.peak_reserved_bytes < z3.peak_reserved_bytes && z3o.host_ram_bytes > 100_000_000_000
    );
    // Inference: weights + KV cache, far below training.
    let inf = est(&format!("{base}do_train: false")).peak_reserved_bytes;
    assert!(inf < lora && inf > 16_000_000_000, "{inf}");
}

#[test]
fn searches_find_the_largest_batch_and_cutoff() {
    let plan = settings("model_name_or_path: Qwen/Qwen2.5-7B\nquantization_bit: 4\nbf16: true\ncutoff_len: 1024\nper_device_train_batch_size: 1").plan().expect("p");
    let (a, _) = estimate::resolve_model(&plan, None).expect("m");
    let budget = catalog::find_gpu("RTX-4090").expect("g").memory_bytes();
    let b = estimate::largest_batch(&a, &plan, budget).expect("some batch fits");
    let mut p = plan.clone();
    p.batch_size = b;
    assert!(estimate::memory(&a, &p).expect("m").peak_reserved_bytes <= budget);
    p.batch_size = b + 1;
    assert!(estimate::memory(&a, &p).expect("m").peak_reserved_bytes > budget);
    let c = estimate::longest_cutoff(&a, &plan, budget).expect("some cutoff fits");
    assert!(c >= 1024 && c.is_multiple_of(128), "{c}");
    // 70B full fine-tuning never fits one 24 GB card.
    let big =
        settings("model_name_or_path: meta-llama/Llama-3.1-70B\nfinetuning_type: full\nbf16: true")
            .plan()
            .expect("p");
    let (a70, _) = estimate::resolve_model(&big, None).expect("m");
    assert_eq!(estimate::largest_batch(&a70, &big, budget), None);
    let opts = estimate::gpu_options(&a, &plan);
    assert!(opts[0].fits && opts.last().is_some());
}

// ---------------------------------------------------------------- validation (the headline)

#[test]
fn validation_against_h100_measurements() {
    let points = validation::parse_points(validation::MEASURED_H100).expect("points");
    assert!(points.len() >= 30);
    let compared: Vec<_> = points
        .iter()
        .map(|p| validation::compare(p).expect("compare"))
        .collect();
    for split in ["tune", "holdout"] {
        let c: Vec<_> = compared.iter().filter(|c| c.point.split == split).collect();
        assert!(!c.is_empty());
        let (med_a, max_a) = validation::median_max(c.iter().map(|c| c.err_allocated()));
        let (med_s, max_s) = validation::median_max(c.iter().map(|c| c.err_smi()));
        println!(
            "{split}: allocated median {:.1}% max {:.1}%; nvidia-smi median {:.1}% max {:.1}%",
            med_a * 100.0,
            max_a * 100.0,
            med_s * 100.0,
            max_s * 100.0
        );
        assert!(
            med_a <= 0.10 && med_s <= 0.10,
            "{split}: median error over 10 %"
        );
        assert!(
            max_a <= 0.25 && max_s <= 0.25,
            "{split}: a point is off by more than 25 %"
        );
    }
    // Throughput is secondary; keep it honest.
    let (med_t, max_t) = validation::median_max(compared.iter().map(|c| c.err_tokens()));
    println!(
        "tokens/s: median {:.1}% max {:.1}%",
        med_t * 100.0,
        max_t * 100.0
    );
    assert!(med_t <= 0.25, "tokens/s median error {med_t}");
    // And the calculators we beat are far worse on the same points.
    let (med_lf, _) = validation::median_max(compared.iter().map(|c| c.err_llamafactory()));
    let (med_gp, _) = validation::median_max(compared.iter().map(|c| c.err_gpu_poor()));
    let (med_us, _) = validation::median_max(compared.iter().map(|c| c.err_smi()));
    println!(
        "median |error| vs nvidia-smi: lorafit {:.1}%, LLaMA-Factory table {:.1}%, gpu_poor {:.1}%",
        med_us * 100.0,
        med_lf * 100.0,
        med_gp * 100.0
    );
    assert!(med_us * 3.0 < med_lf && med_us * 3.0 < med_gp);
}

// ---------------------------------------------------------------- properties

mod props {
    use super::*;
    use proptest::prelude::*;

    fn plan_for(model: &str, method: u8, b: u64, s: u64, r: u64, gc: bool) -> lorafit_core::Plan {
        let mut st = Settings::default();
        st.set("model_name_or_path", Val::Str(model.into()))
            .expect("m");
        let ft = ["full", "freeze", "lora", "lora"][method as usize % 4];
        st.set("finetuning_type", Val::Str(ft.into())).expect("ft");
        if method % 4 == 3 {
            st.set("quantization_bit", Val::Int(4)).expect("q");
        }
        st.set("bf16", Val::Bool(true)).expect("bf16");
        st.set("per_device_train_batch_size", Val::Int(b as i64))
            .expect("b");
        st.set("cutoff_len", Val::Int(s as i64)).expect("s");
        st.set("lora_rank", Val::Int(r as i64)).expect("r");
        st.set("disable_gradient_checkpointing", Val::Bool(!gc))
            .expect("gc");
        // GPT-2's Conv1D projections are outside `all`: name them.
        if model.contains("gpt2") {
            st.set("lora_target", Val::Str("c_attn,c_proj,c_fc".into()))
                .expect("targets");
        }
        st.plan().expect("plan")
    }

    fn peak(model: &str, p: &lorafit_core::Plan) -> u64 {
        let (a, _) = estimate::resolve_model(p, None).unwrap_or_else(|e| panic!("{model}: {e}"));
        estimate::memory(&a, p).expect("memory").peak_reserved_bytes
    }

    /// Every catalog block and method, once each: the peak grows with batch, length and rank
    /// and never falls when checkpointing is turned off (the sampled tests below reach only
    /// some blocks per run).
    #[test]
    fn every_catalog_block_grows_with_batch_length_and_rank() {
        let mut checked = 0;
        for m in catalog::models().iter().filter(|m| m.variant_of.is_none()) {
            for method in 0..4u8 {
                let p = plan_for(&m.id, method, 2, 1024, 8, true);
                let (a, _) = estimate::resolve_model(&p, None).expect("model");
                if estimate::memory(&a, &p).is_err() {
                    continue;
                }
                let base = peak(&m.id, &p);
                for (what, q) in [
                    ("batch", plan_for(&m.id, method, 3, 1024, 8, true)),
                    ("length", plan_for(&m.id, method, 2, 1536, 8, true)),
                    ("rank", plan_for(&m.id, method, 2, 1024, 16, true)),
                    (
                        "no checkpointing",
                        plan_for(&m.id, method, 2, 1024, 8, false),
                    ),
                ] {
                    let v = peak(&m.id, &q);
                    assert!(v >= base, "{} method {method}: {what} {v} < {base}", m.id);
                }
                checked += 1;
            }
        }
        assert!(checked > 600, "{checked}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn monotone_in_batch_length_and_rank(idx in 0usize..10_000, method in 0u8..4, b in 1u64..64, s in 1u64..16384,
                                              r in 1u64..128, gc: bool) {
            let models: Vec<_> = catalog::models().iter().filter(|m| m.variant_of.is_none()).collect();
            let m = &models[idx % models.len()].id;
            let p = plan_for(m, method, b, s, r, gc);
            // Methods a block refuses (full or freeze on a pre-quantized checkpoint, 4-bit on
            // one already quantized) are skipped; the rest must grow with batch, length, rank.
            let (a, _) = estimate::resolve_model(&p, None).expect("model");
            prop_assume!(estimate::memory(&a, &p).is_ok());
            let base = peak(m, &p);
            prop_assert!(peak(m, &plan_for(m, method, b + 1, s, r, gc)) >= base);
            prop_assert!(peak(m, &plan_for(m, method, b, s + 64, r, gc)) >= base);
            prop_assert!(peak(m, &plan_for(m, method, b, s, r + 8, gc)) >= base);
            prop_assert!(peak(m, &plan_for(m, method, b, s, r, false)) >= peak(m, &plan_for(m, method, b, s, r, true)));
        }

        #[test]
        fn monotone_in_model_size(fam in 0usize..4, i in 0usize..8, method in 0u8..4, b in 1u64..16, s in 1u64..8192, gc: bool) {
            // Each family's sizes share vocabulary and shape rules, so bigger must never need less.
            let families: [&[&str]; 4] = [
                &["Qwen/Qwen2.5-0.5B", "Qwen/Qwen2.5-1.5B", "Qwen/Qwen2.5-3B", "Qwen/Qwen2.5-7B", "Qwen/Qwen2.5-14B", "Qwen/Qwen2.5-32B", "Qwen/Qwen2.5-72B"],
                &["meta-llama/Llama-2-7b-hf", "meta-llama/Llama-2-13b-hf", "meta-llama/Llama-2-70b-hf"],
                &["Qwen/Qwen3-0.6B", "Qwen/Qwen3-1.7B", "Qwen/Qwen3-4B", "Qwen/Qwen3-8B", "Qwen/Qwen3-14B", "Qwen/Qwen3-32B"],
                &["meta-llama/Llama-3.2-1B", "meta-llama/Llama-3.2-3B", "meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-70B", "meta-llama/Llama-3.1-405B"],
            ];
            let f = families[fam];
            let (small, large) = (f[i % (f.len() - 1)], f[i % (f.len() - 1) + 1]);
            prop_assert!(peak(large, &plan_for(large, method, b, s, 8, gc)) >= peak(small, &plan_for(small, method, b, s, 8, gc)),
                "{} < {}", large, small);
        }

        #[test]
        fn no_overflow_nan_or_panic_across_the_input_range(idx in 0usize..10_000, method in 0u8..4,
                b in 1u64..=65536, s in 1u64..=10_000_000, r in 1u64..=8192, gc: bool, n in 1i64..=4096, ga in 1i64..=65536) {
            let models: Vec<_> = catalog::models().iter().filter(|m| m.variant_of.is_none()).collect();
            let m = &models[idx % models.len()].id;
            let mut p = plan_for(m, method, b, s, r, gc);
            p.num_gpus = n as u64;
            p.grad_accum = ga as u64;
            let (a, src) = estimate::resolve_model(&p, None).expect("m");
            if let Ok(e) = estimate::estimate(&a, src, &p) {
                prop_assert!(e.peak_reserved_bytes >= e.peak_allocated_bytes);
                prop_assert!(e.step_seconds.is_finite() && e.step_seconds > 0.0);
                prop_assert!(e.tokens_per_second.is_finite());
                prop_assert_eq!(e.breakdown.total(), e.peak_reserved_bytes);
            }
        }
    }
}

#[test]
fn published_longest_context_points_within_25_percent() {
    // unsloth's README, "Hugging Face + FA2" column: the longest padded length that trained
    // (Llama 3.1 8B, 4-bit QLoRA r32 on all linear layers, batch 1). Not used for fitting.
    let text = include_str!("../data/validation/published_max_context.jsonl");
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("json");
        let plan = validation::settings_from_config(v["config"].as_object().expect("config"))
            .expect("keys")
            .plan()
            .expect("plan");
        let (arch, _) = estimate::resolve_model(&plan, None).expect("model");
        let budget = (v["vram_gb"].as_f64().expect("vram") * 1e9) as u64;
        let ours =
            estimate::longest_cutoff(&arch, &plan, budget).expect("fits at some length") as f64;
        let theirs = v["max_cutoff_len"].as_f64().expect("len");
        let err = ours / theirs - 1.0;
        assert!(
            err.abs() <= 0.25,
            "{}: lorafit {ours} vs published {theirs} ({:+.1} %)",
            v["id"],
            err * 100.0
        );
        n += 1;
    }
    assert_eq!(n, 4);
}

#[test]
fn published_vision_language_and_moe_peaks_within_25_percent() {
    // ms-swift's examples print torch's reserved peak per GPU; none was used for fitting. The
    // sample lengths and image sizes they do not state are assumed (each point says what).
    let points = validation::parse_published(validation::PUBLISHED_PEAKS).expect("jsonl");
    assert_eq!(points.len(), 5);
    for p in &points {
        let ours = p.estimate_reserved().expect("estimate");
        let err = p.error(ours);
        assert!(
            err.abs() <= 0.25,
            "{}: lorafit {:.2} GiB vs published {:.2} GiB ({:+.1} %)",
            p.id,
            ours as f64 / (1u64 << 30) as f64,
            p.published_bytes() / (1u64 << 30) as f64,
            err * 100.0
        );
    }
}

#[test]
fn every_llamafactory_key_is_accepted_with_a_value_of_its_type() {
    use lorafit_core::keys;
    assert!(keys::all().len() > 350, "{}", keys::all().len());
    assert!(keys::source().contains("LLaMA-Factory"));
    let sample = |k: &keys::LfKey| -> Val {
        match (&k.default, k.kind.as_str()) {
            _ if k.name == "quantization_bit" => Val::Int(4),
            (serde_json::Value::Bool(b), _) => Val::Bool(*b),
            (serde_json::Value::Number(n), _) if n.is_i64() => Val::Int(n.as_i64().unwrap_or(1)),
            (serde_json::Value::Number(n), _) => Val::Float(n.as_f64().unwrap_or(0.5)),
            (serde_json::Value::String(s), _) if !s.is_empty() => Val::Str(s.clone()),
            (_, "bool") => Val::Bool(true),
            (_, "int") => Val::Int(1),
            (_, "float") => Val::Float(0.5),
            (_, "enum") => Val::Str(k.choices[0].clone()),
            _ => Val::Str("x".into()),
        }
    };
    for k in keys::all() {
        let mut s = Settings::default();
        let v = sample(k);
        s.set(&k.name, v.clone())
            .unwrap_or_else(|e| panic!("{} = {v}: {e}", k.name));
        assert!(s.warnings.is_empty(), "{}: {:?}", k.name, s.warnings);
        // Every declared choice of an enum is accepted too.
        for c in &k.choices {
            Settings::default()
                .set(&k.name, Val::Str(c.clone()))
                .unwrap_or_else(|e| panic!("{} = {c}: {e}", k.name));
        }
    }
    // A value of the wrong type names the key and what it takes.
    let e = Settings::default()
        .set("val_size", Val::Str("lots".into()))
        .expect_err("float");
    assert_eq!(e.to_string(), "`val_size: lots` is not allowed: a number");
    let e = Settings::default()
        .set("mix_strategy", Val::Str("shuffle".into()))
        .expect_err("enum");
    assert!(e.to_string().contains("interleave_under"), "{e}");
    // v1's top-level keys are known as v1 keys.
    for k in [
        "model",
        "peft_config",
        "dist_config",
        "micro_batch_size",
        "quant_config",
    ] {
        assert!(keys::is_v1(k), "{k}");
    }
}

#[test]
fn catalog_variants_share_their_base_and_quantized_repos_carry_their_storage() {
    use lorafit_core::catalog;
    let all = catalog::models();
    assert!(all.len() >= 250, "{}", all.len());
    let mut ids: Vec<&str> = all.iter().map(|m| m.id.as_str()).collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "duplicate catalog ids");
    for m in all {
        let a = m.arch().unwrap_or_else(|e| panic!("{}: {e}", m.id));
        let lower = m.id.to_ascii_lowercase();
        // 01.AI names its AWQ / GPTQ repos `-4bits` / `-8bits`.
        let quantized = ["awq", "gptq", "bnb-4bit", "fp8", "aqlm", "-4bits", "-8bits"]
            .iter()
            .any(|q| lower.contains(q));
        // DeepSeek-V3 / R1 and Kimi K2 are published in FP8 under plain names.
        let native = (m.family == "DeepSeek-V3" && m.id.starts_with("deepseek-ai/"))
            || m.family == "Kimi K2";
        assert_eq!(a.stored_quant.is_some(), quantized || native, "{}", m.id);
        if let Some(sq) = &a.stored_quant {
            assert!(!sq.assumed, "{}: {}", m.id, sq.method);
        }
        if let Some(base) = &m.variant_of {
            let b = catalog::find_model(base)
                .expect("base")
                .arch()
                .expect("arch");
            assert_eq!(a.total_params(), b.total_params(), "{}", m.id);
        }
    }
    assert_eq!(
        catalog::find_model("qwen/qwen3-4b-instruct-2507")
            .expect("case-insensitive")
            .variant_of
            .as_deref(),
        Some("Qwen/Qwen3-4B")
    );
    // A variant published under another family name is listed under it (Qwen3.6 on Qwen3.5's
    // config blocks).
    let q36: Vec<_> = all.iter().filter(|m| m.family == "Qwen3.6").collect();
    assert_eq!(q36.len(), 2);
    assert!(q36.iter().all(|m| {
        m.variant_of
            .as_deref()
            .is_some_and(|b| b.starts_with("Qwen/Qwen3.5-"))
    }));
}

#[test]
fn yaml_reads_as_llamafactory_reads_it() {
    // LLaMA-Factory loads configs with OmegaConf over PyYAML (YAML 1.1): yes/on are booleans and
    // 1e-4 is a float; lists join as LLaMA-Factory's split_arg expects.
    let s = settings(
        "model_name_or_path: Qwen/Qwen2.5-7B\npacking: yes\nbf16: On\nplot_loss: off\nlearning_rate: 1e-4\n\
         lora_target: [q_proj, v_proj]\ndataset: [identity, alpaca_en_demo]\nresume_from_checkpoint: null\n",
    );
    assert_eq!(s.get("packing"), Some(&Val::Bool(true)));
    assert_eq!(s.get("bf16"), Some(&Val::Bool(true)));
    assert_eq!(s.get("plot_loss"), Some(&Val::Bool(false)));
    assert_eq!(s.get("learning_rate"), Some(&Val::Float(1e-4)));
    assert_eq!(
        s.get("lora_target"),
        Some(&Val::Str("q_proj,v_proj".into()))
    );
    assert_eq!(
        s.get("dataset"),
        Some(&Val::Str("identity,alpaca_en_demo".into()))
    );
    assert_eq!(s.get("resume_from_checkpoint"), None);
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
}

#[test]
fn share_links_round_trip_text_values_as_written() {
    // Found by the share_link fuzz target: a string key whose value looks like a number was
    // re-encoded as the number (`-.0e0` → `-0` → `0`).
    for q in [
        "2&gpu=-.0e0",
        "model_name_or_path=7B&template=1e5&output_dir=0012",
    ] {
        let (s, _) = export::from_query(q);
        let once = export::to_query(&s);
        assert_eq!(export::to_query(&export::from_query(&once).0), once, "{q}");
    }
    let (s, _) = export::from_query("template=0012");
    assert_eq!(s.get("template"), Some(&Val::Str("0012".into())));
    let mut s = Settings::default();
    s.set_assignment("output_dir=007").expect("set");
    assert_eq!(s.get("output_dir"), Some(&Val::Str("007".into())));
}

#[test]
fn v1_configs_take_v1_defaults_and_name_bad_plugins() {
    let s = settings("micro_batch_size: 2\ncutoff_len: 1024\n");
    let p = s.plan().expect("plan");
    assert_eq!(p.model, "Qwen/Qwen3-4B-Instruct-2507");
    assert_eq!(
        (p.batch_size, p.method),
        (2, lorafit_core::plan::Method::Full)
    );
    assert_eq!(p.precision, lorafit_core::plan::Precision::Mixed16);
    let e = Settings::from_yaml("model: Qwen/Qwen3-4B\npeft_config:\n  name: prefix\n")
        .expect_err("plugin");
    assert!(e.to_string().contains("lora or freeze"), "{e}");
    let e =
        Settings::from_yaml("model: Qwen/Qwen3-4B\ndist_config:\n  stage: 3\n").expect_err("name");
    assert!(e.to_string().contains("`name:`"), "{e}");
}

#[test]
fn exporting_what_was_read_back_writes_the_same_yaml() {
    // Found by the config_yaml fuzz target: defaults the export adds (stage, do_train) moved
    // between the first and the second export.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../lorafit-cli/tests/configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("configs") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "yaml") || path.ends_with("fsdp_config.yaml") {
            continue;
        }
        let s = Settings::from_yaml(&std::fs::read_to_string(&path).expect("read")).expect("parse");
        let once = export::to_llamafactory_yaml(&s, true);
        let twice = export::to_llamafactory_yaml(&export::yaml_round_trip(&s).expect("rt"), true);
        assert_eq!(once, twice, "{}", path.display());
        n += 1;
    }
    assert!(n >= 30, "{n}");
}

#[test]
fn strings_yaml_would_misread_are_quoted_on_export() {
    // Dates, YAML 1.1 booleans, indicators, comments, colons, line separators, a BOM: each is
    // written so that it reads back as the same text (plain only when nothing could misread it).
    for text in [
        "2024-01-01",
        "yes",
        "On",
        "a: b",
        "#x",
        "x #y",
        "saves/qwen 7b/lora",
        "-dash",
        "q\u{2028}r",
        "bom\u{feff}",
        "quote\"and\\slash",
        "中文/路径",
        "emoji 😀",
    ] {
        let mut s = settings("model_name_or_path: Qwen/Qwen2.5-7B\n");
        s.set("output_dir", Val::Str(text.into())).expect("set");
        let yaml = export::to_llamafactory_yaml(&s, true);
        let back = Settings::from_yaml(&yaml).unwrap_or_else(|e| panic!("{text:?}: {e}\n{yaml}"));
        assert_eq!(
            back.get("output_dir"),
            Some(&Val::Str(text.into())),
            "{yaml}"
        );
    }
    // What needs no quotes stays plain, as LLaMA-Factory's examples write it.
    let s = settings("model_name_or_path: Qwen/Qwen2.5-7B\nlora_target: q_proj,v_proj\n");
    let yaml = export::to_llamafactory_yaml(&s, true);
    assert!(
        yaml.contains("model_name_or_path: Qwen/Qwen2.5-7B\n"),
        "{yaml}"
    );
    assert!(yaml.contains("lora_target: q_proj,v_proj\n"), "{yaml}");
}

#[test]
fn text_that_looks_like_a_number_stays_text_through_yaml() {
    // Found by the config_yaml fuzz target: `model: -0.` was written back as `-0`, which YAML
    // reads as the number 0.
    for yaml in [
        "model: -0.\nmicro_batch_size: 1\n",
        "model_name_or_path: Qwen/Qwen2.5-7B\noutput_dir: '007'\ntemplate: '12'\nquantization_bit: 4\n",
    ] {
        let s = settings(yaml);
        let once = export::to_llamafactory_yaml(&s, true);
        let back = export::yaml_round_trip(&s).expect("round trip");
        assert_eq!(export::to_llamafactory_yaml(&back, true), once, "{yaml}");
        for k in [
            "model_name_or_path",
            "output_dir",
            "template",
            "quantization_bit",
        ] {
            assert_eq!(back.get(k), s.get(k), "{k} in {yaml}");
        }
    }
    // Control characters in text are refused (they did not survive YAML's block scalars).
    let e = Settings::from_yaml("model_name_or_path: \">-0\\r\\r\"\n").expect_err("cr");
    assert!(e.to_string().contains("without control characters"), "{e}");
    let e =
        Settings::from_yaml("model_name_or_path: x\ntemplate: \"qwen\\u0007\"\n").expect_err("bel");
    assert!(e.to_string().contains("template"), "{e}");
    // Enum values are still numbers for LLaMA-Factory.
    let s = settings("model_name_or_path: x\nquantization_bit: 4\n");
    assert!(export::to_llamafactory_yaml(&s, false).contains("\nquantization_bit: 4\n"));
}

// ---------------------------------------------------------------- transformers' own counts

/// Every catalog config block against the model transformers 5.8 builds from it
/// (`scripts/arch_reference.py`, meta device): total parameters, the vision tower + projector,
/// the parameters a token activates (MoE), and LoRA rank 8 on `lora_target: all` as
/// LLaMA-Factory resolves it (frozen vision tower and projector, routers and fused experts left
/// out). Exact, for every architecture.
#[test]
fn every_catalog_block_counts_as_transformers_builds_it() {
    let reference: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/arch_reference.json")).expect("reference");
    let models = reference["models"].as_object().expect("models");
    let blocks: Vec<_> = catalog::models()
        .iter()
        .filter(|m| m.variant_of.is_none())
        .collect();
    assert_eq!(
        models.len(),
        blocks.len(),
        "regenerate tests/fixtures/arch_reference.json"
    );
    let mut bad = Vec::new();
    for m in blocks {
        let r = &models[&m.id];
        let a = m.arch().expect("arch");
        let want = |k: &str| r[k].as_u64().expect("count");
        let yaml = format!(
            "model_name_or_path: {}\nfinetuning_type: lora\nlora_rank: 8\nlora_target: all\n",
            m.id
        );
        // Where LLaMA-Factory's `all` finds no module (GPT-2's Conv1D), PEFT refuses: so must
        // lorafit.
        let lora = if want("lora_all_r8") == 0 {
            let plan = settings(&yaml).plan().expect("plan");
            let (arch, src) = estimate::resolve_model(&plan, None).expect("model");
            match estimate::estimate(&arch, src, &plan) {
                Err(e) => {
                    assert!(
                        e.to_string().contains("finds no nn.Linear"),
                        "{}: {e}",
                        m.id
                    );
                    0
                }
                Ok(e) => e.trainable_params,
            }
        } else {
            est(&yaml).trainable_params
        };
        for (what, got, expected) in [
            ("total", a.total_params(), want("total")),
            ("vision", a.vision_params(), want("vision")),
            ("lora all r8", lora, want("lora_all_r8")),
        ] {
            if got != expected {
                bad.push(format!(
                    "{} {what}: lorafit {got}, transformers {expected}",
                    m.id
                ));
            }
        }
        if a.moe.is_some() && a.model_type != "gpt_oss" && a.active_params() != want("active") {
            bad.push(format!(
                "{} active: lorafit {}, transformers {}",
                m.id,
                a.active_params(),
                want("active")
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// The web page's catalog leaves out the config keys lorafit-core never reads (build.rs): every
/// block parses to the same model without them.
#[test]
fn the_config_keys_the_page_leaves_out_are_never_read() {
    fn strip(v: &mut serde_json::Value) {
        if let serde_json::Value::Object(m) = v {
            for k in lorafit_core::unread_keys::UNREAD_CONFIG_KEYS {
                m.remove(k);
            }
            m.values_mut().for_each(strip);
        }
    }
    let mut stripped_any = 0;
    for m in catalog::models().iter().filter(|m| m.variant_of.is_none()) {
        let mut c = m.config.clone();
        strip(&mut c);
        stripped_any += usize::from(c != m.config);
        assert_eq!(
            ModelArch::from_config_value(&c).expect(&m.id),
            m.arch().expect(&m.id),
            "{}",
            m.id
        );
    }
    assert!(
        stripped_any > 150,
        "only {stripped_any} blocks had such keys"
    );
}

#[test]
fn new_architectures_match_their_model_cards() {
    // (id, published total, tolerance): DeepSeek-V3 671 B, V2 236 B, V2-Lite 15.7 B; Qwen3-Next
    // 80 B; Llama 4 Scout 109 B / Maverick 400 B; Qwen2.5-VL 7B 8.29 B / 72B 73.4 B; Qwen3-VL-8B
    // 8.77 B; Gemma 3 27B 27.4 B; Mistral Small 3.1 24 B; Qwen3.5-35B-A3B 35 B. The published
    // figures exclude multi-token-prediction layers, which transformers does not build.
    for (id, published) in [
        ("deepseek-ai/DeepSeek-V3", 671e9),
        ("deepseek-ai/DeepSeek-V2", 236e9),
        ("deepseek-ai/DeepSeek-V2-Lite", 15.7e9),
        ("Qwen/Qwen3-Next-80B-A3B-Instruct", 80e9),
        ("meta-llama/Llama-4-Scout-17B-16E", 109e9),
        ("meta-llama/Llama-4-Maverick-17B-128E", 400e9),
        ("Qwen/Qwen2.5-VL-7B-Instruct", 8.29e9),
        ("Qwen/Qwen2.5-VL-72B-Instruct", 73.4e9),
        // Qwen2-VL-72B-Instruct (QVQ-72B-Preview's architecture): 73.4 B.
        ("Qwen/Qwen2-VL-72B-Instruct", 73.4e9),
        // Qwen3-VL-235B-A22B: 236 B.
        ("Qwen/Qwen3-VL-235B-A22B-Instruct", 236e9),
        // GLM-4.5V (GLM-4.5-Air with GLM-4.1V's tower): 108 B.
        ("zai-org/GLM-4.5V", 108e9),
        ("Qwen/Qwen3-VL-8B-Instruct", 8.77e9),
        ("google/gemma-3-27b-it", 27.4e9),
        ("mistralai/Mistral-Small-3.1-24B-Instruct-2503", 24.0e9),
        ("Qwen/Qwen3.5-35B-A3B", 35.0e9),
        // Qwen3.5's model cards: 397 B total (17 B active), 122 B (10 B active).
        ("Qwen/Qwen3.5-397B-A17B", 397e9),
        ("Qwen/Qwen3.5-122B-A10B", 122e9),
        // Kimi K2 (DeepSeek-V3's architecture, 384 experts): 1.03 T; Moonlight 16 B;
        // LLaVA 1.5 (CLIP ViT-L/336 + an MLP projector) 7.06 B / 13.4 B.
        ("moonshotai/Kimi-K2-Instruct", 1.026e12),
        ("moonshotai/Moonlight-16B-A3B-Instruct", 16.0e9),
        ("llava-hf/llava-1.5-7b-hf", 7.06e9),
        ("llava-hf/llava-1.5-13b-hf", 13.35e9),
        // InternVL3.5's page: 1.06 B (InternViT-300M + Qwen3-0.6B with an untied head) to
        // 240.70 B (InternViT-6B + Qwen3-235B-A22B).
        ("OpenGVLab/InternVL3_5-1B-HF", 1.06e9),
        ("OpenGVLab/InternVL3_5-241B-A28B-HF", 240.70e9),
        // LLaMA-Factory's supported-models table: MiniMax-M2 229 B (without its multi-token
        // prediction modules, which transformers does not build either).
        ("MiniMaxAI/MiniMax-M2", 229e9),
        // The Hub's counts: Qwen1.5-MoE-A2.7B 14.3 B, Qwen2-57B-A14B 57.4 B; StarCoder 2 3.03 /
        // 7.17 / 15.96 B (3B and 7B tie their embeddings, 15B does not); Pixtral 12B 12.7 B;
        // PaliGemma 3B 2.92 B, PaliGemma 2 3.03 / 9.66 / 27.7 B; Mistral Small 3 23.6 B.
        ("Qwen/Qwen1.5-MoE-A2.7B", 14.3e9),
        ("Qwen/Qwen2-57B-A14B", 57.4e9),
        ("bigcode/starcoder2-3b", 3.03e9),
        ("bigcode/starcoder2-7b", 7.17e9),
        ("bigcode/starcoder2-15b", 15.96e9),
        ("mistral-community/pixtral-12b", 12.7e9),
        ("google/paligemma-3b-pt-224", 2.92e9),
        ("google/paligemma2-3b-pt-224", 3.03e9),
        ("google/paligemma2-10b-pt-448", 9.66e9),
        ("google/paligemma2-28b-pt-896", 27.7e9),
        ("mistralai/Mistral-Small-24B-Base-2501", 23.6e9),
        // The Hub's counts for DeepSeek LLM 7B / 67B (6.91 / 67.4 B) and DeepSeek Coder 1.3B /
        // 6.7B / 33B (1.35 / 6.74 / 33.3 B): Llama's architecture.
        ("deepseek-ai/deepseek-llm-7b-base", 6.91e9),
        ("deepseek-ai/deepseek-llm-67b-base", 67.4e9),
        ("deepseek-ai/deepseek-coder-1.3b-base", 1.35e9),
        ("deepseek-ai/deepseek-coder-6.7b-base", 6.74e9),
        ("deepseek-ai/deepseek-coder-33b-base", 33.3e9),
        // Mixtral 8x22B: 141 B (39 B active, checked below).
        ("mistralai/Mixtral-8x22B-v0.1", 141e9),
        // Llama 3.2 Vision 11B 10.7 B, 90B 88.6 B.
        ("meta-llama/Llama-3.2-11B-Vision", 10.7e9),
        ("meta-llama/Llama-3.2-90B-Vision-Instruct", 88.6e9),
        // The Hub's counts for LLaMA (1) 7B / 13B / 30B / 65B (6.74 / 13.0 / 32.5 / 65.3 B),
        // SmolLM and SmolLM2 135M / 360M / 1.7B (135 M / 362 M / 1.71 B), SOLAR 10.7B,
        // Codestral 22B (22.2 B), Ministral 8B 2410 (8.02 B), Breeze 7B (7.49 B: Mistral 7B with
        // 61,952 tokens), OpenChat 3.5 (7.24 B), Yi-Coder 1.5B / 9B (1.48 / 8.83 B) and
        // MedGemma 27B text (27.0 B: Gemma 3 27B's language model alone).
        ("huggyllama/llama-7b", 6.74e9),
        ("huggyllama/llama-13b", 13.0e9),
        ("huggyllama/llama-30b", 32.5e9),
        ("huggyllama/llama-65b", 65.3e9),
        ("HuggingFaceTB/SmolLM-135M", 135e6),
        ("HuggingFaceTB/SmolLM2-360M-Instruct", 362e6),
        ("HuggingFaceTB/SmolLM2-1.7B", 1.71e9),
        ("upstage/SOLAR-10.7B-Instruct-v1.0", 10.7e9),
        ("mistralai/Codestral-22B-v0.1", 22.2e9),
        ("mistralai/Ministral-8B-Instruct-2410", 8.02e9),
        ("MediaTek-Research/Breeze-7B-Instruct-v1_0", 7.49e9),
        ("openchat/openchat-3.5-0106", 7.24e9),
        ("01-ai/Yi-Coder-1.5B-Chat", 1.48e9),
        ("01-ai/Yi-Coder-9B", 8.83e9),
        ("google/medgemma-27b-text-it", 27.0e9),
        // New architectures: OLMo (1) 1B / 7B (1.18 / 6.89 B; LayerNorms without parameters),
        // Command R / R+ and Aya 23 8B (35.0 / 104 / 8.03 B; one LayerNorm a layer, R+'s
        // per-head q / k norms), Granite 3 MoE 1B-A400M / 3B-A800M (1.33 / 3.3 B).
        ("allenai/OLMo-1B-hf", 1.18e9),
        ("allenai/OLMo-7B-hf", 6.89e9),
        ("CohereForAI/c4ai-command-r-v01", 35.0e9),
        ("CohereForAI/c4ai-command-r-plus", 104e9),
        ("CohereForAI/aya-23-8B", 8.03e9),
        ("ibm-granite/granite-3.0-1b-a400m-instruct", 1.33e9),
        ("ibm-granite/granite-3.1-3b-a800m-instruct", 3.3e9),
        // InternLM 2.5 (remote code: Llama's shape, wqkv fused): the Hub's 1.89 / 19.9 B.
        ("internlm/internlm2_5-1_8b", 1.89e9),
        ("internlm/internlm2_5-20b", 19.86e9),
        // ChatGLM (remote code): the Hub's 6.24 B (ChatGLM3-6B), 9.4 B (GLM-4-9B-Chat) and
        // 9.48 B (GLM-4-9B-Chat-1M, four KV groups).
        ("zai-org/chatglm3-6b", 6.24e9),
        ("zai-org/glm-4-9b-chat", 9.40e9),
        ("zai-org/glm-4-9b-chat-1m", 9.48e9),
        // GPT-2's model cards: 124 M / 355 M / 774 M / 1.5 B (exact below).
        ("openai-community/gpt2-medium", 354.8e6),
        // Phi-3.5-MoE 41.9 B (6.6 B active, below; LayerNorms with biases, biased attention
        // and head); InternLM3 8B (remote code, Llama's modules) 8.8 B.
        ("microsoft/Phi-3.5-MoE-instruct", 41.9e9),
        ("internlm/internlm3-8b-instruct", 8.80e9),
    ] {
        let a = catalog::find_model(id).expect(id).arch().expect("arch");
        let err = a.total_params() as f64 / published - 1.0;
        assert!(
            err.abs() < 0.005,
            "{id}: {} vs {published:e} ({:+.2} %)",
            a.total_params(),
            100.0 * err
        );
    }
    let arch = |id: &str| catalog::find_model(id).expect(id).arch().expect("arch");
    // InternLM 2.5 7B: a parameter report of the loaded weights (7,737,708,544 of which the two
    // 92544-row tables 758,120,448), exactly; `all` is InternLM2's own module names.
    let il = arch("internlm/internlm2_5-7b-chat");
    assert_eq!(il.total_params(), 7_737_708_544);
    assert_eq!(il.embedding_params() * 2, 758_120_448);
    assert_eq!(il.all_lora_targets(), ["wqkv", "wo", "w1", "w3", "w2"]);
    // BLOOM's model cards count 559,214,592 / 3,002,557,440 / 7,069,016,064 parameters (biased
    // LayerNorms, the embedding's own LayerNorm, a tied head); Falcon and BLOOM name their
    // modules query_key_value / dense / dense_h_to_4h / dense_4h_to_h.
    for (id, published) in [
        ("bigscience/bloomz-560m", 559_214_592),
        ("bigscience/bloom-3b", 3_002_557_440),
        ("bigscience/bloomz-7b1-mt", 7_069_016_064),
    ] {
        assert_eq!(arch(id).total_params(), published, "{id}");
    }
    let falcon = arch("tiiuae/falcon-7b-instruct");
    assert_eq!(
        falcon.all_lora_targets(),
        ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]
    );
    // The older spellings transformers still maps (`n_embed`, `n_layer`, `n_head`), Falcon
    // without multi-query (a KV head per head), `ffn_hidden_size`, and what is missing named.
    let old = ModelArch::from_config_json(
        r#"{"model_type": "falcon", "n_embed": 64, "n_layer": 2, "n_head": 4,
            "multi_query": false, "parallel_attn": false, "ffn_hidden_size": 96,
            "vocab_size": 100}"#,
    )
    .expect("falcon");
    assert_eq!(
        (old.hidden_size, old.num_layers, old.num_key_value_heads),
        (64, 2, 4)
    );
    assert_eq!((old.intermediate_size, old.norms_per_layer), (96, 2));
    let e = ModelArch::from_config_json(r#"{"model_type": "bloom", "n_layer": 2, "n_head": 4}"#)
        .expect_err("no width");
    assert!(e.to_string().contains("hidden_size"), "{e}");
    // ChatGLM's own spellings (`num_layers`, `ffn_hidden_size`, `padded_vocab_size`,
    // `kv_channels`, `multi_query_group_num` only under `multi_query_attention`) and module
    // names (gate and up fused in dense_h_to_4h; `output_layer` is never a target).
    let glm = arch("zai-org/glm-4-9b");
    assert_eq!(
        (
            glm.num_layers,
            glm.intermediate_size,
            glm.vocab_size,
            glm.head_dim
        ),
        (40, 13696, 151552, 128)
    );
    assert_eq!(glm.num_key_value_heads, 2);
    assert_eq!(
        glm.all_lora_targets(),
        ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]
    );
    let mha = ModelArch::from_config_json(
        r#"{"model_type": "chatglm", "hidden_size": 64, "num_layers": 2,
            "num_attention_heads": 4, "multi_query_group_num": 2, "kv_channels": 16,
            "ffn_hidden_size": 96, "padded_vocab_size": 100}"#,
    )
    .expect("chatglm without multi-query");
    assert_eq!((mha.num_key_value_heads, mha.qkv_bias), (4, false));
    let e = ModelArch::from_config_json(
        r#"{"model_type": "chatglm", "hidden_size": 64, "num_layers": 2,
            "num_attention_heads": 4, "multi_query_attention": true, "kv_channels": 16,
            "ffn_hidden_size": 96, "padded_vocab_size": 100}"#,
    )
    .expect_err("no group count");
    assert!(e.to_string().contains("multi_query_group_num"), "{e}");
    // Falcon-7B's multi-query attention: one KV head; 40B / 180B's new decoder: 8.
    assert_eq!(falcon.num_key_value_heads, 1);
    assert_eq!(arch("tiiuae/falcon-180b-chat").num_key_value_heads, 8);
    // Qwen3.5-9B's safetensors index says 19,306,216,416 bytes of bf16 = 9,653,108,208
    // parameters, with a multi-token-prediction layer transformers does not build: one gated
    // attention layer + MLP (58,720,768 + 150,994,944 + norms) and its 8192 → 4096 fc.
    let q35 = arch("Qwen/Qwen3.5-9B");
    let mtp = 58_720_768 + 150_994_944 + 33_554_432 + 4 * 4096 + 2 * 4096 + 512;
    let err = (q35.total_params() + mtp) as f64 / 9_653_108_208.0 - 1.0;
    assert!(err.abs() < 1e-5, "{:+e}", err);
    // Active: DeepSeek-V3 37 B; Llama 4 17 B (language model); Qwen2.5-VL-7B's tower ~0.67 B.
    let v3 = arch("deepseek-ai/DeepSeek-V3");
    assert!((v3.active_params() as f64 / 37e9 - 1.0).abs() < 0.02);
    let scout = arch("meta-llama/Llama-4-Scout-17B-16E");
    assert!(((scout.active_params() - scout.vision_params()) as f64 / 17e9 - 1.0).abs() < 0.02);
    let vl = arch("Qwen/Qwen2.5-VL-7B-Instruct");
    assert!((vl.vision_params() as f64 / 0.67e9 - 1.0).abs() < 0.02);
    // Active: Qwen1.5-MoE 2.7 B ("A2.7B"), Qwen2-57B 14 B ("A14B"): 4 of 60 and 8 of 64 routed
    // experts, the shared expert always.
    let q15 = arch("Qwen/Qwen1.5-MoE-A2.7B");
    assert!((q15.active_params() as f64 / 2.7e9 - 1.0).abs() < 0.02);
    let q3vl = arch("Qwen/Qwen3-VL-235B-A22B-Instruct");
    let lm_active = (q3vl.active_params() - q3vl.vision_params()) as f64;
    assert!((lm_active / 22e9 - 1.0).abs() < 0.02, "{lm_active}");
    let x22 = arch("mistralai/Mixtral-8x22B-Instruct-v0.1");
    assert!((x22.active_params() as f64 / 39e9 - 1.0).abs() < 0.01);
    // GPT-2 (learned positions, biased Conv1D projections, a tied head): 124,439,808 and
    // 1,557,611,200 parameters; `all` finds none of its Conv1D layers (LLaMA-Factory's class-name
    // test), named ones are wrapped as PEFT does, both c_proj (attention and MLP) by one name.
    assert_eq!(arch("gpt2").total_params(), 124_439_808);
    assert_eq!(
        arch("openai-community/gpt2-xl").total_params(),
        1_557_611_200
    );
    let e = settings("model_name_or_path: gpt2\nfinetuning_type: lora\nlora_target: all\n")
        .plan()
        .and_then(|p| {
            let (a, src) = estimate::resolve_model(&p, None)?;
            estimate::estimate(&a, src, &p)
        })
        .expect_err("all on Conv1D");
    assert!(e.to_string().contains("c_attn, c_proj, c_fc"), "{e}");
    let named = est(
        "model_name_or_path: gpt2\nfinetuning_type: lora\nlora_rank: 8\nlora_target: c_attn,c_proj\n",
    );
    // c_attn 768 → 2304, attention c_proj 768 → 768, MLP c_proj 3072 → 768, 12 layers.
    assert_eq!(
        named.trainable_params,
        12 * 8 * ((768 + 2304) + (768 + 768) + (3072 + 768))
    );
    let phimoe = arch("microsoft/Phi-3.5-MoE-instruct");
    assert!((phimoe.active_params() as f64 / 6.6e9 - 1.0).abs() < 0.01);
    assert_eq!(
        phimoe.all_lora_targets(),
        ["q_proj", "k_proj", "v_proj", "o_proj"]
    );
    let q57 = arch("Qwen/Qwen2-57B-A14B");
    assert!((q57.active_params() as f64 / 14e9 - 1.0).abs() < 0.02);
    // Pixtral's 400 M vision encoder (the tower without LLaVA's projector).
    let pix = arch("mistral-community/pixtral-12b").vision.expect("tower");
    assert!((pix.tower_params as f64 / 0.4e9 - 1.0).abs() < 0.02);
    // StarCoder 2: LayerNorms with biases, a plain GELU MLP (`c_fc`, `c_proj`) with biases,
    // biased attention projections; LoRA `all` finds exactly those.
    let sc = arch("bigcode/starcoder2-3b");
    assert_eq!(
        sc.all_lora_targets(),
        ["q_proj", "k_proj", "v_proj", "o_proj", "c_fc", "c_proj"]
    );
    assert!(sc.layer_linears().iter().all(|l| l.bias));
    assert_eq!(sc.norm_width(), 2 * sc.hidden_size);
    // The stacks: 3 dense + 58 MoE layers; 36 DeltaNet + 12 attention; Maverick alternates.
    assert_eq!(v3.layer_kinds.iter().filter(|k| k.moe).count(), 58);
    let next = arch("Qwen/Qwen3-Next-80B-A3B-Instruct");
    assert_eq!(next.attention_layers(), 12);
    let mav = arch("meta-llama/Llama-4-Maverick-17B-128E");
    assert_eq!(mav.layer_kinds.iter().filter(|k| k.moe).count(), 24);
    // Gemma 4's model card counts the language model: 31B 30.7 B; 26B-A4B 25.2 B with 3.8 B
    // active (8 of 128 experts beside the dense MLP); the vision encoder ~550 M.
    for (id, total, active) in [
        ("google/gemma-4-31B", 30.7e9, 30.7e9),
        ("google/gemma-4-26B-A4B", 25.2e9, 3.8e9),
    ] {
        let a = arch(id);
        let v = a.vision_params();
        // Within 0.5 %, or the rounding of a two-digit figure (3.8 B: 2 %).
        for (what, got, published, tol) in [
            ("total", a.total_params() - v, total, 0.005),
            ("active", a.active_params() - v, active, 0.02),
        ] {
            let err = got as f64 / published - 1.0;
            assert!(err.abs() < tol, "{id} {what}: {got} vs {published:e}");
        }
        assert!((v as f64 / 0.55e9 - 1.0).abs() < 0.05, "{id} vision {v}");
        // Every 6th layer is full attention: wider heads (512), fewer kv heads, keys as values.
        assert_eq!(a.attention_layers(), a.num_layers);
        let g = a.global_attention.clone().expect("gemma 4");
        assert!(g.k_eq_v && g.head_dim == 512);
    }
    let g31 = arch("google/gemma-4-31B");
    let full = g31
        .layer_kinds
        .iter()
        .filter(|k| k.mixer == lorafit_core::arch::Mixer::GlobalAttention)
        .count();
    assert_eq!(full, 10);
    // Ministral 3 (Mistral 3's wrapper around a Mistral text model, Mistral Small 3.1's Pixtral
    // tower): 3.4 B and 13.5 B in the language model, a 0.41 B vision encoder; for 14B one listing
    // gives 13,506,073,600 + 438,958,080 exactly.
    for (id, lm) in [
        ("mistralai/Ministral-3-3B-Base-2512", 3.4e9),
        ("mistralai/Ministral-3-14B-Base-2512", 13.5e9),
    ] {
        let a = arch(id);
        let got = a.language_params() as f64;
        assert!((got / lm - 1.0).abs() < 0.01, "{id}: {got}");
        let tower = a.vision.as_ref().expect("tower").tower_params as f64;
        assert!((tower / 0.41e9 - 1.0).abs() < 0.02, "{id}: tower {tower}");
    }
    let m14 = arch("mistralai/Ministral-3-14B-Base-2512");
    assert_eq!(
        (m14.language_params(), m14.vision_params()),
        (13_506_073_600, 438_958_080)
    );
    // E2B / E4B: "5.1 B with embeddings" (the per-layer tables) and 2.3 B effective (the text
    // model without them); E4B's bf16 safetensors are 15.9 GB (7.95 B parameters).
    let e2b = arch("google/gemma-4-E2B");
    let err = e2b.total_params() as f64 / 5.1e9 - 1.0;
    assert!(err.abs() < 0.005, "E2B total {}", e2b.total_params());
    let effective = e2b.total_params() - e2b.vision_params() - e2b.per_layer_embedding_params();
    assert!(
        (effective as f64 / 2.3e9 - 1.0).abs() < 0.02,
        "E2B effective {effective}"
    );
    let e4b = arch("google/gemma-4-E4B");
    assert!((e4b.total_params() as f64 * 2.0 / 15.9e9 - 1.0).abs() < 0.005);
    // The last 20 (E2B) / 18 (E4B) layers reuse earlier keys and values: no k / v projections;
    // E2B's have MLPs twice as wide.
    let shared = |a: &ModelArch| a.layer_kinds.iter().filter(|k| k.kv_shared).count();
    assert_eq!((shared(&e2b), shared(&e4b)), (20, 18));
    let last = *e2b.layer_kinds.last().expect("layers");
    let linears = e2b.kind_linears(last);
    let names: Vec<_> = linears.iter().map(|l| l.name).collect();
    assert!(
        !names.contains(&"k_proj") && !names.contains(&"v_proj"),
        "{names:?}"
    );
    let gate = linears.iter().find(|l| l.name == "gate_proj").expect("mlp");
    assert_eq!(gate.out_features, 2 * 6144);
    // A Gemma 4 config that leaves keys out takes transformers' defaults: 256-wide per-layer
    // embeddings over 262 144 rows, 512-wide global heads on every 6th layer, a 64-wide vision
    // head. transformers 5.8 builds this one with 404,371,552 parameters.
    let minimal = r#"{"model_type": "gemma4", "text_config": {"model_type": "gemma4_text", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 6, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 1000}, "vision_config": {"model_type": "gemma4_vision", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4}}"#;
    let minimal = ModelArch::from_config_json(minimal).expect("defaults");
    assert_eq!(minimal.total_params(), 404_371_552);
    // The audio tower (~300 M) counts with the vision tower, as LLaMA-Factory freezes it.
    assert!(e2b.vision_params() > 470_000_000 && e4b.vision_params() > 470_000_000);
}

#[test]
fn paligemma_and_pixtral_take_their_processors_tokens() {
    // PaliGemma: every 14-px patch of the fixed square is a token (LLaMA-Factory's paligemma
    // plugin repeats the image token `image_seq_length` times), whatever the image.
    let keys = ImageKeys::default();
    for (id, n) in [
        ("google/paligemma-3b-pt-224", 256),
        ("google/paligemma2-10b-pt-448", 1024),
        ("google/paligemma2-28b-pt-896", 4096),
    ] {
        let v = tower(id);
        assert_eq!(v.kind, VisionKind::PaliGemma);
        assert_eq!(v.image_tokens(&keys), (n, n), "{id}");
        assert_eq!(v.sized_image_tokens(1000, 300, &keys), (n, n), "{id}");
    }
    // Pixtral 12B (LLaVA format): 16-px patches, no merger; a 768² image (LLaMA-Factory's
    // default image_max_pixels) is 48 × 48 patches plus a break token per row (the last one
    // the end token).
    let pix = tower("mistral-community/pixtral-12b");
    assert_eq!((pix.kind, pix.merge), (VisionKind::Pixtral, 1));
    assert_eq!(pix.image_tokens(&keys), (48 * 48 + 48, 48 * 48));
    // Mistral Small 3.1 keeps its 2×2 merger: the processor rounds 768 px up to 55 patches of
    // 14 px, the tower encodes all 55 × 55, the merger keeps 27 × 27 tokens.
    let small = tower("mistralai/Mistral-Small-3.1-24B-Instruct-2503");
    assert_eq!(small.image_tokens(&keys), (27 * 27 + 27, 55 * 55));
    // A PaliGemma LoRA leaves the SigLIP tower alone unless `freeze_vision_tower: false`, which
    // wraps its 27 blocks' q/k/v/out_proj and fc1/fc2 too (rank 8: 8 × (in + out) each).
    let base = "model_name_or_path: google/paligemma2-3b-pt-224\nfinetuning_type: lora\nlora_rank: 8\nlora_target: all\n";
    let frozen = est(base).trainable_params;
    let open = est(&format!("{base}freeze_vision_tower: false\n")).trainable_params;
    let (h, i) = (1152u64, 4304u64);
    assert_eq!(open - frozen, 27 * 8 * (4 * 2 * h + 2 * (h + i)));
}

#[test]
fn llama_3_2_vision_reads_the_image_through_cross_attention() {
    use lorafit_core::arch::Mixer;
    let arch = catalog::find_model("meta-llama/Llama-3.2-11B-Vision-Instruct")
        .expect("id")
        .arch()
        .expect("arch");
    // 40 decoder layers, of which `cross_attention_layers` 3, 8, …, 38 attend to the image.
    let cross: Vec<usize> = (0..arch.layer_kinds.len())
        .filter(|&i| arch.layer_kinds[i].mixer == Mixer::CrossAttention)
        .collect();
    assert_eq!(cross, [3, 8, 13, 18, 23, 28, 33, 38]);
    // One <|image|> token in the text; the tower encodes 4 tiles of 40 × 40 patches + a class
    // token each.
    let v = arch.vision.clone().expect("tower");
    assert_eq!(v.kind, VisionKind::Mllama);
    assert_eq!(v.image_tokens(&ImageKeys::default()), (1, 4 * 1601));
    // LLaMA-Factory's `all` wraps the cross-attention projections too (not the tower's).
    let base = "model_name_or_path: meta-llama/Llama-3.2-11B-Vision-Instruct\nfinetuning_type: lora\nlora_rank: 8\nlora_target: all\ncutoff_len: 1024\nper_device_train_batch_size: 1\n";
    let e = est(&format!("{base}images_per_sample: 1\n"));
    assert_eq!(e.trainable_params, 26_214_400);
    // Without checkpointing each cross-attention layer keeps keys and values over the image's
    // 6404 patches: a second image costs 8 layers × 6404 × 2 × 1024 (kv width) × 2 bytes (bf16)
    // and the projected features 6404 × 4096 × 2 bytes, and nothing in the text sequence (one
    // token an image). With checkpointing only the features stay (the logits outweigh one
    // layer's recomputation).
    let grown = |extra: &str| {
        let one = est(&format!("{base}bf16: true\n{extra}images_per_sample: 1\n"));
        let two = est(&format!("{base}bf16: true\n{extra}images_per_sample: 2\n"));
        (two.breakdown.activations - one.breakdown.activations) as f64
    };
    let features = 6404.0 * 4096.0 * 2.0;
    let kv = 8.0 * 6404.0 * 2.0 * 1024.0 * 2.0;
    assert_eq!(grown(""), features);
    assert_eq!(
        grown("disable_gradient_checkpointing: true\n"),
        features + kv
    );
    // Time: those layers' k / v projections run over the image's patches (2 × 4096 × 1024
    // weights each), and every text token attends to all of them (4 · patches · 4096 FLOPs a
    // layer); LoRA with checkpointing runs them 3 times (forward, recompute, input gradients),
    // the frozen tower once. A second image adds exactly that per text token.
    let flops = |n: u64| est(&format!("{base}images_per_sample: {n}\n")).flops_per_token;
    let p = 6404.0;
    let cross = 8.0 * (2.0 * 2.0 * 4096.0 * 1024.0 * p / 1024.0 + 4.0 * p * 4096.0);
    let tower = 2.0 * v.tower_params as f64 * p / 1024.0;
    let grew = flops(2) - flops(1);
    assert!(
        (grew / (3.0 * cross + tower) - 1.0).abs() < 1e-9,
        "{grew} vs {}",
        3.0 * cross + tower
    );
}

#[test]
fn vision_towers_train_and_take_tokens_as_llamafactory_says() {
    let base = "model_name_or_path: Qwen/Qwen2.5-VL-7B-Instruct\nper_device_train_batch_size: 1\ncutoff_len: 4096\n";
    let arch = catalog::find_model("Qwen/Qwen2.5-VL-7B-Instruct")
        .expect("id")
        .arch()
        .expect("arch");
    let v = arch.vision.clone().expect("tower");
    // 768² (LLaMA-Factory's image_max_pixels) at 14 px × 2×2 merge: 27 × 27 pad tokens between
    // <|vision_start|> and <|vision_end|>, 4× as many patches.
    assert_eq!(v.image_tokens(&ImageKeys::default()), (731, 2916));
    // Full: the frozen tower and projector are not trained (LLaMA-Factory's defaults) …
    let full = est(&format!("{base}finetuning_type: full\n"));
    assert_eq!(full.trainable_params, arch.language_params());
    // … unless freeze_vision_tower / freeze_multi_modal_projector say so.
    let tower = est(&format!(
        "{base}finetuning_type: full\nfreeze_vision_tower: false\n"
    ));
    assert_eq!(
        tower.trainable_params,
        arch.language_params() + v.tower_params
    );
    let both = est(&format!(
        "{base}finetuning_type: full\nfreeze_vision_tower: false\nfreeze_multi_modal_projector: false\n"
    ));
    assert_eq!(both.trainable_params, arch.total_params());
    // LoRA `all` wraps the tower's linears only when it is not frozen: r·(in+out) per block.
    let lora = est(&format!("{base}lora_rank: 8\nlora_target: all\n"));
    let lora_tower = est(&format!(
        "{base}lora_rank: 8\nlora_target: all\nfreeze_vision_tower: false\n"
    ));
    let tower_lora: u64 = v
        .block_linears
        .iter()
        .map(|l| l.layers * 8 * (l.in_features + l.out_features))
        .sum();
    assert_eq!(
        lora_tower.trainable_params - lora.trainable_params,
        tower_lora
    );
    // Images cost activations only when the tower trains (a frozen tower builds no graph).
    let imgs = |extra: &str, n: u32| {
        est(&format!(
            "{base}finetuning_type: full\ndisable_gradient_checkpointing: true\nimages_per_sample: {n}\n{extra}"
        ))
        .breakdown
        .activations
    };
    assert_eq!(imgs("", 0), imgs("", 4));
    assert!(imgs("freeze_vision_tower: false\n", 4) > imgs("freeze_vision_tower: false\n", 1));
    // More image tokens than cutoff_len is an error naming both.
    let plan = settings(&format!("{base}images_per_sample: 6\n"))
        .plan()
        .expect("plan");
    let err = estimate::estimate(&arch, ModelSource::Catalog, &plan)
        .expect_err("too many image tokens")
        .to_string();
    assert!(
        err.contains("6 image(s) per sample = 4386 tokens") && err.contains("cutoff_len 4096"),
        "{err}"
    );
    // LLaVA 1.5: CLIP at 336 px, 576 tokens whatever the size (the class token is dropped).
    let llava = catalog::find_model("llava-hf/llava-1.5-7b-hf")
        .expect("id")
        .arch()
        .expect("arch");
    assert_eq!(
        llava
            .vision
            .expect("tower")
            .image_tokens(&ImageKeys::default()),
        (576, 577)
    );
    // Qwen3-VL: 16 px patches → 24 × 24 tokens; Gemma 3: 256 whatever the size.
    let q3 = catalog::find_model("Qwen/Qwen3-VL-8B-Instruct")
        .expect("id")
        .arch()
        .expect("arch");
    assert_eq!(
        q3.vision
            .expect("tower")
            .image_tokens(&ImageKeys::default())
            .0,
        576 + 2
    );
    let g3 = catalog::find_model("google/gemma-3-4b-it")
        .expect("id")
        .arch()
        .expect("arch");
    assert_eq!(
        g3.vision.expect("tower").image_tokens(&ImageKeys {
            max_pixels: 1 << 30,
            ..ImageKeys::default()
        }),
        (256, 4096)
    );
}

#[test]
fn hybrid_and_latent_attention_caches_and_states() {
    // Inference: Qwen3-Next keeps a KV cache in its 12 attention layers only; its 36 DeltaNet
    // layers hold a fixed state, so the cache grows 12/48 as fast as a dense stack's would.
    let kv = |len: u32| {
        est(&format!(
            "model_name_or_path: Qwen/Qwen3-Next-80B-A3B-Instruct\nbf16: true\ndo_train: false\nper_device_train_batch_size: 1\ncutoff_len: {len}\n"
        ))
        .breakdown
        .activations
    };
    let arch = catalog::find_model("Qwen/Qwen3-Next-80B-A3B-Instruct")
        .expect("id")
        .arch()
        .expect("arch");
    let per_token = 12 * arch.kv_cache_width() * 2;
    let growth = kv(8192) - kv(4096);
    // The transient term grows with the length too (4h + 2i per token).
    let transient = 4096 * (4 * arch.hidden_size + 2 * arch.active_intermediate()) * 2;
    assert_eq!(growth, 4096 * per_token + transient);
    // Training: DeltaNet's chunk states (fp32, every 64 tokens) are part of the activations.
    let act = |len: u32| {
        est(&format!(
            "model_name_or_path: Qwen/Qwen3-Next-80B-A3B-Instruct\nper_device_train_batch_size: 1\ncutoff_len: {len}\ndisable_gradient_checkpointing: true\n"
        ))
        .breakdown
        .activations as f64
    };
    assert!(
        (act(8192) / act(4096) - 2.0).abs() < 0.01,
        "linear in the length"
    );
    // MLA caches the expanded per-head keys and values: 128 × (192 + 128) per token and layer.
    let v3 = catalog::find_model("deepseek-ai/DeepSeek-V3")
        .expect("id")
        .arch()
        .expect("arch");
    assert_eq!(v3.kv_cache_width(), 128 * (128 + 64 + 128));
}

// ---------------------------------------------------------------- the lorafit stack

const TINY_LLAMA: &str = r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "vocab_size": 1024, "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
    "max_position_embeddings": 1024, "rms_norm_eps": 1e-5, "tie_word_embeddings": false}"#;

fn stack(yaml: &str) -> Result<lorafit_core::lorafit_stack::LorafitMemory, String> {
    let plan = settings(yaml).plan().expect("plan");
    let arch = ModelArch::from_config_json(TINY_LLAMA).expect("arch");
    lorafit_core::lorafit_stack::lorafit_stack(&arch, &plan)
}

/// Worked by hand for the tiny llama (3 426 560 parameters; LoRA r 8 on all 7 linears =
/// 36 992 parameters per layer; 22 600 floats kept per token without checkpointing).
#[test]
fn lorafit_stack_counts_a_tiny_llama_by_hand() {
    let base = "model_name_or_path: x\nfinetuning_type: lora\nlora_rank: 8\n\
        per_device_train_batch_size: 1\ncutoff_len: 128\ndisable_gradient_checkpointing: true\n";
    let m = stack(&format!("{base}gradient_accumulation_steps: 1\n")).expect("stack");
    assert_eq!(m.weights_bytes, 4 * 3_426_560);
    assert_eq!(m.adapter_bytes, 3 * 4 * 4 * 36_992);
    assert_eq!(m.activation_bytes, 4 * 128 * 22_600);
    assert_eq!(m.peak_bytes, 27_053_056);
    // Accumulating keeps a fourth copy; a DPO micro-batch is chosen + rejected.
    let acc = stack(&format!("{base}gradient_accumulation_steps: 2\n")).expect("stack");
    assert_eq!(acc.adapter_bytes, 4 * 4 * 4 * 36_992);
    let dpo = stack(&format!("{base}stage: dpo\n")).expect("stack");
    assert_eq!(
        (dpo.rows, dpo.activation_bytes),
        (2, 2 * m.activation_bytes)
    );
    // QLoRA: the linears at ~0.53 bytes per parameter (NF4 + double-quant scales).
    let q = stack(&format!("{base}quantization_bit: 4\n")).expect("stack");
    let rest = 4 * (3_426_560 - 4 * 724_992) as u64;
    let per_param = (q.weights_bytes - rest) as f64 / (4.0 * 724_992.0);
    assert!((0.5..0.56).contains(&per_param), "{per_param}");
}

#[test]
fn lorafit_stack_refuses_what_lorafit_train_does_not_run() {
    let e = stack("model_name_or_path: x\nfinetuning_type: full\n").expect_err("full");
    assert!(e.contains("LoRA / QLoRA only"), "{e}");
    let plan = settings("model_name_or_path: Qwen/Qwen3-30B-A3B\nfinetuning_type: lora\n")
        .plan()
        .expect("plan");
    let (arch, _) = estimate::resolve_model(&plan, None).expect("model");
    let e = lorafit_core::lorafit_stack::lorafit_stack(&arch, &plan).expect_err("moe");
    assert!(e.contains("dense, text only"), "{e}");
}

// ---------------------------------------------------------------- image and video tokens

#[test]
fn videos_take_frames_times_patches_as_llamafactory_samples_them() {
    let vl = |model: &str, extra: &str| {
        est(&format!(
            "model_name_or_path: {model}\nfinetuning_type: lora\nper_device_train_batch_size: 1\ncutoff_len: 8192\n{extra}"
        ))
    };
    // A 10 s video (lorafit's default), LLaMA-Factory's video_fps 2 and video_max_pixels 256²:
    // 20 frames = 10 temporal patches of 18 × 18 (Qwen2.5-VL, 14 px) → 10 · 81 pads + start/end.
    let e = vl("Qwen/Qwen2.5-VL-7B-Instruct", "videos_per_sample: 1\n");
    let v = e.vision.expect("vision");
    assert_eq!(
        (
            v.video_tokens_per_sample,
            v.video_frames,
            v.tower_patches_per_sample
        ),
        (812, 20, 3240)
    );
    assert!(
        e.warnings.iter().any(|w| w.contains("assumed 10 s")),
        "{:?}",
        e.warnings
    );
    // Qwen3-VL: 16 px patches (8 × 8 tokens a patch) and a `<t seconds>` timestamp per temporal
    // patch: 10 · (64 + 2 + 6).
    let v = vl("Qwen/Qwen3-VL-8B-Instruct", "videos_per_sample: 1\n")
        .vision
        .expect("vision");
    assert_eq!(v.video_tokens_per_sample, 720);
    // video_maxlen caps the frames; video_fps and video_seconds set them; both add up with images.
    let v = vl(
        "Qwen/Qwen2.5-VL-7B-Instruct",
        "videos_per_sample: 2\nvideo_seconds: 120\nvideo_maxlen: 32\nimages_per_sample: 1\n",
    )
    .vision
    .expect("vision");
    assert_eq!(
        (v.video_frames, v.video_tokens_per_sample),
        (32, 2 * (16 * 81 + 2))
    );
    assert_eq!(v.image_tokens_per_sample, 731);
    assert_eq!(v.tower_patches_per_sample, 2 * 16 * 324 + 2916);
    // A trained tower keeps activations per video patch.
    let act = |n: u32| {
        vl(
            "Qwen/Qwen2.5-VL-7B-Instruct",
            &format!("freeze_vision_tower: false\nvideos_per_sample: {n}\n"),
        )
        .breakdown
        .activations
    };
    assert!(act(2) > act(1) && act(1) > act(0));
    // Too many video tokens for cutoff_len, and a tower without a modelled video path: errors.
    let err = |model: &str, yaml: &str| {
        let plan = settings(&format!(
            "model_name_or_path: {model}\nper_device_train_batch_size: 1\ncutoff_len: 2048\n{yaml}"
        ))
        .plan()
        .expect("plan");
        let (arch, src) = estimate::resolve_model(&plan, None).expect("model");
        estimate::estimate(&arch, src, &plan)
            .expect_err("error")
            .to_string()
    };
    let e = err(
        "Qwen/Qwen2.5-VL-7B-Instruct",
        "videos_per_sample: 1\nvideo_seconds: 60\n",
    );
    assert!(
        e.contains("1 video(s) per sample = 4862 tokens (120 frames each")
            && e.contains("cutoff_len 2048"),
        "{e}"
    );
    let e = err("google/gemma-3-4b-it", "videos_per_sample: 1\n");
    assert!(e.contains("Qwen2-VL") && e.contains("Siglip"), "{e}");
    // video_max_pixels below video_min_pixels is LLaMA-Factory's own error.
    let e = settings("model_name_or_path: Qwen/Qwen2.5-VL-7B-Instruct\nvideo_max_pixels: 100\nvideo_min_pixels: 200\n")
        .plan()
        .expect_err("bounds")
        .to_string();
    assert!(
        e.contains("video_max_pixels cannot be smaller than video_min_pixels"),
        "{e}"
    );
}

/// A recorded case's (width, height) and image keys (its settings over the fixture's defaults;
/// `crop_to_patches` off unless the case sets it).
fn fixture_image(c: &serde_json::Value, defaults: &serde_json::Value) -> ((u64, u64), ImageKeys) {
    let u = |k: &str| {
        c["settings"]
            .get(k)
            .unwrap_or(&defaults[k])
            .as_u64()
            .expect(k)
    };
    let size = (
        c["width"].as_u64().expect("fixture"),
        c["height"].as_u64().expect("fixture"),
    );
    let keys = ImageKeys {
        max_pixels: u("image_max_pixels"),
        min_pixels: u("image_min_pixels"),
        crop_to_patches: c["settings"]["crop_to_patches"] == true,
    };
    (size, keys)
}

/// A recorded video case of the vision-token fixtures: the file as its header was read, and the
/// `video_*` keys (the case's settings over the fixture's defaults).
fn fixture_video(
    c: &serde_json::Value,
    defaults: &serde_json::Value,
) -> (
    lorafit_core::arch::media::VideoFile,
    lorafit_core::arch::media::VideoKeys,
) {
    let key = |k: &str| c["settings"].get(k).unwrap_or(&defaults[k]).clone();
    let u = |k: &str| key(k).as_u64().expect(k);
    let file = lorafit_core::arch::media::VideoFile {
        width: c["width"].as_u64().expect("fixture"),
        height: c["height"].as_u64().expect("fixture"),
        seconds: c["seconds"].as_f64().expect("fixture"),
        frames: c["frames"].as_u64().expect("fixture"),
        average_fps: c["average_fps"].as_f64().expect("fixture"),
        presampled: false,
    };
    let keys = lorafit_core::arch::media::VideoKeys {
        max_pixels: u("video_max_pixels"),
        min_pixels: u("video_min_pixels"),
        fps: key("video_fps").as_f64().expect("fixture"),
        maxlen: u("video_maxlen"),
    };
    (file, keys)
}

#[test]
fn internvl_tiles_and_frames_equal_llamafactory_on_real_files() {
    let fx: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/internvl_tokens.json")).expect("fixture");
    let v = tower("OpenGVLab/InternVL3-8B-hf");
    // The text around the context tokens as the Qwen2 tokenizer InternVL 3 uses counts it
    // (scripts/count_qwen_text_tokens.py: Qwen's BPE ranks and pre-tokenizer).
    let qwen: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/qwen_text_tokens.json")).expect("fixture");
    let text_tokens = |text: &str| qwen["texts"][text].as_u64().expect("a counted text");
    let defaults = &fx["defaults"];
    let mut checked = (0, 0, 0);
    for c in fx["cases"].as_array().expect("cases") {
        let ((w, h), keys) = fixture_image(c, defaults);
        let (tiles, pads) = (
            c["tiles"].as_u64().expect("fixture"),
            c["pad_tokens"].as_u64().expect("fixture"),
        );
        let ctx = format!("{} {} {}", c["media"], c["source"], c["settings"]);
        if c["media"] == "image" {
            checked.0 += 1;
            if tiles > 1 {
                checked.2 += 1;
            }
            // Context tokens + <img> + </img>; the tower sees 1024 patches + a class token a tile.
            assert_eq!(
                v.sized_image_tokens(w, h, &keys),
                (
                    pads + text_tokens(c["text"].as_str().expect("fixture")),
                    tiles * 1025
                ),
                "{ctx}"
            );
            assert_eq!(pads, tiles * 256, "{ctx}");
        } else {
            checked.1 += 1;
            let (file, keys) = fixture_video(c, defaults);
            let got = v
                .video_tokens(Some(&file), 0.0, &keys)
                .expect("internvl video");
            assert_eq!((got.frames, got.pads), (tiles, pads), "{ctx}");
            assert_eq!(got.text, c["text"].as_str().expect("fixture"), "{ctx}");
            assert_eq!(got.text_tokens, text_tokens(&got.text), "{ctx}");
            assert_eq!(got.grid.patches(), tiles * 1025, "{ctx}");
        }
    }
    // 13 images × 5 pixel settings × crop off / on, 8 videos × 6 settings; 43 images tiled.
    assert_eq!(checked, (130, 48, 43));
}

#[test]
fn llava_next_anyres_and_video_tokens_equal_llamafactory_on_real_files() {
    let fx: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/llava_next_tokens.json")).expect("fixture");
    let (image, video) = (
        tower("llava-hf/llava-v1.6-mistral-7b-hf"),
        tower("llava-hf/LLaVA-NeXT-Video-7B-hf"),
    );
    let defaults = &fx["defaults"];
    let mut checked = (0, 0);
    for c in fx["cases"].as_array().expect("cases") {
        let ((w, h), keys) = fixture_image(c, defaults);
        let (crops, pads) = (
            c["crops"].as_u64().expect("fixture"),
            c["pad_tokens"].as_u64().expect("fixture"),
        );
        let ctx = format!("{} {} {}", c["media"], c["source"], c["settings"]);
        if c["media"] == "image" {
            checked.0 += 1;
            // The tower sees the base view and each tile: 576 patches + a class token each.
            for v in [&image, &video] {
                assert_eq!(
                    v.sized_image_tokens(w, h, &keys),
                    (pads, crops * 577),
                    "{ctx}"
                );
            }
        } else {
            checked.1 += 1;
            let (file, keys) = fixture_video(c, defaults);
            let got = video.video_tokens(Some(&file), 0.0, &keys).expect("video");
            assert_eq!((got.frames, got.tokens()), (crops, pads), "{ctx}");
            assert_eq!(got.grid.patches(), crops * 577, "{ctx}");
            // LLaVA-NeXT (images only) has no video path.
            assert!(image.video_tokens(Some(&file), 0.0, &keys).is_none());
        }
    }
    assert_eq!(checked, (65, 48));
}

#[test]
fn glm4v_image_tokens_equal_llamafactory_on_real_files() {
    use lorafit_core::arch::media::QwenProcessor;
    let fx: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/glm4v_tokens.json")).expect("fixture");
    let v = tower("zai-org/GLM-4.1V-9B-Thinking");
    let p = QwenProcessor::of(VisionKind::Glm4v).expect("glm");
    let defaults = &fx["defaults"];
    let mut checked = 0;
    for c in fx["cases"].as_array().expect("cases") {
        let ((w, h), keys) = fixture_image(c, defaults);
        let ctx = format!("{} {}", c["source"], c["settings"]);
        let got = p.image(w, h, keys.max_pixels, keys.min_pixels);
        let grid: Vec<u64> = c["grid"]
            .as_array()
            .expect("fixture")
            .iter()
            .map(|x| x.as_u64().expect("fixture"))
            .collect();
        assert_eq!(vec![got.grid.t, got.grid.h, got.grid.w], grid, "{ctx}");
        let pads = c["pad_tokens"].as_u64().expect("fixture");
        assert_eq!(got.pads, pads, "{ctx}");
        assert_eq!(got.text, c["text"].as_str().expect("fixture"), "{ctx}");
        assert_eq!(v.sized_image_tokens(w, h, &keys).0, pads + 2, "{ctx}");
        checked += 1;
    }
    assert_eq!(checked, 65);
    // Its video sampling is GLM's own: not modelled, so a video is an error, not a guess.
    assert!(!VisionKind::Glm4v.has_video());
}

#[test]
fn pixtral_and_llama4_image_tokens_equal_llamafactory_on_real_files() {
    use lorafit_core::arch::media;
    let fx = |name: &str| -> serde_json::Value {
        let text = match name {
            "pixtral" => include_str!("fixtures/pixtral_tokens.json"),
            _ => include_str!("fixtures/llama4_tokens.json"),
        };
        serde_json::from_str(text).expect("fixture")
    };
    let n = |c: &serde_json::Value, k: &str| c[k].as_u64().expect("fixture");
    // Pixtral 12B (16-px patches, longest edge 1024, no merger) and Mistral Small 3.1 (14-px
    // patches, 1540, 2×2 merger): the processor's size, [IMG] pads, pads + breaks + end.
    let (pix, small) = (
        tower("mistral-community/pixtral-12b"),
        tower("mistralai/Mistral-Small-3.1-24B-Instruct-2503"),
    );
    assert_eq!((pix.max_edge, small.max_edge), (1024, 1540));
    let f = fx("pixtral");
    let mut checked = [0, 0];
    for c in f["cases"].as_array().expect("cases") {
        let ((w, h), keys) = fixture_image(c, &f["defaults"]);
        let (v, i) = match c["model"].as_str() {
            Some("pixtral-12b") => (&pix, 0),
            _ => (&small, 1),
        };
        let ctx = format!("{} {} {}", c["model"], c["source"], c["settings"]);
        let m = media::pixtral_image(w, h, &keys, v.patch_size, v.merge, v.max_edge);
        let resized = &c["resized"];
        let (rw, rh) = (
            resized[0].as_u64().expect("w"),
            resized[1].as_u64().expect("h"),
        );
        assert_eq!(
            (m.grid.w, m.grid.h),
            (rw / v.patch_size, rh / v.patch_size),
            "{ctx}"
        );
        assert_eq!(
            (m.pads, m.tokens()),
            (n(c, "pad_tokens"), n(c, "tokens")),
            "{ctx}"
        );
        assert_eq!(
            v.sized_image_tokens(w, h, &keys),
            (m.tokens(), m.grid.patches()),
            "{ctx}"
        );
        checked[i] += 1;
    }
    assert_eq!(checked, [95, 95]);
    // Llama 4: tiles (and the global tile), <|patch|> pads, every special token.
    let scout = tower("meta-llama/Llama-4-Scout-17B-16E-Instruct");
    let f = fx("llama4");
    let mut checked = 0;
    for c in f["cases"].as_array().expect("cases") {
        let ((w, h), keys) = fixture_image(c, &f["defaults"]);
        let ctx = format!("{} {}", c["source"], c["settings"]);
        let ratio = &c["aspect_ratio"];
        let (pw, ph) = media::preprocess(w, h, keys.max_pixels, keys.min_pixels);
        assert_eq!(
            media::llama4_canvas(ph, pw, 336, 16),
            (ratio[0].as_u64().expect("h"), ratio[1].as_u64().expect("w")),
            "{ctx}"
        );
        let (tokens, patches) = scout.sized_image_tokens(w, h, &keys);
        assert_eq!(
            (tokens, patches),
            (n(c, "tokens"), n(c, "tiles") * 577),
            "{ctx}"
        );
        let m = media::llama4_image(w, h, &keys, 336, 144, 577);
        assert_eq!(m.pads, n(c, "pad_tokens"), "{ctx}");
        checked += 1;
    }
    assert_eq!(checked, 95);
}

#[test]
fn gemma4_image_tokens_equal_llamafactory_on_real_files() {
    use lorafit_core::arch::media;
    let fx: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/gemma4_tokens.json")).expect("fixture");
    let n = |c: &serde_json::Value, k: &str| c[k].as_u64().expect("fixture");
    // Both sizes share the tower: 16-px patches, 3×3 pooling, a budget of 280 soft tokens that
    // the processor fills whatever the image's size (it scales small images up).
    for id in ["google/gemma-4-31B", "google/gemma-4-26B-A4B"] {
        let v = tower(id);
        assert_eq!(v.kind, VisionKind::Gemma4);
        assert_eq!((v.patch_size, v.merge, v.max_tokens), (16, 3, 280));
        let mut checked = 0;
        for c in fx["cases"].as_array().expect("cases") {
            let ((w, h), keys) = fixture_image(c, &fx["defaults"]);
            let ctx = format!("{id} {} {}", c["source"], c["settings"]);
            // Soft tokens between <start_of_image> and <end_of_image>; the tower sees 9 patches
            // a token.
            assert_eq!(
                v.sized_image_tokens(w, h, &keys),
                (n(c, "tokens"), n(c, "patches")),
                "{ctx}"
            );
            let m = media::gemma4_image(w, h, &keys, 16, 3, 280);
            assert_eq!(m.pads, n(c, "pad_tokens"), "{ctx}");
            checked += 1;
        }
        assert_eq!(checked, 95);
    }
}

#[test]
fn image_and_video_tokens_equal_llamafactory_on_real_files() {
    use lorafit_core::arch::VisionKind;
    use lorafit_core::arch::media::QwenProcessor;
    let fx: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/vision_tokens.json")).expect("fixture");
    let defaults = &fx["defaults"];
    let mut checked = (0, 0);
    for c in fx["cases"].as_array().expect("cases") {
        let key = |k: &str| c["settings"].get(k).unwrap_or(&defaults[k]).clone();
        let u = |k: &str| key(k).as_u64().expect(k);
        let p = QwenProcessor::of(match c["kind"].as_str() {
            Some("qwen2_vl") => VisionKind::Qwen2Vl,
            _ => VisionKind::Qwen3Vl,
        })
        .expect("qwen");
        let (w, h) = (
            c["width"].as_u64().expect("fixture"),
            c["height"].as_u64().expect("fixture"),
        );
        let got = if c["media"] == "image" {
            checked.0 += 1;
            p.image(w, h, u("image_max_pixels"), u("image_min_pixels"))
        } else {
            checked.1 += 1;
            let (file, keys) = fixture_video(c, defaults);
            p.video(&file, &keys)
        };
        let grid: Vec<u64> = c["grid"]
            .as_array()
            .expect("fixture")
            .iter()
            .map(|x| x.as_u64().expect("fixture"))
            .collect();
        let ctx = format!(
            "{} {} {} {}",
            c["kind"], c["media"], c["source"], c["settings"]
        );
        assert_eq!(vec![got.grid.t, got.grid.h, got.grid.w], grid, "{ctx}");
        assert_eq!(
            got.pads,
            c["pad_tokens"].as_u64().expect("fixture"),
            "{ctx}"
        );
        assert_eq!(got.text, c["text"].as_str().expect("fixture"), "{ctx}");
    }
    assert_eq!(checked, (70, 96));
}

/// LLaMA-Factory's Qwen2OmniPlugin interleaves each video with the audio entry after it under
/// `use_audio_in_video`: the same tokens in another order, so the peak is the same and a note
/// says why.
#[test]
fn audio_in_video_reorders_tokens_without_adding_any() {
    let base = "model_name_or_path: Qwen/Qwen2.5-Omni-7B\nfinetuning_type: lora\nbf16: true\nvideos_per_sample: 1\naudios_per_sample: 1\nvideo_seconds: 20\naudio_seconds: 20\ncutoff_len: 4096\nper_device_train_batch_size: 1\n";
    let plain = est(base);
    let interleaved = est(&format!("{base}use_audio_in_video: true\n"));
    assert_eq!(interleaved.peak_reserved_bytes, plain.peak_reserved_bytes);
    let plan = settings(&format!("{base}use_audio_in_video: true\n"))
        .plan()
        .expect("plan");
    assert!(
        plan.notes
            .iter()
            .any(|n| n.contains("use_audio_in_video") && n.contains("same tokens")),
        "{:?}",
        plan.notes
    );
}
