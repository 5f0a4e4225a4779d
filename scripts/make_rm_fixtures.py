#!/usr/bin/env python3
"""Make the reward-model (`stage: rm`) parity fixtures for lorafit-train (run by hand; torch,
transformers, peft, trl and a LLaMA-Factory checkout installed with --no-deps).

The model is built as LLaMA-Factory's loader builds it for `stage: rm` with LoRA: the base, the PEFT
adapter, then trl 0.24's `AutoModelForCausalLMWithValueHead` around it (value head = dropout +
Linear(hidden, 1), here with `summary_dropout_prob=0` so the run is deterministic). Each micro-batch
is LLaMA-Factory's pairwise batch (chosen rows then rejected rows, right-padded, attention_mask) and
its loss is LLaMA-Factory's own `PairwiseTrainer.compute_loss` (the value at each row's last token,
−log σ(chosen − rejected), mean), divided by the step's micro-batches (transformers' accumulation);
torch.optim.AdamW with transformers' parameter groups (no weight decay on the value head's bias),
constant lr, clip_grad_norm_. After training, the eval of the final model on the same pairs in
batches of 3: eval_loss as transformers weights batches, eval_accuracy as LLaMA-Factory's
ComputeAccuracy (chosen score > rejected score over all pairs). Writes under
crates/lorafit-train/tests/fixtures/runs/:

  rm_init.value_head.safetensors   the value head before training (torch's Linear init, seed 0)
  rm_{run}.json                    keys, per-step losses, grad norms, eval
  rm_{run}.adapter.safetensors     the adapter after the last step
  rm_{run}.value_head.safetensors  the value head after the last step (LLaMA-Factory's file layout)

    python3 scripts/make_rm_fixtures.py
"""
import json
import os

import _trl_compat  # noqa: F401  (before trl, transformers' extras and LLaMA-Factory)
import torch
import trl
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM
from trl import AutoModelForCausalLMWithValueHead

from llamafactory.train.rm.trainer import PairwiseTrainer

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "lorafit-train", "tests", "fixtures")
RUNS = {
    "plain": {"max_grad_norm": 0.0, "weight_decay": 0.0},
    "decay_clip": {"max_grad_norm": 1.0, "weight_decay": 0.1},
}


def batch(pairs):
    rows = [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for j, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[j, :n] = torch.tensor(r["input_ids"])
        mask[j, :n] = 1
    return {"input_ids": ids, "attention_mask": mask}


def model_with_head():
    base = AutoModelForCausalLM.from_pretrained(os.path.join(OUT, "llama"), dtype=torch.float32)
    peft = PeftModel.from_pretrained(base, os.path.join(OUT, "llama", "adapter_init_llama_constant"),
                                     is_trainable=True)
    model = AutoModelForCausalLMWithValueHead.from_pretrained(peft, summary_dropout_prob=0.0)
    init = os.path.join(OUT, "runs", "rm_init.value_head.safetensors")
    if not os.path.exists(init):
        torch.manual_seed(0)
        head = torch.nn.Linear(model.v_head.summary.in_features, 1)
        save_file({"v_head.summary.weight": head.weight.detach().contiguous(),
                   "v_head.summary.bias": head.bias.detach().contiguous()}, init)
    model.load_state_dict(load_file(init), strict=False)
    return model


def scores(model, inputs):
    _, _, values = model(**inputs, output_hidden_states=True, return_dict=True, use_cache=False)
    b = inputs["input_ids"].size(0) // 2
    idx = inputs["attention_mask"].sum(dim=-1, keepdim=True) - 1
    s = values.gather(dim=-1, index=idx).squeeze(-1)
    return s[:b], s[b:]


def train(name, keys, pairs):
    model = model_with_head()
    decay = [p for n, p in model.named_parameters() if p.requires_grad and not n.endswith("bias")]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith("bias")]
    params = decay + no_decay
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": keys["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}], lr=keys["learning_rate"], foreach=False)
    bs, ga = keys["per_device_train_batch_size"], keys["gradient_accumulation_steps"]
    micro = [pairs[i:i + bs] for i in range(0, len(pairs), bs)]
    steps = [micro[i:i + ga] for i in range(0, len(micro), ga)]
    losses, norms = [], []
    model.train()
    for step in range(keys["max_steps"]):
        group = steps[step % len(steps)]
        total = 0.0
        for mb in group:
            loss = PairwiseTrainer.compute_loss(None, model, batch(mb)) / len(group)
            loss.backward()
            total += float(loss)
        if keys["max_grad_norm"] > 0:
            norms.append(float(torch.nn.utils.clip_grad_norm_(params, keys["max_grad_norm"])))
        opt.step()
        opt.zero_grad()
        losses.append(total)
        print(f"rm {name} step {step + 1}: loss {total:.6f}")
    model.eval()
    total, n, right = 0.0, 0, 0
    with torch.no_grad():
        for i in range(0, len(pairs), 3):
            mb = pairs[i:i + 3]
            inputs = batch(mb)
            total += float(PairwiseTrainer.compute_loss(None, model, inputs)) * len(mb)
            n += len(mb)
            c, r = scores(model, inputs)
            right += int((c > r).sum())
    evaluation = {"eval_loss": total / n, "eval_accuracy": right / n}
    print(f"rm {name} eval: {evaluation}")
    runs = os.path.join(OUT, "runs")
    adapter = {k.replace(".default", ""): v.detach().contiguous()
               for k, v in model.pretrained_model.state_dict().items() if "lora_" in k}
    save_file(adapter, os.path.join(runs, f"rm_{name}.adapter.safetensors"))
    head = {k: v.detach().contiguous() for k, v in model.state_dict().items() if k.startswith("v_head.")}
    save_file(head, os.path.join(runs, f"rm_{name}.value_head.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(runs, f"rm_{name}.json"), "w") as f:
        json.dump({"keys": keys, "losses": losses, "grad_norms": norms, "eval": evaluation,
                   "versions": {"torch": torch.__version__, "trl": trl.__version__,
                                "peft": __import__("peft").__version__}}, f, indent=1)


def main():
    with open(os.path.join(OUT, "runs", "dpo_pairs.json")) as f:
        pairs = json.load(f)
    for name, extra in RUNS.items():
        keys = {"stage": "rm", "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2,
                "learning_rate": 5e-3, "lr_scheduler_type": "constant", "warmup_steps": 0,
                "max_steps": 6, "model_name_or_path": "llama",
                "adapter_name_or_path": "llama/adapter_init_llama_constant", "lora_rank": 8, "lora_alpha": 16,
                "lora_target": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", "use_rslora": False,
                "lora_dropout": 0.0, "shuffle": False, "seed": 0, **extra}
        torch.manual_seed(0)
        train(name, keys, pairs)


if __name__ == "__main__":
    main()
