"""Reference draws for lorafit-data's NumpyRng (crates/lorafit-data/src/rng.rs): numpy's
`default_rng(seed).permutation(n)` and `datasets`' `train_test_split(test_size, seed)` (the split
LLaMA-Factory's `val_size` makes), written to crates/lorafit-data/tests/fixtures/numpy_split.json.

    pip install numpy datasets
    python scripts/make_numpy_fixtures.py
"""

import json
from pathlib import Path

import datasets
import numpy as np

OUT = Path(__file__).resolve().parent.parent / "crates/lorafit-data/tests/fixtures/numpy_split.json"
perms = []
for seed in [0, 1, 42, 1234, 2**31 - 1, 2**32 + 5, 2**40 + 17]:
    for n in [1, 2, 3, 7, 24, 100, 1000]:
        perms.append({"seed": seed, "n": n, "permutation": np.random.default_rng(seed).permutation(n).tolist()})
splits = []
for n, test_size, seed in [(24, 0.25, 42), (37, 0.1, 7), (50, 5, 42), (10, 0.33, 3), (2000, 0.05, 42)]:
    d = datasets.Dataset.from_dict({"i": list(range(n))})
    s = d.train_test_split(test_size=test_size, seed=seed)
    splits.append({"n": n, "val_size": test_size, "seed": seed, "train": list(s["train"]["i"]), "test": list(s["test"]["i"])})
OUT.write_text(
    json.dumps(
        {"source": f"numpy {np.__version__}, datasets {datasets.__version__}", "permutations": perms, "splits": splits}
    )
)
print(f"wrote {OUT}")
