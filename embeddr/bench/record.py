"""What every benchmark script records beside its figures: the load average, the date, the CPUs; and how it
prints its result (one JSON object with ``--json``, else ``key: value`` lines)."""

from __future__ import annotations

import json
import os
import time


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages ("?" where /proc is not there)."""
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:  # pragma: no cover
        return "?"


def finish(result: dict, as_json: bool, **extra) -> int:
    """Add ``extra``, the load average after the run, the date and the CPU count to ``result``, print it, and
    return the exit status 0."""
    result.update(extra, load_average_after=load_average(),
                  date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), cpus=os.cpu_count())
    if as_json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    return 0
