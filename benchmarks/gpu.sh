#!/usr/bin/env bash
# The GPU measurements in one run (under 8 minutes on one H100/H200):
#   1. feature extraction, resnet101.layer2, bf16, 224 px, uint8 Zarr in, float16 Zarr out:
#      the model alone and the whole stage, pictures/s (goal >= 5,000/s), benchmarks/extract.py;
#      then the whole stage in this process against Dask tasks on one worker per GPU,
#      benchmarks/extract_dask.py (needs `distributed`);
#   2. training samples/s of the `paper` preset fed by the real loader, against the same steps on
#      device-resident data, with GPU utilisation, benchmarks/loader.py;
#   3. batched colorize pictures/s through the library (colortrain.colorize.Colorist).
#
#   benchmarks/gpu.sh --fetch-wheels   on a machine with PyPI access: the wheels the GPU image lacks
#                                      (zarr, numcodecs, donfig, google-crc32c; Python 3.12,
#                                      manylinux x86-64) into .whl/ (ignored by git), carried along
#   benchmarks/gpu.sh                  on the GPU machine: installs .whl/*.whl into /tmp/site if
#                                      zarr is missing, then measures; logs under $OUT (or
#                                      /tmp/colorfeat-gpu)
#   benchmarks/gpu.sh --cpu-smoke      the same steps at tiny sizes on the CPU (a minute or two)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS="zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0"
MODE=gpu
case "${1:-}" in
  --cpu-smoke) MODE=cpu ;;
  --fetch-wheels)
    mkdir -p .whl
    # shellcheck disable=SC2086
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d .whl $WHEELS
    exit 0 ;;
  "") ;;
  *) echo "usage: benchmarks/gpu.sh [--cpu-smoke | --fetch-wheels]" >&2; exit 2 ;;
esac

if ! "$PY" -c "import zarr, numcodecs" 2>/dev/null; then
  ls .whl/*.whl >/dev/null 2>&1 || { echo "zarr is missing and .whl/ holds no wheels" >&2; exit 1; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
LOGS=${OUT:-/tmp/colorfeat-gpu}
WORK=$(mktemp -d /tmp/colorfeat-gpu-work.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$LOGS"

if [ "$MODE" = gpu ]; then
  DEVICE=cuda
  EXTRACT=(--n 4096 --size 224 --batch-size 256 --rounds 3)
  DASK=(--n 4096 --size 224 --batch-size 256 --rounds 2 --workers "$(nvidia-smi -L | wc -l)")
  LOADER=(--images 4096 --batch-size 24 --batches 100 --steps 200 --workers 0,8 --train paper)
  COLORIZE=(256 64 224)  # pictures, batch, side
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$LOGS/gpu.txt"
else
  DEVICE=cpu
  EXTRACT=(--n 8 --size 64 --batch-size 8 --rounds 1)
  DASK=(--n 8 --size 64 --batch-size 8 --rounds 1 --workers 1)
  LOADER=(--images 48 --image-size 64 --batch-size 8 --batches 2 --steps 2 --workers 0 --train small)
  COLORIZE=(4 2 64)
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

echo "== 1. extraction: model alone vs the whole features stage ($DEVICE)"
timeout 240 "$PY" benchmarks/extract.py --device "$DEVICE" --weights none --overlap-only \
  "${EXTRACT[@]}" 2>&1 | tee "$LOGS/extract.txt"
if "$PY" -c "import distributed" 2>/dev/null; then
  echo "== 1b. extraction: this process vs Dask tasks, one worker per GPU ($DEVICE)"
  timeout 300 "$PY" benchmarks/extract_dask.py --device "$DEVICE" "${DASK[@]}" 2>&1 \
    | grep -v ' - distributed\.' | tee "$LOGS/extract_dask.txt"
else
  echo "== 1b. skipped: distributed is not installed"
fi

echo "== 2. training fed by the loader vs device-resident ($DEVICE)"
timeout 150 "$PY" benchmarks/loader.py --work-dir "$WORK/loader" --device "$DEVICE" \
  "${LOADER[@]}" 2>&1 | tee "$LOGS/loader.txt"

echo "== 3. batched colorize through the library ($DEVICE)"
timeout 90 "$PY" - "$DEVICE" "${COLORIZE[@]}" <<'EOF' 2>&1 | tee "$LOGS/colorize.txt"
"""Pictures/s of Colorist.predict_ab_batch (trunk, FiLM colorizer, annealed-mean decoding, ab
upsampled to 480 x 640) on a randomly initialised `paper` model: speed does not depend on weights.
The host-side L join per picture (colorize_files) is not included."""
import sys
import time

import numpy as np
import torch

from colorfeat.trunk.backbone import create_trunk
from colorfeat.trunk.fuse import fuse_batchnorm
from colorfeat.config import BackboneConfig
from colortrain.colorize import Colorist
from colortrain.config import create_model_config
from colortrain.model import create_model

device, n, batch, side = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
dev = torch.device(device)
shapes = {"feature_channels": 512, "feature_size": side // 8, "target_size": side // 4,
          "vocab_size": 10_000, "embedding_dim": 300, "num_bins": 625}
model = create_model(create_model_config("film", "paper", shapes)).to(dev).eval()
trunk = fuse_batchnorm(create_trunk(BackboneConfig(weights="none", image_size=side))).to(dev)
colorist = Colorist(model, trunk, {}, side, dev)
rng = np.random.default_rng(0)
gray = rng.uniform(0, 1, (batch, side, side)).astype(np.float32)
tokens = torch.from_numpy(rng.integers(2, 10_000, (batch, 12)))
lengths = torch.full((batch,), 12)
colorist.predict_ab_batch(gray, tokens, lengths, (480, 640))  # warm-up
sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
sync()
t = time.perf_counter()
for _ in range(n // batch):
    colorist.predict_ab_batch(gray, tokens, lengths, (480, 640))
sync()
dt = time.perf_counter() - t
print(f"colorize (library, batch {batch}, {side} px in, 480x640 ab out): "
      f"{n // batch * batch / dt:.1f} pictures/s")
EOF
echo "== done; logs in $LOGS"
