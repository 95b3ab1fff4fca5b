"""The writer side of a run: rows into resumable shards, then the result of the run."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ctfp.embed.job import Job
from ctfp.io.fs import child
from ctfp.io.sources import InputFile
from ctfp.progress import logger
from ctfp.store.schema import ERRORS_DIR, ERRORS_FILE
from ctfp.store.writer import ShardWriter, frame_id


@dataclass
class EmbedResult:
    """What one embedding (or caching) run did."""

    out: str
    rows: int
    files: int
    skipped_files: int
    errors: list[dict[str, str]]
    seconds: float
    images_per_second: float
    device: str
    precision: str
    batch_size: int = 0
    workers: int = 0
    shards: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    identity: dict[str, Any] = field(default_factory=dict)
    engine: str = "local"
    actors: int = 0
    #: Bytes the driver received from Ray workers (part summaries; 0 for the local engine).
    driver_bytes: int = 0
    #: The stage settings that ran (``EmbedSettings`` or ``CacheSettings``, as ``to_dict``).
    settings: dict[str, Any] = field(default_factory=dict)
    #: The ids of this run's input files (not in ``to_dict``), for
    #: ``read_embeddings(out, inputs=result.inputs)``.
    inputs: list[str] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        del record["inputs"]
        return record

    def summary(self) -> str:
        return (
            f"embedded {self.rows} rows from {self.files - self.skipped_files} files "
            f"({len(self.errors)} errors, {self.skipped_files} files already done) in "
            f"{self.seconds:.1f} s, {self.images_per_second:.1f} img/s on {self.device} "
            f"({self.precision}) -> {self.out}"
        )


def stored(embeddings: np.ndarray, dtype: str) -> np.ndarray:
    """(n, d) float32 embeddings in the shards' storage type (``float16``, ``float32``, or a
    cache's ``uint8``): float16 through torch, numpy's values 20x faster."""
    if dtype == "float16":
        import torch

        return torch.from_numpy(np.ascontiguousarray(embeddings)).half().numpy()
    return embeddings.astype(np.dtype(dtype), copy=False)


def write_file(writer: ShardWriter, f: InputFile, embeddings: np.ndarray) -> int:
    """Add the rows of input ``f``, ``embeddings`` (n, d) in frame order, to ``writer``;
    returns the rows added (0: refused, see :meth:`ShardWriter.add`)."""
    ids, frames = file_rows(f, len(embeddings))
    return writer.add(f.id, ids, f.path, frames, f.label, embeddings, f.fingerprint)


def file_rows(f: InputFile, count: int) -> tuple[list[str], list[int]]:
    """The row ids and frame numbers of input ``f`` decoded to ``count`` slices: its id for one
    slice, ``id#k`` for a volume's; a cache row keeps its frame's number."""
    ids = [frame_id(f.id, k, count) for k in range(count)]
    frames = list(range(count)) if f.frame is None else [f.frame]
    return ids, frames


def write_pending(
    job: Job,
    metadata: Sequence[dict[str, Any]],
    timings: dict[str, float],
    run: Callable[[list[InputFile], list[ShardWriter], list[set[str]]], Any],
) -> tuple[list[ShardWriter], list[list[InputFile]], Any]:
    """Open the shard writer of each output of ``job`` (``metadata[k]``: output ``k``'s), call
    ``run(pending, writers, todo)`` and close them, timing the final flush as ``write``.

    ``pending``: the inputs some output still needs (none: ``run`` is not called); ``todo[k]``:
    the ids output ``k`` needs. Returns the writers, each output's pending inputs and what
    ``run`` returned (else None).
    """
    value = None
    with contextlib.ExitStack() as stack:
        writers = [
            stack.enter_context(
                ShardWriter(
                    output.out,
                    metadata=meta,
                    rows_per_shard=job.rows_per_shard,
                    commit_seconds=job.commit_seconds,
                )
            )
            for output, meta in zip(job.outputs, metadata, strict=True)
        ]
        todo = []
        for writer in writers:
            todo.append(writer.resume(job.files))
            for problem in job.unreadable:  # folders that could not be searched: on the record
                writer.add_error(problem.id, problem.path, problem.reason)
        needed = set().union(*todo)
        pending = [f for f in job.files if f.id in needed]
        if not pending:
            where = ", ".join(o.out for o in job.outputs)
            logger.info(f"nothing to do: all {len(job.files)} inputs are already in {where}")
        else:
            value = run(pending, writers, todo)
        write_start = time.perf_counter()
    timings["write"] += time.perf_counter() - write_start
    return writers, [[f for f in pending if f.id in ids] for ids in todo], value


def finish_run(
    writer: ShardWriter,
    job: Job,
    pending: list[InputFile],
    rows: int,
    start: float,
    *,
    output: int = 0,
    **fields: Any,
) -> EmbedResult:
    """The result of output ``output`` of a run from its writer and counts, logged;
    ``fields`` are the engine's (device, precision, timings, ...)."""
    seconds = time.perf_counter() - start
    target = job.outputs[output]
    result = EmbedResult(
        out=str(target.out),
        rows=rows,
        files=len(job.files),
        skipped_files=len(job.files) - len(pending),
        errors=writer.errors,
        seconds=seconds,
        images_per_second=rows / seconds if seconds > 0 else 0.0,
        shards=[str(p) for p in writer.shards_written],
        settings=target.settings,
        inputs=[f.id for f in job.files],
        **fields,
    )
    log_result(result)
    return result


def errors_file(out: str) -> str:
    """The path or URI of the errors table of ``out`` (a shard folder, or ``delta:PATH``)."""
    from ctfp.store.delta import split

    folder = (split(out) or (out,))[0]
    return str(child(child(folder, ERRORS_DIR), ERRORS_FILE))


def log_result(result: EmbedResult) -> None:
    """The closing lines of a run: a warning naming the errors table, a summary."""
    if result.errors:
        logger.warning(
            f"warning: {len(result.errors)} input(s) could not be read and were skipped; reasons "
            f"in {errors_file(result.out)}, e.g. "
            f"{result.errors[0]['source']}: {result.errors[0]['reason']}"
        )
    logger.info(result.summary())


__all__ = [
    "EmbedResult",
    "errors_file",
    "file_rows",
    "finish_run",
    "log_result",
    "stored",
    "write_file",
    "write_pending",
]
