"""``ctfp demo``: run the pipeline on the CT sample shipped inside the package."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ctfp.exceptions import WeightsUnavailableError
from ctfp.progress import logger


def sample_dir() -> Path:
    """Folder of the bundled sample (12 PNG slices and one DICOM, CC BY 4.0, see its README)."""
    return Path(str(resources.files("ctfp") / "data" / "sample"))


def _choose_weights(weights: str | None) -> str:
    if weights is not None:
        return weights
    from ctfp.embed.backbone import _imagenet_state_dict

    try:
        _imagenet_state_dict()
        return "imagenet"
    except WeightsUnavailableError:
        logger.info(
            "ImageNet weights cannot be had here (no internet or cache); using seeded random "
            "weights (--weights random --seed 0) instead"
        )
        return "random"


def run_demo(
    out: str | os.PathLike[str] = "demo-out", *, weights: str | None = None, progress: bool = True
) -> dict[str, Any]:
    """Embed the bundled sample into ``out/embeddings-<weights>`` and show what came out."""
    from ctfp.embed.runner import embed
    from ctfp.store.reader import read_embeddings

    weights = _choose_weights(weights)
    tag = weights if weights in ("imagenet", "random") else "file"
    shards = Path(out) / f"embeddings-{tag}"
    result = embed(sample_dir(), shards, weights=weights, progress=progress)
    data = read_embeddings(shards)
    m = data.matrix / np.linalg.norm(data.matrix, axis=1, keepdims=True)
    index = {i: n for n, i in enumerate(data.ids)}
    png, dcm = index.get("png/A0001_s2_030"), index.get("dicom/A0001_s2_030")
    same_slice = float(m[png] @ m[dcm]) if png is not None and dcm is not None else None
    nearest = None
    if dcm is not None:
        # The DICOM and its PNG rendering went through different decoders; they should still be
        # each other's nearest neighbours among the 13 slices.
        d = np.linalg.norm(data.matrix - data.matrix[dcm], axis=1)
        d[dcm] = np.inf
        nearest = str(data.ids[int(d.argmin())])
    summary = {
        "out": str(shards),
        "rows": len(data),
        "dim": int(data.matrix.shape[1]),
        "weights": data.metadata["weights"],
        "seconds": round(result.seconds, 2),
        "images_per_second": round(result.images_per_second, 1),
        "png_vs_dicom_cosine": same_slice,
        "dicom_nearest_neighbour": nearest,
    }
    logger.info(
        f"demo: {summary['rows']} slices x {summary['dim']} dims from {summary['weights']} weights "
        f"in {shards}/part-*.parquet"
    )
    if nearest is not None:
        logger.info(
            f"demo: nearest neighbour of dicom/A0001_s2_030 among the 13 slices: {nearest} "
            "(its own PNG rendering, decoded by another path)"
        )
    logger.info(f"demo: try  duckdb -c \"SELECT id, label FROM '{shards}/part-*.parquet' LIMIT 5\"")
    return summary
