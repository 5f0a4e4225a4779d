#!/usr/bin/env bash
# `lorafit estimate --json` on every YAML under a LLaMA-Factory checkout's examples/, run from the
# checkout's root as `llamafactory-cli train examples/...` is, so `dataset_dir: data` resolves to
# its demo data. Prints one line per file (OK, or FAIL with lorafit's last stderr line) and a
# count. The result of the last run is in docs/compatibility.md.
#
#   scripts/lf_examples_sweep.sh /path/to/LLaMA-Factory [path/to/lorafit]
set -uo pipefail

lf=${1:?usage: $0 LLAMA_FACTORY_CHECKOUT [LORAFIT_BINARY]}
here=$(cd "$(dirname "$0")/.." && pwd)
lorafit=${2:-$here/target/debug/lorafit}
[ -x "$lorafit" ] || { echo "no lorafit binary at $lorafit (cargo build -p lorafit-cli)" >&2; exit 2; }
cd "$lf" || exit 2

ok=0
fail=0
out=$(mktemp)
err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
while IFS= read -r f; do
    if timeout 120 "$lorafit" estimate "$f" --json >"$out" 2>"$err" && grep -q '"peak_reserved_bytes"' "$out"; then
        ok=$((ok + 1))
        echo "OK   $f"
    else
        fail=$((fail + 1))
        echo "FAIL $f: $(grep -v '^warning' "$err" | tail -n 1)"
    fi
done < <(find examples -name '*.yaml' | sort)
echo "$ok of $((ok + fail)) give an estimate"
