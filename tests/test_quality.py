"""Quality tooling: eval (md/json/png), tune (CLI), CLIP plumbing through eval, dupes --missed-by."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from embeddr.bench import make_benchmark
from embeddr.cli import app
from embeddr.evaluate import average_precision, evaluate, pr_curve, threshold_for_precision, write_report

from conftest import save_photo

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def small_bench(tmp_path_factory, photo_arrays) -> Path:
    """6 skimage photos x 3 derived variants, 4 other photos as distractors, 4 doc pages."""
    root = tmp_path_factory.mktemp("bench")
    names = sorted(photo_arrays)
    for name in names:
        save_photo(photo_arrays[name], root / "photos" / f"{name}.jpg", long_side=256)
    files = [root / "photos" / f"{n}.jpg" for n in names]
    return make_benchmark(root / "photos", root / "bench", seed=0, per_image=3, doc_pages=4,
                          families=["crop", "recolour", "thumbnail", "reencode", "overlay", "border"],
                          sources=files[:6], distractor_files=files[6:])


def test_metric_helpers():
    label = np.array([True, True, False, True, False])
    score = np.array([0.9, 0.8, 0.7, 0.6, 0.1], np.float32)
    thr, p, r = pr_curve(label, score, n_positives=4)  # one positive never scored
    assert list(np.round(r, 2)) == [0.25, 0.5, 0.5, 0.75, 0.75]
    assert average_precision(p, r) == pytest.approx(0.25 + 0.25 + 0.25 * 0.75)
    assert threshold_for_precision(label, score, 0.99, 4) == (pytest.approx(0.8), 1.0, 0.5)


def test_eval_small_benchmark_sane_and_writes_outputs(small_bench, tmp_path):
    report = evaluate(small_bench, ["sscd-distilled", "phash"], workdir=tmp_path / "work", workers=0)
    d = report.as_dict()
    assert d["positive_pairs"] == 6 * 6  # 6 groups of 4 files
    by = {e["detector"]: e for e in d["detectors"]}
    sscd = by["sscd-distilled"]["scores"]
    for name in ("raw", "normalized"):
        assert 0.8 <= sscd[name]["ap"] <= 1.0
        at = sscd[name]["at_threshold"]
        assert at["tp"] + at["fn"] == 36 and 0 <= at["precision"] <= 1 and 0 <= at["recall"] <= 1
        assert set(at["per_family"]) <= {"crop", "recolour", "thumbnail", "reencode", "overlay", "border"}
    assert by["sscd-distilled"]["pipeline"]["recall"] >= 0.8
    assert by["phash"]["scores"]["raw"]["at_threshold"]["per_family"]["thumbnail"]["recall"] == 1.0
    paths = write_report(report, tmp_path / "out")
    md = paths["markdown"].read_text()
    assert "| sscd-distilled | normalized* |" in md and "| phash | raw* |" in md
    assert json.loads(paths["json"].read_text())["detectors"][0]["detector"] == "sscd-distilled"
    for key in ("pr_curves", "histograms"):
        assert paths[key].read_bytes()[:8] == PNG_MAGIC


def _tiny_clip_preset(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    arch = folder / "tiny-clip-test.json"
    arch.write_text(json.dumps({
        "embed_dim": 32,
        "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 1000, "width": 32, "heads": 2, "layers": 1},
    }))
    (folder / "tiny-clip.toml").write_text(f"""
name = "tiny-clip"
backend = "open_clip"
architecture = "{arch.as_posix()}"
description = "tiny random-init CLIP (tests: plumbing only)"
dim = 32
input_size = 64
resize = "shortest"
mean = [0.48145466, 0.4578275, 0.40821073]
std = [0.26862954, 0.26130258, 0.27577711]

[weights]
random_init = true

[threshold]
value = 0.9
provenance = "provisional: random weights"
provisional = true
""")
    return folder


def test_clip_path_runs_through_eval_cli(small_bench, tmp_path, runner, monkeypatch):
    monkeypatch.setenv("EMBEDDR_MODELS", str(_tiny_clip_preset(tmp_path / "models")))
    out = tmp_path / "eval"
    result = runner.invoke(app, ["eval", str(small_bench), "--model", "tiny-clip", "--baselines", "dhash",
                                 "--out", str(out), "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "| tiny-clip | raw* |" in result.output
    data = json.loads((out / "report.json").read_text())
    assert [e["detector"] for e in data["detectors"]] == ["tiny-clip", "dhash"]
    assert data["detectors"][0]["threshold_provisional"] is True
    assert (out / "pr_curves.png").read_bytes()[:8] == PNG_MAGIC


def test_clip_state_dict_checkpoint_gives_same_vectors(tmp_path, monkeypatch, photo_arrays):
    import torch

    from embeddr.decode import fit
    from embeddr.encoders import load_encoder
    from embeddr.presets import get_preset

    monkeypatch.setenv("EMBEDDR_MODELS", str(_tiny_clip_preset(tmp_path / "models")))
    preset = get_preset("tiny-clip")
    first = load_encoder(preset, device="cpu")
    ckpt = tmp_path / "tiny.pt"
    torch.save(first.model.state_dict(), ckpt)
    again = load_encoder(preset, device="cpu", checkpoint=ckpt)
    batch = np.stack([fit(Image.fromarray(photo_arrays[n]), 64, "shortest") for n in ("astronaut", "coffee", "rocket")])
    np.testing.assert_allclose(first.encode(batch), again.encode(batch), atol=1e-5)
    fresh = load_encoder(preset, device="cpu")  # other random weights: other vectors
    assert not np.allclose(fresh.encode(batch), first.encode(batch), atol=1e-3)


def test_tune_cli_prints_threshold_and_writes_plots(photo_dir, tmp_path, runner):
    out = tmp_path / "tune"
    result = runner.invoke(app, ["tune", str(photo_dir), "--precision", "0.99", "--sample", "5", "--per-image", "3",
                                 "--out", str(out), "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("threshold  ")
    threshold = float(result.output.split()[1])
    assert -1.0 <= threshold <= 1.0
    assert "estimated  precision" in result.output
    data = json.loads((out / "tune.json").read_text())
    assert data["positives"] == 5 * 6 and data["precision"] >= 0.99
    for name in ("pr_curve.png", "histogram.png"):
        assert (out / name).read_bytes()[:8] == PNG_MAGIC


def test_tune_sets_aside_duplicates_the_folder_already_holds(photo_dir, tmp_path):
    """A folder that already holds a copy of one of its photos: that pair is not a 'non-duplicate', so it
    must not drive the threshold up; it is set aside and counted."""
    from embeddr.jobs import tune

    img = Image.open(photo_dir / "coffee.jpg")
    img.resize((img.width // 2, img.height // 2)).save(photo_dir / "coffee_small_copy.jpg", quality=88)
    result = tune(photo_dir, precision=0.99, sample=4, per_image=3, seed=1, workers=0)
    assert result.set_aside >= 1
    assert result.threshold is not None and result.threshold < 0.9  # not pushed up to the copy's score
    assert result.precision >= 0.99 and result.recall >= 0.9


def test_tune_with_labelled_pairs(photo_dir, tmp_path, runner):
    img = Image.open(photo_dir / "chelsea.jpg")
    img.crop((20, 10, img.width - 30, img.height - 5)).save(photo_dir / "chelsea_crop.jpg", quality=85)
    img.resize((img.width // 2, img.height // 2)).save(photo_dir / "chelsea_small.png")
    pairs = tmp_path / "pairs.csv"
    with open(pairs, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["a", "b", "label"])
        w.writerow([photo_dir / "chelsea.jpg", photo_dir / "chelsea_crop.jpg", "dup"])
        w.writerow([photo_dir / "chelsea.jpg", photo_dir / "chelsea_small.png", "1"])
        w.writerow([photo_dir / "chelsea.jpg", photo_dir / "coffee.jpg", "not"])
        w.writerow([photo_dir / "rocket.jpg", photo_dir / "astronaut.jpg", "0"])
    result = runner.invoke(app, ["tune", str(photo_dir), "--pairs", str(pairs), "--out", str(tmp_path / "t"),
                                 "--workers", "0", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["positives"] == 2 and data["negatives"] == 2 and data["recall"] == 1.0
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b,label\nx.jpg,y.jpg,maybe\n")
    result = runner.invoke(app, ["tune", str(photo_dir), "--pairs", str(bad)])
    assert result.exit_code == 2 and "label" in result.output


def test_dupes_missed_by_phash_lists_only_what_the_hash_misses(photo_dir, tmp_path, runner):
    img = Image.open(photo_dir / "astronaut.jpg")
    w, h = img.size
    img.crop((int(w * 0.25), int(h * 0.2), w, h)).save(photo_dir / "astronaut_crop.jpg", quality=90)  # pHash misses
    img.resize((w // 2, h // 2)).save(photo_dir / "astronaut_thumb.jpg", quality=90)  # pHash finds
    shutil.copy(photo_dir / "coffee.jpg", photo_dir / "coffee_copy.jpg")  # exact: never listed
    db = tmp_path / "c.db"
    assert runner.invoke(app, ["scan", str(photo_dir), "--db", str(db), "--quiet", "--workers", "0"]).exit_code == 0
    result = runner.invoke(app, ["dupes", "--db", str(db), "--missed-by", "phash", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    pairs = {(Path(p["a"]).name, Path(p["b"]).name) for p in data["pairs"]}
    assert ("astronaut.jpg", "astronaut_crop.jpg") in pairs
    assert ("astronaut.jpg", "astronaut_thumb.jpg") not in pairs
    assert not any("coffee" in a for a, _ in pairs)
    assert data["missed_by"] == "phash"


def _holdout_sample_eval(realimages, tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from make_realimages_bench import plan_split, read_manifest

    sources, distractors, _ = plan_split(read_manifest(realimages), "holdout")
    truth = make_benchmark(realimages, tmp_path / "bench", seed=3, per_image=3, doc_pages=20,
                           sources=[realimages / p for p in sources[::2]],
                           distractor_files=[realimages / p for p in distractors[::2]])
    report = evaluate(truth, "sscd-distilled", workdir=tmp_path / "work", workers=0)
    return report.as_dict()["detectors"][0]


@pytest.fixture(scope="module")
def holdout_eval(realimages, tmp_path_factory):
    return _holdout_sample_eval(realimages, tmp_path_factory.mktemp("holdout"))


@pytest.mark.realdata
def test_sscd_distilled_shipped_defaults_on_holdout_sample(holdout_eval):
    """Shipped defaults (no flag beyond the model) on a hold-out sample -- every 2nd photo of the split (84)
    x 3 variants (seed 3, not the calibration seed), every 2nd hard negative and 20 pages of one synthetic
    document: recall >= 0.95, every family >= 0.9, no false pair among the document pages."""
    entry = holdout_eval
    pipe, at = entry["pipeline"], entry["scores"]["normalized"]["at_threshold"]
    assert entry["default_score"] == "normalized"
    assert pipe["recall"] >= 0.95
    assert at["false_pairs"]["doc_page"] == 0 and at["false_pairs"]["other"] == 0
    assert all(f["recall"] >= 0.9 for f in at["per_family"].values()), at["per_family"]


@pytest.mark.realdata
def test_holdout_sample_hard_negatives_are_not_paired(holdout_eval):
    """The hold-out sample's hard negatives (chessboard shots of one scene, spiral galaxies, look-alikes that the
    model scores like copies and the rank-32 background does not correct) are kept apart: precision >= 0.99.
    Until 2026-11-30 a known limit (0.944 with the second look, 0.854 without); the scene check
    (Verifier.scene_refutes) parts the chessboard shots, whose pairs scored above the band."""
    pipe = holdout_eval["pipeline"]
    print("hold-out sample precision", pipe["precision"], "recall", pipe["recall"])
    assert pipe["precision"] >= 0.99


def test_tune_reuses_the_vectors_a_catalog_already_holds(photo_dir, tmp_path):
    """tune --db: the folder's files the catalog holds unchanged are not embedded again; same result."""
    from embeddr import api
    from embeddr.jobs import tune

    db = tmp_path / "photos.db"
    api.scan([photo_dir], db=db, workers=0)
    fresh = tune(photo_dir, precision=0.99, sample=4, per_image=2, seed=3, workers=0)
    again = tune(photo_dir, precision=0.99, sample=4, per_image=2, seed=3, workers=0, reuse=db)
    assert fresh.reused == 0 and again.reused == len(list(photo_dir.iterdir()))  # 4 originals + 6 others
    assert again.threshold == pytest.approx(fresh.threshold, abs=1e-5)
    assert (again.positives, again.negatives) == (fresh.positives, fresh.negatives)
    other = tmp_path / "phash.db"
    api.scan([photo_dir], db=other, workers=0, model="phash")
    assert tune(photo_dir, precision=0.99, sample=2, per_image=1, seed=3, workers=0, reuse=other).reused == 0
