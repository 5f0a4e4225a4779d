//! Device memory of a QLoRA, int8 and 16-bit base (measured holding the pool lock).

use lorafit_core::Settings;
use lorafit_core::plan::Val;
use lorafit_train::config::Backend;
use lorafit_train::quant::QuantSpec;
use lorafit_train::quant_ops::Half;
use lorafit_train::{Model, TrainArgs, Trainer, data, make_device};

use crate::common::{tmp_dir, wgpu_available};

/// Device memory of a QLoRA base on wgpu: the decoder's linear weights stay at ~0.5 bytes per
/// parameter (+ scales) on the device, measured with burn's memory pool counters, and the peak of
/// a training step is lower than dense by what the base saves.
#[test]
fn qlora_base_is_half_a_byte_per_parameter_on_wgpu() {
    let _pool = crate::pool_lock();
    if !wgpu_available() {
        return;
    }
    let dir = tmp_dir("qmem");
    let cfg = r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 1024,
        "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 64, "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
        "hidden_act": "silu", "tie_word_embeddings": false}"#;
    let mc = lorafit_train::random::write_random_checkpoint(&dir, cfg, 1).expect("model");
    let linear_params = mc.arch.layer_linear_weight_params() as f64;
    let other_params = (mc.arch.total_params() as f64) - linear_params;
    let device = make_device(Backend::Wgpu, false).expect("device");
    let in_use = || {
        device
            .memory_pool_usage()
            .map(|u| u.bytes_in_use)
            .unwrap_or(0) as f64
    };
    let mut resident = Vec::new();
    let mut peaks = Vec::new();
    for quant in [
        None,
        Some(QuantSpec::FourBit {
            quant_type: lorafit_quant::QuantType::Nf4,
            double_quant: true,
            rounding: lorafit_quant::DqRounding::Nearest,
        }),
        Some(QuantSpec::Int8),
        Some(QuantSpec::Half(Half::Bf16)),
    ] {
        let _ = device.sync();
        let before = in_use();
        let model = Model::load_quantized(&dir, &device, quant).expect("load");
        let _ = device.sync();
        let after = in_use();
        // Everything but the decoder's linears is f32 (4 bytes per parameter), except the
        // (untied) embedding and lm_head, which 16-bit storage keeps at 2 bytes per value too.
        let vocab_params = 2.0 * (mc.arch.vocab_size * mc.arch.hidden_size) as f64;
        let other_bytes = match quant {
            Some(QuantSpec::Half(_)) => 4.0 * other_params - 2.0 * vocab_params,
            _ => 4.0 * other_params,
        };
        let per_param = (after - before - other_bytes) / linear_params;
        eprintln!(
            "{}: {:.0} bytes resident, linears {per_param:.3} bytes/parameter",
            match quant {
                Some(QuantSpec::FourBit { .. }) => "QLoRA nf4+dq",
                Some(QuantSpec::Int8) => "int8",
                Some(QuantSpec::Half(_)) => "bf16",
                None => "dense f32",
            },
            after - before
        );
        resident.push(per_param);
        // Two LoRA steps: the peak in use (polled after each backward) with this base.
        let mut rows = String::new();
        for i in 0..4u32 {
            let ids: Vec<String> = (0..64u32)
                .map(|t| ((t * 37 + i * 11) % 1024).to_string())
                .collect();
            rows.push_str(&format!("{{\"input_ids\": [{}]}}\n", ids.join(",")));
        }
        std::fs::write(dir.join("rows.jsonl"), rows).expect("rows");
        let mut s = Settings::default();
        for (k, v) in [
            ("model_name_or_path", Val::Str(dir.display().to_string())),
            (
                "dataset",
                Val::Str(dir.join("rows.jsonl").display().to_string()),
            ),
            (
                "output_dir",
                Val::Str(dir.join("out").display().to_string()),
            ),
            ("per_device_train_batch_size", Val::Int(2)),
            ("max_steps", Val::Int(2)),
            ("backend", Val::Str("wgpu".into())),
            ("disable_gradient_checkpointing", Val::Bool(true)),
        ] {
            s.set(k, v).expect("key");
        }
        let args = TrainArgs::from_settings(&s, &dir).expect("args");
        let examples = data::load_dataset(&args).expect("rows");
        let mut t = Trainer::new(args, &model, examples).expect("trainer");
        let summary = t.run(|_| {}).expect("train");
        eprintln!(
            "  peak in use during 2 LoRA steps (batch 2 x 64): {:.0} bytes",
            summary.peak_memory_bytes.unwrap_or(0) as f64
        );
        peaks.push(summary.peak_memory_bytes.unwrap_or(0) as f64);
        drop(t);
        drop(model);
    }
    assert!(
        (resident[0] - 4.0).abs() < 0.05,
        "dense linears should be 4 bytes/parameter, measured {}",
        resident[0]
    );
    assert!(
        resident[1] > 0.5 && resident[1] < 0.6,
        "4-bit linears: measured {} bytes/parameter",
        resident[1]
    );
    assert!(
        resident[2] > 1.0 && resident[2] < 1.1,
        "int8 linears: measured {} bytes/parameter",
        resident[2]
    );
    // 16-bit: 2 bytes per parameter, plus the model's one widening table (65536 f32 values).
    let half = resident[3] - (4 << 16) as f64 / linear_params;
    assert!(
        (half - 2.0).abs() < 0.005,
        "bf16 linears: measured {half} bytes/parameter besides the table"
    );
    // The step's peak falls by (nearly) all the bytes the base saves: the fused dequant-matmul
    // and its backward never keep a dequantized weight (before it, the QLoRA peak was above dense);
    // the 16-bit product widens one weight at a time (the largest, 1 MiB here, is the margin).
    for (i, what, margin) in [(1, "QLoRA", 0.9), (2, "int8", 0.9), (3, "bf16", 0.75)] {
        let saved = (resident[0] - resident[i]) * linear_params;
        assert!(
            peaks[i] < peaks[0] - margin * saved,
            "{what} peak {} should be below the dense peak {} by ~{saved:.0} bytes",
            peaks[i],
            peaks[0]
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
