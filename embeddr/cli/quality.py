"""Quality commands: bench make, eval, tune (issue 3)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import CheckpointOpt, DeviceOpt, ThresholdOpt, precision_target, emit, handle_errors, say, to_json


def register(app: typer.Typer) -> None:
    bench = typer.Typer(name="bench", help="Build labelled near-duplicate benchmarks.\n\nExample: embeddr bench make photos/ /tmp/bench",
                        no_args_is_help=True, rich_markup_mode=None)
    app.add_typer(bench)

    @bench.command("make")
    @handle_errors
    def bench_make(
        src: Annotated[Path, typer.Argument(help="Folder of distinct photos (each becomes an original).")],
        out: Annotated[Path, typer.Argument(help="Output folder (empty, missing, or a previous benchmark).")],
        seed: Annotated[int, typer.Option("--seed", help="Random seed: same inputs and seed give identical files.")] = 0,
        per_image: Annotated[int, typer.Option("--per-image", min=0, help="Derived variants per original (crop, recolour, rescan, thumbnail, reencode, overlay, border, combo, mirror).")] = 4,
        doc_pages: Annotated[int, typer.Option("--doc-pages", min=0, help="Pages of one made-up document added as look-alike non-duplicates.")] = 20,
        distractors: Annotated[Optional[Path], typer.Option("--distractors", help="Folder of other photos added as non-duplicates (hard negatives).")] = None,
        limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="At most this many originals.")] = None,
    ):
        """Derive labelled near-duplicates from a folder of photos and write OUT/truth.csv.

        truth.csv has path,group,family,role: files of one group are duplicates of each other;
        distractors and document pages are each their own group. Feed it to `embeddr eval`.

        Example: embeddr bench make ~/photos/sample /tmp/bench --seed 1 --per-image 4
        """
        from ..bench import make_benchmark

        try:
            truth = make_benchmark(src, out, seed=seed, per_image=per_image, doc_pages=doc_pages,
                                   distractors=distractors, limit=limit)
        except (ValueError, FileExistsError) as exc:
            from ..errors import EmbeddrError

            raise EmbeddrError(str(exc)) from None
        emit(str(truth), None)

    @app.command("eval")
    @handle_errors
    def eval_cmd(
        truth: Annotated[Path, typer.Argument(help="A truth.csv from `embeddr bench make`.")],
        model: Annotated[str, typer.Option("--model", "-m", help="Detector: a preset (see `embeddr models`), a .onnx/TorchScript file.")] = "sscd-distilled",
        baselines: Annotated[str, typer.Option("--baselines", help="Comma-separated presets measured in the same run ('' for none).")] = "phash,dhash",
        threshold: ThresholdOpt = None,
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder for report.md, report.json, pr_curves.png, histograms.png.")] = Path("eval-report"),
        k: Annotated[int, typer.Option("--k", min=1, help="Nearest non-duplicates scored per file (hard negatives).")] = 30,
        device: DeviceOpt = "auto",
        checkpoint: CheckpointOpt = None,
        workdir: Annotated[Optional[Path], typer.Option("--workdir", help="Keep one catalog per detector here (re-runs reuse vectors). Default: OUT/catalogs.")] = None,
        workers: Annotated[Optional[int], typer.Option("--workers", "-w", min=0, help="Decode worker processes.")] = None,
        json_out: Annotated[bool, typer.Option("--json", help="Print report.json instead of the Markdown table.")] = False,
    ):
        """Measure a detector and baselines on a labelled benchmark: AP, recall at precision >= 0.99,
        precision/recall/F1 at the threshold, recall per family, false pairs among hard negatives.

        Every positive pair and each file's K nearest non-duplicates are scored, raw and normalised
        ('*' marks the preset's default score). Writes report.md, report.json and PNG plots to OUT.

        Example: embeddr eval /tmp/bench/truth.csv --model sscd-distilled --baselines phash,dhash --out /tmp/eval
        """
        from ..evaluate import evaluate, markdown, write_report

        detectors = [model] + [b.strip() for b in baselines.split(",") if b.strip()]
        report = evaluate(truth, detectors, threshold=threshold, workdir=workdir or out / "catalogs", k=k, workers=workers,
                          device=device, checkpoint=checkpoint,
                          progress=say)
        paths = write_report(report, out)
        emit(to_json(report.as_dict()) if json_out else markdown(report), None)
        say("wrote " + ", ".join(str(p) for p in paths.values()))

    @app.command()
    @handle_errors
    def tune(
        folder: Annotated[Path, typer.Argument(help="Your collection (images, walked recursively).")],
        precision: Annotated[float, typer.Option("--precision", "-p", callback=precision_target, help="Target precision over pairs, in (0, 1].")] = 0.99,
        model: Annotated[Optional[str], typer.Option("--model", "-m", help="Model preset. Default: sscd-distilled.")] = None,
        sample: Annotated[int, typer.Option("--sample", "-n", min=1, help="Images that get derived duplicates (the rest, up to --negatives, are non-duplicates).")] = 200,
        negatives: Annotated[int, typer.Option("--negatives", min=0, help="At most this many other images used as non-duplicates.")] = 2000,
        per_image: Annotated[int, typer.Option("--per-image", min=1, help="Derived duplicates per sampled image.")] = 4,
        seed: Annotated[int, typer.Option("--seed", help="Sampling and transform seed.")] = 0,
        pairs: Annotated[Optional[Path], typer.Option("--pairs", help="CSV of your own labelled pairs (a,b,label with 1/0 or dup/not) instead of derived ones.")] = None,
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the plots (pr_curve.png, histogram.png), tune.json and the derived benchmark.")] = Path("tune-report"),
        workers: Annotated[Optional[int], typer.Option("--workers", "-w", min=0, help="Decode worker processes.")] = None,
        json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
        db: Annotated[Path, typer.Option("--db", envvar="EMBEDDR_DB", help="A catalog FOLDER was scanned into: the vectors it holds for unchanged files (same model) are reused instead of embedding them again. Ignored when absent or of another model.")] = Path("embeddr.db"),
    ):
        """Pick the threshold that gives a target precision on your own collection.

        Derives labelled duplicates from a sample of FOLDER's images (crops, recolours, rescans, ...),
        treats the other images as non-duplicates, and prints the lowest threshold whose estimated
        precision meets the target, with the estimated recall. Pairs of FOLDER's own images that
        already look like copies (raw cosine >= 0.9) are set aside; looser real duplicates count as
        false pairs, so the estimate is conservative. With --pairs, your labelled pairs are used.

        Example: embeddr tune ~/photos --precision 0.99 --model sscd-distilled --sample 200 --out tune-report
        """
        from ..api import tune as run_tune

        result = run_tune(folder, precision=precision, model=model, sample=sample, per_image=per_image,
                          negatives=negatives, seed=seed, pairs=pairs, out=out, workers=workers, reuse=db)
        (out / "tune.json").write_text(to_json(result.as_dict()), encoding="utf-8")
        if json_out:
            emit(to_json(result.as_dict()), None)
            return
        if result.threshold is None:
            emit(f"no threshold reaches precision {precision} with {result.model} ({result.score} score) on "
                 f"{result.positives} duplicate / {result.negatives} non-duplicate pairs; plots in {out}", None)
            return
        emit("\n".join([
            f"threshold  {result.threshold:.4f}  ({result.model}, {result.score} score; preset default {result.default_threshold:g})",
            f"estimated  precision {result.precision:.4f}, recall {result.recall:.4f} (target precision {precision})",
            f"labels     {result.positives} duplicate pairs, {result.negatives} non-duplicate pairs ({result.source}, {result.files} files)"
            + (f"; {result.set_aside} pairs set aside: your images that already look like copies of each other" if result.set_aside else ""),
            f"plots      {', '.join(result.plots.values())}",
            f"reused     {result.reused} vectors from {db} (files it holds unchanged were not embedded again)"
            if result.reused else f"reused     no vectors (no catalog of {result.model} at {db})",
            f"use        embeddr dupes --threshold {result.threshold:.4f}",
        ]), None)
