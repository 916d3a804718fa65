#!/usr/bin/env bash
# Re-measures everything in benchmarks/results/ on this machine (CPU) and regenerates RESULTS.md. About 65 minutes.
# Every comparison runs ours and timm's pvt_v2_* with the same weights in one process, alternating.
set -euo pipefail
cd "$(dirname "$0")/.."
PV=.venv/bin/pvtv2
OUT=benchmarks/results
mkdir -p "$OUT"
$PV flops --json > "$OUT/flops.json"
# Detectors, segmenter, the ablation and the complexity figure: counted on the meta device, seconds.
$PV flops --task segment --json > "$OUT/flops_semantic_fpn.json"
$PV flops --task detect --kind retinanet --json > "$OUT/flops_retinanet.json"
$PV flops --task detect --kind maskrcnn --json > "$OUT/flops_maskrcnn.json"
$PV ablation --json > "$OUT/ablation.json"
$PV flops --scaling --out "$OUT/complexity"
$PV bench --model pvt_v2_b0 pvt_v2_b2 --batch-size 8 --repeats 15 --json "$OUT/eager_fp32_b8.json"
$PV bench --model pvt_v2_b0 --mode train --batch-size 16 --repeats 10 --json "$OUT/train_b0_b16.json"
# The same two comparisons with glibc keeping freed memory (no mmap per large tensor, no trimming).
KEEP_FREED="env MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=17179869184"
$KEEP_FREED $PV bench --model pvt_v2_b0 pvt_v2_b2 --batch-size 8 --repeats 10 --json "$OUT/eager_fp32_b8_keep_freed.json"
$KEEP_FREED $PV bench --model pvt_v2_b0 --mode train --batch-size 16 --repeats 8 --json "$OUT/train_b0_b16_keep_freed.json"
$PV bench --model pvt_v2_b2 --batch-size 8 --repeats 10 --dtype bf16 --peer-eager-fp32 --agreement --json "$OUT/bf16_b2_b8.json"
$PV bench --model pvt_v2_b2 --batch-size 8 --repeats 10 --compile --peer-eager-fp32 --agreement --json "$OUT/compile_fp32_b2_b8.json"
$PV bench --model pvt_v2_b2 --batch-size 8 --repeats 10 --dtype bf16 --compile --peer-eager-fp32 --agreement --json "$OUT/compile_bf16_b2_b8.json"
# Issue 19: against ONNX Runtime running our own export, and the fraction of the matrix-product ceiling.
$PV bench --model pvt_v2_b0 pvt_v2_b2 --batch-size 8 --repeats 10 --compare onnxruntime --ceiling --json "$OUT/ort_fp32_b8.json"
$PV bench --model pvt_v2_b2 --batch-size 8 --repeats 10 --dtype bf16-weights --peer-eager-fp32 --compare onnxruntime --ceiling --agreement --profile --json "$OUT/ort_bf16w_b2_b8.json"
# Issue 19: detectors and Semantic FPN on the fast CPU path (bf16) against torchvision's ResNet-50 models and
# against themselves in plain eager float32 (about 25 minutes); report.py draws the speed-accuracy figure.
B="pvt_v2_b0 pvt_v2_b1 pvt_v2_b2 pvt_v2_b2_li pvt_v2_b3 pvt_v2_b4 pvt_v2_b5"
$PV bench --task detect --kind retinanet maskrcnn --model $B --dtype bf16 --repeats 3 --warmup 1 --profile --json "$OUT/dense_detect_bf16.json"
$PV bench --task detect --kind fcos --model pvt_v2_b0 pvt_v2_b2 --dtype bf16 --repeats 3 --warmup 1 --profile --json "$OUT/dense_fcos_bf16.json"
$PV bench --task segment --kind fcn_resnet50 --model $B --dtype bf16 --repeats 5 --profile --json "$OUT/dense_segment_bf16.json"
$PV bench --task segment --kind deeplabv3_resnet50 --model pvt_v2_b2 --dtype bf16 --repeats 5 --json "$OUT/dense_deeplab_bf16.json"
$PV bench --scaling --reference --out "$OUT/scaling" --budget-gmacs 1400 --repeats 3
.venv/bin/python benchmarks/report.py
