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

__all__ = [
    "DEFAULT_MODEL", "Catalog", "CatalogError", "DecodeError", "EmbeddrError", "ModelMismatch", "ModelUnavailable",
    "PolicyError", "PresetNotFound", "find_duplicates", "get_preset", "info", "list_presets", "load_encoder",
    "open_catalog", "scan",
]
