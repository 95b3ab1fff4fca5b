"""Saved models: fit once on a labelled set, score an archive later (``ctfp score``).

A model is a folder: ``model.json`` (task, kind, settings, the identity of the embeddings it was
fitted on, ctfp version) and ``arrays.npz`` (centres, mixture parameters, projection, the
serialised FAISS indexes as uint8 arrays). Nothing is pickled: loading a model from someone else
runs no code. ``model.json`` is written last, so a folder without it is not a model.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctfp._version import __version__
from ctfp.exceptions import InputError, ShardMismatchError
from ctfp.store.schema import identity_of
from ctfp.store.writer import write_bytes_atomic, write_text_atomic

MODEL_FORMAT = "ctfp-model/1"
MODEL_FILE = "model.json"
ARRAYS_FILE = "arrays.npz"
PathLike = str | os.PathLike[str]


@dataclass
class SavedModel:
    """A loaded model and what it was fitted on."""

    model: Any
    task: str
    kind: str
    identity: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)

    def check_embeddings(self, metadata: dict[str, Any], where: str = "the shards") -> None:
        """Refuse embeddings from another model, weights or preprocessing than the fit's."""
        a, b = identity_of(self.identity), identity_of(metadata)
        if a != b:
            diffs = ", ".join(f"{k}: {a[k]!r} vs {b[k]!r}" for k in a if a[k] != b[k])
            raise ShardMismatchError(
                f"the model was fitted on other embeddings than {where} ({diffs}); embed the "
                "archive with the same model, weights and preprocessing as the training data"
            )


def save_model(
    model: Any,
    path: PathLike,
    *,
    identity: dict[str, Any],
    settings: dict[str, Any] | None = None,
) -> Path:
    """Save a fitted task 1 model (centroid, proximity) or task 2 clustering to folder ``path``."""
    from ctfp.tasks.attribution import Clustering
    from ctfp.tasks.membership import CentroidMembership
    from ctfp.tasks.proximity import ProximityMembership

    arrays: dict[str, np.ndarray] = {}
    params: dict[str, Any]
    if isinstance(model, CentroidMembership):
        task, kind = "task1", "centroid"
        arrays["centers_used"] = model.centers_used_
        arrays["centers_not_used"] = model.centers_not_used_
        params = {"k": model.k, "threshold": model.threshold_}
    elif isinstance(model, ProximityMembership):
        task, kind = "task1", "proximity"
        params = {
            "metric": model.metric,
            "neighbours": model.neighbours,
            "reference": model.reference,
            "calibrate": model.calibrate,
            "index": model.index,
            "threshold": model.threshold_,
            "recall": model.recall_,
        }
        arrays["generated_index"] = model.index_.to_bytes()
        arrays["train_scores"] = np.asarray(model.train_scores_)
        if model.reference_ is not None:
            arrays["reference_index"] = model.reference_.to_bytes()
    elif isinstance(model, Clustering):
        task, kind = "task2", "gmm"
        gmm = model.model
        params = {"k": model.k, "covariance_type": gmm.covariance_type}
        arrays["weights"] = gmm.weights_
        arrays["means"] = gmm.means_
        arrays["covariances"] = gmm.covariances_
        if model.projection is not None:  # a scikit-learn PCA or a LinearProjection
            mean = getattr(model.projection, "mean_", None)
            comps = getattr(model.projection, "components_", None)
            if mean is None or comps is None or getattr(model.projection, "whiten", False):
                raise InputError("only a linear (non-whitening) PCA projection can be saved")
            arrays["projection_mean"] = np.asarray(mean)
            arrays["projection_components"] = np.asarray(comps)
    else:
        raise InputError(
            f"cannot save a {type(model).__name__}; saved models are centroid or proximity "
            "(task 1) and Gaussian-mixture clusterings (task 2)"
        )
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    (out / MODEL_FILE).unlink(missing_ok=True)  # the folder is not a model while rewritten
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(out / ARRAYS_FILE, buffer.getvalue())
    description = {
        "format": MODEL_FORMAT,
        "task": task,
        "kind": kind,
        "params": params,
        "identity": identity_of(identity),
        "settings": settings or {},
        "ctfp_version": __version__,
    }
    write_text_atomic(out / MODEL_FILE, json.dumps(description, indent=2, sort_keys=True) + "\n")
    return out


def load_model(path: PathLike, *, device: str = "auto") -> SavedModel:
    """Load a model folder written by :func:`save_model` (or ``ctfp run ... --out OUT``: the
    model is in ``OUT/model``)."""
    from ctfp.cluster.gmm import GaussianMixture
    from ctfp.index.ann import ApproximateIndex
    from ctfp.index.flat import FlatIndex
    from ctfp.tasks.attribution import Clustering, LinearProjection
    from ctfp.tasks.membership import CentroidMembership
    from ctfp.tasks.proximity import ProximityMembership

    root = Path(path)
    if (root / "model" / MODEL_FILE).is_file() and not (root / MODEL_FILE).is_file():
        root = root / "model"  # a run folder
    try:
        description = json.loads((root / MODEL_FILE).read_text())
    except FileNotFoundError:
        raise InputError(
            f"{str(path)!r} is not a saved model (no {MODEL_FILE}); `ctfp run task1|task2 ... "
            "--out OUT` saves one in OUT/model"
        ) from None
    except json.JSONDecodeError as e:
        raise InputError(f"{root / MODEL_FILE} is not valid JSON: {e}") from None
    if description.get("format") != MODEL_FORMAT:
        raise InputError(f"{root / MODEL_FILE} has format {description.get('format')!r}")
    try:
        with np.load(root / ARRAYS_FILE, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as e:
        raise InputError(f"{root / ARRAYS_FILE} cannot be read: {e}") from None
    kind, params = description["kind"], description["params"]
    model: Any
    if kind == "centroid":
        model = CentroidMembership.from_centres(
            arrays["centers_used"], arrays["centers_not_used"], device=device
        )
    elif kind == "proximity":
        model = ProximityMembership(
            metric=params["metric"],
            neighbours=params["neighbours"],
            reference=params["reference"],
            calibrate=params["calibrate"],
            index=params["index"],
            device=device,
        )
        data = arrays["generated_index"]
        if params["index"] == "flat":
            model.index_ = FlatIndex.from_bytes(data, device=device)
        else:
            model.index_ = ApproximateIndex.from_bytes(data)
        model.reference_ = None
        if "reference_index" in arrays:
            model.reference_ = FlatIndex.from_bytes(arrays["reference_index"], device="cpu")
        model.threshold_ = float(params["threshold"])
        model.recall_ = params["recall"]
        model.train_scores_ = arrays["train_scores"]
    elif kind == "gmm":
        gmm = GaussianMixture.from_params(
            arrays["weights"],
            arrays["means"],
            arrays["covariances"],
            covariance_type=params["covariance_type"],
            device=device,
        )
        projection = None
        if "projection_mean" in arrays:
            projection = LinearProjection(
                arrays["projection_mean"], arrays["projection_components"]
            )
        labels = np.empty(0, dtype=np.int64)
        model = Clustering(labels=labels, k=int(params["k"]), model=gmm, projection=projection)
    else:
        raise InputError(f"{root / MODEL_FILE} holds an unknown model kind {kind!r}")
    return SavedModel(
        model=model,
        task=description["task"],
        kind=kind,
        identity=description["identity"],
        settings=description.get("settings", {}),
    )
