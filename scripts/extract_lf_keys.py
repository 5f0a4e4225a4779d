#!/usr/bin/env python3
"""Extract every configuration key LLaMA-Factory's `llamafactory-cli train` accepts into
crates/lorafit-core/data/llamafactory_keys.json (name, dataclass, value type, choices, default).

Sources: the dataclasses in LLaMA-Factory's src/llamafactory/hparams/*.py and v1/config/*.py,
read with `ast` (no torch needed), and transformers' Seq2SeqTrainingArguments, which LLaMA-Factory's
TrainingArguments extends (read with `dataclasses` from the transformers version LLaMA-Factory pins).
Only facts are kept (names, types, defaults); no help text.

    python3 -m venv /tmp/tfenv && /tmp/tfenv/bin/pip install 'transformers==5.8.0'
    /tmp/tfenv/bin/python scripts/extract_lf_keys.py /path/to/LLaMA-Factory
"""

import ast
import dataclasses
import enum
import json
import subprocess
import sys
import typing
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "crates/lorafit-core/data/llamafactory_keys.json"


MEMBERS: dict[str, dict[str, str]] = {}


def enum_classes(tree: ast.Module) -> dict[str, list[str]]:
    """`class X(StrEnum)` → its string values (members kept in MEMBERS for defaults)."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(
            getattr(b, "id", "") in ("StrEnum", "Enum", "str") for b in node.bases
        ):
            vals = []
            for st in node.body:
                if isinstance(st, ast.Assign) and isinstance(st.value, ast.Constant) and isinstance(
                    st.value.value, str
                ):
                    vals.append(st.value.value)
                    MEMBERS.setdefault(node.name, {})[st.targets[0].id] = st.value.value
            if vals:
                out[node.name] = vals
    return out


def kind_of(ann: ast.expr, enums: dict[str, list[str]]) -> tuple[str, list[str]]:
    """Map an annotation to (bool|int|float|str|enum|any, choices)."""
    text = ast.unparse(ann).replace("Optional[", "").replace("typing.", "")
    parts = [p.strip().rstrip("]") for p in text.split("|")] if "Literal" not in text else [text]
    parts = [p for p in parts if p not in ("None", "")]
    if len(parts) == 1:
        p = parts[0]
        if p.startswith("Literal["):
            lit = ann
            # Find the Literal subscript inside (Literal[...] | None).
            for n in ast.walk(ann):
                if isinstance(n, ast.Subscript) and ast.unparse(n.value).endswith("Literal"):
                    lit = n
                    break
            elts = lit.slice.elts if isinstance(lit.slice, ast.Tuple) else [lit.slice]
            return "enum", [str(e.value) for e in elts if isinstance(e, ast.Constant)]
        if p in ("bool", "int", "float", "str"):
            return p, []
        if p in enums:
            return "enum", enums[p]
    return "any", []


def default_of(call: ast.expr):
    if not isinstance(call, ast.Call):
        try:
            return ast.literal_eval(call)
        except Exception:
            return None
    for kw in call.keywords:
        if kw.arg == "default":
            try:
                return ast.literal_eval(kw.value)
            except Exception:
                # An enum member such as EngineName.HF: its value ("huggingface").
                v = kw.value
                if isinstance(v, ast.Attribute) and isinstance(v.value, ast.Name):
                    return MEMBERS.get(v.value.id, {}).get(v.attr, v.attr.lower())
                return None
    return None


def lf_fields(root: Path, rel: str, group_prefix: str, enums: dict[str, list[str]]) -> list[dict]:
    out = []
    for path in sorted((root / rel).glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if not isinstance(node, ast.ClassDef):
                continue
            for st in node.body:
                if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name):
                    name = st.target.id
                    if name.startswith("_"):
                        continue
                    init = True
                    if isinstance(st.value, ast.Call):
                        for kw in st.value.keywords:
                            if kw.arg == "init" and isinstance(kw.value, ast.Constant):
                                init = bool(kw.value.value)
                    if not init:
                        continue
                    kind, choices = kind_of(st.annotation, enums)
                    out.append(
                        {
                            "name": name,
                            "group": f"{group_prefix}{node.name}",
                            "type": kind,
                            "choices": choices,
                            "default": default_of(st.value) if st.value is not None else None,
                        }
                    )
    return out


def transformers_fields() -> list[dict]:
    import transformers
    from transformers import Seq2SeqTrainingArguments

    out = []
    for f in dataclasses.fields(Seq2SeqTrainingArguments):
        if not f.init or f.name.startswith("_"):
            continue
        t = f.type
        if isinstance(t, str):
            kind, choices = {"bool": "bool", "int": "int", "float": "float", "str": "str"}.get(t, "any"), []
        else:
            args = [a for a in typing.get_args(t) if a is not type(None)] or [t]
            kind, choices = "any", []
            if len(args) == 1:
                a = args[0]
                kind = {bool: "bool", int: "int", float: "float", str: "str"}.get(a, "any")
            elif all(isinstance(a, type) and (a is str or issubclass(a, enum.Enum)) for a in args):
                vals = [m.value for a in args if a is not str for m in a]
                kind, choices = ("enum", [str(v) for v in vals]) if vals else ("str", [])
        default = f.default if f.default is not dataclasses.MISSING else None
        if isinstance(default, enum.Enum):
            default = default.value
        if not isinstance(default, (bool, int, float, str, type(None))):
            default = None
        out.append(
            {
                "name": f.name,
                "group": f"transformers {transformers.__version__} Seq2SeqTrainingArguments",
                "type": kind,
                "choices": choices,
                "default": default,
            }
        )
    return out


def main() -> None:
    root = Path(sys.argv[1]).resolve()
    commit = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    src = root / "src/llamafactory"
    enums = enum_classes(ast.parse((src / "extras/constants.py").read_text()))
    v1_enums = {**enums}
    for f in ("v1/utils/types.py", "v1/config/arg_utils.py"):
        v1_enums.update(enum_classes(ast.parse((src / f).read_text())))
    keys: dict[str, dict] = {}
    # transformers first; LLaMA-Factory's own definitions override them (as its dataclass does).
    for entry in transformers_fields() + lf_fields(src, "hparams", "", enums):
        keys[entry["name"]] = entry
    v1 = lf_fields(src, "v1/config", "v1 ", v1_enums)
    doc = {
        "source": f"LLaMA-Factory {commit} (src/llamafactory/hparams, v1/config) and transformers "
        "Seq2SeqTrainingArguments; made by scripts/extract_lf_keys.py",
        "keys": sorted(keys.values(), key=lambda e: e["name"]),
        "v1_keys": sorted(v1, key=lambda e: e["name"]),
    }
    # One key a line: small in the page's bundle, readable in a diff.
    lines = ['{"source": ' + json.dumps(doc["source"]) + ","]
    for section in ("keys", "v1_keys"):
        rows = [json.dumps(e, ensure_ascii=False) for e in doc[section]]
        lines.append(f' "{section}": [\n  ' + ",\n  ".join(rows) + "\n ]" + ("," if section == "keys" else ""))
    lines.append("}")
    OUT.write_text("\n".join(lines) + "\n")
    print(f"{len(doc['keys'])} keys, {len(v1)} v1 keys → {OUT}")


if __name__ == "__main__":
    main()
