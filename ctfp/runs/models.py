"""Saved models: fit once on a labelled set, score an archive later (``ctfp score``).

A model is a folder: ``model.json`` (task, kind, settings, the identity of the embeddings it was
fitted on, ctfp version) and ``arrays.npz`` (centres, mixture parameters, projection, the
serialised FAISS indexes as uint8 arrays). Nothing is pickled: loading a model from someone else
runs no code. ``model.json`` is written last, so a folder without it is not a model.
"""

from __future__ import annotations

import io
import json
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ctfp._version import __version__
from ctfp.attribution.classify import GroupClassifier
from ctfp.attribution.clustering import Clustering
from ctfp.exceptions import InputError, ShardMismatchError
from ctfp.io.fs import PathLike, as_local, resolve
from ctfp.membership.ensemble import EnsembleMembership
from ctfp.membership.registry import METHODS
from ctfp.runs.folder import ARRAYS_FILE, MODEL_FILE
from ctfp.store.schema import identity_of

MODEL_FORMAT = "ctfp-model/1"

#: Every kind of saved model, by the name it records: the membership methods and the clustering.
KINDS: dict[str, Any] = {
    **METHODS,
    EnsembleMembership.name: EnsembleMembership,
    Clustering.name: Clustering,
    GroupClassifier.name: GroupClassifier,
}


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
        if "decode" not in self.identity:
            raise ShardMismatchError(
                "the model was saved by a ctfp before 0.2.1, which did not record how the "
                "images were decoded (the DICOM/NIfTI window), so it cannot tell whether "
                f"{where} are comparable; fit it again with `ctfp run` (its embeddings resume)"
            )
        a, b = identity_of(self.identity), identity_of(metadata)
        if a != b:
            diffs = ", ".join(f"{k}: {a[k]!r} vs {b[k]!r}" for k in a if a[k] != b[k])
            raise ShardMismatchError(
                f"the model was fitted on other embeddings than {where} ({diffs}); embed the "
                "archive with the same model, weights, preprocessing and window as the training "
                "data"
            )


def save_model(
    model: Any, path: PathLike, *, identity: dict[str, Any], settings: dict[str, Any] | None = None
) -> Path | str:
    """Save a fitted model (its ``name``, ``task``, ``to_state()``) to folder ``path`` (local,
    or on a store under its write lease), ``model.json`` last; ``identity`` is the metadata of
    the embeddings it was fitted on, ``settings`` what the run was asked to do."""
    kind = getattr(model, "name", None)
    if kind not in KINDS or not isinstance(model, KINDS[kind]):
        raise InputError(
            f"cannot save a {type(model).__name__}; saved models are the membership methods "
            f"({', '.join(METHODS)}), Gaussian-mixture clusterings and group classifiers (task 2)"
        )
    params, arrays = model.to_state()
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    description = {
        "format": MODEL_FORMAT,
        "task": model.task,
        "kind": kind,
        "params": params,
        "identity": identity_of(identity),
        "settings": settings or {},
        "ctfp_version": __version__,
    }
    text = json.dumps(description, indent=2, sort_keys=True) + "\n"
    path = as_local(path)
    folder = resolve(path)
    # One writer on a store; no lock file in a local model.
    with nullcontext() if folder.local else folder.lock() as lease:
        folder.join(MODEL_FILE).delete()  # the folder is not a model while rewritten
        for name, data in ((ARRAYS_FILE, buffer.getvalue()), (MODEL_FILE, text.encode())):
            if lease is not None:
                lease.check()
            folder.join(name).put(data)
    return Path(path) if folder.local else folder.uri.rstrip("/")


def load_model(path: PathLike, *, device: str = "auto") -> SavedModel:
    """Load a model folder written by :func:`save_model` (or ``ctfp run ... --out OUT``: the
    model is in ``OUT/model``), local or on an object store (fetched with the run's record and
    checked as a local one, :func:`ctfp.runs.remote.local_run`)."""
    import zipfile
    import zlib

    from ctfp.runs.folder import CLUSTERS_FILE, RUN_FILE, check_if_run
    from ctfp.runs.remote import local_run

    with local_run(path) as (root, _):
        if (root / "model" / MODEL_FILE).is_file() and not (root / MODEL_FILE).is_file():
            root = root / "model"  # a run folder
        # A model in a run folder is used only if that run finished (not `ctfp cluster`'s).
        check_if_run(root, (RUN_FILE, CLUSTERS_FILE))  # a run folder given as the model
        if not (check_if_run(root.parent) or check_if_run(root.parent.parent)):
            check_if_run(root.parent, (RUN_FILE, CLUSTERS_FILE))  # raises: interrupted
        try:
            description = json.loads((root / MODEL_FILE).read_text())
        except FileNotFoundError:
            raise InputError(
                f"{str(path)!r} is not a saved model (no {MODEL_FILE}); `ctfp run task1|task2 ... "
                "--out OUT` saves one in OUT/model"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"{root / MODEL_FILE} is not valid JSON: {e}") from None
        if not isinstance(description, dict) or description.get("format") != MODEL_FORMAT:
            found = description.get("format") if isinstance(description, dict) else None
            raise InputError(f"{root / MODEL_FILE} has format {found!r}, not {MODEL_FORMAT!r}")
        kind = description.get("kind")
        if not isinstance(kind, str) or kind not in KINDS:
            raise InputError(f"{root / MODEL_FILE} holds an unknown model kind {kind!r}")
        try:
            with np.load(root / ARRAYS_FILE, allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:  # truncated
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise InputError(f"{root / ARRAYS_FILE} cannot be read: {why}") from None
        try:
            model = KINDS[kind].from_state(description["params"], arrays, device=device)
            return SavedModel(
                model=model,
                task=str(description["task"]),
                kind=kind,
                identity=dict(description["identity"]),
                settings=description.get("settings", {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:  # tampered
            # RuntimeError: FAISS refusing corrupt bytes; AttributeError: an entry's JSON type.
            what = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else e!r}"
            raise InputError(
                f"{root} is not a complete {kind} model ({what}); save it again with the command "
                "that wrote it"
            ) from None
