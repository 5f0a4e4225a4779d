#!/usr/bin/env python3
"""Measure peak GPU memory and tokens/s of PyTorch + transformers + PEFT (+ bitsandbytes) fine-tuning.

Run by hand on a machine with an NVIDIA GPU (never in CI). Each grid point is a dict of
LLaMA-Factory keys (the same keys `lorafit estimate` reads); the model is built from the catalog's
config.json (crates/lorafit-core/data/models.json) with random weights, so nothing is downloaded.
The training step is the one LLaMA-Factory runs: HF Trainer, bf16 autocast, trainable parameters
upcast to fp32, gradient checkpointing (reentrant) unless disabled, PEFT LoRA on the targets,
bitsandbytes Linear4bit for quantization_bit 4.

Every point runs in its own process so the CUDA caching allocator starts empty. Results are one
JSON object per line: the point's keys plus measured
  peak_allocated_bytes  torch.cuda.max_memory_allocated() over the timed steps
  peak_reserved_bytes   torch.cuda.max_memory_reserved()
  nvml_used_bytes       what nvidia-smi shows for the device after training (context included)
  context_bytes         nvml_used_bytes - memory_reserved() at that moment
  tokens_per_second     over steps 2..N (step 1 warms up)
  or "error": "OOM" / the exception text.

usage:
  python3 scripts/measure_torch.py --grid scripts/gpu_grid.jsonl --out results.jsonl [--budget-s 540]
"""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CATALOG = os.path.join(HERE, "..", "crates", "lorafit-core", "data", "models.json")

LINEAR_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def catalog_config(model_id):
    with open(CATALOG) as f:
        for m in json.load(f)["models"]:
            if m["id"] == model_id or model_id in m.get("aliases", []):
                return dict(m["config"])
    raise SystemExit(f"model {model_id!r} is not in {CATALOG}")


def worker(point):
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, Trainer, TrainingArguments, TrainerCallback

    torch.manual_seed(0)
    cfg_dict = catalog_config(point["model_name_or_path"])
    model_type = cfg_dict.pop("model_type")
    cfg_dict.pop("architectures", None)
    cfg_dict.pop("torch_dtype", None)
    config = AutoConfig.for_model(model_type, **cfg_dict)
    attn = {"auto": "sdpa", "sdpa": "sdpa", "disabled": "eager", "eager": "eager", "fa2": "flash_attention_2"}[
        point.get("flash_attn", "auto")
    ]
    config._attn_implementation = attn
    pure_bf16 = bool(point.get("pure_bf16", False))
    ft = point.get("finetuning_type", "lora")
    qbit = point.get("quantization_bit")
    with torch.device("cuda"):
        try:
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation=attn)
        except TypeError:
            model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16, attn_implementation=attn)
    model.config.use_cache = False

    if qbit == 4:
        import bitsandbytes as bnb

        qtype = point.get("quantization_type", "nf4")
        dq = bool(point.get("double_quantization", True))

        def quantize(module):
            for name, child in list(module.named_children()):
                if isinstance(child, torch.nn.Linear) and name != "lm_head":
                    q = bnb.nn.Linear4bit(
                        child.in_features, child.out_features, bias=child.bias is not None,
                        compute_dtype=torch.bfloat16, compress_statistics=dq, quant_type=qtype, device="cpu",
                    )
                    w = child.weight.data
                    q.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type=qtype, compress_statistics=dq)
                    if child.bias is not None:
                        q.bias = torch.nn.Parameter(child.bias.data.clone(), requires_grad=False)
                    q = q.to("cuda")
                    setattr(module, name, q)
                    del child
                else:
                    quantize(child)

        quantize(model.model)
    elif qbit is not None:
        raise SystemExit(f"quantization_bit {qbit} not measured by this harness")

    trainable_fp32 = not pure_bf16
    if ft == "lora":
        from peft import LoraConfig, get_peft_model

        target = point.get("lora_target", "all")
        targets = LINEAR_TARGETS if target == "all" else [t.strip() for t in target.split(",")]
        rank = int(point.get("lora_rank", 8))
        lcfg = LoraConfig(
            r=rank, lora_alpha=int(point.get("lora_alpha", rank * 2)), lora_dropout=float(point.get("lora_dropout", 0.0)),
            target_modules=targets, use_rslora=bool(point.get("use_rslora", False)), use_dora=bool(point.get("use_dora", False)),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lcfg)
        if trainable_fp32:
            for p in model.parameters():
                if p.requires_grad:
                    p.data = p.data.to(torch.float32)
    elif ft == "full":
        for p in model.parameters():
            p.requires_grad_(True)
            if trainable_fp32:
                p.data = p.data.to(torch.float32)
    elif ft == "freeze":
        n = int(point.get("freeze_trainable_layers", 2))
        layers = model.model.layers
        trainable = set(range(len(layers) - n, len(layers))) if n > 0 else set(range(-n))
        for p in model.parameters():
            p.requires_grad_(False)
        for i in trainable:
            for p in layers[i].parameters():
                p.requires_grad_(True)
                if trainable_fp32:
                    p.data = p.data.to(torch.float32)
    else:
        raise SystemExit(f"finetuning_type {ft} unknown")

    gc = not bool(point.get("disable_gradient_checkpointing", False))
    b = int(point.get("per_device_train_batch_size", 1))
    s = int(point["cutoff_len"])
    ga = int(point.get("gradient_accumulation_steps", 1))
    steps = int(point.get("max_steps", 4))
    vocab = config.vocab_size

    class Rand(torch.utils.data.Dataset):
        def __len__(self):
            return b * ga * steps

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            ids = torch.randint(0, vocab, (s,), generator=g)
            return {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones(s, dtype=torch.long)}

    times = []
    peaks = {}

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            torch.cuda.synchronize()
            self.t = time.perf_counter()
            if state.global_step == 1:
                peaks["step1_allocated"] = int(torch.cuda.max_memory_allocated())
                peaks["step1_reserved"] = int(torch.cuda.max_memory_reserved())
                torch.cuda.reset_peak_memory_stats()

        def on_step_end(self, args, state, control, **kw):
            torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t)

    optim = point.get("optim", "adamw_torch")
    args = TrainingArguments(
        output_dir="/tmp/lorafit_measure", per_device_train_batch_size=b, gradient_accumulation_steps=ga,
        max_steps=steps, learning_rate=1e-4, bf16=not pure_bf16, logging_steps=1000, save_strategy="no",
        report_to=[], optim=optim, gradient_checkpointing=gc,
        gradient_checkpointing_kwargs={"use_reentrant": True} if gc else None,
        dataloader_num_workers=0, remove_unused_columns=False, disable_tqdm=True, seed=0,
    )
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    trainer = Trainer(model=model, args=args, train_dataset=Rand(), callbacks=[Timer()])
    trainer.train()
    torch.cuda.synchronize()
    out = {
        "peak_allocated_bytes": int(torch.cuda.max_memory_allocated()),
        "peak_reserved_bytes": int(torch.cuda.max_memory_reserved()),
    }
    out["peak_allocated_step1_bytes"] = peaks.get("step1_allocated")
    out["peak_reserved_step1_bytes"] = peaks.get("step1_reserved")
    try:
        import pynvml

        pynvml.nvmlInit()
        h = pynvml.nvmlDeviceGetHandleByIndex(0)
        used = pynvml.nvmlDeviceGetMemoryInfo(h).used
        out["nvml_used_bytes"] = int(used)
        out["context_bytes"] = int(used - torch.cuda.memory_reserved())
    except Exception as e:  # noqa: BLE001
        out["nvml_error"] = str(e)
    timed = times[1:] if len(times) > 1 else times
    out["step_seconds"] = sum(timed) / len(timed)
    out["tokens_per_second"] = b * s * ga / out["step_seconds"]
    out["trainable_params"] = int(sum(p.numel() for p in model.parameters() if p.requires_grad))
    out["device"] = torch.cuda.get_device_name(0)
    out["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    try:
        import peft

        out["versions"]["peft"] = peft.__version__
        import bitsandbytes

        out["versions"]["bitsandbytes"] = bitsandbytes.__version__
    except Exception:  # noqa: BLE001
        pass
    print("RESULT " + json.dumps(out), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--grid")
    ap.add_argument("--out")
    ap.add_argument("--budget-s", type=float, default=540)
    ap.add_argument("--point", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.point:
        worker(json.loads(a.point))
        return
    t0 = time.time()
    with open(a.grid) as f:
        points = [json.loads(l) for l in f if l.strip() and not l.startswith("#")]
    fails = 0
    done = set()
    if os.path.exists(a.out):
        with open(a.out) as f:
            done = {json.loads(l)["id"] for l in f if l.strip()}
    for p in points:
        if p["id"] in done:
            continue
        left = a.budget_s - (time.time() - t0)
        if left < 20:
            print(f"budget spent; {p['id']} and later not run", flush=True)
            break
        t = time.time()
        try:
            r = subprocess.run([sys.executable, __file__, "--point", json.dumps(p)], capture_output=True, text=True,
                               timeout=left)
            res = None
            for line in r.stdout.splitlines():
                if line.startswith("RESULT "):
                    res = json.loads(line[7:])
            if res is None:
                err = r.stderr.strip().splitlines()
                oom = any("OutOfMemoryError" in l or "out of memory" in l for l in err)
                res = {"error": "OOM" if oom else (err[-1] if err else f"exit {r.returncode}")}
                if not oom:
                    print(r.stderr[-1500:], flush=True)
        except subprocess.TimeoutExpired:
            res = {"error": "timeout"}
        fails = fails + 1 if ("error" in res and res["error"] not in ("OOM", "timeout")) else 0
        row = dict(p)
        row["measured"] = res
        row["wall_s"] = round(time.time() - t, 1)
        with open(a.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(p["id"], json.dumps(res)[:300], f"{row['wall_s']}s", flush=True)
        if fails >= 3:
            print("three errors in a row; stopping (last stderr below)", flush=True)
            print(r.stderr[-4000:], flush=True)
            break


if __name__ == "__main__":
    main()
