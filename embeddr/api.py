"""embeddr's Python API: what the CLI is a thin layer over.

>>> import embeddr
>>> report = embeddr.scan(["photos/"], db="photos.db", model="sscd-distilled")   # doctest: +SKIP
>>> dupes = embeddr.find_duplicates(db="photos.db")                              # doctest: +SKIP
>>> for group in dupes.groups:                                                    # doctest: +SKIP
...     print([m.path for m in group.members])

Each function opens the catalog it is given (a path or an open :class:`Catalog`). This module is a
facade: the jobs live in :mod:`embeddr.jobs`, the stages below them; nothing in embeddr imports it
except the package's lazy re-exports.
"""

from __future__ import annotations

import os

from .catalog import DEFAULT_DB, Catalog
from .catalog import opened as _opened  # noqa: F401 - kept for callers of the old private name
from .encoders import catalog_preset
from .jobs import CatalogLike, apply_duplicates, find_duplicates, info, missed_by, review, scan, tune
from .pipeline import encoder_threads
from .presets import DEFAULT_MODEL

__all__ = ["DEFAULT_MODEL", "CatalogLike", "apply_duplicates", "catalog_preset", "encoder_threads", "find_duplicates",
           "info", "missed_by", "open_catalog", "review", "scan", "tune"]


def open_catalog(db: str | os.PathLike = DEFAULT_DB, *, create: bool = False) -> Catalog:
    """Open a catalog (``create=False``: it must exist)."""
    return Catalog(db, create=create)
