#!/usr/bin/env python3
"""Make the DPO parity fixtures for lorafit-train (run by hand; torch, transformers, peft, trl,
and a LLaMA-Factory checkout installed with --no-deps).

The loop is LLaMA-Factory's DPO step written out on the PEFT model, using the library functions
themselves: LLaMA-Factory's `get_batch_logps` (sum of label log-probs) on chosen and rejected in one
right-padded batch, the reference under `disable_adapter()` and no_grad, TRL 0.24's
`DPOTrainer.dpo_loss` (sigmoid, `beta`, `label_smoothing`), plus `pref_ftx` × the chosen per-token
NLL as LLaMA-Factory's `get_batch_loss_metrics` adds it; each micro-batch's mean loss / the number
of micro-batches of the step (transformers' accumulation), torch.optim.AdamW, constant lr,
clip_grad_norm_. Pairs in file order. Writes under crates/lorafit-train/tests/fixtures/runs/:

  dpo_pairs.json                  8 pre-tokenized pairs (prompt masked with -100)
  dpo_{run}.json                  keys, per-step losses, grad norms and TRL's metrics; the eval of
                                  the final adapter on the 8 pairs in batches of 3 (eval_loss as
                                  transformers weights batches, eval_* as TRL stores and LF logs them)
  dpo_{run}.adapter.safetensors   the adapter after the last step

    python3 scripts/make_dpo_fixtures.py
"""
import json
import os
import types

import _trl_compat  # noqa: F401  (before trl, transformers' extras and LLaMA-Factory)
import torch
import trl
from peft import PeftModel
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM
from trl.trainer.dpo_trainer import DPOTrainer, FDivergenceType

from llamafactory.train.trainer_utils import get_batch_logps

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "lorafit-train", "tests", "fixtures")
VOCAB = 96
RUNS = {
    "sigmoid": {"pref_beta": 0.1, "pref_ftx": 0.0, "dpo_label_smoothing": 0.0, "max_grad_norm": 0.0},
    "ftx_smooth_clip": {"pref_beta": 0.25, "pref_ftx": 0.5, "dpo_label_smoothing": 0.1, "max_grad_norm": 1.0},
}


def make_pairs(gen):
    pairs = []
    for _ in range(8):
        p = int(torch.randint(3, 9, (1,), generator=gen))
        prompt = torch.randint(3, VOCAB, (p,), generator=gen).tolist()
        prompt[0] = 1
        sides = []
        for _ in range(2):
            n = int(torch.randint(2, 7, (1,), generator=gen))
            resp = torch.randint(3, VOCAB, (n,), generator=gen).tolist() + [2]
            sides.append({"input_ids": prompt + resp, "labels": [-100] * p + resp})
        pairs.append({"chosen": sides[0], "rejected": sides[1]})
    return pairs


def pad(rows):
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    lab = torch.full((len(rows), width), -100, dtype=torch.long)
    for j, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[j, :n] = torch.tensor(r["input_ids"])
        lab[j, :n] = torch.tensor(r["labels"])
    return ids, lab


def train(name, keys, pairs):
    base = AutoModelForCausalLM.from_pretrained(os.path.join(OUT, "llama"), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, os.path.join(OUT, "llama", "adapter_init_llama_constant"),
                                      is_trainable=True)
    trl_self = types.SimpleNamespace(accelerator=types.SimpleNamespace(device="cpu"), reference_free=False,
                                     f_divergence_type=FDivergenceType.REVERSE_KL, f_divergence_params=None,
                                     beta=keys["pref_beta"], label_smoothing=keys["dpo_label_smoothing"],
                                     use_weighting=False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=keys["learning_rate"], weight_decay=keys["weight_decay"], foreach=False)
    bs, ga = keys["per_device_train_batch_size"], keys["gradient_accumulation_steps"]
    micro = [pairs[i:i + bs] for i in range(0, len(pairs), bs)]
    steps = [micro[i:i + ga] for i in range(0, len(micro), ga)]
    losses, norms, metrics = [], [], []
    model.train()
    for step in range(keys["max_steps"]):
        group = steps[step % len(steps)]
        total = 0.0
        acc = {}
        for mb in group:
            rows = [p["chosen"] for p in mb] + [p["rejected"] for p in mb]
            ids, lab = pad(rows)
            logps, valid = get_batch_logps(model(input_ids=ids).logits.float(), lab)
            with torch.no_grad(), model.disable_adapter():
                ref, _ = get_batch_logps(model(input_ids=ids).logits.float(), lab)
            b = len(mb)
            pc, pr, rc, rr = logps[:b], logps[b:], ref[:b], ref[b:]
            out = DPOTrainer.dpo_loss(trl_self, pc, pr, rc, rr, loss_type="sigmoid")
            loss_i, ch, rj = out[0], out[1], out[2]
            if keys["pref_ftx"] > 1e-6:
                loss_i = loss_i + keys["pref_ftx"] * (-pc / valid[:b])
            loss = loss_i.mean() / len(group)
            loss.backward()
            total += float(loss)
            m = {"rewards/chosen": ch.mean().item(), "rewards/rejected": rj.mean().item(),
                 "rewards/accuracies": (ch > rj).float().mean().item(), "rewards/margins": (ch - rj).mean().item(),
                 "logps/chosen": pc.mean().item(), "logps/rejected": pr.mean().item()}
            for k, v in m.items():
                acc[k] = acc.get(k, 0.0) + v / len(group)
        if keys["max_grad_norm"] > 0:
            norms.append(float(torch.nn.utils.clip_grad_norm_(params, keys["max_grad_norm"])))
        opt.step()
        opt.zero_grad()
        losses.append(total)
        metrics.append(acc)
        print(f"dpo {name} step {step + 1}: loss {total:.6f} acc {acc['rewards/accuracies']:.2f}")
    evaluation = evaluate(model, trl_self, keys, pairs, 3)
    print(f"dpo {name} eval: {evaluation}")
    final = {}
    for key, value in model.state_dict().items():
        if "lora_" in key:
            final[key.replace(".default", "")] = value.detach().contiguous()
    runs = os.path.join(OUT, "runs")
    save_file(final, os.path.join(runs, f"dpo_{name}.adapter.safetensors"))
    with open(os.path.join(runs, f"dpo_{name}.json"), "w") as f:
        json.dump({"keys": keys, "losses": losses, "grad_norms": norms, "metrics": metrics, "eval": evaluation,
                   "versions": {"torch": torch.__version__, "trl": trl.__version__,
                                "peft": __import__("peft").__version__}}, f, indent=1)


def evaluate(model, trl_self, keys, pairs, bs):
    """LLaMA-Factory's DPO eval: TRL's prediction_step per batch (no_grad, dropout off); the
    evaluation loop's eval_loss = mean of each batch's loss repeated batch-size times; the stored
    eval metrics averaged over batches by LLaMA-Factory's `log`."""
    model.eval()
    total, n, sums, batches = 0.0, 0, {}, 0
    with torch.no_grad():
        for i in range(0, len(pairs), bs):
            mb = pairs[i:i + bs]
            rows = [p["chosen"] for p in mb] + [p["rejected"] for p in mb]
            ids, lab = pad(rows)
            logps, valid = get_batch_logps(model(input_ids=ids).logits.float(), lab)
            with model.disable_adapter():
                ref, _ = get_batch_logps(model(input_ids=ids).logits.float(), lab)
            b = len(mb)
            pc, pr, rc, rr = logps[:b], logps[b:], ref[:b], ref[b:]
            out = DPOTrainer.dpo_loss(trl_self, pc, pr, rc, rr, loss_type="sigmoid")
            loss_i, ch, rj = out[0], out[1], out[2]
            if keys["pref_ftx"] > 1e-6:
                loss_i = loss_i + keys["pref_ftx"] * (-pc / valid[:b])
            total += float(loss_i.mean()) * b
            n += b
            m = {"rewards/chosen": ch.mean().item(), "rewards/rejected": rj.mean().item(),
                 "rewards/accuracies": (ch > rj).float().mean().item(), "rewards/margins": (ch - rj).mean().item(),
                 "logps/chosen": pc.mean().item(), "logps/rejected": pr.mean().item()}
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v
            batches += 1
    return {"eval_loss": total / n, **{f"eval_{k}": v / batches for k, v in sums.items()}}


def main():
    gen = torch.Generator().manual_seed(7)
    pairs = make_pairs(gen)
    with open(os.path.join(OUT, "runs", "dpo_pairs.json"), "w") as f:
        json.dump(pairs, f)
    for name, extra in RUNS.items():
        keys = {"stage": "dpo", "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2,
                "learning_rate": 5e-3, "lr_scheduler_type": "constant", "warmup_steps": 0, "weight_decay": 0.01,
                "max_steps": 6, "model_name_or_path": "llama",
                "adapter_name_or_path": "llama/adapter_init_llama_constant", "lora_rank": 8, "lora_alpha": 16,
                "lora_target": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", "use_rslora": False,
                "lora_dropout": 0.0, "shuffle": False, "seed": 0, **extra}
        torch.manual_seed(0)
        train(name, keys, pairs)


if __name__ == "__main__":
    main()
