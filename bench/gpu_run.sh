#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one call (the lent device machine: torch, triton, transformers and peft
# are preinstalled there; loranet's own code runs from the checkout through PYTHONPATH).
#   bash bench/gpu_run.sh            # writes logs and JSON to $OUT (default ./gpu-out)
# 1. the sgmv kernels compiled for the GPU against the float64 oracle (pytest -m gpu)
# 2. bench/sgmv_bench.py (Triton, bf16, TinyLlama layer shapes) 3. bench/engine_bench.py on the tiny
# model and on TinyLlama-1.1B's layer shapes (bf16, Triton) 4. bench/engine_profile.py (host vs device time per
# step) 5. bench/fingerprint_width.py: nodes on the GPU against the CPU verifier (cross-hardware fingerprint noise).
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONPATH="$PWD/libs/sgmv:$PWD/libs:$PWD" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
PY=${PY:-python3}
STEPS=${STEPS:-tests sgmv engine_tiny engine_tinyllama profile fingerprint}
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch, triton, transformers, peft; print('torch', torch.__version__, 'triton', triton.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)" | tee -a "$OUT/gpu.txt"
for step in $STEPS; do
  t0=$(date +%s)
  case $step in
    tests) timeout 240 $PY -m pytest -p no:cacheprovider libs/sgmv/tests -m gpu -q -x -W ignore > "$OUT/gpu_tests.log" 2>&1; rc=$?
           tail -5 "$OUT/gpu_tests.log" ;;
    sgmv) timeout 180 $PY bench/sgmv_bench.py --json > "$OUT/sgmv.json" 2> "$OUT/sgmv.log"; rc=$?; grep -v "Loading\|Writing" "$OUT/sgmv.log" | tail -25 ;;
    engine_tiny) timeout 150 $PY bench/engine_bench.py --json > "$OUT/engine_tiny.json" 2> "$OUT/engine_tiny.log"; rc=$?
           grep -v "Loading\|Writing\|warn" "$OUT/engine_tiny.log" | tail -16 ;;
    engine_tinyllama) timeout ${ENGINE_TIMEOUT:-300} $PY bench/engine_bench.py --shape tinyllama --layers ${LAYERS:-8} --json \
           > "$OUT/engine_tinyllama.json" 2> "$OUT/engine_tinyllama.log"; rc=$?
           grep -v "Loading\|Writing\|warn" "$OUT/engine_tinyllama.log" | tail -16 ;;
    profile) timeout 240 $PY bench/engine_profile.py --shape tinyllama --layers ${LAYERS:-8} > "$OUT/engine_profile.log" 2>&1; rc=$?
           grep "^==" "$OUT/engine_profile.log" ;;
    fingerprint) timeout 240 $PY bench/fingerprint_width.py --json > "$OUT/fingerprint_width.json" 2> "$OUT/fingerprint_width.log"; rc=$?
           grep -v "Loading\|Writing\|warn\|^{" "$OUT/fingerprint_width.json" | tail -8 ;;
  esac
  echo "== $step rc=$rc $(( $(date +%s) - t0 )) s"
done
