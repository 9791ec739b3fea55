"""The one interface every encoder implements."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..presets import Preset


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@dataclass
class Encoder:
    """Turns a batch of images into L2-normalised float32 vectors.

    Subclasses implement :meth:`_encode`. Input: a uint8 array (N, S, S, 3), RGB, already resized
    by :func:`embeddr.decode.fit` to ``input_size`` with ``resize`` mode (the decode workers do
    that). Output: float32 (N, dim), unit length.
    """

    preset: Preset
    device: str = "cpu"
    precision: str = "fp32"
    calls: int = field(default=0, init=False)  # batches encoded (tests count these)
    images: int = field(default=0, init=False)  # images encoded

    @property
    def name(self) -> str:
        return self.preset.name

    @property
    def dim(self) -> int:
        return self.preset.dim

    @property
    def input_size(self) -> int:
        return self.preset.input_size

    @property
    def resize(self) -> str:
        return self.preset.resize

    def encode(self, batch: np.ndarray) -> np.ndarray:
        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
            raise ValueError(f"encoder {self.name}: expected uint8 (N, H, W, 3), got {batch.dtype} {batch.shape}")
        if len(batch) == 0:
            return np.zeros((0, self.dim), np.float32)
        out = l2_normalize(self._encode(batch))
        if out.shape != (len(batch), self.dim):
            raise ValueError(f"encoder {self.name}: produced {out.shape}, preset says dim {self.dim}")
        self.calls += 1
        self.images += len(batch)
        return out

    def _encode(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def worker_factory(self, images: int = 0):
        """A picklable callable that builds an equivalent one-thread encoder inside a scan's decode worker
        process (for a scan of ``images`` images), or None when this encoder must stay in the main process
        (GPU, torch models)."""
        return None

    def describe(self) -> str:
        return f"{self.name} ({self.preset.backend}, {self.dim}-d, {self.input_size}px, {self.device}, {self.precision})"
