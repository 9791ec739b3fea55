"""Benchmark maker: derive near-duplicates from a folder of images, add distractors, write ground truth.

>>> from embeddr.bench import make_benchmark, read_truth, truth_pairs, split_groups
>>> truth = make_benchmark(Path("photos"), Path("/tmp/bench"), seed=0, per_image=4)  # doctest: +SKIP
>>> pairs = truth_pairs(read_truth(truth))                                           # doctest: +SKIP
"""

from .make import (
    NaturalGroup,
    TruthRow,
    list_images,
    make_benchmark,
    make_doc_page,
    pair_family,
    read_truth,
    split_fraction,
    split_groups,
    truth_pairs,
)
from .transforms import DEFAULT_FAMILIES, FAMILIES, FAMILY_NAMES, SaveSpec, Variant, apply_family

__all__ = [
    "DEFAULT_FAMILIES",
    "FAMILIES",
    "FAMILY_NAMES",
    "NaturalGroup",
    "SaveSpec",
    "TruthRow",
    "Variant",
    "apply_family",
    "list_images",
    "make_benchmark",
    "make_doc_page",
    "pair_family",
    "read_truth",
    "split_fraction",
    "split_groups",
    "truth_pairs",
]
