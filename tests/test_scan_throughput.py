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


def test_worker_encoding_gives_the_main_process_vectors(encoder, photo_dir, tmp_path):
    """workers=2: the workers encode (worker_encode > 0, the main process encodes nothing); workers=0: the main
    process encodes. Same files, same hashes, same vectors (float tolerance), same counts."""
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
