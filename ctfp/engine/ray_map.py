"""Ray, connected once, and an ordered map over it (``ctfp score``, the passes of ``ctfp
cluster``), shared with the embedding engine :mod:`ctfp.engine.ray`."""

from __future__ import annotations

import collections
import functools
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any, TypeVar

import torch

from ctfp import exceptions
from ctfp.engine.settings import EngineSettings
from ctfp.exceptions import CtfpError, DeviceError
from ctfp.progress import logger

RAY_INSTALL = "pip install 'ctfp[ray]'"
T = TypeVar("T")


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


def _connect(ray: Any, address: str | None) -> tuple[int, int]:
    """Connect to Ray at ``address`` (None: start a local Ray) unless connected already;
    returns the CPUs and GPUs of the cluster."""
    if not ray.is_initialized():
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            ray.init(include_dashboard=False, logging_level=logging.WARNING)
    elif address:
        logger.info(f"this process is already connected to Ray; using that, not {address!r}")
    resources = ray.cluster_resources()
    return int(resources.get("CPU", 0)), int(resources.get("GPU", 0))


def _ctfp_errors(run: Callable[..., T]) -> Callable[..., T]:
    """``run``, raising the CtfpError behind Ray's wrappers instead of the wrappers."""

    @functools.wraps(run)
    def wrapped(*args: Any, **kwargs: Any) -> T:
        try:
            return run(*args, **kwargs)
        except Exception as exc:
            cause = _ctfp_cause(exc)
            if cause is not None:
                raise cause from None
            raise

    return wrapped


def ordered_map(
    function: Callable[[Any], T],
    items: Iterable[Any],
    settings: EngineSettings,
    *,
    stateful: bool = False,
    gpu: bool | None = False,
) -> Iterator[T]:
    """``function(item)`` for each item, on Ray, yielded in item order.

    ``function`` is shipped once (``ray.put``); items should be small (shard paths).
    ``stateful``: a pool of actors that keep their copy of ``function``; else Ray tasks. At
    most 2 x workers items are in flight. Workers: ``settings.actors``, default one per GPU
    (``gpu``; None: where the cluster has GPUs), or, stateful, one per node with the node's
    CPUs as threads, or one task per CPU.
    """
    ray = require_ray()
    cpus, gpus = _connect(ray, settings.ray_address)
    cpus = max(cpus, 1)
    gpu = gpus > 0 if gpu is None else gpu
    if gpu and gpus == 0:
        raise DeviceError("a CUDA device was asked for but the Ray cluster has no GPU")
    nodes = max(1, sum(1 for n in ray.nodes() if n.get("Alive")))
    workers = settings.actors or (gpus if gpu else nodes if stateful else cpus)
    threads = max(1, cpus // workers) if stateful and not gpu else 1
    window = 2 * workers
    ref = ray.put(function)
    pending: collections.deque[Any] = collections.deque()
    if stateful:
        actor = ray.remote(num_cpus=0 if gpu else threads, num_gpus=1 if gpu else 0)(MapWorker)
        pool = [actor.remote(ref, threads) for _ in range(workers)]
        calls = (pool[i % workers].call.remote(item) for i, item in enumerate(items))
    else:
        task = ray.remote(num_cpus=1, num_gpus=1 if gpu else 0)(_call)
        calls = (task.remote(ref, item) for item in items)
    try:
        for call in calls:
            pending.append(call)
            if len(pending) >= window:
                yield _get(ray, pending.popleft())
        while pending:
            yield _get(ray, pending.popleft())
    finally:  # stopped early (an error, or a consumer that stopped): nothing left running
        if stateful:
            for a in pool:
                ray.kill(a)
        else:
            for call in pending:
                ray.cancel(call)


def _call(function: Callable[[Any], T], item: Any) -> T:
    return function(item)


@_ctfp_errors
def _get(ray: Any, ref: Any) -> Any:
    """``ray.get``, raising the CtfpError behind Ray's wrappers."""
    return ray.get(ref)


class MapWorker:
    """Ray actor of a stateful :func:`ordered_map`: ``function`` per item, with ``threads``
    torch and FAISS threads (Ray would give it one)."""

    def __init__(self, function: Callable[[Any], Any], threads: int) -> None:
        import faiss

        threads = max(1, min(threads, os.cpu_count() or 1))
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
        self.function = function

    def call(self, item: Any) -> Any:
        return self.function(item)


def _ctfp_cause(exc: BaseException) -> CtfpError | None:
    """The CtfpError behind Ray's wrappers (RayTaskError, UserCodeException), if any."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        cause = getattr(e, "cause", None)
        if isinstance(cause, BaseException) and id(cause) not in seen:
            # A RayTaskError is also an instance of its cause's class: raise the cause.
            stack.append(cause)
            continue
        if isinstance(e, CtfpError):
            return e
        stack.extend([e.__cause__, e.__context__])
    # An actor that failed in __init__ surfaces as ActorDiedError, which keeps only the text.
    found = re.findall(r"ctfp\.exceptions\.(\w+): ([^\n]+)", str(exc))
    if found:
        name, message = found[-1]
        cls = getattr(exceptions, name, CtfpError)
        return cls(message) if isinstance(cls, type) and issubclass(cls, CtfpError) else None
    return None


__all__ = ["RAY_INSTALL", "MapWorker", "ordered_map", "require_ray"]
