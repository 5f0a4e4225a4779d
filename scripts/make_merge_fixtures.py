#!/usr/bin/env python3
"""Make the `lorafit export` (merge) fixtures with PEFT (run by hand; torch, transformers, peft).

Takes the tiny llama of crates/lorafit-train/tests/fixtures/llama, puts a LoRA adapter (r 4, alpha 8,
q/v/down, rsLoRA off) and a DoRA adapter (r 4, alpha 16, rsLoRA, all linears) on it with random
non-zero B (and magnitudes), and writes under crates/lorafit-train/tests/fixtures/merge/:

  lora/, dora/       the PEFT adapter directories (adapter_config.json, adapter_model.safetensors)
  logits.safetensors PEFT's logits of base + each adapter on fixed input ids, and of
                     `merge_and_unload()` (which must agree), for the Rust test to compare against

    python3 scripts/make_merge_fixtures.py            # write the fixtures
    python3 scripts/make_merge_fixtures.py verify DIR # load lorafit's export DIR in transformers
    python3 scripts/make_merge_fixtures.py generate   # generate.json: transformers' greedy continuations
"""
import os
import sys

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "lorafit-train", "tests", "fixtures")
BASE = os.path.join(HERE, "llama")
OUT = os.path.join(HERE, "merge")
IDS = torch.tensor([[1, 17, 42, 91, 5, 25, 3, 77, 12, 8], [1, 30, 21, 4, 66, 19, 33, 2, 2, 9]])
SPECS = {
    "lora": LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], lora_dropout=0.0),
    "dora": LoraConfig(r=4, lora_alpha=16, use_rslora=True, use_dora=True, lora_dropout=0.0,
                       target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
}


def base():
    return AutoModelForCausalLM.from_pretrained(BASE, dtype=torch.float32).eval()


def main():
    torch.manual_seed(0)
    out = {"input_ids": IDS.to(torch.float32)}  # small ints, exact in f32
    for name, cfg in SPECS.items():
        model = get_peft_model(base(), cfg)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.copy_(torch.randn_like(p) * 0.05)
                if "lora_magnitude_vector" in n:
                    p.mul_(1 + 0.1 * torch.randn_like(p))
        d = os.path.join(OUT, name)
        model.save_pretrained(d)
        model = PeftModel.from_pretrained(base(), d).eval()
        with torch.no_grad():
            out[f"{name}.adapter"] = model(IDS).logits.float()
            merged = model.merge_and_unload()
            out[f"{name}.merged"] = merged(IDS).logits.float()
        diff = (out[f"{name}.adapter"] - out[f"{name}.merged"]).abs().max().item()
        print(name, "adapter vs merge_and_unload max |diff|", diff)
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, "logits.safetensors"))


def verify(export_dir):
    from safetensors.torch import load_file
    ref = load_file(os.path.join(OUT, "logits.safetensors"))
    name = "dora" if "dora" in export_dir else "lora"
    model = AutoModelForCausalLM.from_pretrained(export_dir).eval()
    with torch.no_grad():
        got = model(ref["input_ids"].long()).logits.float()
    print(export_dir, "transformers on lorafit's merge vs PEFT adapter: max |diff|",
          (got - ref[f"{name}.adapter"]).abs().max().item())


if __name__ == "__main__" and sys.argv[1:2] != ["generate"]:
    if len(sys.argv) > 2 and sys.argv[1] == "verify":
        verify(sys.argv[2])
    else:
        main()


def generate_fixture():
    """transformers' greedy continuation of fixed prompts with base + the LoRA adapter (`generate.json`)."""
    import json
    model = PeftModel.from_pretrained(base(), os.path.join(OUT, "lora")).eval()
    out = []
    for prompt in ([1, 17, 42, 91, 5], [1, 30, 21, 4, 66, 19, 33]):
        with torch.no_grad():
            ids = model.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=12,
                                 eos_token_id=None, pad_token_id=0, min_new_tokens=12)
        out.append({"prompt": prompt, "greedy": ids[0, len(prompt):].tolist()})
    with open(os.path.join(OUT, "generate.json"), "w") as f:
        json.dump({"adapter": "lora", "max_new_tokens": 12, "cases": out}, f, indent=1)
    print(out)


if __name__ == "__main__" and sys.argv[1:2] == ["generate"]:
    generate_fixture()
