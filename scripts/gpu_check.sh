#!/usr/bin/env bash
# GPU check for embeddr, in one command: the CUDA-path unit tests, then each encoder on the GPU (device and
# precision reported = used, vectors against the CPU's), the scan end to end on ~1 MP JPEGs (nvJPEG batch decoding
# against Pillow), and the pair search of the default decision at 1M and 10M vectors on the GPU with its recall.
#
#   bash scripts/gpu_check.sh
#
# Each part runs under its own time limit inside one budget (GPU_CHECK_BUDGET seconds, default 540), so a part
# that fails or runs long does not lose the others' figures; the script exits 1 if any part failed or was cut.
# The measurements are scripts/gpu_check.py (see its docstring); no weights are downloaded.
#
# Set-up: pip install -e '.[gpu,dev]' (onnxruntime-gpu replaces onnxruntime: pip uninstall -y onnxruntime first).
# Offline, a folder of wheels works too: GPU_CHECK_WHEELS=DIR installs DIR/*.whl (no dependencies resolved) into
# a temporary folder on PYTHONPATH, beside the packages already there.
# Knobs: GPU_CHECK_DEVICE (cuda), JPEGS (2048), SEARCH_SIZES ("1000000 10000000"), GPU_CHECK_BUDGET (540),
# GPU_CHECK_BATCH (256). The unit tests that take EMBEDDR_TEST_DEVICE run on GPU_CHECK_DEVICE.
# Dry run on a machine without a GPU (figures meaningless):
#   GPU_CHECK_DEVICE=cpu JPEGS=64 SEARCH_SIZES=20000 GPU_CHECK_BATCH=16 bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
DEVICE="${GPU_CHECK_DEVICE:-cuda}"
JPEGS="${JPEGS:-2048}"
SEARCH_SIZES="${SEARCH_SIZES:-1000000 10000000}"
BUDGET="${GPU_CHECK_BUDGET:-540}"
BATCH="${GPU_CHECK_BATCH:-256}"
PY="${PYTHON:-python3}"
START=$(date +%s)
FAILED=()

if [ -n "${GPU_CHECK_WHEELS:-}" ]; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/embeddr-site \
    "$GPU_CHECK_WHEELS"/*.whl || { echo "FAIL: cannot install the wheels in $GPU_CHECK_WHEELS"; exit 1; }
  export PYTHONPATH="/tmp/embeddr-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

# part NAME MAX_SECONDS COMMAND...: run COMMAND under min(MAX_SECONDS, what is left of the budget)
part() {
  local name=$1 max=$2; shift 2
  local left=$((BUDGET - ($(date +%s) - START)))
  local limit=$((left < max ? left : max))
  if [ "$limit" -lt 15 ]; then
    echo "== $name: SKIPPED (${left} s left of the ${BUDGET} s budget)"; FAILED+=("$name (skipped)"); return
  fi
  echo "== $name (limit ${limit} s; $(($(date +%s) - START)) s elapsed)"
  local t0=$(date +%s)
  timeout --signal=INT --kill-after=10 "$limit" "$@"
  local rc=$?
  echo "-- $name: rc $rc in $(($(date +%s) - t0)) s"
  if [ "$rc" -ne 0 ]; then FAILED+=("$name (rc $rc)"); fi
}

echo "== nvidia-smi"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"
part env 60 "$PY" scripts/gpu_check.py env --device "$DEVICE"
part "CUDA-path unit tests" 90 env EMBEDDR_TEST_DEVICE="$DEVICE" "$PY" -m pytest -q -p no:cacheprovider tests/test_encoders.py tests/test_gpu_path.py \
  tests/test_scan_throughput.py tests/test_search.py -k "device or precision or providers or cuda or open_clip or jpeg or torch"
part encoders 90 "$PY" scripts/gpu_check.py encoders --device "$DEVICE" --batch "$BATCH"
part "scan end to end on ~1 MP JPEGs" 120 "$PY" scripts/gpu_check.py jpeg --device "$DEVICE" --n "$JPEGS" --batch "$BATCH"
for n in $SEARCH_SIZES; do
  part "pair search, $n vectors" 240 "$PY" scripts/gpu_check.py search --device "$DEVICE" --n "$n"
done

echo "== done in $(($(date +%s) - START)) s"
if [ "${#FAILED[@]}" -gt 0 ]; then
  printf 'FAILED: %s\n' "${FAILED[@]}"
  exit 1
fi
echo "ALL OK"
