#!/usr/bin/env python3
"""Make bitsandbytes 4-bit fixtures for lorafit-quant's bit-exactness tests (run by hand, never in CI).

Needs torch, bitsandbytes and safetensors (CPU is enough). Writes
crates/lorafit-quant/tests/fixtures/bnb_4bit.safetensors with, for every case
`{case}` = `{shape}_{nf4|fp4}_{dq|nodq}`:
  {shape}.input        fp32 weights quantized (once per shape)
  {case}.packed        uint8 packed codes (element 2j in the high nibble)
  {case}.absmax        fp32 absmax per 64-block (no double quant) or uint8 codes (double quant)
  {case}.nested_absmax fp32, {case}.offset fp32[1]   (double quant only)
  {case}.dequant       fp32 dequantized by bitsandbytes' reference implementation
                       (backends/default/ops.py, the semantics of its CUDA kernel). Its AVX-512 CPU
                       kernel is not used: in 0.50.2 it takes the wrong absmax block when blocks
                       straddle rows, e.g. shape [40, 96] (3322 of 3840 values wrong), and gives
                       FP4's zero code a negative sign in row tails.
and `dynamic_map` (create_dynamic_map(signed=True)). Also bnb_linear4bit.safetensors: the state dict of
a real bnb.nn.Linear4bit (nf4, double quant) as transformers saves *-bnb-4bit checkpoints.

usage: python3 scripts/make_quant_fixtures.py
"""
import os

import bitsandbytes as bnb
import bitsandbytes.functional as F
import torch
from bitsandbytes.backends.default.ops import _dequantize_4bit_compute, _dequantize_blockwise_compute
from safetensors.torch import save_file


def reference_dequant(packed, st):
    """Dequantize with bitsandbytes' backend-independent reference code (flattened 64-blocks)."""
    absmax = st.absmax
    if st.nested:
        absmax = _dequantize_blockwise_compute(st.absmax.reshape(-1), st.state2.absmax, st.state2.code,
                                               st.state2.blocksize, torch.float32) + st.offset
    code = F.get_4bit_type(st.quant_type, "cpu")
    return _dequantize_4bit_compute(packed.reshape(-1), absmax, code, st.blocksize, st.shape, torch.float32)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "lorafit-quant", "tests", "fixtures")


def special_inputs():
    """Blocks that exercise rounding edges: exact code values, midpoints (ties), zeros, ±absmax, tiny values."""
    blocks = []
    for qt in ("nf4", "fp4"):
        code = F.get_4bit_type(qt, "cpu").float()
        s = torch.sort(code).values
        mids = (s[:-1] + s[1:]) / 2
        b = torch.cat([torch.tensor([1.0]), s, mids, -mids])
        b = torch.cat([b, torch.zeros(64 - b.numel() % 64 if b.numel() % 64 else 0)])
        blocks.append(b)
    blocks.append(torch.zeros(64))
    blocks.append(torch.tensor([1e-30, -1e-30, 3e-39, 0.0] * 16))
    blocks.append(torch.linspace(-5.0, 5.0, 64))
    blocks.append(torch.randn(64) * 1e4)
    return torch.cat(blocks).reshape(-1, 64)


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(1234)
    inputs = {
        "64x64": torch.randn(64, 64, generator=g),
        "3x50": torch.randn(3, 50, generator=g),
        "7x33": torch.randn(7, 33, generator=g) * 0.02,
        "128x96": torch.randn(128, 96, generator=g) * 3,
        "1x1": torch.tensor([[0.37]]),
        "96x160": torch.randn(96, 160, generator=g) * 0.05,
        "special": special_inputs(),
    }
    t = {"dynamic_map": F.create_dynamic_map(signed=True).float()}
    for name, w in inputs.items():
        w = w.float().contiguous()
        t[f"{name}.input"] = w
        for qt in ("nf4", "fp4"):
            for dq in (False, True):
                case = f"{name}_{qt}_{'dq' if dq else 'nodq'}"
                packed, st = F.quantize_4bit(w, blocksize=64, quant_type=qt, compress_statistics=dq)
                deq = reference_dequant(packed, st)
                t[f"{case}.packed"] = packed.reshape(-1).contiguous()
                t[f"{case}.dequant"] = deq.float().contiguous()
                if dq:
                    t[f"{case}.absmax"] = st.absmax.contiguous()
                    t[f"{case}.nested_absmax"] = st.state2.absmax.float().contiguous()
                    t[f"{case}.offset"] = st.offset.float().reshape(1).contiguous()
                else:
                    t[f"{case}.absmax"] = st.absmax.float().contiguous()
    save_file(t, os.path.join(OUT, "bnb_4bit.safetensors"))

    # A real Linear4bit, saved the way transformers writes *-bnb-4bit checkpoints.
    lin = torch.nn.Linear(96, 40, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(40, 96, generator=g) * 0.05)
    q = bnb.nn.Linear4bit(96, 40, bias=False, compute_dtype=torch.float32, compress_statistics=True, quant_type="nf4")
    q.weight = bnb.nn.Params4bit(lin.weight.data.clone(), requires_grad=False, quant_type="nf4", compress_statistics=True)
    q = q.to("cpu")
    if not getattr(q.weight, "bnb_quantized", False):
        q.weight = q.weight._quantize("cpu")
    sd = {f"model.layers.0.mlp.down_proj.{k}": v.contiguous() for k, v in q.state_dict().items()}
    sd["reference.dense"] = lin.weight.data.clone()
    sd["reference.dequant"] = reference_dequant(q.weight.data, q.weight.quant_state).float().contiguous()
    save_file(sd, os.path.join(OUT, "bnb_linear4bit.safetensors"))
    print("wrote", sorted(sd.keys()))


if __name__ == "__main__":
    main()
