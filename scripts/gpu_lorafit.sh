#!/usr/bin/env bash
# lorafit train on the lent NVIDIA machine over Vulkan (wgpu), beside PyTorch + PEFT on the same
# random-weight checkpoints and rows (issue 6). Not run in CI; nothing here needs the network.
#
# Prepare on the development machine (once; the folders are git-excluded):
#   cargo build --release -p lorafit-cli && mkdir -p .bin && cp target/release/lorafit .bin/
#   cargo build --release -p lorafit-cli --features vulkan && cp target/release/lorafit .bin/lorafit-vulkan
#     (optional: the SPIR-V build, cooperative matrices and f16; each spec then also runs with it)
#   the Vulkan loader .debs into .gl/ (see the device tool's README)
# Then, with the device tool: carry [".bin", ".gl"], command `bash scripts/gpu_lorafit.sh`.
# Results (logs, trainer_log.jsonl, torch's figures) land in $OUT; the last lines printed are a table of
# tokens/s and peak memory (lorafit's measured pool peak, torch's max_memory_allocated) per run.
set -euo pipefail
# A smoke run off the device: SPECS="Qwen/Qwen2.5-0.5B 1 32 0" BACKEND=ndarray DEVICE=cpu PER_RUN_S=300.
for f in .gl/*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done
[ -d .gl ] && ldconfig
backend=${BACKEND:-wgpu}
device=${DEVICE:-cuda}
export VK_DRIVER_FILES=${VK_DRIVER_FILES:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
out=${OUT:-/tmp/lorafit-gpu}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.csv" || true
L=${LORAFIT_BIN:-.bin/lorafit}
# lorafit runs, "backend:attention_kernel:binary": the WGSL build with the tensor-op attention, the
# same with the #[cube] attention kernels (CUBE_ATTENTION=0 leaves it out), and the SPIR-V build
# when it was carried.
stacks="$backend:tensor_ops:$L"
[ "${CUBE_ATTENTION:-1}" = 1 ] && stacks="$stacks $backend:cube:$L"
[ -x "${LORAFIT_VULKAN_BIN:-.bin/lorafit-vulkan}" ] && stacks="$stacks vulkan:tensor_ops:${LORAFIT_VULKAN_BIN:-.bin/lorafit-vulkan}"
n_stacks=$(wc -w <<< "$stacks")
steps=10
# Each run is cut off here, so the whole script stays under 8 minutes: 3 specs × (lorafit builds + torch).
per_run=${PER_RUN_S:-$(( 420 / (3 * (n_stacks + 1)) ))}
summary="$out/summary.txt"
printf '%-22s %-6s %-9s %12s %14s\n' run stack method "tokens/s" "peak memory" > "$summary"
# SPECS: comma-separated "model id, per-device batch, sequence length, quantization bits (0 = LoRA)"
IFS=',' read -r -a specs <<< "${SPECS:-Qwen/Qwen2.5-0.5B 4 1024 0,meta-llama/Llama-3.2-1B 4 1024 0,meta-llama/Llama-3.2-1B 4 1024 4}"
for spec in "${specs[@]}"; do
  read -r id bs len bits <<< "$spec"
  name=$(basename "$id")
  method=lora; [ "$bits" != 0 ] && method=qlora
  run=$name-$method
  dir=/tmp/models/$name
  [ -d "$dir" ] || "$L" random-model "$id" "$dir"
  vocab=$(python3 -c "import json; print(json.load(open('$dir/config.json'))['vocab_size'])")
  python3 - "$vocab" "$len" > /tmp/$name.jsonl <<'PY'
import json, random, sys
random.seed(0)
vocab, n = int(sys.argv[1]), int(sys.argv[2])
for _ in range(64):
    print(json.dumps({"input_ids": [random.randrange(vocab) for _ in range(n)]}))
PY
  quant=""; [ "$bits" != 0 ] && quant="quantization_bit: $bits"
  for stack in $stacks; do
  be=${stack%%:*}; rest=${stack#*:}; attn=${rest%%:*}; bin=${rest#*:}
  tag=$run; [ "$be" != "$backend" ] && tag=$tag-$be; [ "$attn" != tensor_ops ] && tag=$tag-$attn
  cat > /tmp/$tag.yaml <<YAML
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
backend: $be
attention_kernel: $attn
output_dir: /tmp/out-$tag
$quant
YAML
  timeout "$per_run" "$bin" train /tmp/$tag.yaml > "$out/$tag.lorafit.log" 2>&1 || echo "lorafit stopped (rc $?) on $tag" >> "$out/$tag.lorafit.log"
  cp /tmp/out-$tag/trainer_log.jsonl "$out/$tag.trainer_log.jsonl" 2>/dev/null || true
  tps=$(tail -n 1 "$out/$tag.trainer_log.jsonl" 2>/dev/null | python3 -c "import json,sys; print(json.loads(sys.stdin.read())['tokens_per_second'])" 2>/dev/null || echo -)
  peak=$(grep -o 'peak memory: measured [0-9.]* [KMG]iB' "$out/$tag.lorafit.log" | awk '{print $4, $5}' || true)
  printf '%-22s %-6s %-9s %12s %14s\n' "$tag" lorafit "$method" "$tps" "${peak:--}" >> "$summary"
  done
  timeout "$per_run" python3 scripts/bench_train_torch.py "$dir" /tmp/$name.jsonl $steps "$device" "$bs" float32 "$bits" > "$out/$run.torch.log" 2>&1 || echo "torch stopped (rc $?) on $run" >> "$out/$run.torch.log"
  tps=$(grep -o '[0-9]* tokens/s over' "$out/$run.torch.log" | awk '{print $1}' || true)
  peak=$(grep -o 'max_memory_allocated [0-9]*' "$out/$run.torch.log" | awk '{printf "%.2f GiB", $2 / 2^30}' || true)
  printf '%-22s %-6s %-9s %12s %14s\n' "$run" torch "$method" "${tps:--}" "${peak:--}" >> "$summary"
done
cat "$summary"
