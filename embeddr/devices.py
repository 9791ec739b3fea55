"""Device and precision choice: CUDA, then Apple MPS, then CPU; half precision on GPU."""

from __future__ import annotations

from .errors import EmbeddrError

DEVICES = ("auto", "cuda", "mps", "cpu")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - torch broken
        return False


def _mps_available() -> bool:
    try:
        import torch

        return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    except Exception:  # pragma: no cover
        return False


def select_device(requested: str = "auto", *, cuda: bool | None = None, mps: bool | None = None) -> str:
    """Resolve ``requested`` (auto|cuda|cuda:N|mps|cpu) to a device that exists.

    ``cuda`` / ``mps`` override detection (used by tests to exercise the GPU path on a CPU machine).
    An explicit GPU that is not there is an error, never a silent fall back.
    """
    requested = (requested or "auto").lower()
    if requested == "cpu":  # no need to probe for GPUs (which imports torch)
        return "cpu"
    has_cuda = _cuda_available() if cuda is None else cuda
    has_mps = _mps_available() if mps is None else mps
    if requested == "auto":
        return "cuda" if has_cuda else "mps" if has_mps else "cpu"
    if requested.startswith("cuda"):
        if not has_cuda:
            raise EmbeddrError(f"--device {requested}: CUDA is not available here (no GPU, or a CPU-only torch build); use --device cpu or auto")
        return requested
    if requested == "mps":
        if not has_mps:
            raise EmbeddrError("--device mps: Apple MPS is not available here; use --device cpu or auto")
        return "mps"
    if requested == "cpu":
        return "cpu"
    raise EmbeddrError(f"--device {requested!r} is not one of {', '.join(DEVICES)} (or cuda:N)")


def select_precision(device: str, requested: str = "auto") -> str:
    """fp16 on CUDA and MPS by default, fp32 on CPU; an explicit half precision on CPU is refused."""
    requested = (requested or "auto").lower()
    if requested not in PRECISIONS:
        raise EmbeddrError(f"--precision {requested!r} is not one of {', '.join(PRECISIONS)}")
    gpu = device.startswith("cuda") or device == "mps"
    if requested == "auto":
        return "fp16" if gpu else "fp32"
    if requested in ("fp16", "bf16") and not gpu:
        raise EmbeddrError(f"--precision {requested} needs a GPU; on {device} use fp32 (or auto)")
    return requested


def onnx_providers(device: str, available: list[str] | None = None) -> list:
    """onnxruntime execution providers for ``device``: CUDA first when present, CPU always last."""
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    if device.startswith("cuda") and "CUDAExecutionProvider" in available:
        device_id = int(device.split(":")[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]
