#!/usr/bin/env bash
# Chaos check for issue 11, bounded (CHAOS_TIMEOUT seconds, default 1800) and local: a temporary folder,
# the CLI as subprocesses, nothing served beyond loopback, nothing fetched. See scripts/chaos.py.
#   scripts/chaos.sh --rounds 3 --seed 1
set -euo pipefail
cd "$(dirname "$0")/.."
exec timeout "${CHAOS_TIMEOUT:-1800}" python3 scripts/chaos.py "$@"
