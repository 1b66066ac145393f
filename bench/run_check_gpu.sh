#!/usr/bin/env bash
# The one command to run on a lent GPU machine (docs/check_gpu.md, "On a lent GPU"): record the
# machine, install this checkout into the machine's own torch without touching it, run check-gpu
# under a hard timeout, and leave everything in $OUT, at most one folder down (the device tool
# brings back 8 files: environment.txt, install.log, check-gpu.log, check-gpu/report.{json,md}).
#
#   OUT=DIR [BUDGET_S=420] [PYTHON=python3] [COMMIT=rev] bash bench/run_check_gpu.sh [check-gpu options]
#
# COMMIT names the tested commit where the copy has no .git (the device tool sends files only).
#
# The timeout is the budget plus 120 s (Python, torch and the report after the last row), so the
# default ends within 540 s: a 15-minute allowance keeps room for the machine's start and a rerun
# (for example BUDGET_S=200 with --only naming the rows to repeat).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:?set OUT to the folder the report goes to}
budget=${BUDGET_S:-420}
python=${PYTHON:-python3}
mkdir -p "$out"

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: ${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || echo "nvidia-smi: not available"
  "$python" - <<'EOF'
import importlib
import platform

print("python", platform.python_version())
for name in ("torch", "triton", "torchvision", "numpy", "numba", "cv2", "PIL", "yaml", "tqdm", "nvidia.dali"):
    try:
        print(name, getattr(importlib.import_module(name), "__version__", "(no __version__)"))
    except Exception as exc:  # noqa: BLE001 - the record says what is missing, the run goes on
        print(name, "not importable:", type(exc).__name__, exc)
import torch

print("cuda", torch.version.cuda, "available:", torch.cuda.is_available())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, f"sm_{p.major}{p.minor}", p.multi_processor_count, "SMs", p.total_memory >> 20, "MiB")
EOF
} >"$out/environment.txt" 2>&1

# Installed already from this very checkout (CI, a developer's venv): nothing to do. Otherwise an
# editable install that neither resolves dependencies nor builds in isolation, so the machine's
# torch and triton stay as they are and nothing is fetched.
if "$python" - <<'EOF' 2>/dev/null
import pathlib
import sys

import fastwsol
import fastwsol.kernels

here = pathlib.Path.cwd().resolve()
sys.exit(not all(here in pathlib.Path(m.__file__).resolve().parents for m in (fastwsol, fastwsol.kernels)))
EOF
then
  echo "fastwsol already installed from $(pwd)" >"$out/install.log"
elif ! "$python" -m pip install --no-deps --no-build-isolation --no-index -e . >"$out/install.log" 2>&1; then
  echo "pip install failed; the end of $out/install.log:" >&2
  tail -n 20 "$out/install.log" >&2
  exit 3
fi

PYTHONUNBUFFERED=1 timeout --kill-after=10 $((budget + 120)) \
  "$python" -m fastwsol check-gpu --out "$out/check-gpu" --budget-s "$budget" "$@" 2>&1 |
  tee "$out/check-gpu.log"
status=${PIPESTATUS[0]}
echo "check-gpu exit status $status (0 = PASS, 1 = FAIL or INCOMPLETE, 2 = refused its options or --out, 124 or 137 = killed by the timeout)" | tee -a "$out/check-gpu.log"
exit "$status"
