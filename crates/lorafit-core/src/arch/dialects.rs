//! Configs in their family's own spellings, rewritten into the names the rest of `arch` reads:
//! ChatGLM's and GPT-2's keys, Falcon's and BLOOM's older ones, InternLM3's bias switches,
//! Qwen2-Audio's missing text defaults, and Qwen2.5-Omni's thinker (what LLaMA-Factory trains).
//! Each rewrite returns `None` once the config is canonical, so parsing the result again ends.

use serde_json::{Map, Value};

use super::get_u64;
use crate::error::Error;

/// The canonical config for `top` (its `model_type` is `top_type`), or `None` when it already is.
pub(super) fn canonical(top_type: &str, top: &Map<String, Value>) -> Result<Option<Value>, Error> {
    Ok(match top_type {
        "qwen2_audio" => qwen2_audio_text_defaults(top),
        "falcon" | "bloom" => falcon_bloom_canonical(top, top_type == "falcon"),
        "gpt2" => gpt2_canonical(top),
        "chatglm" => chatglm_canonical(top)?,
        "internlm3" => internlm3_biases(top),
        "qwen2_5_omni" => Some(qwen2_5_omni_thinker(top)?),
        _ => None,
    })
}

/// `top` with each `(canonical, old)` key copied under its canonical name where that is absent.
fn renamed(top: &Map<String, Value>, pairs: &[(&str, &str)]) -> Map<String, Value> {
    let mut c = top.clone();
    for (canonical, old) in pairs {
        if !c.contains_key(*canonical)
            && let Some(v) = top.get(*old)
        {
            c.insert((*canonical).into(), v.clone());
        }
    }
    c
}

/// InternLM3's remote code: `qkv_bias` on q / k / v and o_proj, `bias` on the MLP — Llama's
/// `attention_bias` and `mlp_bias`.
fn internlm3_biases(top: &Map<String, Value>) -> Option<Value> {
    if top.contains_key("attention_bias") {
        return None;
    }
    let mut c = top.clone();
    let flag = |k: &str| top.get(k).and_then(Value::as_bool).unwrap_or(false);
    c.insert("attention_bias".into(), Value::from(flag("qkv_bias")));
    c.insert("mlp_bias".into(), Value::from(flag("bias")));
    Some(Value::Object(c))
}

/// Qwen2.5-Omni: LLaMA-Factory trains the thinker (`model.thinker`); the talker and the vocoder
/// are dropped after loading.
fn qwen2_5_omni_thinker(top: &Map<String, Value>) -> Result<Value, Error> {
    let Some(Value::Object(thinker)) = top.get("thinker_config") else {
        return Err(Error::ModelConfig(
            "model_type `qwen2_5_omni` needs a `thinker_config` block".into(),
        ));
    };
    let mut thinker = thinker.clone();
    thinker.insert("model_type".into(), Value::from("qwen2_5_omni_thinker"));
    if let Some(q) = top.get("quantization_config") {
        thinker.insert("quantization_config".into(), q.clone());
    }
    Ok(Value::Object(thinker))
}

/// Qwen2-Audio's config.json leaves most of its `text_config` to transformers' `Qwen2Config`
/// defaults (4096 wide, 32 layers of 32 heads and 32 kv heads, 22016 MLP, 151936 tokens): the config with them
/// filled in, or `None` when nothing is missing.
fn qwen2_audio_text_defaults(top: &Map<String, Value>) -> Option<Value> {
    let mut text = match top.get("text_config") {
        Some(Value::Object(t)) => t.clone(),
        None => Map::new(),
        Some(_) => return None,
    };
    let mut changed = false;
    for (k, v) in [
        ("model_type", Value::from("qwen2")),
        ("hidden_size", Value::from(4096)),
        ("num_hidden_layers", Value::from(32)),
        ("num_attention_heads", Value::from(32)),
        ("intermediate_size", Value::from(22016)),
        ("vocab_size", Value::from(151936)),
        // 32 whatever `num_attention_heads` says (transformers 5.8's `Qwen2Config`).
        ("num_key_value_heads", Value::from(32)),
    ] {
        if !text.contains_key(k) {
            text.insert(k.into(), v);
            changed = true;
        }
    }
    changed.then(|| {
        let mut top = top.clone();
        top.insert("text_config".into(), Value::Object(text));
        Value::Object(top)
    })
}

/// Falcon's and BLOOM's configs in the names every other model uses: `n_embed` / `n_layer` /
/// `n_head` (both accept them, as transformers' `attribute_map` does), Falcon's KV heads (a
/// `new_decoder_architecture` config's `num_kv_heads`, else one with `multi_query` — its default
/// — else one per head) and MLP width (`ffn_hidden_size`, default 4 × hidden; BLOOM's is 4 ×
/// hidden), tied heads by default. `None` once the config has them.
fn falcon_bloom_canonical(top: &Map<String, Value>, falcon: bool) -> Option<Value> {
    if top.contains_key("intermediate_size") {
        return None;
    }
    let mut c = renamed(
        top,
        &[
            ("hidden_size", "n_embed"),
            ("num_hidden_layers", "n_layer"),
            ("num_attention_heads", "n_head"),
        ],
    );
    let h = c.get("hidden_size").and_then(Value::as_u64)?;
    let heads = c.get("num_attention_heads").and_then(Value::as_u64)?;
    let flag = |k: &str, default: bool| top.get(k).and_then(Value::as_bool).unwrap_or(default);
    let (kv, ffn) = if falcon {
        let kv = if flag("new_decoder_architecture", false) {
            top.get("num_kv_heads")
                .and_then(Value::as_u64)
                .unwrap_or(heads)
        } else if flag("multi_query", true) {
            1
        } else {
            heads
        };
        let ffn = top.get("ffn_hidden_size").and_then(Value::as_u64);
        (kv, ffn.unwrap_or(4 * h))
    } else {
        (heads, 4 * h)
    };
    c.insert("num_key_value_heads".into(), Value::from(kv));
    c.insert("intermediate_size".into(), Value::from(ffn));
    Some(Value::Object(c))
}

/// GPT-2's config in the names every other model uses: `n_embd`, `n_layer`, `n_head`,
/// `n_inner` (null: 4 × n_embd), `n_positions` (its learned position table's rows); a KV head per
/// head. `None` once the config has them.
fn gpt2_canonical(top: &Map<String, Value>) -> Option<Value> {
    if top.contains_key("intermediate_size") {
        return None;
    }
    let mut c = renamed(
        top,
        &[
            ("hidden_size", "n_embd"),
            ("num_hidden_layers", "n_layer"),
            ("num_attention_heads", "n_head"),
            ("max_position_embeddings", "n_positions"),
        ],
    );
    let h = c.get("hidden_size").and_then(Value::as_u64)?;
    let inner = top.get("n_inner").and_then(Value::as_u64).unwrap_or(4 * h);
    c.insert("intermediate_size".into(), Value::from(inner));
    if !c.contains_key("max_position_embeddings") {
        c.insert("max_position_embeddings".into(), Value::from(1024));
    }
    Some(Value::Object(c))
}

/// ChatGLM's remote config (ChatGLM3, GLM-4-9B) in the names every other model uses:
/// `num_layers`, `ffn_hidden_size`, `padded_vocab_size`, `kv_channels` (the head width), KV
/// heads from `multi_query_group_num` when `multi_query_attention` is on (else one per head),
/// `seq_length` as the longest position; `add_qkv_bias` and `add_bias_linear` as the biases
/// (both off by the config class's defaults). `None` once the config has them.
fn chatglm_canonical(top: &Map<String, Value>) -> Result<Option<Value>, Error> {
    if top.contains_key("intermediate_size") {
        return Ok(None);
    }
    let mut c = renamed(
        top,
        &[
            ("num_hidden_layers", "num_layers"),
            ("intermediate_size", "ffn_hidden_size"),
            ("vocab_size", "padded_vocab_size"),
            ("head_dim", "kv_channels"),
            ("max_position_embeddings", "seq_length"),
        ],
    );
    let flag = |k: &str| top.get(k).and_then(Value::as_bool).unwrap_or(false);
    if flag("multi_query_attention") {
        let groups = get_u64(top, "multi_query_group_num")?.ok_or_else(|| {
            Error::ModelConfig(
                "chatglm: `multi_query_attention` is on but `multi_query_group_num` is missing"
                    .into(),
            )
        })?;
        c.insert("num_key_value_heads".into(), Value::from(groups));
    }
    c.insert("attention_bias".into(), Value::from(flag("add_qkv_bias")));
    c.insert("mlp_bias".into(), Value::from(flag("add_bias_linear")));
    Ok(Some(Value::Object(c)))
}
