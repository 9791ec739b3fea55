"""Unit vectors with the structure of a real image collection, for benchmarks and tests of the search.

Uniform random vectors are the easy and unrealistic case (no crowds, no loose copies). :func:`realistic`
mixes, in a seeded shuffle:

* 55 % items in topics of Zipf-like sizes, each topic with its own spread (pairwise cosine ~0.1-0.45);
* 5 % look-alike crowds of 50-600 items (pairwise cosine ~0.6-0.72, above a typical threshold, the
  pages of one document or product shots on white);
* 20 % copies of topic items at cosine 0.97, 0.9, 0.8, 0.7 or 0.65 (re-encodes down to loose crops);
* the rest bursts of 10-30 renditions of one item (cosine 0.75-0.97).

:func:`around` does the same around given seed vectors (real SSCD vectors of photos), so the topics are
real ones.
"""

from __future__ import annotations

import numpy as np


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def toward(base: np.ndarray, cos, rng: np.random.Generator) -> np.ndarray:
    """One vector per row of ``base`` at cosine ``cos`` (scalar or per row) from it, in a random direction."""
    n = rng.standard_normal(base.shape, dtype=np.float32)
    n -= (n * base).sum(1, keepdims=True) * base
    n = unit(n)
    c = np.broadcast_to(np.asarray(cos, np.float32).reshape(-1, 1), (len(base), 1))
    return unit(c * base + np.sqrt(np.maximum(0, 1 - c * c)) * n)


def realistic(n: int, dim: int = 512, seed: int = 0, *, seeds: np.ndarray | None = None) -> np.ndarray:
    """``n`` unit vectors (float32, ``n`` x ``dim``) with real structure (module docstring). ``seeds``: topic
    centres to use (e.g. real image vectors); random ones otherwise."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    n_topics = max(4, n // 400)
    if seeds is not None:
        topics = unit(np.asarray(seeds, np.float32)[rng.integers(0, len(seeds), n_topics)])
        topics = toward(topics, 0.9, rng)  # each real vector seeds topics of its own
    else:
        topics = unit(rng.standard_normal((n_topics, dim), dtype=np.float32))
    weights = 1.0 / np.arange(1, n_topics + 1) ** 0.8
    weights /= weights.sum()
    spread = rng.uniform(0.3, 0.67, n_topics)  # cosine to the topic centre
    n_base = int(n * 0.55)
    topic_of = rng.choice(n_topics, n_base, p=weights)
    for s in range(0, n_base, 65536):
        t = topic_of[s : s + 65536]
        out[s : s + len(t)] = toward(topics[t], spread[t], rng)
    i = n_base
    crowd_left = int(n * 0.05)
    while crowd_left > 0 and i < n:
        m = min(int(rng.integers(50, 601)), crowd_left, n - i)
        centre = toward(topics[rng.integers(n_topics)][None], 0.5, rng)
        out[i : i + m] = toward(np.repeat(centre, m, 0), np.sqrt(rng.uniform(0.6, 0.72)), rng)
        i, crowd_left = i + m, crowd_left - m
    m = min(int(n * 0.2), n - i)
    src = rng.integers(0, n_base, m)
    out[i : i + m] = toward(out[src], rng.choice(np.array([0.97, 0.9, 0.8, 0.7, 0.65], np.float32), m), rng)
    i += m
    while i < n:
        m = min(int(rng.integers(10, 31)), n - i)
        src = out[rng.integers(0, n_base)]
        out[i : i + m] = toward(np.repeat(src[None], m, 0), rng.uniform(0.75, 0.97, m), rng)
        i += m
    return out[rng.permutation(n)]
