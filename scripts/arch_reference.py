"""Exact parameter counts of every catalog config block, from transformers itself.

For each block of crates/lorafit-core/data/models.json this builds the model transformers 5.8
builds for LLaMA-Factory (AutoModelForImageTextToText when the config has a vision tower, else
AutoModelForCausalLM) on the meta device and records:

  total          sum(p.numel() for p in model.parameters())
  vision         parameters under LLaMA-Factory's vision_model_keys + projector_keys
                 (model/model_utils/visual.py COMPOSITE_MODELS)
  active         total minus the routed experts a token does not use
  lora_all_r8    LoRA adapter parameters for `lora_target: all`, lora_rank 8, as LLaMA-Factory
                 resolves it: find_all_linear_modules(freeze_vision_tower=True), then for
                 composite models the full module names outside the frozen tower/projector
                 (patch_target_modules), else PEFT's suffix match
  lora_targets   the module names `all` expands to

Run: python scripts/arch_reference.py > crates/lorafit-core/tests/fixtures/arch_reference.json
Needs torch and transformers==5.8.0 (no weights are downloaded; nothing is allocated).
"""

import json
import sys
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

ROOT = Path(__file__).resolve().parent.parent
CATALOG = ROOT / "crates/lorafit-core/data/models.json"

# LLaMA-Factory main (ff6d4d1) model_utils/visual.py: (projector_keys, vision_model_keys, lora_conflict_keys).
COMPOSITE = {
    "gemma3": (["multi_modal_projector"], ["vision_tower"], []),
    "llama4": (["multi_modal_projector"], ["vision_model"], []),
    "llava": (["multi_modal_projector"], ["vision_tower"], []),
    "internvl": (["multi_modal_projector"], ["vision_tower"], []),
    "llava_next": (["multi_modal_projector"], ["vision_tower"], []),
    "llava_next_video": (["multi_modal_projector"], ["vision_tower"], []),
    "glm4v": (["visual.merger"], ["visual.patch_embed", "visual.blocks"], ["patch_embed"]),
    "glm4v_moe": (["visual.merger"], ["visual.patch_embed", "visual.blocks"], ["patch_embed"]),
    "mistral3": (["model.multi_modal_projector"], ["vision_tower"], []),
    "paligemma": (["multi_modal_projector"], ["vision_tower"], []),
    "mllama": (["multi_modal_projector"], ["vision_model"], []),
    "gemma4": (["model.embed_vision", "model.embed_audio"], ["vision_tower", "audio_tower"], []),
    "qwen2_vl": (["visual.merger"], ["visual.patch_embed", "visual.blocks"], ["patch_embed"]),
    "qwen2_5_vl": (["visual.merger"], ["visual.patch_embed", "visual.blocks"], ["patch_embed"]),
    "qwen3_vl": (["visual.merger"], ["visual.pos_embed", "visual.patch_embed", "visual.blocks", "visual.deepstack_merger_list"], ["patch_embed"]),
    "qwen3_vl_moe": (["visual.merger"], ["visual.pos_embed", "visual.patch_embed", "visual.blocks", "visual.deepstack_merger_list"], ["patch_embed"]),
    "qwen3_5": (["model.visual.merger"], ["visual.pos_embed", "visual.patch_embed", "visual.blocks"], ["patch_embed"]),
    "qwen3_5_moe": (["model.visual.merger"], ["visual.pos_embed", "visual.patch_embed", "visual.blocks"], ["patch_embed"]),
    "qwen2_audio": (["multi_modal_projector"], ["audio_tower"], []),
    "qwen2_5_omni_thinker": (["visual.merger", "audio_tower.proj"], ["visual.patch_embed", "visual.blocks", "audio_tower"], ["patch_embed"]),
}


def internlm2(config: dict):
    """InternLM2 is remote code (modeling_internlm2.py on the Hub, not in transformers): a Llama with
    its own module names and q / k / v fused. Built here as transformers' Llama of the same shape
    with the modules replaced by InternLM2's: attention.wqkv / wo, feed_forward.w1 / w3 / w2, the
    head `output` (which LLaMA-Factory's find_all_linear_modules forbids for internlm2)."""
    bias = config.get("bias", True)
    conf = transformers.LlamaConfig(
        hidden_size=config["hidden_size"],
        intermediate_size=config["intermediate_size"],
        num_hidden_layers=config["num_hidden_layers"],
        num_attention_heads=config["num_attention_heads"],
        num_key_value_heads=config["num_key_value_heads"],
        vocab_size=config["vocab_size"],
        tie_word_embeddings=config.get("tie_word_embeddings", False),
        attention_bias=bias,
    )
    nn = torch.nn
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(conf)
        h, hd = conf.hidden_size, conf.hidden_size // conf.num_attention_heads
        qkv = (conf.num_attention_heads + 2 * conf.num_key_value_heads) * hd
        for layer in model.model.layers:
            attn = nn.Module()
            attn.wqkv = nn.Linear(h, qkv, bias=bias)
            attn.wo = nn.Linear(conf.num_attention_heads * hd, h, bias=bias)
            ff = nn.Module()
            ff.w1 = layer.mlp.gate_proj
            ff.w3 = layer.mlp.up_proj
            ff.w2 = layer.mlp.down_proj
            del layer.self_attn, layer.mlp
            layer.attention, layer.feed_forward = attn, ff
        model.output = model.lm_head
        del model.lm_head
    return model, "internlm2"


def chatglm(config: dict):
    """ChatGLM3 / GLM-4-9B are remote code (modeling_chatglm.py on the Hub): per layer RMSNorms,
    self_attention.query_key_value (q / k / v fused, `add_qkv_bias`) and dense, mlp.dense_h_to_4h
    (gate and up fused, 2 x ffn_hidden_size wide) and dense_4h_to_h, no bias on either
    (`add_bias_linear`); a final norm, the embedding and an untied `output_layer` (forbidden to
    LLaMA-Factory's find_all_linear_modules for chatglm). Built as transformers' Llama of that shape
    with ChatGLM's modules swapped in."""
    kv = config["multi_query_group_num"] if config.get("multi_query_attention") else config["num_attention_heads"]
    hd, ffn = config["kv_channels"], config["ffn_hidden_size"]
    qkv_bias, bias = config.get("add_qkv_bias", False), config.get("add_bias_linear", False)
    conf = transformers.LlamaConfig(
        hidden_size=config["hidden_size"],
        intermediate_size=ffn,
        num_hidden_layers=config["num_layers"],
        num_attention_heads=config["num_attention_heads"],
        num_key_value_heads=kv,
        head_dim=hd,
        vocab_size=config["padded_vocab_size"],
        tie_word_embeddings=False,
    )
    nn = torch.nn
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(conf)
        h, q = conf.hidden_size, conf.num_attention_heads * hd
        for layer in model.model.layers:
            attn = nn.Module()
            attn.query_key_value = nn.Linear(h, q + 2 * kv * hd, bias=qkv_bias)
            attn.dense = nn.Linear(q, h, bias=bias)
            mlp = nn.Module()
            mlp.dense_h_to_4h = nn.Linear(h, 2 * ffn, bias=bias)
            mlp.dense_4h_to_h = nn.Linear(ffn, h, bias=bias)
            del layer.self_attn, layer.mlp
            layer.self_attention, layer.mlp = attn, mlp
        model.output_layer = model.lm_head
        del model.lm_head
    return model, "chatglm"


def internlm3(config: dict):
    """InternLM3 is remote code (modeling_internlm3.py on the Hub): Llama's modules and names, with
    `qkv_bias` on q / k / v and o_proj and `bias` on the MLP — transformers' Llama with
    `attention_bias` / `mlp_bias`."""
    cfg = {k: v for k, v in config.items() if k not in ("model_type", "architectures", "torch_dtype", "qkv_bias", "bias")}
    conf = transformers.LlamaConfig(**cfg, attention_bias=config.get("qkv_bias", False), mlp_bias=config.get("bias", False))
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(conf), "internlm3"


def build(config: dict):
    if config["model_type"] == "internlm2":
        return internlm2(config)
    if config["model_type"] == "internlm3":
        return internlm3(config)
    if config["model_type"] == "chatglm":
        return chatglm(config)
    cfg = dict(config)
    model_type = cfg.pop("model_type")
    for k in ("architectures", "torch_dtype", "quantization_config"):
        cfg.pop(k, None)
    conf = AutoConfig.for_model(model_type, **cfg)
    multimodal = "vision_config" in config
    cls = AutoModelForImageTextToText if multimodal else AutoModelForCausalLM
    if model_type == "qwen2_audio":  # LLaMA-Factory loads it through AutoModelForSeq2SeqLM
        cls = transformers.AutoModelForSeq2SeqLM
    if model_type == "qwen2_5_omni":  # LLaMA-Factory trains `model.thinker`
        thinker = transformers.Qwen2_5OmniThinkerConfig(**config["thinker_config"])
        with torch.device("meta"):
            return transformers.Qwen2_5OmniThinkerForConditionalGeneration._from_config(thinker), "qwen2_5_omni_thinker"
    with torch.device("meta"):
        return cls.from_config(conf), model_type


def linear(module) -> bool:
    name = module.__class__.__name__
    return "Linear" in name and "Embedding" not in name


def main() -> None:
    data = json.loads(CATALOG.read_text())
    out = {"transformers": transformers.__version__, "models": {}}
    only = set(sys.argv[1:])
    for m in data["models"]:
        if only and m["id"] not in only:
            continue
        model, model_type = build(m["config"])
        total = sum(p.numel() for p in model.parameters())
        projector, vision, conflict = COMPOSITE.get(model_type, ([], [], []))
        frozen = projector + vision
        vis = sum(p.numel() for n, p in model.named_parameters() if any(k in n for k in frozen))
        # Routed experts: fused 3-D tensors [E, ...] under `.experts.` (Granite MoE:
        # `block_sparse_moe.input_linear` / `output_linear`); a token uses k of E.
        text = model.config.get_text_config()
        e = getattr(text, "num_experts", None) or getattr(text, "n_routed_experts", None) or getattr(text, "num_local_experts", None)
        k = getattr(text, "num_experts_per_tok", None) or getattr(text, "top_k_experts", None)
        inactive = 0
        if e and k:
            for n, p in model.named_parameters():
                routed = ".experts." in n or ".input_linear." in n or ".output_linear." in n
                if routed and p.dim() >= 2 and p.shape[0] == e:
                    inactive += p.numel() * (e - k) // e
        # LLaMA-Factory's `all`.
        forbidden = {"lm_head"} | set(projector) | set(vision)
        if model_type == "internlm2":
            forbidden.add("output")
        if model_type == "chatglm":
            forbidden.add("output_layer")
        names = set()
        for n, mod in model.named_modules():
            if any(f in n for f in forbidden):
                continue
            if linear(mod):
                names.add(n.split(".")[-1])
        lora = 0
        for n, mod in model.named_modules():
            if not isinstance(mod, torch.nn.Linear):
                continue
            if model_type in COMPOSITE:
                hit = any(t in n for t in names) and not any(f in n for f in frozen + conflict)
            else:
                hit = n.split(".")[-1] in names
            if hit:
                lora += 8 * (mod.in_features + mod.out_features)
        out["models"][m["id"]] = {
            "model_type": model_type,
            "total": total,
            "vision": vis,
            "active": total - inactive,
            "lora_all_r8": lora,
            "lora_targets": sorted(names),
        }
        print(m["id"], total, file=sys.stderr)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
