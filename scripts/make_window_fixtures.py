"""Sliding-window attention references for lorafit's tiled attention (crates/lorafit-train).

Builds two tiny random checkpoints with transformers and writes them with their logits for one
sequence longer than the window to crates/lorafit-train/tests/fixtures/window/:
- mistral/: `sliding_window: 4` on every layer;
- qwen2/: `use_sliding_window: true`, `sliding_window: 5`, `max_window_layers: 1` (layer 0 full
  attention, layer 1 windowed, as transformers' Qwen2Config lays out `layer_types`).
CPU only, eager attention:

    python scripts/make_window_fixtures.py
"""

import json
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

OUT = Path(__file__).resolve().parent.parent / "crates/lorafit-train/tests/fixtures/window"
IDS = [(i * 37 + 5) % 96 for i in range(19)]

COMMON = dict(
    vocab_size=96,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    max_position_embeddings=64,
    rms_norm_eps=1e-6,
    hidden_act="silu",
    tie_word_embeddings=False,
)
CASES = {
    "mistral": dict(model_type="mistral", sliding_window=4),
    "qwen2": dict(model_type="qwen2", use_sliding_window=True, sliding_window=5, max_window_layers=1),
}

for name, extra in CASES.items():
    torch.manual_seed(0)
    kw = dict(COMMON, **extra)
    model_type = kw.pop("model_type")
    config = AutoConfig.for_model(model_type, **kw)
    config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
        logits = model(torch.tensor([IDS])).logits[0]
    d = OUT / name
    model.save_pretrained(d, safe_serialization=True)
    (d / "generation_config.json").unlink(missing_ok=True)
    (d / "logits.json").write_text(
        json.dumps({"input_ids": IDS, "logits": [[round(x, 7) for x in row] for row in logits.tolist()]})
    )
    print(name, getattr(config, "layer_types", None), tuple(logits.shape))
