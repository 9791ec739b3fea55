"""Encoders: build one from a preset (or a model file) with :func:`load_encoder`.

Every encoder has the same small interface (:class:`~embeddr.encoders.base.Encoder`):
``name``, ``dim``, ``input_size``, ``resize`` and ``encode(uint8 NHWC batch) -> (N, dim)``
L2-normalised float32 vectors.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from ..devices import select_device, select_precision
from ..catalog import Catalog
from ..errors import CatalogError, ModelUnavailable
from ..presets import Preset, Threshold, Weights, get_preset
from .base import Encoder, l2_normalize

TORCHSCRIPT_INPUT_SIZE = 288  # a user TorchScript file does not say its input size: SSCD's 288 (README: models)

__all__ = ["Encoder", "catalog_preset", "l2_normalize", "load_encoder", "resolve_preset"]


def resolve_preset(model: str | Preset) -> Preset:
    """A preset name, a Preset, or a path to a ``.onnx`` / TorchScript ``.pt`` file."""
    if isinstance(model, Preset):
        return model
    path = Path(model)
    if path.suffix.lower() == ".onnx" and path.is_file():
        from .onnx import onnx_shape

        dim, size = onnx_shape(path)  # the graph's fixed input size, else 224
        return Preset(
            name=str(path.resolve()), backend="onnx", description=f"user ONNX model {path.name}",
            dim=dim, input_size=size, weights=Weights(),
            threshold=Threshold(0.7, "provisional: user model, not calibrated; run `embeddr tune`", provisional=True),
        )
    if path.suffix.lower() in (".pt", ".pth", ".torchscript") and path.is_file():
        return Preset(
            name=str(path.resolve()), backend="torchscript", description=f"user TorchScript model {path.name}",
            dim=0, input_size=TORCHSCRIPT_INPUT_SIZE, weights=Weights(),
            threshold=Threshold(0.7, "provisional: user model, not calibrated; run `embeddr tune`", provisional=True),
        )
    return get_preset(model)


def catalog_preset(catalog: Catalog, model: str | Preset | None = None) -> Preset:
    """The preset of the catalog's model; ``model`` (if given) must match it (else :class:`ModelMismatch`)."""
    name = catalog.model
    if name is None:
        raise CatalogError(f"{catalog.path} has no scanned images yet: run `embeddr scan DIR --db {catalog.path}`")
    if model is not None:
        wanted = resolve_preset(model)
        if wanted.name != name:
            catalog.bind_model(wanted.name, wanted.dim)  # raises ModelMismatch
    preset = resolve_preset(name)
    if catalog.dim is not None and preset.dim != catalog.dim:
        raise CatalogError(f"{catalog.path}: meta 'dim' is {catalog.dim} but model {name} makes {preset.dim}-d vectors: "
                           "the catalog is damaged (restore it, or scan into a new --db)")
    return preset


def _onnx_auto_device() -> str:
    import onnxruntime as ort

    return "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"


def load_encoder(model: str | Preset = "sscd-distilled", *, device: str = "auto", precision: str = "auto",
                 checkpoint: str | os.PathLike | None = None, threads: int | None = None) -> Encoder:
    """Build the encoder for ``model`` on ``device`` (auto: cuda -> mps -> cpu).

    Raises :class:`~embeddr.errors.ModelUnavailable` with the way out when weights cannot be had.
    """
    preset = resolve_preset(model)
    if preset.is_hash:
        from .hashes import HashEncoder

        return HashEncoder(preset=preset, device="cpu", precision="fp32")
    if preset.backend == "open_clip":
        from .torch_models import check_open_clip_weights

        check_open_clip_weights(preset, checkpoint)  # offline and not cached: fail before importing torch
    if preset.backend == "onnx":
        # onnxruntime, not torch, decides whether CUDA is usable: select_device only checks the name here
        explicit = (device or "auto").lower() not in ("auto", "")
        dev = select_device(device, cuda=True, mps=False) if explicit else _onnx_auto_device()
        if dev == "mps":  # pragma: no cover - select_device refuses it above (mps=False)
            dev = "cpu"
        prec = select_precision(dev, precision)
        from .onnx import OnnxEncoder, resolve_package_weights

        if checkpoint is not None:
            path = Path(checkpoint)
            if not path.is_file():
                raise ModelUnavailable(f"--checkpoint {checkpoint}: no such file")
        elif preset.weights.package:
            path = resolve_package_weights(preset.weights.package)
        elif Path(preset.name).is_file():
            path = Path(preset.name)
        else:
            raise ModelUnavailable(f"{preset.name}: no ONNX file; pass --checkpoint PATH")
        return OnnxEncoder(preset, path, device=dev, precision=prec, threads=threads, explicit_device=explicit,
                           explicit_precision=(precision or "auto").lower() != "auto")
    dev = select_device(device)
    prec = select_precision(dev, precision)
    if preset.backend == "open_clip":
        from .torch_models import build_open_clip

        return build_open_clip(preset, checkpoint=checkpoint, device=dev, precision=prec)
    if preset.backend == "torchscript":
        from .torch_models import build_torchscript

        if Path(preset.name).is_file() and checkpoint is None:
            checkpoint = preset.name
        encoder = build_torchscript(preset, checkpoint=checkpoint, device=dev, precision=prec)
        if encoder.preset.dim == 0:  # user file: learn the dimension from one forward pass
            import numpy as np

            probe = encoder._encode(np.zeros((1, preset.input_size, preset.input_size, 3), np.uint8))
            encoder.preset = replace(preset, dim=int(probe.shape[-1]))
        return encoder
    raise ModelUnavailable(f"backend {preset.backend!r} is not supported")  # pragma: no cover
