//! A resized vocabulary under LoRA: LLaMA-Factory hands `embed_tokens` and `lm_head` to PEFT's
//! `modules_to_save` (`model/adapter.py`: `resize_vocab` with no `additional_target`), which
//! trains a whole fp32 copy of each beside the adapter — the OOM users report after adding tokens.

use super::{est, settings};
use lorafit_core::estimate;

#[test]
fn resized_vocabularies_train_whole_embedding_and_head_copies() {
    let base = "model_name_or_path: Qwen/Qwen2.5-7B\nfinetuning_type: lora\nlora_target: all\ncutoff_len: 1024\nper_device_train_batch_size: 1\nbf16: true\n";
    let plain = est(base);
    // Qwen2.5-7B: 152,064 × 3,584 for the table and again for the untied head.
    let copies = 2 * 152_064 * 3_584;
    for key in [
        "resize_vocab: true",
        "add_tokens: <think_a>,<think_b>",
        "add_special_tokens: <|tool|>",
        "additional_target: embed_tokens,lm_head",
    ] {
        let e = est(&format!("{base}{key}\n"));
        assert_eq!(e.trainable_params, plain.trainable_params + copies, "{key}");
        // fp32 copies, their gradients and AdamW's two states: 16 bytes a parameter more.
        let grown = e.breakdown.adapter + e.breakdown.gradients + e.breakdown.optimizer
            - plain.breakdown.adapter
            - plain.breakdown.gradients
            - plain.breakdown.optimizer;
        assert!(grown >= 16 * copies, "{key}: {grown}");
        assert!(
            e.warnings.iter().any(|w| w.contains("modules_to_save")),
            "{key}: {:?}",
            e.warnings
        );
    }
    // A tied model still gets two copies (PEFT wraps each module on its own).
    let tied = "model_name_or_path: Qwen/Qwen2.5-0.5B\nfinetuning_type: lora\n";
    assert_eq!(
        est(&format!("{tied}resize_vocab: true\n")).trainable_params,
        est(tied).trainable_params + 2 * 151_936 * 896
    );
    // `additional_target` alone names what is trained; full fine-tuning trains everything anyway.
    assert_eq!(
        est(&format!("{base}additional_target: norm\n")).trainable_params,
        plain.trainable_params + 3_584
    );
    let full = "model_name_or_path: Qwen/Qwen2.5-0.5B\nfinetuning_type: full\n";
    assert_eq!(
        est(&format!("{full}resize_vocab: true\n")).trainable_params,
        est(full).trainable_params
    );
    let plan = settings(&format!("{base}additional_target: vision_head\n"))
        .plan()
        .expect("plan");
    let (arch, src) = estimate::resolve_model(&plan, None).expect("model");
    let e = estimate::estimate(&arch, src, &plan).expect_err("unknown module");
    assert!(
        e.to_string().contains("additional_target: vision_head"),
        "{e}"
    );
}
