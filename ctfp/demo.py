"""``ctfp demo``: run the pipeline on the CT sample shipped inside the package."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ctfp.progress import logger


def sample_dir() -> Path:
    """Folder of the bundled sample (12 PNG slices and one DICOM, CC BY 4.0, see its README)."""
    return Path(str(resources.files("ctfp") / "data" / "sample"))


def _blur(a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image, ImageFilter

    return np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(3)))


# Three stand-ins for generators, each with its own fingerprint (as in the test set-up).
GENERATORS = {
    "blur": _blur,
    "noise": lambda a, rng: np.clip(a + rng.normal(0, 25, a.shape), 0, 255).astype(np.uint8),
    "poster": lambda a, rng: (a // 64 * 64).astype(np.uint8),
}


def _save(a: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def build_demo_data(root: str | os.PathLike[str], seed: int = 0) -> dict[str, Path]:
    """Two small ImageCLEF-style folders from the 12 bundled PNG slices, with truth files.

    Task 1: each slice and its mirror image; even slices are "used" by a pretend generator
    whose ``generated/`` holds noisy near-copies of them; four of each class (two slices and
    their mirrors) are ``test/``, leaving 8 used and 8 not-used training slices (enough for
    5-fold cross-validation). Task 2: every slice through three pretend generators (blur,
    noise, posterisation); three slices per generator are labelled in ``train/<generator>/``.
    """
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    slices = sorted((sample_dir() / "png").glob("*.png"))
    images = {p.stem: np.asarray(Image.open(p).convert("L")) for p in slices}
    t1, t2 = root / "task1", root / "task2"
    truth1, truth2 = [], []
    for n, (name, a) in enumerate(images.items()):
        used = n % 2 == 0
        for slice_id, b in ((name, a), (f"{name}_mirror", np.ascontiguousarray(a[:, ::-1]))):
            if n % 6 in (4, 5):
                _save(b, t1 / "test" / f"{slice_id}.png")
                truth1.append(f"{slice_id},{int(used)}")
            else:
                _save(b, t1 / "train" / ("used" if used else "not_used") / f"{slice_id}.png")
            if used:  # the pretend generator memorised its training slices
                noisy = np.clip(b + rng.normal(0, 6, b.shape), 0, 255).astype(np.uint8)
                _save(noisy, t1 / "generated" / f"gen_{slice_id}.png")
        for g, (generator, make) in enumerate(GENERATORS.items()):
            out = make(a, rng)
            if n < 3:
                _save(out, t2 / "train" / generator / f"{generator}_{name}.png")
            else:
                _save(out, t2 / "test" / f"{generator}_{name}.png")
                truth2.append(f"{generator}_{name},{g}")
    (t1 / "truth.csv").write_text("id,label\n" + "\n".join(truth1) + "\n")
    (t2 / "truth.csv").write_text("id,cluster\n" + "\n".join(truth2) + "\n")
    return {"task1": t1, "task2": t2}


def run_demo(
    out: str | os.PathLike[str] = "demo-out", *, weights: str | None = None, progress: bool = True
) -> dict[str, Any]:
    """Every stage on the bundled sample: embed it (PNG and DICOM of one slice side by side),
    build small task 1 and task 2 datasets, run the seed method (ResNet50) and proximity
    (pixels) for task 1 and the labelled attribution (residual) for task 2, evaluate against
    the truth, write an HTML report per run. Returns a summary."""
    import time

    from ctfp.embed.runner import embed
    from ctfp.embed.settings import EmbedSettings
    from ctfp.evaluate import evaluate_run
    from ctfp.report import write_report
    from ctfp.runs.task1 import run_task1
    from ctfp.runs.task2 import run_task2
    from ctfp.store.reader import read_embeddings

    start = time.perf_counter()
    out = Path(out)
    if weights is None:
        from ctfp.embed.backbone import imagenet_unavailable

        weights = "imagenet" if imagenet_unavailable() is None else "random"
        if weights == "random":
            logger.info(
                "ImageNet weights cannot be had here (no internet or cache); using seeded random "
                "weights (--weights random --weights-seed 0) instead"
            )
    tag = weights if weights in ("imagenet", "random") else "file"
    shards = out / f"embeddings-{tag}"
    settings = EmbedSettings(weights=weights)
    result = embed(sample_dir(), shards, settings, progress=progress)
    data = read_embeddings(shards)
    m = data.matrix / np.linalg.norm(data.matrix, axis=1, keepdims=True)
    index = {i: n for n, i in enumerate(data.ids)}
    png, dcm = index.get("png/A0001_s2_030"), index.get("dicom/A0001_s2_030")
    same_slice = float(m[png] @ m[dcm]) if png is not None and dcm is not None else None
    nearest = None
    if dcm is not None:
        # The DICOM and its PNG, decoded by different paths, should be nearest neighbours.
        d = np.linalg.norm(data.matrix - data.matrix[dcm], axis=1)
        d[dcm] = np.inf
        nearest = str(data.ids[int(d.argmin())])
    logger.info(
        f"demo: {len(data)} slices x {data.matrix.shape[1]} dims from {data.metadata['weights']} "
        f"weights in {shards}/part-*.parquet"
    )
    if nearest is not None:
        logger.info(
            f"demo: nearest neighbour of dicom/A0001_s2_030 among the 13 slices: {nearest} "
            "(its own PNG rendering, decoded by another path)"
        )

    folders = build_demo_data(out / "data")
    runs: dict[str, dict[str, Any]] = {}
    # Task 1: the seed method on ResNet50, and proximity on the pixels (where copies show
    # first). Task 2 on the residual (noise) fingerprint, where the generators show.
    for name, task, features, options in (
        ("task1-seed", "task1", settings.features, {"method": "centroid", "k": (2,)}),
        ("task1-proximity", "task1", "pixels", {"method": "proximity", "k": ()}),
        ("task2", "task2", "residual", {}),
    ):
        dest, truth = out / name, folders[task] / "truth.csv"
        api = run_task1 if task == "task1" else run_task2
        run_embed = settings.replace(features=features)
        api(folders[task], dest, embed=run_embed, progress=progress, **options)
        file = dest / ("run.csv" if task == "task1" else "clusters.csv")
        metrics = evaluate_run(task, file, truth)
        report = write_report(dest, truth=truth)
        runs[name] = {"run": str(file), "report": str(report), "metrics": metrics}

    summary = {
        "out": str(out),
        "embeddings": str(shards),
        "rows": len(data),
        "dim": int(data.matrix.shape[1]),
        "weights": data.metadata["weights"],
        "embed_seconds": round(result.seconds, 2),
        "images_per_second": round(result.images_per_second, 1),
        "png_vs_dicom_cosine": same_slice,
        "dicom_nearest_neighbour": nearest,
        "data": {k: str(v) for k, v in folders.items()},
        "runs": runs,
        "seconds": round(time.perf_counter() - start, 1),
    }
    lines = [f"demo: done in {summary['seconds']} s; everything is under {out}/"]
    for name, run in runs.items():
        mm = run["metrics"]
        shown = (
            f"F1 {mm['f1']:.2f}, accuracy {mm['accuracy']:.2f}, kappa {mm['kappa']:.2f}, "
            f"ROC-AUC {mm['roc_auc']:.2f}"
            if name.startswith("task1")
            else f"ARI {mm['ari']:.2f}, NMI {mm['nmi']:.2f}"
        )
        lines.append(f"  {name:<16} {shown}  report: {run['report']}")
    if data.metadata["weights"].startswith("random"):
        lines.append(
            "  (random weights: the pipeline is real, the numbers mean little; "
            "run with ImageNet weights for real features)"
        )
    lines.append(
        f'  embeddings (pip install duckdb): python -c "import duckdb; print(duckdb.sql('
        f'\\"SELECT id, label FROM \'{shards}/*.parquet\' LIMIT 5\\"))"'
    )
    lines.append(f"  score an archive later: ctfp score {out / 'task1-seed'} SHARDS --out SCORES")
    logger.info("\n".join(lines))
    return summary
