#!/usr/bin/env bash
# GPU check of the runtime (CUDA provider, IO binding, fp16, latency); see benchmarks/gpu_check.py.
# On the lent GPU machine (see /work/shared/device/README.md), after onnxruntime-gpu went to /tmp/site:
#   export PYTHONPATH=/tmp/site:$PWD && bash benchmarks/gpu_check.sh
# Anywhere else it runs the CPU rows and says why CUDA was skipped:
#   PYTHON=.venv/bin/python OUT=/tmp/gpu_check bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-/tmp/mirasol-gpu-check-out}
mkdir -p "$OUT"
# The project is not installed there: install it (no downloads) so mirasol_edge.runtime/.export map to
# runtime/ and export/; if pip cannot, gpu_check.py maps them itself.
if ! "$PYTHON" -c "import mirasol_edge.runtime, mirasol_edge.export" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-deps --no-index --no-build-isolation -e . >"$OUT/pip_install.log" 2>&1 \
        || echo "pip install -e . failed (see $OUT/pip_install.log); mapping the packages by hand"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$OUT/nvidia_smi.txt" 2>&1 || true
"$PYTHON" benchmarks/gpu_check.py --out "$OUT" "$@"
