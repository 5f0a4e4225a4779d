"""Tokens of the text LLaMA-Factory's intern_vl plugin writes around the image context tokens
(`<img></img>` per image, `Frame{i}: <img></img>` joined by newlines per video), counted with the
Qwen2 / Qwen2.5 / Qwen3 tokenizer InternVL 3 / 3.5 use: Qwen's 151 643 BPE ranks and its
pre-tokenizer pattern (one digit a token), `<img>` / `</img>` special tokens of one each.

    pip download dashscope==2.0.2 --no-deps -d /tmp/ds && (cd /tmp/ds && unzip -o dashscope-*.whl)
    pip install tiktoken
    python3 scripts/count_qwen_text_tokens.py /tmp/ds/dashscope/resources/qwen.tiktoken

(dashscope's wheel ships Qwen's ranks as `qwen.tiktoken`; the Hub, where tokenizer.json lives,
is not reachable from here). Reads crates/lorafit-core/tests/fixtures/internvl_tokens.json and
writes qwen_text_tokens.json beside it: each distinct text and its token count.
"""

import base64
import json
import os
import re
import sys

import tiktoken

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(ROOT, "crates/lorafit-core/tests/fixtures")
# Qwen2's tokenizer.json pre-tokenizer (the same as Qwen's tiktoken pattern).
PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
           r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
SPECIAL = ["<img>", "</img>"]


def main():
    ranks = {}
    with open(sys.argv[1], "rb") as f:
        for line in f:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    assert len(ranks) == 151643, len(ranks)
    enc = tiktoken.Encoding("qwen", pat_str=PATTERN, mergeable_ranks=ranks, special_tokens={})
    split = re.compile("(" + "|".join(re.escape(s) for s in SPECIAL) + ")")

    def count(text):
        return sum(1 if part in SPECIAL else len(enc.encode(part)) for part in split.split(text) if part)

    with open(os.path.join(FIX, "internvl_tokens.json")) as f:
        texts = sorted({c["text"] for c in json.load(f)["cases"]})
    out = {"made_with": "scripts/count_qwen_text_tokens.py: Qwen BPE ranks from dashscope 2.0.2, tiktoken "
           + tiktoken.__version__, "texts": {t: count(t) for t in texts}}
    with open(os.path.join(FIX, "qwen_text_tokens.json"), "w") as f:
        json.dump(out, f, indent=0, ensure_ascii=False)
        f.write("\n")
    print(f"{len(texts)} texts -> qwen_text_tokens.json")


if __name__ == "__main__":
    main()
