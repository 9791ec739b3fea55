"""Connecting to Ray (``--ray ADDRESS``); imported only when a command asks for Ray.

``ADDRESS``: ``local`` (start a Ray instance on this machine for the job), ``auto`` (the cluster
this machine belongs to, started with ``ray start``), ``ray://host:port`` (Ray Client) or the
``host:port`` of a head node's GCS.
"""

from __future__ import annotations

import logging
import os
import re
from contextlib import contextmanager

from .errors import EmbeddrError


_HOST = r"(\[[0-9A-Fa-f:.]+\]|[^\s/:\[\]]+)"  # a name, an IPv4 address or a bracketed IPv6 one
_ADDRESS = re.compile(rf"^(local|auto|ray://{_HOST}(:\d{{1,5}})?|{_HOST}:\d{{1,5}})$")


def check_address(address: str) -> str:
    """``address`` when it has the form of a Ray address (``local``, ``auto``, ``ray://HOST[:PORT]`` or
    ``HOST:PORT``), else :class:`EmbeddrError`: a mistyped ``--ray`` fails before anything is created."""
    if not isinstance(address, str) or not _ADDRESS.match(address):
        raise EmbeddrError(f"--ray {address}: not a Ray address; use local (start Ray here), auto (the cluster this "
                           "machine belongs to), ray://HOST:PORT (Ray Client) or HOST:PORT (a head node)")
    return address


def require_ray() -> None:
    """:class:`EmbeddrError` when Ray Data is not installed, found without importing it (``import ray`` costs a
    second or more; a rescan with nothing new never connects, so it never needs it)."""
    from importlib.util import find_spec

    try:
        found = all(find_spec(m) is not None for m in ("ray", "pyarrow"))  # ray[data] brings pyarrow
    except (ImportError, ValueError):
        found = False
    if not found:
        raise EmbeddrError('--ray needs Ray Data: pip install "embeddr[ray]"')


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise EmbeddrError('--ray needs Ray Data: pip install "embeddr[ray]"') from None
    return ray


@contextmanager
def connected(address: str, *, quiet: bool = True):
    """Ray, connected to ``address`` for the duration of the block (disconnected after, if we connected)."""
    ray = import_ray()
    if ray.is_initialized():  # the caller (a notebook, a test) already connected: use that
        yield ray
        return
    kwargs = dict(logging_level=logging.WARNING, log_to_driver=not quiet)
    try:
        if address == "local":
            # workers import embeddr: on this machine they import the driver's copy (a cluster's nodes need it installed)
            src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}}
            ray.init(include_dashboard=False, runtime_env=env, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except Exception as exc:
        raise EmbeddrError(f"--ray {address}: cannot connect to Ray ({type(exc).__name__}: {exc})") from None
    try:
        if quiet:
            ray.data.DataContext.get_current().enable_progress_bars = False
            logging.getLogger("ray.data").setLevel(logging.WARNING)  # per-dataset INFO lines
        yield ray
    finally:
        ray.shutdown()


def cluster_resources(ray) -> tuple[float, float]:
    """(CPUs, GPUs) of the cluster."""
    res = ray.cluster_resources()
    return float(res.get("CPU", 0)), float(res.get("GPU", 0))
