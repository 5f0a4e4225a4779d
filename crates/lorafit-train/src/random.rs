//! Random-weight Hugging Face checkpoints of any supported shape (normal(0, σ) linears and
//! embeddings, unit norms), for examples, benchmarks and memory tests without downloads.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::model::{ModelConfig, StepRng};
use crate::weights::{HostTensor, save_f32, write_atomic};

fn normal(rng: &mut StepRng, n: usize, std: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            // Box-Muller.
            let u1 = rng.next_f32().max(1e-7);
            let u2 = rng.next_f32();
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos() * std
        })
        .collect()
}

/// Write `config.json` (as given) and a `model.safetensors` of f32 random weights into `dir`.
pub fn write_random_checkpoint(dir: &Path, config_json: &str, seed: u64) -> Result<ModelConfig> {
    let cfg = ModelConfig::from_json(&dir.join("config.json"), config_json)?;
    let a = &cfg.arch;
    let std = serde_json::from_str::<serde_json::Value>(config_json)
        .ok()
        .and_then(|v| v.get("initializer_range").and_then(|x| x.as_f64()))
        .unwrap_or(0.02) as f32;
    let (h, inter, v) = (
        a.hidden_size as usize,
        a.intermediate_size as usize,
        a.vocab_size as usize,
    );
    let (q, kv, hd) = (a.q_dim() as usize, a.kv_dim() as usize, a.head_dim as usize);
    let mut rng = StepRng::new(seed, 0, 0);
    let mut t = BTreeMap::new();
    let mut put = |name: String, shape: Vec<usize>, data: Vec<f32>| {
        t.insert(name, HostTensor::new(shape, data));
    };
    put(
        "model.embed_tokens.weight".into(),
        vec![v, h],
        normal(&mut rng, v * h, std),
    );
    for i in 0..a.num_layers as usize {
        let p = format!("model.layers.{i}");
        for (name, out, inp) in [
            ("self_attn.q_proj", q, h),
            ("self_attn.k_proj", kv, h),
            ("self_attn.v_proj", kv, h),
            ("self_attn.o_proj", h, q),
            ("mlp.gate_proj", inter, h),
            ("mlp.up_proj", inter, h),
            ("mlp.down_proj", h, inter),
        ] {
            put(
                format!("{p}.{name}.weight"),
                vec![out, inp],
                normal(&mut rng, out * inp, std),
            );
            if a.qkv_bias
                && ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"].contains(&name)
            {
                put(format!("{p}.{name}.bias"), vec![out], vec![0.0; out]);
            }
        }
        put(format!("{p}.input_layernorm.weight"), vec![h], vec![1.0; h]);
        put(
            format!("{p}.post_attention_layernorm.weight"),
            vec![h],
            vec![1.0; h],
        );
        if a.qk_norm {
            put(
                format!("{p}.self_attn.q_norm.weight"),
                vec![hd],
                vec![1.0; hd],
            );
            put(
                format!("{p}.self_attn.k_norm.weight"),
                vec![hd],
                vec![1.0; hd],
            );
        }
    }
    put("model.norm.weight".into(), vec![h], vec![1.0; h]);
    if !a.tie_word_embeddings {
        put(
            "lm_head.weight".into(),
            vec![v, h],
            normal(&mut rng, v * h, std),
        );
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    save_f32(&dir.join("model.safetensors"), &t)?;
    write_atomic(&dir.join("config.json"), config_json.as_bytes())?;
    Ok(cfg)
}
