"""Perceptual hashes (imagehash) as encoders, so hashes and embeddings share one pipeline.

A 64-bit hash becomes a 64-d vector of +-1/8: the inner product of two such vectors is
``1 - 2 * hamming / 64``, so FAISS, thresholds and grouping work unchanged and a
threshold of 0.6875 is a Hamming distance of 10.
"""

from __future__ import annotations

import imagehash
import numpy as np
from PIL import Image

from .base import Encoder

_FUNCS = {"phash": imagehash.phash, "dhash": imagehash.dhash}


def bits_to_vector(bits: np.ndarray) -> np.ndarray:
    bits = np.asarray(bits, dtype=bool).reshape(len(bits), -1)
    return (np.where(bits, 1.0, -1.0) / np.sqrt(bits.shape[1])).astype(np.float32)


class HashEncoder(Encoder):
    def _encode(self, batch: np.ndarray) -> np.ndarray:
        func = _FUNCS[self.preset.backend]
        bits = np.stack([func(Image.fromarray(img)).hash.flatten() for img in batch])
        return bits_to_vector(bits)
