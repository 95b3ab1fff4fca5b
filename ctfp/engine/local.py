"""The local engine: a job in this process, decoding in DataLoader workers, the models here (or,
lighter than decoding, in the workers too)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import torch

from ctfp.device import resolve_device, resolve_precision
from ctfp.embed.job import Job
from ctfp.embed.mapper import Mapper
from ctfp.embed.reader import Batch, default_workers, make_dataset, make_loader
from ctfp.embed.writer import EmbedResult, finish_run, stored, write_file, write_pending
from ctfp.engine.settings import EngineSettings
from ctfp.io.sources import InputFile
from ctfp.progress import progress_bar
from ctfp.store.writer import ShardWriter


def run(job: Job, settings: EngineSettings | None = None) -> list[EmbedResult]:
    """Run ``job`` here: ``job.workers`` loader processes (default:
    :func:`~ctfp.embed.reader.default_workers`) decode each input once, the models embed on
    ``job.device`` (on a CPU, models lighter than decoding run in the loader workers), one
    shard writer per output stores.

    Returns one result per output, with the timings ``decode_wait``, ``infer`` (summed over
    the workers when the models run there) and ``write``. ``job.compile`` pays a one-off
    ``torch.compile`` (needs a C compiler): worth it on a GPU for large archives.
    """
    dev = resolve_device(job.device)
    precision = resolve_precision(job.precision, dev)
    mapper = Mapper.build(
        [o.factory for o in job.outputs], dev, precision, job.batch_size, compile=job.compile
    )
    identities = [i.to_dict() for i in mapper.identities]
    timings = {"decode_wait": 0.0, "infer": 0.0, "write": 0.0}
    workers = job.workers or 0  # chosen once the pending inputs are known

    def embed_pending(
        todo: list[InputFile], writers: list[ShardWriter], ids: list[set[str]]
    ) -> list[int]:
        nonlocal workers
        if job.workers is None:
            workers = default_workers(dev, decode_bound=mapper.decode_bound, files=len(todo))
        with _model_threads(dev, mapper.decode_bound):
            return _embed(mapper, job, todo, writers, ids, workers, timings)

    start = time.perf_counter()
    metadata = [job.metadata(i) for i in identities]
    writers, pending, rows = write_pending(job, metadata, timings, embed_pending)
    return [
        finish_run(
            writer,
            job,
            pending[k],
            rows[k] if rows else 0,
            start,
            output=k,
            device=str(dev),
            precision=mapper.precision,
            batch_size=mapper.batch_size,
            workers=workers,
            timings=dict(timings),
            identity=identities[k],
        )
        for k, writer in enumerate(writers)
    ]


@contextlib.contextmanager
def _model_threads(device: torch.device, decode_bound: bool) -> Iterator[None]:
    """One torch thread here, while they run, for models lighter than decoding on a CPU:
    OpenMP threads spinning on the decoders' cores slowed such runs ninefold.
    """
    threads = torch.get_num_threads()
    if device.type == "cpu" and decode_bound:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _Models:
    """Embeds a batch with the models of the outputs that still need one of its files, in the
    shards' storage type (``batch.embeddings``), and drops its pixels: in a loader worker or
    here."""

    def __init__(
        self, mapper: Mapper, files: list[InputFile], todo: list[set[str]], dtype: str
    ) -> None:
        self.mapper = mapper
        self.files = files
        self.todo = todo
        self.everywhere = [len(ids) == len(files) for ids in todo]  # no per-file look-ups
        self.dtype = dtype

    def needs(self, k: int, index: int) -> bool:
        """Whether output ``k`` needs file ``index`` (not yet in its folder)."""
        return self.everywhere[k] or self.files[index].id in self.todo[k]

    def __call__(self, batch: Batch) -> Batch:
        start = time.perf_counter()
        # None of them for a batch of failures only.
        wanted = [k for k in range(len(self.todo)) if any(self.needs(k, i) for i in batch.indices)]
        found = self.mapper(batch.views, wanted) if wanted else [None] * len(self.todo)
        batch.embeddings = [None if e is None else stored(e, self.dtype) for e in found]
        batch.views = ()  # the pixels need not travel back from a worker
        batch.seconds = time.perf_counter() - start
        return batch


def _embed(
    mapper: Mapper,
    job: Job,
    files: list[InputFile],
    writers: list[ShardWriter],
    todo: list[set[str]],
    workers: int,
    timings: dict[str, float],
) -> list[int]:
    """Decode ``files`` once, in batches of ``mapper.batch_size`` files, embed them for every
    output (``writers[k]``) that needs them (``todo[k]``: ids) and write the rows; returns the
    rows written per output."""
    models = _Models(mapper, files, todo, job.dtype)
    # Beside the decoder: models lighter than decoding, on the CPU, not compiled (forked
    # workers cannot share the compiler's state).
    beside = mapper.device.type == "cpu" and mapper.decode_bound and not job.compile
    loader = make_loader(
        make_dataset(files, job.window, mapper.views, max_pixels=job.max_pixels),
        files_per_batch=mapper.batch_size,
        workers=workers,
        pin_memory=mapper.device.type == "cuda",
        then=models if beside else None,
    )
    rows = [0] * len(writers)
    slices = 0
    start = tick = time.perf_counter()
    with progress_bar(len(files), "embed", "file", enabled=job.progress) as bar:
        for batch in loader:
            now = time.perf_counter()
            if batch.embeddings is None:
                models(batch)
            elif workers == 0:  # the models ran in this process, while the loader made it
                now -= batch.seconds
            timings["decode_wait"] += now - tick
            timings["infer"] += batch.seconds
            tick = time.perf_counter()
            for k, values in enumerate(batch.embeddings):
                offset = 0
                for index, count in zip(batch.indices, batch.counts, strict=True):
                    if values is not None and models.needs(k, index):
                        part = values[offset : offset + count]
                        rows[k] += write_file(writers[k], files[index], part)
                    offset += count
            for index, reason in batch.errors:
                f = files[index]
                for k, writer in enumerate(writers):
                    if models.needs(k, index):
                        writer.add_error(f.id, f.path, reason)
            slices += sum(batch.counts)
            done = time.perf_counter()
            timings["write"] += done - tick
            tick = done
            bar.update(len(batch.indices) + len(batch.errors))
            bar.set_postfix(
                img_s=f"{slices / max(done - start, 1e-9):.1f}",
                errors=max(len(w.errors) for w in writers),
            )
    return rows


__all__ = ["run"]
