"""The local engine: a job in this process, decoding in DataLoader workers, the model here."""

from __future__ import annotations

import time

from ctfp.device import resolve_device, resolve_precision
from ctfp.embed.job import Job
from ctfp.embed.mapper import Mapper, default_batch_size
from ctfp.embed.reader import default_workers, make_dataset, make_loader
from ctfp.embed.writer import EmbedResult, finish_run, write_file, write_pending
from ctfp.engine.settings import EngineSettings
from ctfp.io.sources import InputFile
from ctfp.io.window import Window
from ctfp.progress import progress_bar
from ctfp.store.writer import ShardWriter


def run(job: Job, settings: EngineSettings | None = None) -> EmbedResult:
    """Run ``job`` here: ``job.workers`` loader processes decode (default: 0 on a CPU, up to 8
    on CUDA), one model embeds on ``job.device``, the shard writer stores.

    The result's timings are ``decode_wait`` (the model waiting for decoded batches),
    ``infer`` and ``write``. ``job.compile`` pays a one-off ``torch.compile`` (about 80 s for
    ResNet50 on 2 CPU cores, needs a C compiler) for faster batches: worth it on a GPU for large
    archives, not for a few thousand slices.
    """
    dev = resolve_device(job.device)
    precision = resolve_precision(job.precision, dev)
    workers = default_workers(dev) if job.workers is None else job.workers
    batch_size = default_batch_size(dev) if job.batch_size is None else job.batch_size
    mapper = Mapper.build(job.factory, dev, precision, batch_size, compile=job.compile)
    identity = mapper.identity.to_dict()

    start = time.perf_counter()
    timings = {"decode_wait": 0.0, "infer": 0.0, "write": 0.0}
    writer, pending, rows = write_pending(
        job,
        job.metadata(identity),
        timings,
        lambda todo, writer: _embed(
            mapper, todo, writer, job.window, job.max_pixels, workers, job.progress, timings
        ),
    )
    return finish_run(
        writer,
        job,
        pending,
        rows or 0,
        start,
        device=str(dev),
        precision=mapper.precision,
        batch_size=batch_size,
        workers=workers,
        timings=timings,
        identity=identity,
    )


def _embed(
    mapper: Mapper,
    files: list[InputFile],
    writer: ShardWriter,
    window: Window,
    max_pixels: int,
    workers: int,
    progress: bool,
    timings: dict[str, float],
) -> int:
    """Decode ``files`` in batches of ``mapper.batch_size`` files, embed and write them."""
    loader = make_loader(
        make_dataset(files, window, mapper.preprocessing, max_pixels=max_pixels),
        files_per_batch=mapper.batch_size,
        workers=workers,
        # Page-locked host memory lets the copies to the GPU run asynchronously.
        pin_memory=mapper.device.type == "cuda",
    )
    rows = 0
    bar = progress_bar(len(files), "embed", "file", enabled=progress)
    start = tick = time.perf_counter()
    with bar:
        for batch in loader:
            now = time.perf_counter()
            timings["decode_wait"] += now - tick
            embeddings = mapper(batch.frames)
            tick = time.perf_counter()
            timings["infer"] += tick - now
            offset = 0
            for index, count in zip(batch.indices, batch.counts, strict=True):
                rows += write_file(writer, files[index], embeddings[offset : offset + count])
                offset += count
            for index, reason in batch.errors:
                writer.add_error(files[index].id, files[index].path, reason)
            done = time.perf_counter()
            timings["write"] += done - tick
            tick = done
            bar.update(len(batch.indices) + len(batch.errors))
            bar.set_postfix(
                img_s=f"{rows / max(done - start, 1e-9):.1f}", errors=len(writer.errors)
            )
    return rows


__all__ = ["run"]
