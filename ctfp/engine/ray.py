"""The Ray Data engine: the local engine's job, decoded in Ray tasks, embedded in actors (the
connection and the ordered map over shards: :mod:`ctfp.engine.ray_map`)."""

from __future__ import annotations

import functools
import math
import os
import pickle
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctfp.embed.backbone import Preprocessing
from ctfp.embed.job import Job, ModelFactory
from ctfp.embed.mapper import Mapper, default_batch_size
from ctfp.embed.reader import decode_all
from ctfp.embed.writer import EmbedResult, file_rows, finish_run, stored, write_pending
from ctfp.engine.ray_map import _connect, _ctfp_errors, require_ray
from ctfp.engine.settings import EngineSettings
from ctfp.exceptions import CtfpError, DeviceError
from ctfp.io.fs import child
from ctfp.io.sources import InputFile, safe_text
from ctfp.io.window import MAX_PIXELS, Window
from ctfp.progress import logger, progress_bar
from ctfp.store.writer import ShardWriter, rows_table, write_part


def run(job: Job, settings: EngineSettings) -> list[EmbedResult]:
    """Run ``job`` on Ray: decode tasks on CPUs, the models in ``settings.actors`` actors.

    ``job.device``: ``auto`` gives one GPU per actor if the cluster has GPUs, else CPU actors;
    ``cuda`` requires GPUs. ``settings.actors`` defaults to one per GPU, or 1 on CPUs;
    ``settings.ray_address`` goes to ``ray.init`` (None: a local Ray, or the one connected).
    Each output's factory is called once on the driver (identity, preprocessing) and once in
    every actor. Timings: ``ray_init``, ``startup`` (until the first embeddings arrive),
    ``wait`` and ``write``.

    Data path (docs/scale.md): the pending inputs are planned into blocks of whole files
    (:func:`plan_blocks`), each decoded once (:func:`decode_block`), embedded and written by an
    actor (:class:`PartWriter`) as one part per output; the driver commits each part through
    the local engine's ShardWriter from a summary of O(files) bytes (``driver_bytes``). Every
    node must reach the inputs and outputs at the same paths, with the same ctfp.
    """
    ray = require_ray()
    if job.compile:
        raise CtfpError(
            "compile (--compile) is an option of the local engine; drop it or use --engine local"
        )
    if ":" in job.device:
        raise DeviceError(
            f"device {job.device!r}: with --engine ray each actor gets one whole GPU from Ray; "
            "use --device cuda or auto"
        )
    if job.workers is not None:
        logger.info("the ray engine ignores workers: Ray runs the decoding tasks")

    init_start = time.perf_counter()
    cpus, gpus = _connect(ray, settings.ray_address)
    ray_init = time.perf_counter() - init_start
    if job.device == "cuda" and gpus == 0:
        raise DeviceError(
            "device 'cuda' was asked for but the Ray cluster has no GPU; use --device cpu or auto"
        )
    use_gpu = gpus > 0 and job.device != "cpu"
    actors = settings.actors or (gpus if use_gpu else 1)
    kind, have = ("GPU", gpus) if use_gpu else ("CPU", cpus)
    if actors > have:
        what = "GPU actors" if use_gpu else "actors"
        logger.warning(f"warning: {actors} {what} asked for, the Ray cluster has {have} {kind}s")
    # A CPU actor's share of the cores, as torch threads (Ray would pin it to one).
    threads = max(1, cpus // actors)

    # Built here for the metadata and the views only; the actors build their own.
    factories = [o.factory for o in job.outputs]
    model = Mapper.build(factories, torch.device("cpu"), "fp32", 1)
    identities, views = [i.to_dict() for i in model.identities], model.views
    batch_size = job.batch_size or default_batch_size(
        torch.device("cuda" if use_gpu else "cpu"), decode_bound=model.decode_bound
    )
    del model
    logger.info(
        f"ray: {cpus} CPUs, {gpus} GPUs; {actors} model actor(s) on "
        f"{'one GPU each' if use_gpu else f'CPU ({threads} threads each)'}"
    )

    start = time.perf_counter()
    timings = {"ray_init": ray_init, "startup": 0.0, "wait": 0.0, "write": 0.0}
    metadata = [job.metadata(i) for i in identities]

    actor_kwargs = dict(
        factories=factories,
        identities=identities,
        use_gpu=use_gpu,
        precision=job.precision,
        batch_size=batch_size,
        threads=threads,
        dtype=job.dtype,
        decode_kwargs=dict(window=job.window, views=views, max_pixels=job.max_pixels),
    )
    embed_pending = functools.partial(_run, ray, job, actor_kwargs, actors, cpus, timings)
    writers, pending, ran = write_pending(job, metadata, timings, embed_pending)
    rows, used_precision, received = ran or ([0] * len(writers), job.precision, 0)
    return [
        finish_run(
            writer,
            job,
            pending[k],
            rows[k],
            start,
            output=k,
            device=f"ray:{actors}x{'cuda' if use_gpu else 'cpu'}",
            precision=used_precision,
            batch_size=batch_size,
            workers=0,
            timings=dict(timings),
            identity=identities[k],
            engine="ray",
            actors=actors,
            driver_bytes=received,
        )
        for k, writer in enumerate(writers)
    ]


#: Most bytes of decoded 2-D slices per block (one Ray object, one part): ~1,300 files at 224 px.
BLOCK_BYTES = 64 * 2**20


def plan_blocks(
    n: int, rows_per_shard: int, image_size: int, *, actors: int = 1, batch_size: int = 1
) -> list[range]:
    """The blocks of ``n`` pending inputs: consecutive runs of whole files, each decoded by
    one task and written as one part by one actor. A block holds at most ``rows_per_shard``
    files and ``BLOCK_BYTES`` of slices; a small run is cut into at least two blocks per actor
    (of at least ``batch_size`` files), so that decoding overlaps embedding.
    """
    share = max(batch_size, -(-n // (2 * max(1, actors))))
    per = max(1, min(rows_per_shard, BLOCK_BYTES // max(1, image_size * image_size), share))
    return [range(i, min(i + per, n)) for i in range(0, n, per)]


@_ctfp_errors
def _run(
    ray: Any,
    job: Job,
    actor_kwargs: dict[str, Any],
    actors: int,
    cpus: int,
    timings: dict[str, float],
    pending: list[InputFile],
    writers: list[ShardWriter],
    todo: list[set[str]],
) -> tuple[list[int], str, int]:
    """Plan ``pending`` into blocks, have Ray decode each and an actor write it as a part of
    each output that needs one of its files (``todo[k]``: output ``k``'s ids), and commit each
    part as its summary comes back. Returns the rows per output, the actors' precision and the
    bytes the driver received."""
    from ray.util import ActorPool

    use_gpu, decode_kwargs = actor_kwargs["use_gpu"], actor_kwargs["decode_kwargs"]
    # The side of a square holding one slice at every view.
    side = math.isqrt(sum(v.image_size**2 for v in decode_kwargs["views"]))
    batch = actor_kwargs["batch_size"]
    plan = plan_blocks(len(pending), job.rows_per_shard, side, actors=actors, batch_size=batch)
    blocks = [[pending[i] for i in b] for b in plan]
    # Per block and output: which of its files the output needs.
    needs = [[[f.id in ids for f in files] for ids in todo] for files in blocks]
    names = [iter(w.reserve_names(sum(any(n[k]) for n in needs))) for k, w in enumerate(writers)]
    decode = ray.remote(num_cpus=1)(decode_block)
    if use_gpu:
        # GPU actors: decoding in tasks on every CPU, ahead of the actors; an actor takes a
        # CPU only where that leaves CPUs to decode on.
        actor = ray.remote(num_cpus=1 if cpus > actors else 0, num_gpus=1)(PartWriter)
        ahead = max(2, cpus + actors)
    else:
        # CPU actors decode their own blocks: they hold every CPU.
        actor = ray.remote(num_cpus=1)(PartWriter)
        ahead = 2 * actors
    # Absolute: the actors' working folder is not the driver's.
    outs = [w.out_dir if w.remote else str(Path(w.out_dir).resolve()) for w in writers]
    schemas = [w.schema for w in writers]  # a Delta table's differs from a folder's
    pool = ActorPool(
        [actor.remote(outs=outs, schemas=schemas, **actor_kwargs) for _ in range(actors)]
    )
    submitted = iter(range(len(blocks)))

    def submit() -> bool:
        b = next(submitted, None)
        if b is None:
            return False
        files = blocks[b]
        parts = [
            {
                "output": k,
                "name": next(names[k]),
                "needs": need,
                "clashes": [writers[k].clashes(f.id) for f in files],
            }
            for k, need in enumerate(needs[b])
            if any(need)
        ]
        block = {"block": b, "files": files, "parts": parts}
        decoded = decode.remote(files, **decode_kwargs) if use_gpu else None
        pool.submit(lambda a, v: a.write.remote(*v), (block, decoded))
        return True

    rows, received, precision = [0] * len(writers), 0, ""
    start = tick = time.perf_counter()
    with progress_bar(len(pending), "embed (ray)", "file", enabled=job.progress) as bar:
        for _ in range(ahead):
            if not submit():
                break
        while pool.has_next():
            summary = pool.get_next_unordered()
            now = time.perf_counter()
            timings["wait"] += now - tick
            timings["startup"] = timings["startup"] or now - start
            received += len(pickle.dumps(summary))
            precision = precision or summary["precision"]
            files = blocks[summary["block"]]
            for part in summary["parts"]:
                k, writer = part["output"], writers[part["output"]]
                for i, reason in part["errors"]:
                    writer.add_error(files[i].id, files[i].path, reason)
                done = [
                    (files[i].id, file_rows(files[i], n)[0], files[i].path)
                    for i, n in part["files"]
                ]
                if part["rows"]:
                    writer.commit_part(part["name"], part["rows"], part["bytes"], done)
                rows[k] += part["rows"]
            submit()
            tick = time.perf_counter()
            timings["write"] += tick - now
            bar.update(len(files))
            bar.set_postfix(
                img_s=f"{max(rows) / max(tick - start, 1e-9):.1f}",
                errors=max(len(w.errors) for w in writers),
            )
    return rows, precision, received


def decode_block(
    files: Sequence[InputFile],
    window: Window,
    views: Sequence[Preprocessing],
    max_pixels: int = MAX_PIXELS,
) -> list[tuple[np.ndarray, ...] | str]:
    """Ray task: one block of input files decoded by the local engine's reader; per file, its
    slices as (n, s, s) uint8 per view, or the reason it could not be read."""
    return [
        (d.error or "unknown error") if d.views is None else tuple(v[:, 0].numpy() for v in d.views)
        for d in decode_all(files, window, views, max_pixels=max_pixels)
    ]


class PartWriter:
    """Ray actor: the models of every output (the local engine's mapper), which embed each
    decoded block and write it as one part per output. Only a summary goes back: per part its
    name, rows and size, each file's slice count and each failure's reason.
    """

    def __init__(
        self,
        factories: list[ModelFactory],
        identities: list[dict[str, Any]],
        use_gpu: bool,
        precision: str,
        batch_size: int,
        threads: int,
        dtype: str,
        outs: list[str],
        schemas: list[Any],
        decode_kwargs: dict[str, Any],
    ) -> None:
        # Ray gives a GPU actor one device (CUDA_VISIBLE_DEVICES): cuda:0.
        dev = torch.device("cuda" if use_gpu else "cpu")
        if not use_gpu:
            torch.set_num_threads(min(threads, os.cpu_count() or 1))
        self.mapper = Mapper.build(factories, dev, precision, batch_size)
        for identity, built in zip(identities, self.mapper.identities, strict=True):
            got = built.to_dict()
            if got != identity:
                raise CtfpError(
                    f"the model built on Ray worker {os.uname().nodename} differs from the "
                    f"driver's ({got.get('weights')!r} sha256 "
                    f"{got.get('weights_sha256', '')[:12]} vs {identity.get('weights')!r} "
                    f"sha256 {identity.get('weights_sha256', '')[:12]}); "
                    "give every node the same weights file"
                )
        self.dtype = dtype
        self.outs = outs
        self.schemas = schemas
        self.decode_kwargs = decode_kwargs

    def write(
        self, block: dict[str, Any], decoded: list[tuple[np.ndarray, ...] | str] | None
    ) -> dict[str, Any]:
        """Embed and write one block: ``decoded`` from :func:`decode_block`, or None for this
        actor to decode the block itself (CPU actors)."""
        if decoded is None:
            decoded = decode_block(block["files"], **self.decode_kwargs)
        good = [(i, d) for i, d in enumerate(decoded) if not isinstance(d, str)]
        wanted = [p["output"] for p in block["parts"] if any(p["needs"][i] for i, _ in good)]
        embeddings: list[np.ndarray | None] = []
        if wanted:
            views = []
            for slices in zip(*(d for _, d in good), strict=True):
                x = torch.from_numpy(np.ascontiguousarray(np.concatenate(slices))[:, None])
                views.append(x.pin_memory() if self.mapper.device.type == "cuda" else x)
            found = self.mapper(views, wanted)
            embeddings = [None if e is None else stored(e, self.dtype) for e in found]
        parts = []
        for part in block["parts"]:  # the files of the block that output k needs
            k, needs, out = part["output"], part["needs"], self.outs[part["output"]]
            errors = [(i, d) for i, d in enumerate(decoded) if needs[i] and isinstance(d, str)]
            files, rows, end = [], [], 0
            for i, d in good:
                count = len(d[0])
                end += count
                if not needs[i]:
                    continue
                f: InputFile = block["files"][i]
                ids, frames = file_rows(f, count)
                clash = sorted(set(ids) & set(part["clashes"][i]))
                if clash:  # as the local writer: frame k of scan.dcm after a file scan#k.png
                    where = f"{clash[0]!r} is already in {out!r}"
                    errors.append((i, f"its row id {where}; embed it into another --out"))
                    continue
                files.append((i, count))
                values = embeddings[k][end - count : end]
                rows.append((ids, safe_text(f.path), frames, f.label, values, f.fingerprint))
            name = part["name"]
            size = write_part(child(out, name), rows_table(self.schemas[k], rows)) if rows else 0
            n = sum(len(r[0]) for r in rows)
            parts.append(
                dict(output=k, name=name, rows=n, bytes=size, files=files, errors=sorted(errors))
            )
        return {"block": block["block"], "parts": parts, "precision": self.mapper.precision}


__all__ = ["PartWriter", "decode_block", "plan_blocks", "run"]
