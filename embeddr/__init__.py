"""embeddr: near-duplicate image detection with deep embeddings, a catalog and a FAISS index.

The pipeline runs one way: discover -> decode -> encode -> store/index -> match -> group ->
choose canonical -> act/report. The public API is in :mod:`embeddr.api` and re-exported here.
"""

__version__ = "0.1.0"

from .api import DEFAULT_MODEL, find_duplicates, info, open_catalog, scan  # noqa: E402
from .catalog import Catalog  # noqa: E402
from .encoders import load_encoder  # noqa: E402
from .errors import (  # noqa: E402
    CatalogError,
    DecodeError,
    EmbeddrError,
    ModelMismatch,
    ModelUnavailable,
    PolicyError,
    PresetNotFound,
)
from .presets import get_preset, list_presets  # noqa: E402

# The later stages, loaded on first use so `import embeddr` stays light.
_LAZY = {  # names only: the modules themselves (embeddr.review, embeddr.tune, ...) are imported as usual
    "Policy": "policy", "decide": "policy",
    "apply_duplicates": "actions", "undo": "actions",
    "write_html_report": "review", "import_verdicts": "review",
    "Gate": "ingest", "Upload": "ingest",
    "make_benchmark": "bench",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'embeddr' has no attribute {name!r}")


__all__ = [*_LAZY, 
    "DEFAULT_MODEL", "Catalog", "CatalogError", "DecodeError", "EmbeddrError", "ModelMismatch", "ModelUnavailable",
    "PolicyError", "PresetNotFound", "find_duplicates", "get_preset", "info", "list_presets", "load_encoder",
    "open_catalog", "scan",
]
