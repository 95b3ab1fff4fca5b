"""The embedding runner: sources -> decode (workers) -> backbone (device) -> Parquet shards."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctfp.device import autocast, resolve_device, resolve_precision
from ctfp.embed.features import build_features
from ctfp.embed.loader import CacheDataset, SliceDataset, make_loader
from ctfp.engine import check_engine
from ctfp.exceptions import CtfpError
from ctfp.io.decode import Window, parse_window
from ctfp.io.sources import InputFile, discover
from ctfp.progress import logger, progress_bar
from ctfp.store.cache import cache_rows
from ctfp.store.schema import DTYPES, ERRORS_DIR, ERRORS_FILE, PIXELS_DTYPE, make_metadata
from ctfp.store.writer import ShardWriter, frame_id

# Builds a feature extractor: (b, 1, s, s) uint8 -> (b, dim), with .preprocessing and .identity.
BackboneFactory = Callable[[], torch.nn.Module]


@dataclass
class EmbedResult:
    """What one embedding run did."""

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"embedded {self.rows} rows from {self.files - self.skipped_files} files "
            f"({len(self.errors)} errors, {self.skipped_files} files already done) in "
            f"{self.seconds:.1f} s, {self.images_per_second:.1f} img/s on {self.device} "
            f"({self.precision}) -> {self.out}"
        )


def default_batch_size(device: torch.device) -> int:
    """Slices per forward pass: large on a GPU; 16 on a CPU, where bigger batches fall out of cache.

    Measured on 2 cores (bf16, 224 px): batch 8-16 gives 46-55 img/s, batch 64 gives 36 img/s.
    """
    return 128 if device.type == "cuda" else 16


def default_workers(device: torch.device) -> int:
    """Loader processes: enough to feed a GPU; none on a CPU, where a worker only takes a core
    from the network (2-core VM, bf16: 54.6 img/s with 0 workers, 46.0 with 1, 44.4 with 2;
    decoding is 5 % of the time)."""
    cores = os.cpu_count() or 1
    if device.type == "cuda":
        return max(1, min(8, cores - 1))
    return 0


def embed(
    sources: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    weights: str | os.PathLike[str] = "imagenet",
    features: str = "resnet50",
    seed: int = 0,
    image_size: int = 224,
    batch_size: int | None = None,
    workers: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    dtype: str = "float16",
    rows_per_shard: int = 10_000,
    window: str | Window | None = None,
    label_from_dirs: bool = False,
    layout: str = "auto",
    progress: bool = True,
    backbone_factory: BackboneFactory | None = None,
    engine: str = "local",
    actors: int | None = None,
    ray_address: str | None = None,
    compile: bool = False,
) -> EmbedResult:
    """Embed every CT slice behind ``sources`` into Parquet shards in ``out``.

    Rerunning the same call resumes: files already in finished shards are skipped, files that
    failed are tried again. Unreadable files are listed in ``out/_errors/errors.parquet`` with
    their reason and never stop the run.

    Parameters
    ----------
    sources
        Folders, globs, manifests (CSV/Parquet with ``path``, optional ``id``, ``label``) or files.
    out
        Output folder of ``part-NNNNN.parquet`` shards.
    weights
        ``"imagenet"``, ``"random"`` (seeded by ``seed``) or a path to a state dict.
    features
        ``resnet50`` (default), ``pixels``, ``spectrum``, ``residual`` or several joined by
        ``+`` (see :mod:`ctfp.embed.features`).
    precision
        ``auto`` (bf16 on CUDA and on CPUs with bf16 hardware, else fp32), ``fp32``, ``bf16``,
        ``fp16``.
    dtype
        Storage type of the embedding column: ``float16`` or ``float32``.
    window
        DICOM/NIfTI windowing: ``LEVEL,WIDTH``, a preset, ``minmax`` or ``auto`` (see ``Window``).
    backbone_factory
        Builds the model (defaults to :func:`build_features` with the arguments above).
    engine
        ``local`` (this process and ``workers`` DataLoader processes) or ``ray`` (Ray Data:
        decoding in CPU tasks, the model in ``actors`` actors, one GPU each where the cluster has
        GPUs; needs ``pip install 'ctfp[ray]'``). Both write the same shards and resume each
        other's runs (see :mod:`ctfp.engine.ray_data`).
    actors
        ``ray`` only: model replicas (default: one per GPU of the cluster, else 1).
    compile
        Run the model through ``torch.compile`` (local engine). Pays a one-off compilation
        (about 80 s for ResNet50 on 2 CPU cores, needs a C compiler) for faster batches: worth
        it on a GPU for large archives, not for a few thousand slices.
    ray_address
        ``ray`` only: ``ray.init(address=...)`` (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``);
        None starts a local Ray, or uses the one this process is connected to.
    """
    check_engine(engine)
    if engine == "local" and (actors is not None or ray_address is not None):
        raise CtfpError("actors and ray_address are options of engine='ray'")
    if dtype not in DTYPES and not (dtype == PIXELS_DTYPE and features.startswith("slices")):
        raise CtfpError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    window = window if isinstance(window, Window) else parse_window(window)
    cache = cache_rows(sources)
    files = (
        cache
        if cache is not None
        else discover(sources, label_from_dirs=label_from_dirs, layout=layout)
    )
    factory = backbone_factory or (
        lambda: build_features(features, weights=weights, seed=seed, image_size=image_size)
    )
    if engine == "ray":
        from ctfp.engine.ray_data import embed_ray

        if compile:
            raise CtfpError("compile is an option of the local engine")

        if workers is not None:
            logger.info("the ray engine ignores workers: Ray runs the decoding tasks")
        return embed_ray(
            files,
            out,
            factory=factory,
            window=window,
            dtype=dtype,
            rows_per_shard=rows_per_shard,
            batch_size=batch_size,
            device=device,
            precision=precision,
            actors=actors,
            ray_address=ray_address,
            progress=progress,
        )
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    workers = default_workers(dev) if workers is None else workers
    batch_size = default_batch_size(dev) if batch_size is None else batch_size
    if batch_size < 1:
        raise CtfpError(f"batch size must be at least 1, got {batch_size}")
    if workers < 0:
        raise CtfpError(f"workers must be 0 or more, got {workers}")

    backbone = factory().to(dev)
    if compile:
        # The compiled module forwards attribute access (preprocessing, identity) to the model.
        backbone = torch.compile(backbone)
    identity = backbone.identity.to_dict()
    metadata = make_metadata(identity, dtype, {"window": window.describe()})

    start = time.perf_counter()
    timings = {"decode_wait": 0.0, "infer": 0.0, "write": 0.0}
    writer, pending, rows = write_pending(
        files,
        out,
        metadata,
        rows_per_shard,
        timings,
        lambda todo, writer: _run(
            backbone, todo, writer, dev, prec, window, batch_size, workers, progress, timings
        ),
    )
    return finish_run(
        writer,
        out,
        files,
        pending,
        rows or 0,
        start,
        device=str(dev),
        precision=prec,
        batch_size=batch_size,
        workers=workers,
        timings=timings,
        identity=identity,
    )


def write_pending(
    files: Sequence[InputFile],
    out: str | os.PathLike[str],
    metadata: dict[str, Any],
    rows_per_shard: int,
    timings: dict[str, float],
    run: Callable[[list[InputFile], ShardWriter], Any],
) -> tuple[ShardWriter, list[InputFile], Any]:
    """Open the shard writer of ``out``, call ``run(pending, writer)`` on the files not yet in
    it (resume; nothing is called when all are done) and close it, timing the final flush as
    ``write``. Returns the writer, the pending files and what ``run`` returned (else None)."""
    value = None
    with ShardWriter(out, metadata=metadata, rows_per_shard=rows_per_shard) as writer:
        todo = writer.pending(f.id for f in files)
        pending = [f for f in files if f.id in todo]
        if not pending:
            logger.info(f"nothing to do: all {len(files)} inputs are already in {out}")
        else:
            value = run(pending, writer)
        write_start = time.perf_counter()
    timings["write"] += time.perf_counter() - write_start
    return writer, pending, value


def finish_run(
    writer: ShardWriter,
    out: str | os.PathLike[str],
    files: Sequence[InputFile],
    pending: Sequence[InputFile],
    rows: int,
    start: float,
    **fields: Any,
) -> EmbedResult:
    """The result of a run (either engine) from its writer and counts, logged as it closes."""
    seconds = time.perf_counter() - start
    result = EmbedResult(
        out=str(out),
        rows=rows,
        files=len(files),
        skipped_files=len(files) - len(pending),
        errors=writer.errors,
        seconds=seconds,
        images_per_second=rows / seconds if seconds > 0 else 0.0,
        shards=[str(p) for p in writer.shards_written],
        **fields,
    )
    log_result(result)
    return result


def log_result(result: EmbedResult) -> None:
    """The closing lines of a run (either engine): a warning naming the errors table, a summary."""
    if result.errors:
        logger.warning(
            f"warning: {len(result.errors)} input(s) could not be read and were skipped; reasons "
            f"in {Path(result.out) / ERRORS_DIR / ERRORS_FILE}, e.g. "
            f"{result.errors[0]['source']}: {result.errors[0]['reason']}"
        )
    logger.info(result.summary())


def _run(
    backbone: torch.nn.Module,
    files: list[InputFile],
    writer: ShardWriter,
    dev: torch.device,
    precision: str,
    window: Window,
    batch_size: int,
    workers: int,
    progress: bool,
    timings: dict[str, float],
) -> int:
    cached = files[0].cache is not None
    dataset = (
        CacheDataset(files, backbone.preprocessing)
        if cached
        else SliceDataset(files, window, backbone.preprocessing)
    )
    loader = make_loader(
        dataset, files_per_batch=batch_size, workers=workers, pin_memory=dev.type == "cuda"
    )
    amp = autocast(precision, dev)
    rows = 0
    bar = progress_bar(len(files), "embed", "file", enabled=progress)
    start = time.perf_counter()
    tick = time.perf_counter()
    with bar, torch.inference_mode():
        for batch in loader:
            now = time.perf_counter()
            timings["decode_wait"] += now - tick
            embeddings = _forward(backbone, batch.frames, dev, amp, batch_size)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            tick = time.perf_counter()
            timings["infer"] += tick - now
            offset = 0
            for index, count in zip(batch.indices, batch.counts, strict=True):
                f = files[index]
                ids = [frame_id(f.id, k, count) for k in range(count)]
                frames = range(count) if f.frame is None else [f.frame]
                writer.add(f.id, ids, f.path, frames, f.label, embeddings[offset : offset + count])
                offset += count
            for index, reason in batch.errors:
                writer.add_error(files[index].id, files[index].path, reason)
            rows += offset
            done = time.perf_counter()
            timings["write"] += done - tick
            tick = done
            bar.update(len(batch.indices) + len(batch.errors))
            bar.set_postfix(
                img_s=f"{rows / max(done - start, 1e-9):.1f}", errors=len(writer.errors)
            )
    return rows


def _forward(
    backbone: torch.nn.Module,
    frames: torch.Tensor,
    dev: torch.device,
    amp: Callable[[], Any],
    batch_size: int,
) -> np.ndarray:
    """(n, 1, s, s) uint8 on the host -> (n, d) float32 numpy, in chunks of ``batch_size``."""
    outputs = []
    for chunk in frames.split(batch_size):
        x = chunk.to(dev, non_blocking=True)
        with amp():
            y = backbone(x)
        outputs.append(y.float())
    if not outputs:
        return np.empty((0, backbone.identity.dim), dtype=np.float32)
    return torch.cat(outputs).cpu().numpy()
