#!/usr/bin/env bash
# The GPU run (issue 18), under 8 minutes on one H200: the CUDA tests, then ours against timm's pvt_v2_*
# with the same weights (b0, b2, b5; inference at batch 128 and a training step at batch 64, each in TF32,
# bf16 and fp16; b2's bf16 inference also under torch.compile) and our detectors and Semantic FPN at their
# test scales against torchvision's ResNet-50 models, peak memory included, into benchmarks/results/cuda_*.json;
# then RESULTS.md. Installs nothing and needs no network: torch, torchvision and timm (transformers,
# onnxruntime and pycocotools are optional; the tests that need them skip). The package is imported from src/.
#
# Every phase has a timeout, clipped so that all phases together stay within BUDGET seconds; a phase that
# fails or times out is reported and the next one runs; the exit status is 1 if any did.
# Knobs (environment): PYTHON (default python3), DEVICE (default cuda), BUDGET (default 450).
# SMOKE=1 DEVICE=cpu OUT=/tmp/x: the same phases at toy sizes, no tests and no report (checks the plumbing).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-450}
OUT=${OUT:-benchmarks/results}
SMOKE=${SMOKE:-0}
MODELS="pvt_v2_b0 pvt_v2_b2 pvt_v2_b5" B2=pvt_v2_b2
INFER_BATCH=128 TRAIN_BATCH=64 DENSE_BATCH=4 REPEATS=8 WARMUP=3 SIZE=() DET_SIZE=() SEG_SIZE=()
if [[ $SMOKE == 1 ]]; then
  MODELS=pvt_v2_b0 B2=pvt_v2_b0 INFER_BATCH=2 TRAIN_BATCH=2 DENSE_BATCH=1 REPEATS=1 WARMUP=1
  SIZE=(--img-size 64) DET_SIZE=(--img-size 128 160) SEG_SIZE=(--img-size 64)
fi
START=$SECONDS
FAILED=()

phase() {  # phase NAME TIMEOUT COMMAND...
  local name=$1 limit=$2 left=$((BUDGET - (SECONDS - START))) began=$SECONDS
  shift 2
  if (( left < 15 )); then
    echo "[$(date +%T)] SKIPPED $name: the ${BUDGET}s budget is spent"
    FAILED+=("$name (skipped)")
    return 0
  fi
  if (( limit > left )); then limit=$left; fi
  echo "[$(date +%T)] $name (timeout ${limit}s)"
  if timeout --kill-after=10 "$limit" "$@"; then
    echo "[$(date +%T)] $name: done in $((SECONDS - began))s"
  else
    local rc=$?
    echo "[$(date +%T)] $name: FAILED (exit $rc$( (( rc == 124 )) && echo ": timed out"), after $((SECONDS - began))s)"
    FAILED+=("$name")
  fi
}

if [[ $DEVICE == cuda* ]] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  echo "run_gpu.sh: no CUDA device visible to $PY (torch.cuda.is_available() is False)" >&2
  exit 1
fi
mkdir -p "$OUT"
rm -f "$OUT"/cuda_*.json "$OUT"/cuda_tests.xml  # a phase that fails now must not leave an older run's numbers
echo "[$(date +%T)] run_gpu.sh on $DEVICE: $("$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')")"

if [[ $SMOKE != 1 ]]; then
  phase "CUDA tests" 170 "$PY" -m pytest -m cuda tests/test_cuda.py -q -p no:cacheprovider --junitxml="$OUT/cuda_tests.xml"
fi

BENCH=("$PY" -m pvtv2 bench --device "$DEVICE" --repeats "$REPEATS" --warmup "$WARMUP")

for dtype in tf32 bf16 fp16; do
  phase "inference $dtype, batch $INFER_BATCH" 60 "${BENCH[@]}" --model $MODELS --mode infer --batch-size "$INFER_BATCH" \
    --dtype "$dtype" "${SIZE[@]}" --json "$OUT/cuda_infer_b${INFER_BATCH}_$dtype.json"
done
for dtype in tf32 bf16 fp16; do
  phase "training step $dtype, batch $TRAIN_BATCH" 60 "${BENCH[@]}" --model $MODELS --mode train --batch-size "$TRAIN_BATCH" \
    --dtype "$dtype" "${SIZE[@]}" --json "$OUT/cuda_train_b${TRAIN_BATCH}_$dtype.json"
done
phase "detectors against torchvision (tf32)" 75 "${BENCH[@]}" --task detect --kind retinanet fasterrcnn maskrcnn fcos \
  --model "$B2" --batch-size "$DENSE_BATCH" --dtype tf32 "${DET_SIZE[@]}" --json "$OUT/cuda_detect_b$DENSE_BATCH.json"
phase "Semantic FPN against torchvision (tf32)" 45 "${BENCH[@]}" --task segment --kind fcn_resnet50 deeplabv3_resnet50 \
  --model "$B2" --batch-size "$DENSE_BATCH" --dtype tf32 "${SEG_SIZE[@]}" --json "$OUT/cuda_segment_b$DENSE_BATCH.json"
# Last: compiling both models takes most of this phase, and it is the one the budget may cut.
phase "b2 inference bf16 + torch.compile" 150 "${BENCH[@]}" --model "$B2" --mode infer --batch-size "$INFER_BATCH" \
  --dtype bf16 --compile "${SIZE[@]}" --json "$OUT/cuda_infer_b${INFER_BATCH}_bf16_compile.json"

if [[ $SMOKE != 1 ]]; then
  echo "[$(date +%T)] report"
  timeout 60 "$PY" benchmarks/report.py
fi
echo "[$(date +%T)] finished in $((SECONDS - START))s"
if (( ${#FAILED[@]} )); then
  printf 'failed or skipped: %s\n' "${FAILED[@]}" >&2
  exit 1
fi
