"""Reference scores for lorafit's logits processors (crates/lorafit-train/src/generate.rs).

Runs transformers' own RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
TopKLogitsWarper and TopPLogitsWarper, in the order `generate` applies them, on random score
vectors, and writes crates/lorafit-train/tests/fixtures/generate/warpers.json. CPU only:

    python scripts/make_generation_fixtures.py
"""

import json
from pathlib import Path

import torch
import transformers
from transformers.generation.logits_process import (
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

OUT = Path(__file__).resolve().parent.parent / "crates/lorafit-train/tests/fixtures/generate/warpers.json"

torch.manual_seed(0)
cases = []
settings = [
    # (temperature, top_k, top_p, repetition_penalty): LLaMA-Factory's defaults first.
    (0.95, 50, 0.7, 1.0),
    (1.0, 0, 0.9, 1.0),
    (0.5, 5, 1.0, 1.0),
    (1.3, 10, 0.5, 1.2),
    (0.7, 0, 0.95, 0.8),
    (1.0, 3, 0.99, 1.5),
    (0.2, 0, 0.3, 1.0),
]
for i, (t, k, p, rp) in enumerate(settings):
    for vocab, spread in [(64, 1.0), (300, 4.0)]:
        scores = torch.randn(1, vocab) * spread
        # Some repeated tokens in the history, some twice.
        seen = torch.randint(0, vocab, (1, 12))
        out = scores.clone()
        if rp != 1.0:
            out = RepetitionPenaltyLogitsProcessor(rp)(seen, out)
        for w in [
            TemperatureLogitsWarper(t) if t != 1.0 else None,
            TopKLogitsWarper(k) if k != 0 else None,
            TopPLogitsWarper(p) if p < 1.0 else None,
        ]:
            if w is not None:
                out = w(seen, out)
        cases.append(
            {
                "temperature": t,
                "top_k": k,
                "top_p": p,
                "repetition_penalty": rp,
                "seen": seen[0].tolist(),
                "scores": scores[0].tolist(),
                "want": [None if v == float("-inf") else v for v in out[0].tolist()],
            }
        )

OUT.parent.mkdir(parents=True, exist_ok=True)
OUT.write_text(
    json.dumps(
        {"source": f"transformers {transformers.__version__} logits processors, torch {torch.__version__}", "cases": cases}
    )
)
print(f"wrote {len(cases)} cases to {OUT}")
