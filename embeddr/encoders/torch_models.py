"""PyTorch encoders: any open_clip architecture (+ pretrained tag or local checkpoint), and
TorchScript files such as Meta's original SSCD release.

Weights are resolved in this order: ``--checkpoint PATH`` (a local file), then the preset's
source (open_clip pretrained tag via the Hugging Face hub, or a URL into the torch hub cache).
When none can be had the error names ``--checkpoint`` and the presets that work offline.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from ..errors import ModelUnavailable
from ..presets import Preset
from .base import Encoder

OFFLINE_HINT = "presets that work offline: sscd-distilled, sscd, phash, dhash"


def _dtype(precision: str):
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)


class TorchEncoder(Encoder):
    """Shared batch path: uint8 NHWC -> device -> float, normalise -> model -> vectors."""

    def __init__(self, preset: Preset, model, device: str, precision: str):
        super().__init__(preset=preset, device=device, precision=precision)
        import torch

        self.torch = torch
        self.model = model.to(device=device, dtype=_dtype(precision)).eval()
        # On CUDA the convolutions run channels-last (the batch arrives NHWC already): Meta's SSCD ResNet-50 in
        # fp16 on an H200 went from 4,953 to 7,772 images/s (docs/benchmarks.md, "GPU"). Linear layers and
        # transformers are unaffected.
        self.channels_last = str(device).startswith("cuda")
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        mean = preset.mean or (0.485, 0.456, 0.406)
        std = preset.std or (0.229, 0.224, 0.225)
        self._mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255.0
        self._std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255.0

    def _forward(self, x):
        return self.model(x)

    def _encode(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True)
            x = x.permute(0, 3, 1, 2).float()
            x = ((x - self._mean) / self._std).to(_dtype(self.precision))
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = self._forward(x)
            y = torch.nn.functional.normalize(y.float(), dim=-1)
            return y.cpu().numpy()


class OpenClipEncoder(TorchEncoder):
    def _forward(self, x):
        return self.model.encode_image(x)


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """One quick TCP connect, so an offline machine fails in seconds, not after minutes of retries."""
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hub_mode():
    """Use only the local hub cache when the hub cannot be reached; keep its retry logs quiet."""
    import logging

    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover
        yield True
        return
    previous = constants.HF_HUB_OFFLINE
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    root_level = logging.getLogger().level
    online = hub_reachable()
    if not online:
        constants.HF_HUB_OFFLINE = True
    logging.getLogger().setLevel(logging.CRITICAL)  # open_clip logs download failures at ERROR on root
    try:
        yield online
    finally:
        constants.HF_HUB_OFFLINE = previous
        hub_logger.setLevel(level)
        logging.getLogger().setLevel(root_level)


def _register_config(architecture: str) -> str:
    """An architecture may be a path to an open_clip JSON config (tests, custom models)."""
    import open_clip

    path = Path(architecture)
    if path.suffix == ".json" and path.is_file():
        open_clip.add_model_config(path)
        return path.stem
    return architecture


def _alnum(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def maybe_cached(tag: str) -> bool:
    """Whether the Hugging Face cache holds a model repo that could be ``tag``'s weights.

    open_clip names its hub repos after the pretrained tag (``laion2b_s34b_b79k`` ->
    ``laion/CLIP-ViT-B-32-laion2B-s34B-b79K``), so a repo whose name contains the tag's letters and
    digits may be it. Cheap: no open_clip import (several seconds), only a directory listing.
    """
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover
        return True  # cannot tell: let open_clip look
    cache = Path(constants.HF_HUB_CACHE)
    want = _alnum(tag)
    try:
        return any(want in _alnum(entry.name) for entry in cache.iterdir() if entry.name.startswith("models--"))
    except OSError:
        return False


def _offline_error(preset: Preset, arch: str, tag: str | None, reason: str) -> ModelUnavailable:
    return ModelUnavailable(
        f"cannot get the weights of {preset.name} ({arch}, pretrained={tag}) from the Hugging Face hub "
        f"or its cache: {reason}. Download them once where the hub is reachable (they are then cached), "
        f"or pass --checkpoint PATH to a local open_clip checkpoint, or use one of the {OFFLINE_HINT}")


def check_open_clip_weights(preset: Preset, checkpoint: str | os.PathLike | None) -> None:
    """Fail at once, before torch and open_clip are imported (seconds), when the weights cannot be had:
    no --checkpoint, the hub unreachable, and nothing like them in the local Hugging Face cache."""
    if (checkpoint is None and not preset.weights.random_init and preset.weights.pretrained
            and not maybe_cached(preset.weights.pretrained) and not hub_reachable()):
        raise _offline_error(preset, preset.architecture or "?", preset.weights.pretrained,
                             "the hub is unreachable (offline?) and they are not in the local cache")


def build_open_clip(preset: Preset, *, checkpoint: str | os.PathLike | None, device: str, precision: str) -> OpenClipEncoder:
    check_open_clip_weights(preset, checkpoint)
    import open_clip

    if not preset.architecture:
        raise ModelUnavailable(f"preset {preset.name}: an open_clip preset needs 'architecture'")
    arch = _register_config(preset.architecture)
    if arch not in open_clip.list_models():
        raise ModelUnavailable(f"open_clip has no architecture {arch!r}; see open_clip.list_models()")
    if checkpoint is not None:
        if not Path(checkpoint).is_file():
            raise ModelUnavailable(f"--checkpoint {checkpoint}: no such file")
        try:
            model = open_clip.create_model(arch, pretrained=str(checkpoint), device="cpu")
        except Exception as exc:
            raise ModelUnavailable(f"--checkpoint {checkpoint}: not a valid {arch} checkpoint ({type(exc).__name__}: {exc})") from None
    elif preset.weights.random_init:
        model = open_clip.create_model(arch, pretrained=None, device="cpu")
    else:
        tag = preset.weights.pretrained
        online = True
        try:
            with _hub_mode() as online:
                model = open_clip.create_model(arch, pretrained=tag, device="cpu")
        except Exception as exc:
            if not online:
                reason = "the hub is unreachable (offline?) and they are not in the local cache"
            else:
                reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise _offline_error(preset, arch, tag, reason) from None
    return OpenClipEncoder(preset, model, device, precision)


def build_torchscript(preset: Preset, *, checkpoint: str | os.PathLike | None, device: str, precision: str) -> TorchEncoder:
    import torch

    path = Path(checkpoint) if checkpoint is not None else None
    if path is None and preset.weights.url:
        cache = Path(os.environ.get("EMBEDDR_CACHE", Path(torch.hub.get_dir()) / "embeddr"))
        path = cache / Path(preset.weights.url).name
        if not path.is_file():
            try:
                cache.mkdir(parents=True, exist_ok=True)
                torch.hub.download_url_to_file(preset.weights.url, str(path), hash_prefix=preset.weights.sha256, progress=False)
            except Exception as exc:
                raise ModelUnavailable(
                    f"cannot download the weights of {preset.name} from {preset.weights.url} ({type(exc).__name__}). "
                    f"Download the file where the web is reachable and pass --checkpoint PATH (or put it at {path}), "
                    f"or use one of the {OFFLINE_HINT}"
                ) from None
    if path is None or not path.is_file():
        raise ModelUnavailable(f"{preset.name}: no TorchScript file; pass --checkpoint PATH")
    try:
        model = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ModelUnavailable(f"{path}: not a loadable TorchScript file ({type(exc).__name__}: {exc})") from None
    return TorchEncoder(preset, model, device, precision)
