"""A real Ray cluster on loopback for tests and scripts/bench_ray.py: a head node and worker nodes
started with ``ray start`` (each with its CPUs), stopped by their process group on exit."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RAY_CLI = [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackCluster:
    """``with LoopbackCluster(nodes=2, cpus=1) as c: ... ray.init(address=c.address)``."""

    def __init__(self, nodes: int = 2, cpus: int = 1, timeout: float = 120.0, object_store_mb: int = 256):
        self.nodes, self.cpus, self.timeout = nodes, cpus, timeout
        self.object_store_bytes = object_store_mb << 20  # small: CI containers have little /dev/shm
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp = tempfile.mkdtemp(prefix="er", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
        self.groups: list[int] = []
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
                    "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
                    "RAY_USAGE_STATS_ENABLED": "0"}

    def _start(self, args: list[str]) -> None:
        # own process group: every daemon this `ray start` spawns inherits it, so stop() ends exactly those
        proc = subprocess.Popen(RAY_CLI + ["start", *args, "--num-cpus", str(self.cpus), "--node-ip-address", "127.0.0.1",
                                           "--object-store-memory", str(self.object_store_bytes), "--disable-usage-stats"], env=self.env, start_new_session=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.groups.append(proc.pid)
        try:
            out, _ = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError("ray start timed out") from None
        if proc.returncode != 0:
            raise RuntimeError(f"ray start failed:\n{out[-3000:]}")

    def __enter__(self) -> "LoopbackCluster":
        # this process (the driver) authenticates with the cluster's token; Ray caches the token it read first
        os.environ["RAY_AUTH_MODE"], os.environ["RAY_AUTH_TOKEN"] = self.env["RAY_AUTH_MODE"], self.env["RAY_AUTH_TOKEN"]
        _reset_ray_auth()
        try:
            self._start(["--head", "--port", str(self.port), "--temp-dir", self.temp, "--include-dashboard=false"])
            for _ in range(self.nodes - 1):
                self._start(["--address", self.address])
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """End the processes this cluster started: its process groups and their descendants (Ray's
        worker processes may start sessions of their own), by pid; nothing else."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = _ours(self.groups)
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            if sig == signal.SIGTERM:
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and _ours(self.groups):
                    time.sleep(0.1)
        shutil.rmtree(self.temp, ignore_errors=True)
        for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
            os.environ.pop(key, None)
        _reset_ray_auth()

    def __exit__(self, *exc) -> None:
        self.stop()


def _reset_ray_auth() -> None:
    try:
        from ray._private.authentication_test_utils import reset_auth_token_state
    except ImportError:  # older Ray: no token authentication, nothing cached
        return
    reset_auth_token_state()


def _ours(groups: list[int]) -> set[int]:
    """Live pids in ``groups`` and their descendants (zombies excluded)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            table[int(entry)] = (int(fields[1]), int(fields[2]))  # ppid, pgrp
    ours = {pid for pid, (_, pgrp) in table.items() if pgrp in groups}
    grown = True
    while grown:
        children = {pid for pid, (ppid, _) in table.items() if ppid in ours} - ours
        ours |= children
        grown = bool(children)
    return ours
