#!/usr/bin/env bash
# lorafit train on the lent NVIDIA machine over Vulkan (wgpu), beside PyTorch + PEFT on the same
# random-weight checkpoints and rows (issue 6). Not run in CI; nothing here needs the network.
#
# Prepare on the development machine (once; the folders are git-excluded):
#   cargo build --release -p lorafit-cli && mkdir -p .bin && cp target/release/lorafit .bin/
#   the Vulkan loader .debs into .gl/ (see the device tool's README)
# Then, with the device tool: carry [".bin", ".gl"], command `bash scripts/gpu_lorafit.sh`.
# Results (logs, trainer_log.jsonl, torch's figures) land in $OUT.
set -euo pipefail
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
out=${OUT:-/tmp/lorafit-gpu}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.csv" || true
L=.bin/lorafit
steps=10
# model id, per-device batch, sequence length
for spec in "Qwen/Qwen2.5-0.5B 4 1024" "meta-llama/Llama-3.2-1B 4 1024" "Qwen/Qwen2.5-1.5B 2 1024"; do
  read -r id bs len <<< "$spec"
  name=$(basename "$id")
  dir=/tmp/models/$name
  "$L" random-model "$id" "$dir"
  vocab=$(python3 -c "import json; print(json.load(open('$dir/config.json'))['vocab_size'])")
  python3 - "$vocab" "$len" > /tmp/$name.jsonl <<'PY'
import json, random, sys
random.seed(0)
vocab, n = int(sys.argv[1]), int(sys.argv[2])
for _ in range(64):
    print(json.dumps({"input_ids": [random.randrange(vocab) for _ in range(n)]}))
PY
  cat > /tmp/$name.yaml <<YAML
model_name_or_path: $dir
finetuning_type: lora
lora_rank: 8
lora_alpha: 16
lora_target: all
dataset: /tmp/$name.jsonl
cutoff_len: $len
per_device_train_batch_size: $bs
learning_rate: 1.0e-4
lr_scheduler_type: constant
max_steps: $steps
logging_steps: 1
save_steps: 100000
shuffle: false
disable_gradient_checkpointing: true
backend: wgpu
output_dir: /tmp/out-$name
YAML
  "$L" train /tmp/$name.yaml > "$out/$name.lorafit.log" 2>&1 || echo "lorafit failed on $name" >> "$out/$name.lorafit.log"
  cp /tmp/out-$name/trainer_log.jsonl "$out/$name.trainer_log.jsonl" 2>/dev/null || true
  python3 scripts/bench_train_torch.py "$dir" /tmp/$name.jsonl $steps cuda "$bs" float32 > "$out/$name.torch.log" 2>&1 || true
done
