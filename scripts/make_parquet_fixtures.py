"""Parquet copies of some LLaMA-Factory-format fixtures, written as `datasets` writes them.

LLaMA-Factory reads json and parquet files through `datasets` into the same Arrow table, so a
parquet copy must give exactly the input_ids / labels its JSON original gives (the cases in
crates/lorafit-data/tests/fixtures/expected.json). `Dataset.to_parquet` uses snappy; one file
is rewritten with zstd by pyarrow to cover that codec too.

Run: python scripts/make_parquet_fixtures.py   (needs datasets==4.0.0, pyarrow)
"""

import json
from pathlib import Path

import datasets
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "crates/lorafit-data/tests/fixtures/data"
OUT = ROOT / "crates/lorafit-data/tests/fixtures/parquet"

NAMES = [
    "alpaca_en_demo",
    "alpaca_zh_demo",
    "sharegpt_demo",
    "glaive_toolcall_en_demo",
    "parallel_tools_demo",
    "dpo_en_demo",
    "kto_en_demo",
    "c4_demo",
]
ZSTD = {"alpaca_zh_demo"}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    info = json.loads((DATA / "dataset_info.json").read_text())
    out_info = {}
    for name in NAMES:
        entry = dict(info[name])
        src = DATA / entry["file_name"]
        ds = datasets.load_dataset("json", data_files=str(src), split="train")
        dst = OUT / f"{src.stem}.parquet"
        ds.to_parquet(str(dst))
        if name in ZSTD:
            pq.write_table(pq.read_table(dst), dst, compression="zstd")
        entry["file_name"] = dst.name
        out_info[name] = entry
        print(name, len(ds), dst.stat().st_size, "bytes")
    (OUT / "dataset_info.json").write_text(json.dumps(out_info, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
