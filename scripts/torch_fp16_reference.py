#!/usr/bin/env python3
"""PyTorch's fp16 mixed precision on lorafit's llama LoRA fixture, for comparison with
`lorafit train` with `fp16: true` (run by hand; CPU; torch + transformers + peft).

The llama_constant run of make_train_fixtures.py (4 steps), twice on the same weights — the
decoder's linears rounded to f16, as `fp16: true` stores them:
  fp32  every product in fp32 (what lorafit's f32 arithmetic gives on these weights);
  amp   torch.autocast(float16) over the forward, LoRA parameters fp32, GradScaler as transformers
        sets it up for `fp16: true` (init scale 65536, growth every 2000 steps).
Prints, for the amp run against the fp32 one, the worst relative loss difference over the steps
and the worst adapter element difference (relative to max(1, |x|)), the figures
`sixteen_bit_storage_equals_f32_on_the_rounded_weights` prints for lorafit.

    python3 scripts/torch_fp16_reference.py
"""
import json
import os
import sys

import torch
from peft import PeftModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_train_fixtures as fx  # noqa: E402

STEPS = 4


def run(amp):
    spec = fx.RUNS["llama_constant"]
    model_dir = os.path.join(fx.OUT, spec["model"])
    base = fx.load_base(model_dir, spec)
    with torch.no_grad():
        for name, p in base.named_parameters():
            if name.startswith("model.layers.") and name.endswith("_proj.weight"):
                p.copy_(p.half().float())
    model = PeftModel.from_pretrained(base, os.path.join(model_dir, "adapter_init_llama_constant"),
                                      is_trainable=True)
    k = spec["keys"]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=k["learning_rate"], weight_decay=k["weight_decay"], foreach=False)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16, growth_interval=2000, enabled=amp)
    with open(os.path.join(fx.OUT, "data.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    micro = fx.batches(rows, k["per_device_train_batch_size"])
    losses = []
    for step in range(STEPS):
        ids, lab = micro[step % len(micro)]
        n_tokens = int((lab[:, 1:] != -100).sum())
        with torch.autocast("cpu", dtype=torch.float16, enabled=amp):
            loss = fx.token_loss_sum(model, ids, lab) / n_tokens
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        losses.append(float(loss))
    adapter = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return losses, adapter


def main():
    l32, a32 = run(False)
    l16, a16 = run(True)
    dl = max(abs(x - y) / abs(y) for x, y in zip(l16, l32))
    da = max(float(((a16[n] - a32[n]).abs() / a32[n].abs().clamp(min=1.0)).max()) for n in a32)
    print(f"torch {torch.__version__}: fp16 autocast vs fp32 on the f16-rounded linears, {STEPS} steps: "
          f"loss {dl:.1e}, adapter {da:.1e}")
    print("fp32 losses", [f"{x:.6f}" for x in l32])
    print("amp  losses", [f"{x:.6f}" for x in l16])


if __name__ == "__main__":
    main()
