#!/usr/bin/env python3
"""Write LLaMA-Factory's registered chat templates as data (run by hand when LLaMA-Factory moves).

Imports `llamafactory.data.template` from a LLaMA-Factory checkout (installed with
`pip install --no-deps -e PATH`, with torch, transformers and numpy present) and writes every entry of
its `TEMPLATES` registry to crates/lorafit-data/data/llamafactory_templates.json:

  slots        each formatter's slots: a string (with `{{content}}` / `{{idx}}`), {"token": T} for a
               token by name, {"special": "bos_token" | "eos_token"}
  tool_format  the tool formats of `format_function` / `format_tools`
  class        base | llama2 | reasoning | glm47_reasoning | moss_vl (the Template subclass)
  tool_prompts the system-prompt text of each tool format (tool_utils' *_TOOL_PROMPT constants, unformatted)
  the rest     default_system, stop_words, thought_words, tool_call_words, efficient_eos, replace_eos,
               enable_thinking, preserve_thinking, and the multimodal plugin's name and tokens

    python3 scripts/extract_lf_templates.py [LLAMAFACTORY_CHECKOUT]
"""
import importlib.machinery
import json
import os
import subprocess
import sys
import types

os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
if "torchaudio" not in sys.modules:  # imported by mm_plugin for audio inputs only
    try:
        import torchaudio  # noqa: F401
    except Exception:
        _ta = types.ModuleType("torchaudio")
        _ta.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
        sys.modules["torchaudio"] = _ta

from llamafactory.data import template as lf_template  # noqa: E402
from llamafactory.data import tool_utils as lf_tools  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "lorafit-data", "data",
                   "llamafactory_templates.json")
CLASSES = {
    "Template": "base",
    "Llama2Template": "llama2",
    "ReasoningTemplate": "reasoning",
    "Glm47ReasoningTemplate": "glm47_reasoning",
    "MossVLTemplate": "moss_vl",
}


def slot(s):
    if isinstance(s, str):
        return s
    if isinstance(s, dict):
        return {"token": s["token"]}
    if isinstance(s, set):
        (name,) = tuple(s)
        return {"special": name}
    raise TypeError(f"unexpected slot {s!r}")


def formatter(f):
    out = {"slots": [slot(s) for s in f.slots]}
    if getattr(f, "tool_format", None) is not None:
        out["tool_format"] = f.tool_format
    return out


def main():
    checkout = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.dirname(os.path.abspath(lf_template.__file__)))))
    try:
        commit = subprocess.check_output(["git", "-C", checkout, "log", "-1", "--format=%h %cs"], text=True).strip()
    except Exception:
        commit = "unknown"
    templates = {}
    for name, t in lf_template.TEMPLATES.items():
        cls = type(t).__name__
        if cls not in CLASSES:
            raise SystemExit(f"template {name}: class {cls} is new; teach lorafit-data about it first")
        plugin = t.mm_plugin
        templates[name] = {
            "class": CLASSES[cls],
            "format_user": formatter(t.format_user),
            "format_assistant": formatter(t.format_assistant),
            "format_system": formatter(t.format_system),
            "format_function": formatter(t.format_function),
            "format_observation": formatter(t.format_observation),
            "format_tools": {"tool_format": t.format_tools.tool_format},
            "format_prefix": formatter(t.format_prefix),
            "default_system": t.default_system,
            "stop_words": list(t.stop_words),
            "thought_words": list(t.thought_words),
            "tool_call_words": list(t.tool_call_words),
            "efficient_eos": t.efficient_eos,
            "replace_eos": t.replace_eos,
            "enable_thinking": t.enable_thinking,
            "preserve_thinking": t.preserve_thinking,
            "mm_plugin": {
                "name": type(plugin).__name__,
                "image_token": plugin.image_token,
                "video_token": plugin.video_token,
                "audio_token": plugin.audio_token,
            },
        }
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        prompts = {name[: -len("_TOOL_PROMPT")].lower(): value for name, value in vars(lf_tools).items()
                   if name.endswith("_TOOL_PROMPT") and isinstance(value, str)}
        json.dump({"source": f"LLaMA-Factory {commit} src/llamafactory/data/template.py, tool_utils.py",
                   "tool_formats": sorted(lf_tools.TOOLS), "tool_prompts": prompts,
                   "templates": templates}, f, ensure_ascii=False, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{len(templates)} templates -> {OUT}")


if __name__ == "__main__":
    main()
