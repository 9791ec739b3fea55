#!/usr/bin/env python3
"""Time the default decision on a crowd of 3,000 look-alikes (docs/benchmarks.md, issue 8 item 5)."""
import time, tempfile, numpy as np, resource
from pathlib import Path
from embeddr.catalog import Catalog, FileRecord
from embeddr.dupes import find_duplicates
from embeddr.presets import get_preset
preset = get_preset("sscd-distilled")
rng = np.random.default_rng(0)
n = 3000
c = rng.normal(size=preset.dim); c /= np.linalg.norm(c)
noise = rng.normal(size=(n, preset.dim)); noise /= np.linalg.norm(noise, axis=1, keepdims=True)
v = 0.85 * c + np.sqrt(1 - 0.85**2) * noise; v /= np.linalg.norm(v, axis=1, keepdims=True)  # mutual cosine ~0.72
with tempfile.TemporaryDirectory() as t:
    db = Path(t) / "crowd.db"
    with Catalog(db) as cat:
        cat.bind_model(preset.name, preset.dim)
        run = cat.begin_run(preset.name, [t])
        recs = [FileRecord(f"{t}/f{i:05d}.jpg", 1000, 0, f"h{i}", 100, 100, "JPEG") for i in range(n)]
        cat.record_batch(recs, {f"h{i}": v[i].astype(np.float32) for i in range(n)}, run, preset.name)
        cat.finish_run(run, "done", {})
        find_duplicates(cat, preset)  # builds the index / search structure once
        t0 = time.perf_counter(); rep = find_duplicates(cat, preset); dt = time.perf_counter() - t0
        t1 = time.perf_counter(); raw = find_duplicates(cat, preset, score="raw", threshold=preset.threshold.value); dr = time.perf_counter() - t1
    print(f"{n} look-alikes (mutual cosine ~0.72): normalized dupes {dt:.2f} s, {len(rep.pairs)} pairs; raw at the same threshold {dr:.2f} s, {raw.n_pairs if hasattr(raw,'n_pairs') else len(raw.pairs)} pairs; peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024:.0f} MiB")
