#!/usr/bin/env bash
# GPU check of the runtime (CUDA provider, IO binding, fp16, batched streams, fp16 accuracy, beside
# torch eager); see benchmarks/gpu_check.py. On the lent GPU machine, with the parts of onnxruntime-gpu
# in $ORTGPU (made by ../shared/device/ort-gpu-parts.sh) and the bundles and clip pack carried:
#   ORTGPU=/root/ortgpu bash benchmarks/gpu_check.sh --bundle small=FP32_DIR,FP16_DIR --clips PACK.npz --preset base=1,16,64
# Anywhere else, the dry run of every row on the CPU:
#   PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh --device cpu --bundle small=FP32_DIR,FP16_DIR --streams 1,4
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-/tmp/mirasol-gpu-check-out}
mkdir -p "$OUT"
if [ -n "${ORTGPU:-}" ]; then  # join the parts, install beside the image's CPU onnxruntime, which it shadows
    (cd "$ORTGPU" && cat part.0* > "$(cat NAME)" && "$PYTHON" -m pip install -q --no-index --no-deps --target /tmp/site "$(cat NAME)") \
        >"$OUT/ort_install.log" 2>&1
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi >"$OUT/nvidia_smi.txt" 2>&1 || true
PYTHONUNBUFFERED=1 "$PYTHON" benchmarks/gpu_check.py --out "$OUT" "$@"
