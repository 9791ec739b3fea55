#!/usr/bin/env python3
"""Render an embeddr HTML review report in headless Chromium and check it.

    python scripts/check_report_html.py REPORT_DIR [--screenshot shot.png] [--chromium PATH]

Two headless runs, from disk (file://, no server):

1. ``--dump-dom`` of ``index.html#selftest``. In self-test mode the page loads thumbnails eagerly,
   waits until every one has loaded or failed, ticks "not a duplicate" on the first group and on
   one copy of the second, puts the verdicts export in ``<pre id="selftest-verdicts">``, opens
   page 2 if there is one, and writes the outcome into ``<html data-check="ok:..."|"error:...">``.
   Console messages are captured with ``--enable-logging=stderr`` (Chromium logs them as
   ``CONSOLE`` lines); the report logs nothing, so any console message is a failure (a script
   error, a blocked resource, a Content-Security-Policy violation).
2. ``--screenshot`` of the normal view, to look at.

Prints a JSON summary and exits 0 when the check passed, 1 when it failed, 2 without Chromium.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
CHECK = re.compile(r'<html[^>]*\sdata-check="([^"]*)"')
SELFTEST = re.compile(r'<pre id="selftest-verdicts"[^>]*>(.*?)</pre>', re.S)
CONSOLE = re.compile(r":CONSOLE[:(]\d+\)?\]\s*(.*)")


def find_chromium(explicit: str | None = None) -> str | None:
    """The Chromium binary: ``explicit``, ``$CHROMIUM``, or the first of the usual names on PATH."""
    for name in (explicit, os.environ.get("CHROMIUM"), *CANDIDATES):
        if name and (found := shutil.which(name)):
            return found
    return None


def _run(chromium: str, url: str, extra: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="embeddr-chromium-") as profile:
        cmd = [chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
               "--disable-background-networking", "--disable-sync", "--hide-scrollbars", "--mute-audio",
               f"--user-data-dir={profile}", "--virtual-time-budget=10000", *extra, url]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, errors="replace")


def check_report(report: str | os.PathLike, *, screenshot: str | os.PathLike | None = None,
                 chromium: str | None = None, window: str = "1280,1400", timeout: float = 90) -> dict:
    """Render the report and return ``{"ok", "check", "console", "verdicts", "screenshot", ...}``."""
    binary = find_chromium(chromium)
    if binary is None:
        raise FileNotFoundError("no Chromium binary found (tried $CHROMIUM and " + ", ".join(CANDIDATES) + ")")
    index = Path(report)
    if index.is_dir():
        index = index / "index.html"
    if not index.is_file():
        raise FileNotFoundError(f"{index}: no such report")
    uri = index.resolve().as_uri()

    run = _run(binary, uri + "#selftest", ["--enable-logging=stderr", "--v=0", "--dump-dom"], timeout)
    dom = run.stdout
    match = CHECK.search(dom)
    check = html.unescape(match.group(1)) if match else "missing: no data-check attribute in the rendered DOM"
    console = [m.group(1).strip() for line in run.stderr.splitlines() if (m := CONSOLE.search(line))]
    verdicts = None
    if (sm := SELFTEST.search(dom)) and sm.group(1).strip():
        try:
            verdicts = json.loads(html.unescape(sm.group(1)))
        except json.JSONDecodeError as exc:
            check = f"error: self-test verdicts are not JSON ({exc})"

    shot = None
    if screenshot is not None:
        shot = Path(screenshot).resolve()
        shot.parent.mkdir(parents=True, exist_ok=True)
        _run(binary, uri, [f"--window-size={window}", f"--screenshot={shot}"], timeout)
        if not shot.is_file():
            check = f"error: no screenshot written to {shot}"
            shot = None

    loaded = re.match(r"ok:(\d+)/(\d+)", check)
    ok = check.startswith("ok:") and not console and run.returncode == 0
    return {
        "ok": ok, "check": check, "console": console, "returncode": run.returncode,
        "thumbnails_loaded": int(loaded.group(1)) if loaded else 0,
        "thumbnails_total": int(loaded.group(2)) if loaded else 0,
        "verdicts": verdicts, "screenshot": str(shot) if shot else None, "chromium": binary, "url": uri,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", help="report folder (from `embeddr report --html OUT`) or its index.html")
    ap.add_argument("--screenshot", help="write a PNG screenshot of the first page here")
    ap.add_argument("--chromium", help="Chromium binary (default: $CHROMIUM, then chromium, google-chrome, ... on PATH)")
    ap.add_argument("--window", default="1280,1400", help="screenshot window size W,H")
    args = ap.parse_args(argv)
    try:
        result = check_report(args.report, screenshot=args.screenshot, chromium=args.chromium, window=args.window)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {k: v for k, v in result.items() if k != "verdicts"}
    summary["selftest_verdict_pairs"] = len((result["verdicts"] or {}).get("verdicts", []))
    print(json.dumps(summary, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
