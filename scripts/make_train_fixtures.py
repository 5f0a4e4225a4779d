#!/usr/bin/env python3
"""Make the LoRA parity fixtures for lorafit-train (run by hand, never in CI).

Needs torch, transformers (v5), peft and safetensors; CPU only. Writes, under
crates/lorafit-train/tests/fixtures/:

  {llama,qwen2,qwen3}/          tiny HF checkpoints with random weights:
                                llama: GQA (4 heads / 2 kv), Llama 3.1 rope scaling, untied, fp32
                                qwen2: q/k/v biases, tied embeddings, stored bf16
                                qwen3: q/k norms, tied embeddings, fp32 split into a sharded index
  {model}/adapter_init/         a PEFT adapter with random A *and* B (so every LoRA weight gets a gradient)
  data.jsonl                    24 pre-tokenized rows (input_ids + labels with a masked prompt; one row
                                without labels)
  runs/{run}.json               the training settings (Contract 1 keys) and PEFT's per-step losses and lrs
  runs/{run}.adapter.safetensors  PEFT's adapter after the last step

The loop is the one Contract 3 defines, written out in plain PyTorch on the PEFT model: right-padded
micro-batches in file order, the loss of a step = sum of token cross-entropies over every micro-batch of
the step / number of label tokens in the step, torch.optim.AdamW, transformers' schedules, then
clip_grad_norm_ over all trainable parameters.

    python3 scripts/make_train_fixtures.py            # write the fixtures
    python3 scripts/make_train_fixtures.py verify DIR # PEFT loads lorafit's adapter in DIR and compares
                                                      # its logits with DIR/logits.safetensors
    python3 scripts/make_train_fixtures.py eval       # runs/llama_constant.eval.json: transformers' eval
                                                      # loss of PEFT's final llama_constant adapter on
                                                      # data.jsonl, eval batch 5
"""
import json
import math
import os
import sys
import zlib

import torch
import transformers
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "crates", "lorafit-train", "tests", "fixtures")
VOCAB = 96

CONFIGS = {
    "llama": dict(
        architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=VOCAB, hidden_size=64,
        intermediate_size=112, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, max_position_embeddings=128, rms_norm_eps=1e-5, hidden_act="silu",
        rope_theta=10000.0, initializer_range=0.08, tie_word_embeddings=False, bos_token_id=1,
        eos_token_id=2, rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                          high_freq_factor=4.0, original_max_position_embeddings=16),
    ),
    "qwen2": dict(
        architectures=["Qwen2ForCausalLM"], model_type="qwen2", vocab_size=VOCAB, hidden_size=64,
        intermediate_size=112, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=128, rms_norm_eps=1e-6, hidden_act="silu", rope_theta=1000000.0,
        initializer_range=0.08, tie_word_embeddings=True, use_sliding_window=False,
        bos_token_id=1, eos_token_id=2,
    ),
    # QLoRA: every linear's size a multiple of bitsandbytes' 64-blocks along rows (its AVX-512 CPU
    # dequantize picks wrong blocks when blocks straddle rows).
    "llama_q": dict(
        architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=VOCAB, hidden_size=64,
        intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=16, max_position_embeddings=128, rms_norm_eps=1e-5, hidden_act="silu",
        rope_theta=10000.0, initializer_range=0.08, tie_word_embeddings=False, bos_token_id=1,
        eos_token_id=2,
    ),
    "qwen3": dict(
        architectures=["Qwen3ForCausalLM"], model_type="qwen3", vocab_size=VOCAB, hidden_size=64,
        intermediate_size=112, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=24, max_position_embeddings=128, rms_norm_eps=1e-6, hidden_act="silu",
        rope_theta=1000000.0, initializer_range=0.08, tie_word_embeddings=True,
        attention_bias=False, bos_token_id=1, eos_token_id=2,
    ),
}
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# Each run: the model, its adapter and the Contract 1 keys lorafit's test passes to `train`.
RUNS = {
    "llama_constant": dict(model="llama", targets=ALL, r=8, alpha=16, rslora=False, keys=dict(
        per_device_train_batch_size=2, gradient_accumulation_steps=1, learning_rate=5e-3,
        lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=0.0, weight_decay=0.01,
        max_steps=12)),
    "llama_cosine_clip_ga": dict(model="llama", targets=ALL, r=8, alpha=16, rslora=False, keys=dict(
        per_device_train_batch_size=2, gradient_accumulation_steps=2, learning_rate=5e-3,
        lr_scheduler_type="cosine", warmup_steps=3, max_grad_norm=0.05, weight_decay=0.0,
        max_steps=12)),
    "qwen2_linear_rslora": dict(model="qwen2", targets=["q_proj", "v_proj"], r=4, alpha=8, rslora=True,
                                keys=dict(per_device_train_batch_size=3, gradient_accumulation_steps=1,
                                          learning_rate=1e-2, lr_scheduler_type="linear", warmup_steps=2,
                                          max_grad_norm=1.0, weight_decay=0.0, max_steps=10)),
    "qwen3_constant": dict(model="qwen3", targets=ALL, r=8, alpha=8, rslora=False, keys=dict(
        per_device_train_batch_size=2, gradient_accumulation_steps=1, learning_rate=5e-3,
        lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0, weight_decay=0.0,
        max_steps=10)),
    "llama_qlora_nf4_dq": dict(model="llama_q", targets=ALL, r=8, alpha=16, rslora=False,
                               quant=dict(quantization_bit=4, quantization_type="nf4", double_quantization=True),
                               keys=dict(per_device_train_batch_size=2, gradient_accumulation_steps=2,
                                         learning_rate=5e-3, lr_scheduler_type="cosine", warmup_steps=2,
                                         max_grad_norm=1.0, weight_decay=0.0, max_steps=10)),
    # The QLoRA case the trainer issue names: lr 1e-2, constant, clipping 1.0, 10 steps, quantized at load.
    "llama_qlora_nf4_dq_lr1e2": dict(model="llama_q", targets=ALL, r=8, alpha=16, rslora=False,
                                     quant=dict(quantization_bit=4, quantization_type="nf4",
                                                double_quantization=True),
                                     keys=dict(per_device_train_batch_size=2, gradient_accumulation_steps=1,
                                               learning_rate=1e-2, lr_scheduler_type="constant",
                                               warmup_steps=0, max_grad_norm=1.0, weight_decay=0.0,
                                               max_steps=10)),
    "llama_qlora_fp4": dict(model="llama_q", targets=["q_proj", "v_proj", "down_proj"], r=4, alpha=8, rslora=False,
                            quant=dict(quantization_bit=4, quantization_type="fp4", double_quantization=False),
                            keys=dict(per_device_train_batch_size=2, gradient_accumulation_steps=1,
                                      learning_rate=5e-3, lr_scheduler_type="constant", warmup_steps=0,
                                      max_grad_norm=1.0, weight_decay=0.0, max_steps=6)),
    "llama_dora": dict(model="llama", targets=["q_proj", "v_proj", "down_proj"], r=4, alpha=8, rslora=False,
                       dora=True, keys=dict(per_device_train_batch_size=2, gradient_accumulation_steps=2,
                                            learning_rate=5e-3, lr_scheduler_type="cosine", warmup_steps=2,
                                            max_grad_norm=1.0, weight_decay=0.01, max_steps=10)),
    "llama_qlora_dora": dict(model="llama_q", targets=["q_proj", "o_proj", "up_proj"], r=4, alpha=8,
                             rslora=False, dora=True,
                             quant=dict(quantization_bit=4, quantization_type="nf4", double_quantization=False),
                             keys=dict(per_device_train_batch_size=2, gradient_accumulation_steps=1,
                                       learning_rate=5e-3, lr_scheduler_type="constant", warmup_steps=0,
                                       max_grad_norm=1.0, weight_decay=0.0, max_steps=8)),
    "llama_int8": dict(model="llama_q", targets=["q_proj", "k_proj", "o_proj", "up_proj"], r=4, alpha=8,
                       rslora=False, quant=dict(quantization_bit=8),
                       keys=dict(per_device_train_batch_size=2, gradient_accumulation_steps=1,
                                 learning_rate=5e-3, lr_scheduler_type="linear", warmup_steps=1,
                                 max_grad_norm=1.0, weight_decay=0.0, max_steps=10)),
}


def load_base(model_dir, spec):
    """The base model as the run uses it: fp32, or 4-bit through bitsandbytes on the CPU (compute fp32)."""
    q = spec.get("quant")
    if not q:
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    from transformers import BitsAndBytesConfig
    if q["quantization_bit"] == 8:
        # LLaMA-Factory's `quantization_bit: 8`: BitsAndBytesConfig(load_in_8bit=True). On the CPU,
        # bitsandbytes trains through MatMul8bitFp: W = CB · (SCB / 127), then an fp32 linear.
        return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, device_map="cpu",
                                                    quantization_config=BitsAndBytesConfig(load_in_8bit=True))
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=q["quantization_type"],
                             bnb_4bit_use_double_quant=q["double_quantization"],
                             bnb_4bit_compute_dtype=torch.float32)
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, quantization_config=bnb,
                                                device_map="cpu")


def make_data(gen):
    rows = []
    for i in range(24):
        n = int(torch.randint(5, 23, (1,), generator=gen))
        ids = torch.randint(3, VOCAB, (n,), generator=gen).tolist()
        ids[0] = 1
        ids[-1] = 2
        prompt = int(torch.randint(1, n - 2, (1,), generator=gen))
        labels = [-100] * prompt + ids[prompt:]
        rows.append({"input_ids": ids} if i == 5 else {"input_ids": ids, "labels": labels})
    return rows


def batches(rows, bs):
    out = []
    for i in range(0, len(rows), bs):
        chunk = rows[i:i + bs]
        width = max(len(r["input_ids"]) for r in chunk)
        ids = torch.zeros(len(chunk), width, dtype=torch.long)
        lab = torch.full((len(chunk), width), -100, dtype=torch.long)
        for j, r in enumerate(chunk):
            n = len(r["input_ids"])
            ids[j, :n] = torch.tensor(r["input_ids"])
            lab[j, :n] = torch.tensor(r.get("labels", r["input_ids"]))
        out.append((ids, lab))
    return out


def token_loss_sum(model, ids, lab):
    logits = model(input_ids=ids).logits.float()
    shift_logits = logits[:, :-1, :].reshape(-1, logits.shape[-1])
    shift_labels = lab[:, 1:].reshape(-1)
    return torch.nn.functional.cross_entropy(shift_logits, shift_labels, ignore_index=-100, reduction="sum")


def schedule(kind, opt, warmup, total):
    if kind == "constant":
        return transformers.get_constant_schedule(opt)
    if kind == "linear":
        return transformers.get_linear_schedule_with_warmup(opt, warmup, total)
    return transformers.get_cosine_schedule_with_warmup(opt, warmup, total)


def train(name, spec, rows):
    model_dir = os.path.join(OUT, spec["model"])
    base = load_base(model_dir, spec)
    if spec.get("quant"):
        # As LLaMA-Factory does with gradient checkpointing (its default). It also keeps every 4-bit
        # matmul on bitsandbytes' dequantize + fp32 linear path: without it the first layer's input
        # needs no grad and bitsandbytes 0.50.2 uses its fused CPU gemm_4bit, which is off by ~1e-2
        # from the fp32 product of the same dequantized weight.
        base.enable_input_require_grads()
    model = PeftModel.from_pretrained(base, os.path.join(model_dir, f"adapter_init_{name}"), is_trainable=True)
    k = spec["keys"]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=k["learning_rate"], weight_decay=k["weight_decay"], foreach=False)
    sched = schedule(k["lr_scheduler_type"], opt, k["warmup_steps"], k["max_steps"])
    micro = batches(rows, k["per_device_train_batch_size"])
    ga = k["gradient_accumulation_steps"]
    steps = [micro[i:i + ga] for i in range(0, len(micro), ga)]
    losses, lrs, norms = [], [], []
    model.train()
    for step in range(k["max_steps"]):
        group = steps[step % len(steps)]
        n_tokens = sum(int((lab[:, 1:] != -100).sum()) for _, lab in group)
        total = 0.0
        for ids, lab in group:
            loss = token_loss_sum(model, ids, lab) / n_tokens
            loss.backward()
            total += float(loss)
        if k["max_grad_norm"] > 0:
            norms.append(float(torch.nn.utils.clip_grad_norm_(params, k["max_grad_norm"])))
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(total)
        print(f"{name} step {step + 1}: loss {total:.6f} lr {lrs[-1]:.6g}")
    final = {}
    for key, value in model.state_dict().items():
        if "lora_" in key:
            # PEFT's file names (adapter_model.safetensors): DoRA's magnitude has no `.weight`.
            key = key.replace(".default", "").replace("lora_magnitude_vector.weight", "lora_magnitude_vector")
            final[key] = value.detach().contiguous()
    runs = os.path.join(OUT, "runs")
    os.makedirs(runs, exist_ok=True)
    save_file(final, os.path.join(runs, f"{name}.adapter.safetensors"))
    keys = dict(k, model_name_or_path=spec["model"], adapter_name_or_path=f"{spec['model']}/adapter_init_{name}",
                lora_rank=spec["r"], lora_alpha=spec["alpha"], lora_target=",".join(spec["targets"]),
                use_rslora=spec["rslora"], lora_dropout=0.0, shuffle=False, seed=0, use_dora=spec.get("dora", False),
                **spec.get("quant", {}))
    with open(os.path.join(runs, f"{name}.json"), "w") as f:
        json.dump({"keys": keys, "losses": losses, "lrs": lrs, "grad_norms": norms,
                   "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                                "peft": __import__("peft").__version__,
                                "bitsandbytes": bnb_version()}}, f, indent=1)


def bnb_version():
    try:
        import bitsandbytes
        return bitsandbytes.__version__
    except ImportError:
        return None


def make_models():
    for name, cfg in CONFIGS.items():
        torch.manual_seed({"llama": 1, "qwen2": 2, "qwen3": 3, "llama_q": 4}[name])
        config = AutoConfig.for_model(**cfg)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        with torch.no_grad():  # norms away from 1 so their weights matter
            for n, p in model.named_parameters():
                if "norm" in n:
                    p.copy_(1.0 + 0.2 * torch.randn_like(p))
                if n.endswith("bias"):
                    p.copy_(0.1 * torch.randn_like(p))
        d = os.path.join(OUT, name)
        if name == "qwen2":
            model = model.to(torch.bfloat16)
            model.save_pretrained(d)
        elif name == "qwen3":
            model.save_pretrained(d, max_shard_size="200KB")
        else:
            model.save_pretrained(d)


def make_bnb_checkpoint():
    """llama_q as bitsandbytes saves a 4-bit model (the `*-bnb-4bit` layout): nf4, double quant."""
    base = load_base(os.path.join(OUT, "llama_q"), RUNS["llama_qlora_nf4_dq"])
    base.save_pretrained(os.path.join(OUT, "llama_q_bnb4"))


def make_int8_weights():
    """bitsandbytes' int8 storage of llama_q's linears (CB int8, SCB fp32 per row), for the
    bit-exactness test of lorafit-quant's 8-bit quantization."""
    base = load_base(os.path.join(OUT, "llama_q"), RUNS["llama_int8"])
    out = {}
    for n, m in base.named_modules():
        if hasattr(m, "weight") and hasattr(m.weight, "CB") and m.weight.CB is not None:
            out[f"{n}.CB"] = m.weight.CB.contiguous()
            out[f"{n}.SCB"] = m.weight.SCB.contiguous()
    assert out, "no Linear8bitLt found"
    save_file(out, os.path.join(OUT, "llama_q_int8.safetensors"))


def make_adapters(only=None):
    for name, spec in RUNS.items():
        if only and name not in only:
            continue
        torch.manual_seed(zlib.crc32(name.encode()) % 1000)
        base = AutoModelForCausalLM.from_pretrained(os.path.join(OUT, spec["model"]), dtype=torch.float32)
        cfg = LoraConfig(r=spec["r"], lora_alpha=spec["alpha"], target_modules=spec["targets"],
                         lora_dropout=0.0, use_rslora=spec["rslora"], task_type="CAUSAL_LM",
                         use_dora=spec.get("dora", False))
        model = get_peft_model(base, cfg)
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.copy_(0.05 * torch.randn_like(p))
                if "lora_magnitude_vector" in n:  # DoRA: a magnitude away from its init
                    p.mul_(1.0 + 0.1 * torch.randn_like(p))
        model.save_pretrained(os.path.join(OUT, spec["model"], f"adapter_init_{name}"))


def verify(dir_):
    """PEFT loads the adapter lorafit wrote in dir_ and reproduces the logits lorafit saved there."""
    ours = load_file(os.path.join(dir_, "logits.safetensors"))
    meta = json.load(open(os.path.join(dir_, "logits.json")))
    base = AutoModelForCausalLM.from_pretrained(os.path.join(OUT, meta["model"]), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, dir_).eval()
    ids = ours["input_ids"].long()
    with torch.no_grad():
        theirs = model(input_ids=ids).logits
    diff = (theirs - ours["logits"]).abs().max().item()
    scale = ours["logits"].abs().max().item()
    print(f"{dir_}: PEFT loaded the adapter; max |logit difference| {diff:.3g} (max |logit| {scale:.3g})")
    assert diff <= 1e-4 * max(1.0, scale), "logits differ"


def eval_fixture():
    """transformers' evaluation_loop loss: each batch's mean token loss, repeated per example, averaged."""
    import copy
    from safetensors.torch import load_file as _load
    with open(os.path.join(OUT, "data.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    base = AutoModelForCausalLM.from_pretrained(os.path.join(OUT, "llama"), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, os.path.join(OUT, "llama", "adapter_init_llama_constant"))
    trained = _load(os.path.join(OUT, "runs", "llama_constant.adapter.safetensors"))
    state = {k.replace(".weight", ".default.weight"): v for k, v in trained.items()}
    missing = model.load_state_dict(state, strict=False)
    assert not missing.unexpected_keys, missing.unexpected_keys
    model.eval()
    losses = []
    with torch.no_grad():
        for ids, lab in batches(rows, 5):
            out = model(input_ids=ids, labels=lab)
            losses += [float(out.loss)] * ids.shape[0]
    result = {"eval_loss": sum(losses) / len(losses), "per_device_eval_batch_size": 5, "rows": len(rows)}
    with open(os.path.join(OUT, "runs", "llama_constant.eval.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(result)


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "verify":
        for d in sys.argv[2:]:
            verify(d)
        return
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    if len(sys.argv) > 1 and sys.argv[1] == "only":
        # Add runs to existing fixtures without remaking the models: `only llama_int8`.
        names = sys.argv[2:]
        make_adapters(names)
        if "llama_int8" in names:
            make_int8_weights()
        rows = [json.loads(line) for line in open(os.path.join(OUT, "data.jsonl"))]
        for name in names:
            train(name, RUNS[name], rows)
        return
    make_models()
    make_adapters()
    make_bnb_checkpoint()
    gen = torch.Generator().manual_seed(0)
    rows = make_data(gen)
    with open(os.path.join(OUT, "data.jsonl"), "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    for name, spec in RUNS.items():
        train(name, spec, rows)


if __name__ == "__main__" and sys.argv[1:2] == ["eval"]:
    eval_fixture()
    sys.exit(0)
if __name__ == "__main__":
    main()
