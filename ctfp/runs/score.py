"""Scoring at archive scale: stream shards through a fitted model, write scored shards.

Memory stays bounded by ``batch_size`` rows whatever the archive's size, and the output has the
embedding shards' guarantees: one scored shard per input shard, written atomically, so a run
killed at any moment and rerun skips what is done and ends with every row scored exactly once.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ctfp.engine import resolve_engine
from ctfp.engine.settings import EngineSettings
from ctfp.exceptions import InputError
from ctfp.io.fs import as_local, child, is_remote, remove_stale_temp_files, resolve
from ctfp.io.locks import FolderLock, Lease
from ctfp.progress import progress_bar
from ctfp.runs.settings import ScoreSettings
from ctfp.store.delta import DeltaLog, Unlocked, pin, table_of
from ctfp.store.manifest import MANIFEST_FILE, Part, file_sizes, list_parts, manifest_bytes
from ctfp.store.reader import (
    ShardPath,
    check_compatible,
    count_rows,
    id_footprint,
    read_footer,
    read_schema,
    scan_batches,
    shard_paths,
)
from ctfp.store.writer import write_atomic

SCORES_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),
        pa.field("label", pa.int32(), nullable=False),
    ]
)


def _prefetch(iterator: Iterator[Any]) -> Iterator[Any]:
    """Yield from ``iterator`` while a thread already decodes the next item: Parquet decoding
    and FAISS search both release the GIL, so reading and scoring overlap on two cores."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(next, iterator, None)
        while True:
            item = pending.result()
            if item is None:
                return
            pending = pool.submit(next, iterator, None)
            yield item


def _name(path: ShardPath) -> str:
    """The file name of a shard, local or on a store."""
    return os.fspath(path).rstrip("/").rsplit("/", 1)[-1]


def _read_shards(
    paths: list[ShardPath], batch_size: int
) -> Iterator[tuple[ShardPath, pa.Array | None, np.ndarray | None]]:
    """``(path, ids, float32 matrix)`` per batch of each shard in turn, then ``(path, None,
    None)`` when that shard is done (so an empty shard still gets its output).

    One stream over all shards, so the prefetch thread reads on across shard boundaries. Each
    batch is converted into one of three float32 buffers reused in turn: with the consumer
    holding one batch and the prefetch thread filling the next, none is overwritten in use.
    """
    buffers = [np.empty(0, np.float32) for _ in range(3)]
    n = 0
    for path in paths:
        for batch in scan_batches(path, batch_size=batch_size, columns=["id", "embedding"]):
            emb = batch.column("embedding")
            stored = emb.flatten().to_numpy(zero_copy_only=False).reshape(len(batch), -1)
            slot = n % len(buffers)
            n += 1
            if buffers[slot].size < stored.size:
                buffers[slot] = np.empty(stored.size, np.float32)
            x = buffers[slot][: stored.size].reshape(stored.shape)
            np.copyto(x, stored)
            yield path, batch.column("id"), x
        yield path, None, None


def score_shards(
    model: Any,
    shards: str | os.PathLike[str],
    out: str | os.PathLike[str],
    settings: ScoreSettings | None = None,
    *,
    engine: str | EngineSettings = "local",
    progress: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    """Score every row of the embedding shards in ``shards`` with a fitted model.

    Task 1: ``model`` is a :class:`ctfp.membership.MembershipMethod`; score is its
    ``score_samples`` and label 1 where ``score >= threshold_``. Task 2: ``model`` is a
    :class:`ctfp.attribution.Clustering` (or anything with ``task = "task2"`` and
    ``predict_proba``); label is the most likely component and score its posterior probability.
    ``model`` may be a :class:`ctfp.runs.models.SavedModel`, whose embeddings identity the
    shards must match. Writes ``out/part-NNNNN.parquet`` (``id, score, label``) per input shard
    of the same name; shards whose output exists are skipped (resume).

    ``settings.batch_size`` rows are read at a time (``overrides``: its fields). ``engine``:
    ``local`` scores here; ``ray`` maps the shards over Ray actors (:class:`ShardScorer`), each
    writing its parts, which the driver records in input order; every worker must then reach
    ``shards`` and ``out``.

    Returns a summary: rows scored, shards written and skipped, seconds, rows per second.
    Raises InputError where ``out`` is the folder of the input shards, CtfpError where another
    run is writing into ``out``.
    """
    from ctfp.attribution.clustering import Clustering
    from ctfp.cluster.gmm import GaussianMixture
    from ctfp.runs.models import SavedModel

    chosen = (settings or ScoreSettings()).replace(**overrides)
    engine = resolve_engine(engine)
    shards = pin(shards)  # a table's version now: the result names the snapshot it scored
    paths = shard_paths(shards)
    metadata = check_compatible(paths)
    if isinstance(model, SavedModel):
        model.check_embeddings(metadata, str(shards))
        model = model.model
    if isinstance(model, GaussianMixture):  # a bare mixture: a clustering without projection
        model = Clustering(np.empty(0, np.int64), model.n_components, model)
    if getattr(model, "task", None) not in ("task1", "task2"):
        raise TypeError(
            f"cannot score with a {type(model).__name__}: give a membership method (task 1) or "
            "a clustering (task 2), fitted, or a saved model"
        )
    out = as_local(out)  # the shards: per path, in shard_paths
    table = table_of(out)
    if table is not None:
        out = as_local(table[0])
    target = resolve(out)
    out = Path(out) if target.local else target.uri.rstrip("/")
    if target.uri.rstrip("/") in {resolve(_parent_of(p)).uri.rstrip("/") for p in paths}:
        raise InputError(
            f"{str(out)!r} holds the embedding shards being scored; write the scores to a folder "
            "of their own (they take the input shards' names)"
        )
    made_by = {"model": model_fingerprint(model)}
    # One scoring run per folder: a second would delete our temps. A table takes no lock: its
    # writers commit one after the other, and name their parts apart (see _ScoresTable).
    scores = _ScoresTable(target, made_by) if table is not None else None
    with target.lock() if scores is None else Unlocked() as lock:
        if target.local:
            remove_stale_temp_files(Path(target.path))
        if engine.engine != "local":  # workers elsewhere: absolute paths
            paths = [p if is_remote(p) else Path(p).resolve() for p in paths]
            out = Path(target.path) if target.local else out
        names = {_name(p) for p in paths}
        if scores is not None:
            listed = [made["input"]["name"] for made in scores.made_by.values()]
        else:
            listed = list(list_parts(target))
        extra = sorted(n for n in listed if n not in names)
        if extra:  # kept, the folder would hold scores of rows the archive no longer has
            raise InputError(
                f"{str(out)!r} holds scores of {len(extra)} shard(s) that the shards being scored "
                f"do not have (e.g. {extra[0]}); a scores folder matches one archive: score into "
                "a new --out, or remove those files"
            )
        inputs = {p: {**made_by, "input": input_fingerprint(p)} for p in paths}
        if scores is not None:
            done = [p for p in paths if inputs[p] in scores.made_by.values()]
        else:
            done = [p for p in paths if _scored_already(child(out, _name(p)), inputs[p])]
        todo = [p for p in paths if p not in done]
        name_of = _name if scores is None else scores.name_of
        # The scores folder's commit record names every scored shard, as an embedding folder's
        # does: rewritten after each one, so readers of a store never list-and-trust.
        sizes = file_sizes(target, [_name(p) for p in done])
        parts = [Part(_name(p), inputs[p]["input"]["rows"], sizes[_name(p)] or 0) for p in done]

        record = target.join(MANIFEST_FILE)
        if not todo and scores is None:
            record.put(manifest_bytes(parts))
        items = [(p, child(out, name_of(p)), inputs[p]) for p in todo]
        rows = 0
        start = time.perf_counter()
        with progress_bar(count_rows(todo), "score", "row", enabled=progress) as bar:
            if engine.engine == "local":
                scored = _score_here(model, items, lock, chosen.batch_size, bar)
            else:
                scored = _score_elsewhere(model, items, engine, chosen, bar)
            with closing(scored):  # the local engine's FAISS threads restored on any error
                for path, written, size in scored:
                    if scores is not None:
                        scores.commit(name_of(path), _name(path), written, size, str(shards))
                    else:
                        lock.check()
                        parts.append(Part(_name(path), written, size))
                        record.put(manifest_bytes(parts))
                    rows += written
        seconds = time.perf_counter() - start
        return {
            "rows": rows,
            "shards_written": len(todo),
            "shards_skipped": len(paths) - len(todo),
            "seconds": seconds,
            "rows_per_second": rows / seconds if seconds > 0 else 0.0,
            "out": str(out),
            "shards": os.fspath(shards)
            if isinstance(shards, str | os.PathLike)
            else [os.fspath(s) for s in shards],
            **({} if scores is None else {"version": scores.log.version}),
            **({} if engine.engine == "local" else {"engine": engine.engine}),
        }


class _ScoresTable:
    """A Delta table of scores (``--out delta:PATH``): each scored part is one transaction.

    Its parts are named after their input shard and this writer (``part-00003-<writer>``), so
    that two runs scoring into one table never write one file; each records what made it
    (the model and the input shard), and a part whose input another run committed first is
    not committed (never a row scored twice)."""

    def __init__(self, target: Any, made_by: dict[str, Any]) -> None:
        self.suffix = uuid.uuid4().hex[:8]
        self.log = DeltaLog(target, SCORES_SCHEMA, {"format": SCORES_FORMAT, **made_by})
        if self.log.metadata.get("model") != made_by["model"]:
            raise InputError(
                f"{target.uri} holds the scores of another model; score into a new table"
            )
        self.log.clean()
        self.folder = target
        self.made_by: dict[str, dict[str, Any]] = {}  # part name -> what made it
        self._take_in(sorted(self.log.files))

    def name_of(self, path: ShardPath) -> str:
        return f"{_name(path).removesuffix('.parquet')}-{self.suffix}.parquet"

    def _take_in(self, names: list[str]) -> set[str]:
        for name in names:
            raw = (read_schema(self.folder.join(name).uri).metadata or {}).get(SCORED_KEY)
            self.made_by[name] = json.loads(raw) if raw else {"input": {"name": name}}
        return {self.made_by[n]["input"]["name"] for n in names}

    def commit(self, name: str, input_name: str, rows: int, size: int, shards: str) -> None:
        info = {"parts": [name], "rows": rows, "input": input_name, "shards": shards}
        self.log.commit([(name, rows, size)], [], [input_name], self._take_in, info)
        self._take_in([name])


def _score_here(
    model: Any,
    items: list[tuple[ShardPath, ShardPath, dict[str, Any]]],
    lock: Lease | FolderLock,
    batch_size: int,
    bar: Any,
) -> Iterator[tuple[ShardPath, int, int]]:
    """Each ``(input, output, record)`` of ``items`` scored here, reading the next shard while
    scoring this one: ``(input, rows, bytes)`` as each output is written."""
    # A light model's search costs about as much as reading: reading gets one core, FAISS the
    # others, and only its scores are checked for finiteness (a non-finite row scores NaN).
    import faiss

    light = model.task == "task1" and model.light_scoring
    threads = faiss.omp_get_max_threads()  # restored after
    faiss.omp_set_num_threads(max(1, (os.cpu_count() or 2) - 1) if light else threads)
    try:
        made = {path: (output, made_by) for path, output, made_by in items}
        shards = _prefetch(_read_shards(list(made), batch_size))
        for path, ids, scores, labels in _scored(model, shards, bar.update):
            lock.check()  # before writing: a writer that lost the lease writes nothing more
            output, made_by = made[path]
            yield path, *_write_scores(output, ids, scores, labels, model, made_by)
    finally:
        faiss.omp_set_num_threads(threads)


def _scored(
    model: Any,
    batches: Iterator[tuple[ShardPath, pa.Array | None, np.ndarray | None]],
    on_batch: Callable[[int], Any] | None = None,
) -> Iterator[tuple[ShardPath, list[pa.Array], list[np.ndarray], list[np.ndarray]]]:
    """Each shard of ``batches`` (:func:`_read_shards`) scored: its path, and the ids, float32
    scores and (task 2) int32 clusters of its batches; ``on_batch(rows)`` after each batch."""
    task1 = model.task == "task1"
    light = task1 and model.light_scoring
    ids: list[pa.Array] = []
    scores: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    for path, batch_ids, x in batches:
        if x is None:  # the shard is done
            yield path, ids, scores, labels
            ids, scores, labels = [], [], []
            continue
        if task1:
            score = np.asarray(model.score_samples(x, check_input=not light), np.float32)
            if not np.isfinite(score).all():
                raise InputError(
                    f"{path} holds non-finite embeddings (NaN or infinity) near row "
                    f"{sum(map(len, scores)) + int(np.argmin(np.isfinite(score)))}"
                )
        else:  # the cluster, scored by its posterior probability
            proba = np.asarray(model.predict_proba(x))
            score = proba.max(1).astype(np.float32)
            labels.append(proba.argmax(1).astype(np.int32))
        scores.append(score)
        ids.append(batch_ids)
        if on_batch is not None:
            on_batch(len(x))


class ShardScorer:
    """Scores one shard into its output part: what ``score_shards(..., engine="ray")`` maps
    over the shards. Ships the model's saved state (``to_state()``, picklable whatever its
    indexes) and rebuilds the model on its first call, checking the driver's fingerprint.

    An item is ``(input shard, output part, what the part records)``; the result is the part's
    ``(rows, bytes)``."""

    def __init__(self, model: Any, batch_size: int, device: str) -> None:
        params, arrays = model.to_state()
        self.kind = type(model)
        self.params = json.loads(json.dumps(params))  # as saved: JSON types only
        self.arrays = arrays
        self.fingerprint = model_fingerprint(model)
        self.batch_size, self.device = batch_size, device
        self.model: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "model": None}  # shipped as state, rebuilt where it runs

    def __call__(self, item: tuple[ShardPath, ShardPath, dict[str, Any]]) -> tuple[int, int]:
        if self.model is None:
            model = self.kind.from_state(self.params, self.arrays, device=self.device)
            if model_fingerprint(model) != self.fingerprint:
                raise InputError(
                    f"the {self.kind.__name__} rebuilt on worker {os.uname().nodename} is not the "
                    "driver's model (another ctfp version on that node?)"
                )
            self.model = model
        path, output, made_by = item
        _, ids, scores, labels = next(_scored(self.model, _read_shards([path], self.batch_size)))
        return _write_scores(output, ids, scores, labels, self.model, made_by)


def _score_elsewhere(
    model: Any,
    items: list[tuple[ShardPath, ShardPath, dict[str, Any]]],
    engine: EngineSettings,
    settings: ScoreSettings,
    bar: Any,
) -> Iterator[tuple[ShardPath, int, int]]:
    """:func:`_score_here`'s, scored by :class:`ShardScorer` on ``engine``'s workers (a GPU
    each where the cluster has GPUs, unless the device is ``cpu``), in input order."""
    from ctfp.engine import parallel_map

    cpu = settings.device == "cpu"
    scorer = ShardScorer(model, settings.batch_size, "cpu" if cpu else "auto")
    results = parallel_map(scorer, items, engine, stateful=True, gpu=False if cpu else None)
    for (path, _, _), (written, size) in zip(items, results, strict=True):
        yield path, written, size
        bar.update(written)


def _write_scores(
    path: ShardPath,
    ids: list[pa.Array],
    scores: list[np.ndarray],
    labels: list[np.ndarray],
    model: Any,
    made_by: dict[str, Any],
) -> tuple[int, int]:
    """Write one scored shard (``id, score, label``) atomically, its metadata saying which
    model scored which input shard; returns its row count and size in bytes."""
    score = np.concatenate(scores) if scores else np.empty(0, np.float32)
    label = (
        (score >= model.threshold_).astype(np.int32)
        if model.task == "task1"
        else np.concatenate(labels or [np.empty(0, np.int32)])
    )
    table = pa.Table.from_arrays(
        [
            pa.concat_arrays(ids) if ids else pa.array([], pa.string()),
            pa.array(score, pa.float32()),
            pa.array(label, pa.int32()),
        ],
        schema=SCORES_SCHEMA.with_metadata({SCORED_KEY: json.dumps(made_by, sort_keys=True)}),
    )
    size = write_atomic(table, path)
    return table.num_rows, size


SCORED_KEY = b"ctfp_scored"
SCORES_FORMAT = "ctfp-scores/1"


def model_fingerprint(model: Any) -> str:
    """sha256 of a fitted model's saved state (its parameters and arrays): equal fingerprints,
    equal scores."""
    params, arrays = model.to_state()
    h = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def input_fingerprint(path: ShardPath) -> dict[str, Any]:
    """What a scored shard records of its input shard: name, rows, size, id range."""
    footer = read_footer(path)[1]
    footprint = id_footprint(footer)
    ids = None if footprint is None else [footprint[1], footprint[2]]
    folder, name = _parent_of(path), _name(path)
    size = file_sizes(folder, [name])[name]
    return {"name": name, "rows": footer.num_rows, "bytes": size, "ids": ids}


def _parent_of(path: ShardPath) -> ShardPath:
    return os.fspath(path).rstrip("/").rsplit("/", 1)[0] if is_remote(path) else Path(path).parent


def _scored_already(output: ShardPath, expected: dict[str, Any]) -> bool:
    """Whether ``output`` holds the scores ``expected`` describes (resume); an output made by
    another model or from another input shard is refused, never kept as if it were ours."""
    if not resolve(output).exists():
        return False
    raw = (read_schema(output).metadata or {}).get(SCORED_KEY)
    found = json.loads(raw) if raw else None
    if found == expected:
        return True
    if found is None:
        why = "it records no model or input (another program's, or an older ctfp's)"
    elif found.get("model") != expected["model"]:
        why = "another model scored it"
    else:
        why = f"it scored another input shard ({found.get('input')} vs {expected['input']})"
    raise InputError(
        f"{output} is not this run's to resume: {why}; score into an empty folder, or delete "
        "the folder's part-*.parquet files to score them again"
    )
