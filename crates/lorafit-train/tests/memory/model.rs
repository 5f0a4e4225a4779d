//! lorafit's own memory model (lorafit-core `memory::lorafit_stack`) against the device memory
//! `lorafit train` holds, measured with burn's pool counters on wgpu (lavapipe on CI) over a
//! grid of model shapes, batches, lengths, LoRA / QLoRA and gradient checkpointing (measured
//! holding the pool lock).

use lorafit_core::Settings;
use lorafit_core::plan::Val;
use lorafit_train::config::Backend;
use lorafit_train::{Model, TrainArgs, Trainer, data, make_device};

use crate::common::{tmp_dir, wgpu_available};

struct Point {
    shape: usize,
    batch: i64,
    len: u32,
    qlora: bool,
    checkpointing: bool,
    rank: i64,
    /// Extra keys: `lora_target`, `lora_dropout`, `gradient_accumulation_steps`.
    extra: &'static [(&'static str, &'static str)],
    /// Used to fit lorafit-core's `CHECKPOINTED` (the only calibrated constants); the rest is held out.
    tune: bool,
}

/// Model shapes (config.json) and their vocabularies: a llama with GQA, a qwen3 with q/k norms
/// and tied embeddings, a qwen2 with biases and as many kv heads as heads.
const SHAPES: &[(&str, u32)] = &[
    (
        r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 1024,
        "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 64, "max_position_embeddings": 1024, "rms_norm_eps": 1e-5,
        "hidden_act": "silu", "tie_word_embeddings": false}"#,
        1024,
    ),
    (
        r#"{"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "vocab_size": 4096,
        "hidden_size": 192, "intermediate_size": 512, "num_hidden_layers": 3, "num_attention_heads": 6,
        "num_key_value_heads": 2, "head_dim": 32, "max_position_embeddings": 1024, "rms_norm_eps": 1e-6,
        "hidden_act": "silu", "tie_word_embeddings": true, "rope_theta": 1000000.0}"#,
        4096,
    ),
    (
        r#"{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 2048,
        "hidden_size": 128, "intermediate_size": 352, "num_hidden_layers": 6, "num_attention_heads": 8,
        "num_key_value_heads": 8, "max_position_embeddings": 1024, "rms_norm_eps": 1e-6,
        "hidden_act": "silu", "tie_word_embeddings": false, "rope_theta": 1000000.0}"#,
        2048,
    ),
];

const fn point(shape: usize, batch: i64, len: u32, rank: i64) -> Point {
    Point {
        shape,
        batch,
        len,
        qlora: false,
        checkpointing: false,
        rank,
        extra: &[],
        tune: false,
    }
}

const fn qlora(p: Point) -> Point {
    Point { qlora: true, ..p }
}

const fn ckpt(p: Point, tune: bool) -> Point {
    Point {
        checkpointing: true,
        tune,
        ..p
    }
}

const fn with(p: Point, extra: &'static [(&'static str, &'static str)]) -> Point {
    Point { extra, ..p }
}

#[test]
fn lorafit_memory_model_matches_measured_peaks_on_wgpu() {
    let _pool = crate::pool_lock();
    if !wgpu_available() {
        return;
    }
    let device = make_device(Backend::Wgpu, false).expect("device");
    let device_ck = make_device(Backend::Wgpu, true).expect("device");
    let q_v: &[(&str, &str)] = &[("lora_target", "q_proj,v_proj")];
    let grid = [
        point(0, 1, 128, 8),
        point(0, 4, 128, 8),
        point(0, 2, 256, 16),
        qlora(point(0, 2, 128, 8)),
        with(point(0, 2, 128, 8), q_v),
        with(point(0, 2, 128, 8), &[("lora_dropout", "0.1")]),
        with(point(0, 2, 128, 8), &[("gradient_accumulation_steps", "1")]),
        // CHECKPOINTED was fitted on llama shapes like this one.
        ckpt(point(0, 1, 128, 8), true),
        ckpt(point(0, 4, 128, 8), true),
        point(1, 2, 128, 8),
        qlora(point(1, 2, 128, 8)),
        ckpt(point(1, 1, 256, 8), false),
        with(point(1, 2, 128, 8), &[("lora_dropout", "0.05")]),
        point(2, 2, 128, 8),
        qlora(point(2, 4, 64, 8)),
        ckpt(point(2, 2, 128, 8), false),
        with(point(2, 1, 256, 8), q_v),
        // bf16: the linears stored 16-bit, widened one product at a time.
        with(point(0, 2, 128, 8), &[("bf16", "true")]),
        with(point(1, 2, 128, 8), &[("bf16", "true")]),
        with(point(2, 2, 128, 8), &[("fp16", "true")]),
        ckpt(with(point(0, 2, 128, 8), &[("bf16", "true")]), false),
    ];
    let mut rows_out = Vec::new();
    for p in &grid {
        let dir = tmp_dir(&format!("mm{}", p.shape));
        let (cfg, vocab) = SHAPES[p.shape];
        lorafit_train::random::write_random_checkpoint(&dir, cfg, 1).expect("model");
        let mut rows = String::new();
        for i in 0..(4 * p.batch as u32) {
            let ids: Vec<String> = (0..p.len)
                .map(|t| ((t * 37 + i * 11) % vocab).to_string())
                .collect();
            rows.push_str(&format!("{{\"input_ids\": [{}]}}\n", ids.join(",")));
        }
        std::fs::write(dir.join("rows.jsonl"), rows).expect("rows");
        let mut s = Settings::default();
        let mut keys = vec![
            ("model_name_or_path", Val::Str(dir.display().to_string())),
            (
                "dataset",
                Val::Str(dir.join("rows.jsonl").display().to_string()),
            ),
            (
                "output_dir",
                Val::Str(dir.join("out").display().to_string()),
            ),
            ("per_device_train_batch_size", Val::Int(p.batch)),
            ("gradient_accumulation_steps", Val::Int(2)),
            ("cutoff_len", Val::Int(p.len as i64)),
            ("max_steps", Val::Int(2)),
            ("save_steps", Val::Int(1000)),
            ("lora_rank", Val::Int(p.rank)),
            ("backend", Val::Str("wgpu".into())),
            (
                "disable_gradient_checkpointing",
                Val::Bool(!p.checkpointing),
            ),
        ];
        if p.qlora {
            keys.push(("quantization_bit", Val::Int(4)));
        }
        for (k, v) in keys {
            s.set(k, v).expect("key");
        }
        for (k, v) in p.extra {
            s.set(k, Val::Str((*v).into())).expect("key");
        }
        let plan = s.plan().expect("plan");
        let arch = lorafit_core::ModelArch::from_config_json(cfg).expect("arch");
        let model = lorafit_core::lorafit_stack::lorafit_stack(&arch, &plan).expect("stack");
        let dev = if p.checkpointing { &device_ck } else { &device };
        let in_use = || {
            let _ = dev.sync();
            dev.memory_pool_usage().map(|u| u.bytes_in_use).unwrap_or(0)
        };
        let base = in_use();
        let args = TrainArgs::from_settings(&s, &dir).expect("args");
        let loaded_model = Model::load_quantized(&dir, dev, args.quant).expect("load");
        let loaded = in_use() - base;
        let examples = data::load_dataset(&args).expect("rows");
        let mut t = Trainer::new(args, &loaded_model, examples).expect("trainer");
        let summary = t.run(|_| {}).expect("train");
        let peak = summary.peak_memory_bytes.expect("peak") - base;
        let what = format!(
            "shape {} b {} len {} {}{}{} r {}{}",
            p.shape,
            p.batch,
            p.len,
            if p.qlora { "QLoRA" } else { "LoRA" },
            if p.checkpointing { " ckpt" } else { "" },
            p.extra
                .iter()
                .map(|(k, v)| format!(" {k}={v}"))
                .collect::<String>(),
            p.rank,
            if p.tune { " (tune)" } else { "" },
        );
        // The pool rounds small buffers up (the 4-bit scales), so within 0.1 %.
        let w_err = (model.weights_bytes as f64 / loaded as f64 - 1.0).abs();
        assert!(
            w_err < 1e-3,
            "{what}: weights {} modelled, {loaded} resident",
            model.weights_bytes
        );
        let err = model.peak_bytes as f64 / peak as f64 - 1.0;
        eprintln!(
            "| {what} | {:.2} | {:.2} | {:+.1} % |",
            peak as f64 / 1048576.0,
            model.peak_bytes as f64 / 1048576.0,
            100.0 * err
        );
        rows_out.push((p.tune, err));
        drop(t);
        drop(loaded_model);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let mut held: Vec<f64> = rows_out
        .iter()
        .filter(|(tune, _)| !tune)
        .map(|(_, e)| e.abs())
        .collect();
    held.sort_by(f64::total_cmp);
    let median = held[held.len() / 2];
    eprintln!(
        "held out: {} points, median |error| {:.1} %, worst {:.1} %",
        held.len(),
        100.0 * median,
        100.0 * held[held.len() - 1]
    );
    assert!(median <= 0.05, "median error {median}");
    assert!(
        held[held.len() - 1] <= 0.10,
        "worst error {}",
        held[held.len() - 1]
    );
}
