"""Exceptions raised by the embeddr library.

Library code raises these narrow exceptions; the CLI (and the HTTP service) turn them into
one clear line and an exit code (or a status and a JSON error) at the edge.
"""

from __future__ import annotations


class EmbeddrError(Exception):
    """Base class of every error embeddr raises on purpose."""


class PresetNotFound(EmbeddrError):
    """A model preset name that is not in models/."""


class ModelUnavailable(EmbeddrError):
    """Weights for a model cannot be had (offline, not installed, bad checkpoint)."""


class DecodeError(EmbeddrError):
    """One file could not be read or decoded as an image; carries the path and reason."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class CatalogError(EmbeddrError):
    """The catalog is missing, corrupt, or was built with another model."""


class ModelMismatch(CatalogError):
    """A command asked for a model other than the one the catalog was built with."""


class PolicyError(EmbeddrError):
    """A retention policy or action that is not valid."""


class ReviewError(EmbeddrError):
    """A review report that cannot be written, or a verdicts file that is not valid."""


class JournalError(EmbeddrError):
    """An action journal that cannot be written, read or undone."""


class CatalogBusy(CatalogError):
    """Another process is writing to the catalog (its writer lock is held)."""
