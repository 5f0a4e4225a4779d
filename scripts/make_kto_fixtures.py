#!/usr/bin/env python3
"""Make the KTO parity fixtures for lorafit-train (run by hand; torch, transformers, peft 0.18.1,
trl 0.24 and a LLaMA-Factory checkout installed with --no-deps).

The loop is LLaMA-Factory's KTO step (`CustomKTOTrainer.get_batch_loss_metrics`) written out on the
PEFT model with the library functions themselves: LLaMA-Factory's `get_batch_logps` on the targets
(with gradients) and on the KL completions (no_grad, adapter on), the reference under
`disable_adapter()` and no_grad for both, TRL 0.24's `KTOTrainer.kto_loss` (`pref_beta`,
`kto_chosen_weight`, `kto_rejected_weight`, the batch KL clamped at 0), `losses.nanmean()`, plus
`pref_ftx` × the desirable answers' per-token NLL rescaled as LLaMA-Factory does; each micro-batch's
loss / the number of micro-batches of the step (transformers' accumulation), torch.optim.AdamW,
constant lr, clip_grad_norm_. LLaMA-Factory disables dropout in its KTO trainer. Writes under
crates/lorafit-train/tests/fixtures/runs/:

  kto_feedback.json               8 pre-tokenized (target, kl, desirable) triples
  kto_{run}.json                  keys, per-step losses, grad norms and metrics
  kto_{run}.adapter.safetensors   the adapter after the last step

    python3 scripts/make_kto_fixtures.py
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
from trl.trainer.kto_trainer import KTOTrainer

from llamafactory.train.trainer_utils import get_batch_logps

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "lorafit-train", "tests", "fixtures")
VOCAB = 96
RUNS = {
    "plain": {"pref_beta": 0.1, "pref_ftx": 0.0, "kto_chosen_weight": 1.0, "kto_rejected_weight": 1.0,
              "max_grad_norm": 0.0},
    "ftx_weights_clip": {"pref_beta": 0.3, "pref_ftx": 0.5, "kto_chosen_weight": 1.0, "kto_rejected_weight": 1.5,
                         "max_grad_norm": 1.0},
}


def make_feedback(gen):
    rows = []
    for _ in range(8):
        p = int(torch.randint(3, 9, (1,), generator=gen))
        prompt = torch.randint(3, VOCAB, (p,), generator=gen).tolist()
        prompt[0] = 1
        n = int(torch.randint(2, 7, (1,), generator=gen))
        resp = torch.randint(3, VOCAB, (n,), generator=gen).tolist() + [2]
        rows.append({"prompt": prompt, "response": resp,
                     "desirable": bool(torch.randint(0, 2, (1,), generator=gen))})
    out = []
    for i, r in enumerate(rows):
        # The KL completion: this prompt with another row's response (LLaMA-Factory pairs them
        # across the batch).
        other = rows[(i + 1) % len(rows)]["response"]
        p = len(r["prompt"])
        out.append({
            "example": {"input_ids": r["prompt"] + r["response"], "labels": [-100] * p + r["response"]},
            "kl": {"input_ids": r["prompt"] + other, "labels": [-100] * p + other},
            "desirable": r["desirable"],
        })
    return out


def pad(rows):
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    lab = torch.full((len(rows), width), -100, dtype=torch.long)
    for j, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[j, :n] = torch.tensor(r["input_ids"])
        lab[j, :n] = torch.tensor(r["labels"])
    return ids, lab


def logps_of(model, rows):
    ids, lab = pad(rows)
    return get_batch_logps(model(input_ids=ids).logits.float(), lab)


def train(name, keys, feedback):
    base = AutoModelForCausalLM.from_pretrained(os.path.join(OUT, "llama"), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, os.path.join(OUT, "llama", "adapter_init_llama_constant"),
                                      is_trainable=True)
    trl_self = types.SimpleNamespace(
        accelerator=types.SimpleNamespace(device="cpu", gather_for_metrics=lambda x: x),
        calculate_KL=True, loss_type="kto", beta=keys["pref_beta"],
        desirable_weight=keys["kto_chosen_weight"], undesirable_weight=keys["kto_rejected_weight"])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=keys["learning_rate"], weight_decay=keys["weight_decay"], foreach=False)
    bs, ga = keys["per_device_train_batch_size"], keys["gradient_accumulation_steps"]
    micro = [feedback[i:i + bs] for i in range(0, len(feedback), bs)]
    steps = [micro[i:i + ga] for i in range(0, len(micro), ga)]
    losses, norms, metrics, lf_log = [], [], [], []
    model.train()
    for step in range(keys["max_steps"]):
        group = steps[step % len(steps)]
        total = 0.0
        acc = {}
        stored = {"kl": 0.0, "chosen_sum": 0.0, "chosen": 0, "rejected_sum": 0.0, "rejected": 0}
        for mb in group:
            tags = torch.tensor([r["desirable"] for r in mb])
            logps, valid = logps_of(model, [r["example"] for r in mb])
            with torch.no_grad():
                kl_logps, _ = logps_of(model, [r["kl"] for r in mb])
                with model.disable_adapter():
                    ref, _ = logps_of(model, [r["example"] for r in mb])
                    ref_kl, _ = logps_of(model, [r["kl"] for r in mb])
            avg = logps / valid
            pc, pr, rc, rr = logps[tags], logps[~tags], ref[tags], ref[~tags]
            out, ch, rj, kl = KTOTrainer.kto_loss(trl_self, pc, pr, kl_logps, rc, rr, ref_kl)
            loss_i = out.nanmean()
            if keys["pref_ftx"] > 1e-6 and len(pc) > 0:
                sft = -avg[tags]
                loss_i = loss_i + keys["pref_ftx"] * sft.nanmean() / len(pc) * len(mb)
            loss = loss_i / len(group)
            loss.backward()
            total += float(loss)
            m = {"kl": float(kl)}
            if len(ch):
                m["rewards/chosen"] = ch.mean().item()
            if len(rj):
                m["rewards/rejected"] = rj.mean().item()
            for k, v in m.items():
                acc[k] = acc.get(k, 0.0) + v / len(group)
            # What LLaMA-Factory's CustomKTOTrainer stores per micro-batch for its `log`.
            stored["kl"] += float(kl)
            stored["chosen_sum"] += float(ch.nansum())
            stored["chosen"] += len(ch)
            stored["rejected_sum"] += float(rj.nansum())
            stored["rejected"] += len(rj)
        if keys["max_grad_norm"] > 0:
            norms.append(float(torch.nn.utils.clip_grad_norm_(params, keys["max_grad_norm"])))
        opt.step()
        opt.zero_grad()
        losses.append(total)
        metrics.append(acc)
        # LLaMA-Factory's KTO `log` at logging_steps 1: sums over the step's micro-batches, rewards
        # divided by their counts, kl left summed, margins when both kinds were seen.
        entry = {"kl": stored["kl"]}
        if stored["chosen"]:
            entry["rewards/chosen"] = stored["chosen_sum"] / stored["chosen"]
        if stored["rejected"]:
            entry["rewards/rejected"] = stored["rejected_sum"] / stored["rejected"]
        if stored["chosen"] and stored["rejected"]:
            entry["rewards/margins"] = entry["rewards/chosen"] - entry["rewards/rejected"]
        lf_log.append(entry)
        print(f"kto {name} step {step + 1}: loss {total:.6f} kl {acc['kl']:.5f}")
    evaluation = evaluate(model, trl_self, keys, feedback, 3)
    print(f"kto {name} eval: {evaluation}")
    final = {}
    for key, value in model.state_dict().items():
        if "lora_" in key:
            final[key.replace(".default", "")] = value.detach().contiguous()
    runs = os.path.join(OUT, "runs")
    save_file(final, os.path.join(runs, f"kto_{name}.adapter.safetensors"))
    with open(os.path.join(runs, f"kto_{name}.json"), "w") as f:
        json.dump({"keys": keys, "losses": losses, "grad_norms": norms, "metrics": metrics, "lf_log": lf_log, "eval": evaluation,
                   "versions": {"torch": torch.__version__, "trl": trl.__version__,
                                "peft": __import__("peft").__version__}}, f, indent=1)


def evaluate(model, trl_self, keys, feedback, bs):
    """LLaMA-Factory's KTO eval of the final adapter: per batch its `get_batch_loss_metrics`
    (sums and counts of the rewards, the batch KL); eval_loss as transformers weights batches;
    LLaMA-Factory's `log`: rewards = summed rewards / summed counts, kl = the batches' KL summed,
    margins = chosen - rejected."""
    model.eval()
    total, n = 0.0, 0
    acc = {"kl": 0.0, "chosen_sum": 0.0, "chosen": 0, "rejected_sum": 0.0, "rejected": 0}
    with torch.no_grad():
        for i in range(0, len(feedback), bs):
            mb = feedback[i:i + bs]
            tags = torch.tensor([r["desirable"] for r in mb])
            logps, valid = logps_of(model, [r["example"] for r in mb])
            kl_logps, _ = logps_of(model, [r["kl"] for r in mb])
            with model.disable_adapter():
                ref, _ = logps_of(model, [r["example"] for r in mb])
                ref_kl, _ = logps_of(model, [r["kl"] for r in mb])
            avg = logps / valid
            pc, pr, rc, rr = logps[tags], logps[~tags], ref[tags], ref[~tags]
            out, ch, rj, kl = KTOTrainer.kto_loss(trl_self, pc, pr, kl_logps, rc, rr, ref_kl)
            loss = out.nanmean()
            if keys["pref_ftx"] > 1e-6 and len(pc) > 0:
                loss = loss + keys["pref_ftx"] * (-avg[tags]).nanmean() / len(pc) * len(mb)
            total += float(loss) * len(mb)
            n += len(mb)
            acc["kl"] += float(kl)
            acc["chosen_sum"] += float(ch.nansum())
            acc["chosen"] += len(ch)
            acc["rejected_sum"] += float(rj.nansum())
            acc["rejected"] += len(rj)
    c, r = acc["chosen_sum"] / acc["chosen"], acc["rejected_sum"] / acc["rejected"]
    return {"eval_loss": total / n, "eval_kl": acc["kl"], "eval_rewards/chosen": c,
            "eval_rewards/rejected": r, "eval_rewards/margins": c - r}


def main():
    gen = torch.Generator().manual_seed(11)
    feedback = make_feedback(gen)
    with open(os.path.join(OUT, "runs", "kto_feedback.json"), "w") as f:
        json.dump(feedback, f)
    for name, extra in RUNS.items():
        keys = {"stage": "kto", "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2,
                "learning_rate": 5e-3, "lr_scheduler_type": "constant", "warmup_steps": 0, "weight_decay": 0.01,
                "max_steps": 6, "model_name_or_path": "llama",
                "adapter_name_or_path": "llama/adapter_init_llama_constant", "lora_rank": 8, "lora_alpha": 16,
                "lora_target": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj", "use_rslora": False,
                "lora_dropout": 0.0, "shuffle": False, "seed": 0, **extra}
        torch.manual_seed(0)
        train(name, keys, feedback)


if __name__ == "__main__":
    main()
