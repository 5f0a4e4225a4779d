#!/usr/bin/env python3
"""The PyTorch + PEFT side of `cargo xtask bench-train` (run by hand or by the xtask; never in CI).

Trains the same random-weight checkpoint on the same pre-tokenized rows as lorafit's benchmark run:
LoRA r=8, alpha 16 on all linear layers, batch 4, f32, eager PyTorch on the CPU with all cores,
AdamW, clipping at 1.0, the Contract 3 loop. Prints tokens/s counted the way lorafit's
trainer_log.jsonl counts them (all tokens of all steps / wall time from the start of step 1).

    python3 scripts/bench_train_torch.py MODEL_DIR DATA_JSONL STEPS [DEVICE=cpu] [BATCH=4] [DTYPE=float32] [BITS=0]

BITS=4 loads the base as QLoRA does (bitsandbytes NF4 + double quant, compute dtype DTYPE).

On a GPU (DEVICE=cuda) it also prints torch.cuda.max_memory_allocated / max_memory_reserved.
"""
import json
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM


def main():
    model_dir, data_path, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    device = sys.argv[4] if len(sys.argv) > 4 else "cpu"
    bs = int(sys.argv[5]) if len(sys.argv) > 5 else 4
    dtype = getattr(torch, sys.argv[6]) if len(sys.argv) > 6 else torch.float32
    rows = [json.loads(l)["input_ids"] for l in open(data_path) if l.strip()]
    bits = int(sys.argv[7]) if len(sys.argv) > 7 else 0
    if bits == 4:  # QLoRA as LLaMA-Factory loads it: NF4, double quant, compute dtype = dtype
        from transformers import BitsAndBytesConfig
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=dtype)
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa",
                                                    quantization_config=q, device_map={"": device})
    else:
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, attn_implementation="sdpa").to(device)
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", lora_dropout=0.0, task_type="CAUSAL_LM")
    model = get_peft_model(base, cfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    tokens = 0
    start = time.perf_counter()
    for step in range(steps):
        i = (step * bs) % len(rows)
        ids = torch.tensor(rows[i:i + bs], device=device)
        logits = model(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                                               ids[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad()
        tokens += ids.numel()
        print(f"step {step + 1}/{steps} loss {loss.item():.4f} {tokens / (time.perf_counter() - start):.0f} tok/s")
    if device == "cuda":
        torch.cuda.synchronize()
    where = f"{torch.get_num_threads()} threads" if device == "cpu" else torch.cuda.get_device_name()
    print(f"PyTorch {torch.__version__} + PEFT (eager, {where}): "
          f"{tokens / (time.perf_counter() - start):.0f} tokens/s over {steps} steps")
    if device == "cuda":
        print(f"max_memory_allocated {torch.cuda.max_memory_allocated()} max_memory_reserved "
              f"{torch.cuda.max_memory_reserved()}")


if __name__ == "__main__":
    main()
