"""embeddr: near-duplicate image detection with deep embeddings, a catalog and a FAISS index.

The pipeline runs one way: discover -> decode -> encode -> store/index -> match -> score -> group ->
choose canonical -> act/report. Whole jobs are in :mod:`embeddr.jobs`, the public API in
:mod:`embeddr.api`; both are re-exported here, loaded on first use, so ``import embeddr.<stage>``
never loads the jobs or the API above it (``import embeddr`` itself stays light).
"""

__version__ = "0.1.0"

# name -> the module that defines it (imported on first use)
_LAZY = {
    "DEFAULT_MODEL": "presets", "get_preset": "presets", "list_presets": "presets",
    "Catalog": "catalog", "load_encoder": "encoders",
    "CatalogError": "errors", "DecodeError": "errors", "EmbeddrError": "errors", "ModelMismatch": "errors",
    "ModelUnavailable": "errors", "PolicyError": "errors", "PresetNotFound": "errors",
    "scan": "api", "find_duplicates": "api", "info": "api", "open_catalog": "api", "missed_by": "api",
    "apply_duplicates": "api",
    "Policy": "policy", "decide": "policy",
    "undo": "actions",
    "write_html_report": "review", "import_verdicts": "review",
    "Gate": "ingest", "Upload": "ingest",
    "make_benchmark": "bench",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # cache: the next access is a plain attribute
        return value
    raise AttributeError(f"module 'embeddr' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY})


__all__ = sorted(_LAZY)
