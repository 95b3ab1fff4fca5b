"""The Ray Data engine: the local engine's job, decoded in Ray tasks, embedded in actors."""

from __future__ import annotations

import logging
import math
import os
import re
import time
from types import ModuleType
from typing import Any

import numpy as np
import torch

from ctfp import exceptions
from ctfp.embed.backbone import Preprocessing
from ctfp.embed.job import Job, ModelFactory
from ctfp.embed.mapper import Mapper, default_batch_size
from ctfp.embed.reader import decode_all
from ctfp.embed.writer import EmbedResult, finish_run, write_file, write_pending
from ctfp.engine.settings import EngineSettings
from ctfp.exceptions import CtfpError, DeviceError
from ctfp.io.decode import MAX_PIXELS, Window
from ctfp.io.sources import InputFile
from ctfp.progress import logger, progress_bar
from ctfp.store.schema import PIXELS_DTYPE
from ctfp.store.writer import ShardWriter

RAY_INSTALL = "pip install 'ctfp[ray]'"
# What the actors send back: the storage dtype, so that float16 runs ship half the bytes.
_STORAGE = {"float16": np.float16, "float32": np.float32, PIXELS_DTYPE: np.uint8}


def require_ray() -> ModuleType:
    """Import Ray (with Ray Data), or raise a CtfpError naming the install command."""
    try:
        import ray
        import ray.data  # the part of Ray the engine needs
    except ImportError as exc:
        raise CtfpError(
            f"--engine ray needs Ray Data, which cannot be imported here ({exc}); install it with "
            f"{RAY_INSTALL} (or pip install 'ray[data]'), or use --engine local"
        ) from None
    return ray


def run(job: Job, settings: EngineSettings) -> EmbedResult:
    """Run ``job`` on Ray: decode tasks on CPUs, the model in ``settings.actors`` actors.

    ``job.device``: ``auto`` gives one GPU per actor if the Ray cluster has GPUs, else CPU
    actors; ``cuda`` requires GPUs; ``cpu`` gives CPU actors. ``settings.actors`` defaults to one
    per GPU of the cluster, or 1 on CPUs. ``settings.ray_address`` is ``ray.init(address=...)``
    (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``); None starts a local Ray, or uses the one
    this process is connected to. ``job.factory`` is called once on the driver (for the
    identity and preprocessing, on the CPU) and once in every actor, shipped with cloudpickle.

    The result's timings are ``ray_init``, ``startup`` (until the first embeddings arrive:
    actor start, model build, first batch), ``wait`` and ``write``.

    Notes
    -----
    Data path::

        pending inputs ─► ray.data.from_items ─► map_batches(decode_files)       CPU tasks
                       ─► map_batches(EmbedActor, ActorPoolStrategy(size=actors),
                                      num_gpus=1 per actor when the cluster has GPUs)
                       ─► driver: iter_batches in input order ─► ShardWriter

    The driver writes the shards, through the very ShardWriter of the local engine: same schema and
    metadata, atomic ``part-NNNNN.parquet`` commits, the folder lock, resume by finished ids and the
    errors table. The price is that every embedding crosses the network to the driver (actors send
    the storage dtype: 4 KiB per float16 2048-d row, ~40 MB/s at 10k img/s) and one process
    compresses and writes all shards: fine for a handful of GPUs, the first thing to measure (with
    ``benchmarks/ray_bench.py``) before going far beyond. Workers writing shards themselves would
    need a filesystem shared by all nodes and a shard naming scheme that survives reruns with a
    different split; the driver-side writer needs neither and keeps one code path for resume.

    The decode tasks open the inputs at the paths the driver discovered (absolute paths): on a
    cluster of several machines the inputs must be on a filesystem every node mounts at the same
    path, and ctfp (same version) must be installed on every node. Ray needs no other setup.

    When the actors need only CPUs (no GPU in the cluster), Ray fuses the decode step into the actor
    (same resources), which on a small machine is what the local engine does too: decode and model
    in one process, no object-store hop. With GPU actors the decode tasks run apart, on any CPU.
    """
    ray = require_ray()
    if job.compile:
        raise CtfpError(
            "compile (--compile) is an option of the local engine; drop it or use --engine local"
        )
    name = job.device.split(":")[0]
    if ":" in job.device:
        raise DeviceError(
            f"device {job.device!r}: with --engine ray each actor gets one whole GPU from Ray; "
            "use --device cuda or auto"
        )
    if job.workers is not None:
        logger.info("the ray engine ignores workers: Ray runs the decoding tasks")

    init_start = time.perf_counter()
    _connect(ray, settings.ray_address)
    ray_init = time.perf_counter() - init_start
    resources = ray.cluster_resources()
    cpus, gpus = int(resources.get("CPU", 0)), int(resources.get("GPU", 0))
    if name == "cuda" and gpus == 0:
        raise DeviceError(
            "device 'cuda' was asked for but the Ray cluster has no GPU; use --device cpu or auto"
        )
    use_gpu = gpus > 0 and name != "cpu"
    actors = settings.actors or (gpus if use_gpu else 1)
    if use_gpu and actors > gpus:
        logger.warning(f"warning: {actors} GPU actors asked for, the Ray cluster has {gpus} GPUs")
    if not use_gpu and actors > cpus:
        logger.warning(f"warning: {actors} actors asked for, the Ray cluster has {cpus} CPUs")
    batch_size = job.batch_size or default_batch_size(torch.device("cuda" if use_gpu else "cpu"))
    # A CPU actor gets its share of the cores as torch threads (Ray would pin it to one).
    threads = max(1, cpus // actors)

    # Built here only for what goes into the metadata; the actors build their own copy.
    model = job.factory()
    identity = model.identity.to_dict()
    preprocessing = model.preprocessing
    del model
    logger.info(
        f"ray: {cpus} CPUs, {gpus} GPUs; {actors} model actor(s) on "
        f"{'one GPU each' if use_gpu else f'CPU ({threads} threads each)'}"
    )

    start = time.perf_counter()
    timings = {"ray_init": ray_init, "startup": 0.0, "wait": 0.0, "write": 0.0}
    writer, pending, ran = write_pending(
        job,
        job.metadata(identity),
        timings,
        lambda todo, writer: _run(
            ray,
            todo,
            writer,
            embed_actor_kwargs=dict(
                factory=job.factory,
                identity=identity,
                use_gpu=use_gpu,
                precision=job.precision,
                batch_size=batch_size,
                threads=threads,
                dtype=job.dtype,
            ),
            decode_kwargs=dict(
                window=job.window, preprocessing=preprocessing, max_pixels=job.max_pixels
            ),
            batch_size=batch_size,
            actors=actors,
            use_gpu=use_gpu,
            progress=job.progress,
            timings=timings,
        ),
    )
    rows, used_precision = ran or (0, job.precision)
    return finish_run(
        writer,
        job,
        pending,
        rows,
        start,
        device=f"ray:{actors}x{'cuda' if use_gpu else 'cpu'}",
        precision=used_precision,
        batch_size=batch_size,
        workers=0,
        timings=timings,
        identity=identity,
        engine="ray",
        actors=actors,
    )


def _connect(ray: Any, address: str | None) -> None:
    if ray.is_initialized():
        if address:
            logger.info(f"this process is already connected to Ray; using that, not {address!r}")
        return
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        ray.init(include_dashboard=False, logging_level=logging.WARNING)


def _run(
    ray: Any,
    pending: list[InputFile],
    writer: ShardWriter,
    *,
    embed_actor_kwargs: dict[str, Any],
    decode_kwargs: dict[str, Any],
    batch_size: int,
    actors: int,
    use_gpu: bool,
    progress: bool,
    timings: dict[str, float],
) -> tuple[int, str]:
    """Stream ``pending`` through Ray and hand whole files, in input order, to ``writer``."""
    context = ray.data.DataContext.get_current()
    saved = (context.execution_options.preserve_order, context.enable_progress_bars)
    # Input order in, input order out: shards hold the same rows as a local run's.
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False  # ctfp's own bar counts files
    # Ray Data's per-dataset INFO lines and its "progress bars disabled" notice are noise here.
    quiet = {"ray.data": logging.WARNING, "ray.data._internal.progress": logging.ERROR}
    saved_levels = {name: logging.getLogger(name).level for name in quiet}
    for name, level in quiet.items():
        logging.getLogger(name).setLevel(level)
    try:
        records = [_record(i, f) for i, f in enumerate(pending)]
        ds = ray.data.from_items(records, override_num_blocks=math.ceil(len(records) / batch_size))
        ds = ds.map_batches(
            decode_files,
            batch_size=batch_size,
            batch_format="numpy",
            fn_kwargs=decode_kwargs,
            num_cpus=1,
        )
        ds = ds.map_batches(
            EmbedActor,
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            fn_constructor_kwargs=embed_actor_kwargs,
            num_cpus=1,
            num_gpus=1 if use_gpu else 0,
        )
        return _collect(ds, pending, writer, progress, timings)
    except Exception as exc:
        cause = _ctfp_cause(exc)
        if cause is not None:  # e.g. an actor whose weights differ from the driver's
            raise cause from None
        raise
    finally:
        context.execution_options.preserve_order, context.enable_progress_bars = saved
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)


def _collect(
    ds: Any,
    pending: list[InputFile],
    writer: ShardWriter,
    progress: bool,
    timings: dict[str, float],
) -> tuple[int, str]:
    rows = 0
    precision = ""
    # Frames of one file may arrive in several batches (a volume split by batch_size).
    partial: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}
    bar = progress_bar(len(pending), "embed (ray)", "file", enabled=progress)
    start = tick = time.perf_counter()
    with bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
            now = time.perf_counter()
            timings["wait"] += now - tick
            timings["startup"] = timings["startup"] or now - start
            index, errors = batch["index"], batch["error"]
            precision = precision or str(batch["precision"][0])
            bounds = np.flatnonzero(np.diff(index)) + 1
            finished = 0
            for lo, hi in zip([0, *bounds], [*bounds, len(index)], strict=True):
                i = int(index[lo])
                f = pending[i]
                if errors[lo]:
                    writer.add_error(f.id, f.path, str(errors[lo]))
                    finished += 1
                    continue
                parts = partial.setdefault(i, [])
                parts.append((batch["frame"][lo:hi], batch["embedding"][lo:hi]))
                count = int(batch["count"][lo])
                if sum(len(k) for k, _ in parts) < count:
                    continue
                del partial[i]
                k = np.concatenate([k for k, _ in parts])
                order = np.argsort(k, kind="stable")
                if not np.array_equal(k[order], np.arange(count)):
                    raise CtfpError(f"internal error: frames of {f.path} came back as {k}")
                rows += write_file(writer, f, np.concatenate([e for _, e in parts])[order])
                finished += 1
            tick = time.perf_counter()
            timings["write"] += tick - now
            bar.update(finished)
            bar.set_postfix(
                img_s=f"{rows / max(tick - start, 1e-9):.1f}", errors=len(writer.errors)
            )
    if partial:
        missing = ", ".join(pending[i].path for i in list(partial)[:3])
        raise CtfpError(f"internal error: Ray returned only part of the frames of {missing}")
    return rows, precision


def _record(index: int, f: InputFile) -> dict[str, Any]:
    shard, group, row = f.cache if f.cache is not None else ("", -1, -1)
    return {
        "index": index,
        "path": f.path,
        "frame": -1 if f.frame is None else f.frame,
        "shard": shard,
        "group": group,
        "row": row,
    }


def decode_files(
    batch: dict[str, np.ndarray],
    window: Window,
    preprocessing: Preprocessing,
    max_pixels: int = MAX_PIXELS,
) -> dict[str, np.ndarray]:
    """Ray task: decode and resize a batch of input files with the local engine's reader.

    Returns one row per slice (``index`` of the file in the run, ``frame`` position within the
    file, ``count`` slices in the file, ``pixels`` (s, s) uint8) and one row per unreadable file
    (``error`` set, blank pixels), so that a bad file becomes a row of the errors table, never a
    failed task.
    """
    files = [
        InputFile(
            id="",
            path=str(path),
            frame=None if frame < 0 else int(frame),
            cache=(str(shard), int(group), int(row)) if shard else None,
        )
        for path, frame, shard, group, row in zip(
            batch["path"], batch["frame"], batch["shard"], batch["group"], batch["row"], strict=True
        )
    ]
    s = preprocessing.image_size
    index, frame, count, error, pixels = [], [], [], [], []
    for d in decode_all(files, window, preprocessing, max_pixels=max_pixels):
        if d.frames is None:
            index.append(np.array([batch["index"][d.index]]))
            frame.append(np.zeros(1, np.int32))
            count.append(np.ones(1, np.int32))
            error.append(d.error or "unknown error")
            pixels.append(np.zeros((1, s, s), np.uint8))
            continue
        n = int(d.frames.shape[0])
        index.append(np.full(n, batch["index"][d.index]))
        frame.append(np.arange(n, dtype=np.int32))
        count.append(np.full(n, n, np.int32))
        error.extend([""] * n)
        pixels.append(d.frames[:, 0].numpy())
    return {
        "index": np.concatenate(index).astype(np.int64),
        "frame": np.concatenate(frame),
        "count": np.concatenate(count),
        "error": np.array(error, dtype=object),
        "pixels": np.concatenate(pixels),
    }


class EmbedActor:
    """Ray actor: one model per actor, built by the same factory and run by the same mapper as
    the local engine's."""

    def __init__(
        self,
        factory: ModelFactory,
        identity: dict[str, Any],
        use_gpu: bool,
        precision: str,
        batch_size: int,
        threads: int,
        dtype: str,
    ) -> None:
        # Ray hands each GPU actor one device through CUDA_VISIBLE_DEVICES: it is cuda:0 here.
        dev = torch.device("cuda" if use_gpu else "cpu")
        if not use_gpu:
            torch.set_num_threads(min(threads, os.cpu_count() or 1))
        self.mapper = Mapper.build(factory, dev, precision, batch_size)
        got = self.mapper.identity.to_dict()
        if got != identity:
            raise CtfpError(
                f"the model built on Ray worker {os.uname().nodename} differs from the driver's "
                f"({got.get('weights')!r} sha256 {got.get('weights_sha256', '')[:12]} vs "
                f"{identity.get('weights')!r} sha256 {identity.get('weights_sha256', '')[:12]}); "
                "give every node the same weights file"
            )
        self.storage = _STORAGE[dtype]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = batch["error"] == ""
        x = torch.from_numpy(np.ascontiguousarray(batch["pixels"][ok])[:, None])
        if self.mapper.device.type == "cuda":
            x = x.pin_memory()
        y = self.mapper(x)
        embedding = np.zeros((len(ok), y.shape[1]), dtype=self.storage)
        embedding[ok] = y.astype(self.storage, copy=False)
        return {
            "index": batch["index"],
            "frame": batch["frame"],
            "count": batch["count"],
            "error": batch["error"],
            "precision": np.full(len(ok), self.mapper.precision, dtype=object),
            "embedding": embedding,
        }


def _ctfp_cause(exc: BaseException) -> CtfpError | None:
    """The CtfpError behind Ray's wrappers (RayTaskError, UserCodeException), if any."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, CtfpError):
            return e
        cause = getattr(e, "cause", None)
        stack.extend(
            [e.__cause__, e.__context__, cause if isinstance(cause, BaseException) else None]
        )
    # An actor that failed in __init__ surfaces as ActorDiedError, which keeps only the text.
    found = re.findall(r"ctfp\.exceptions\.(\w+): ([^\n]+)", str(exc))
    if found:
        name, message = found[-1]
        cls = getattr(exceptions, name, CtfpError)
        return cls(message) if isinstance(cls, type) and issubclass(cls, CtfpError) else None
    return None


__all__ = ["RAY_INSTALL", "EmbedActor", "decode_files", "require_ray", "run"]
