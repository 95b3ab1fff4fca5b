"""Shared fixtures: the real CT data beside the clone and a cached small model."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from ctfp.embed.features import PixelFeatures
from ctfp.embed.job import Job, Output
from ctfp.io.sources import InputFile
from ctfp.io.window import Window

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
LUNG = SHARED / "lung-pet-ct-dx"
EDGE = SHARED / "dicom-edge"

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def pytest_configure(config: pytest.Config) -> None:
    # CI and developers have the data; a device machine running only `-m gpu` may not.
    if not LUNG.is_dir() and not os.environ.get("CTFP_ALLOW_MISSING_DATA"):
        raise pytest.UsageError(f"the shared CT data is missing: expected {LUNG}")


AWS_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
_BUCKETS = itertools.count()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """A local S3-compatible server (moto's) on a free port of 127.0.0.1, configured for the
    session through the standard AWS environment variables only (child processes inherit
    them); yields a boto3 client. Skipped, with the reason, where it cannot start."""
    server_module = pytest.importorskip(
        "moto.server", reason="moto is not installed (pip install 'moto[server]')"
    )
    boto3 = pytest.importorskip("boto3")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    try:
        server.start()
    except OSError as exc:  # pragma: no cover - a sandbox without sockets
        pytest.skip(f"the local S3 server could not start: {exc}")
    saved = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(
        AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}",
        AWS_ACCESS_KEY_ID="ctfp-test-key",
        AWS_SECRET_ACCESS_KEY="ctfp-test-secret",
        AWS_DEFAULT_REGION="us-east-1",
    )
    yield boto3.client("s3")
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def s3(s3_server: Any) -> str:
    """A new, empty bucket on the local S3 server (its name)."""
    name = f"ctfp-{next(_BUCKETS)}"
    s3_server.create_bucket(Bucket=name)
    return name


#: The README's `make demo` as tests/test_readme.py runs it (its RUN_AS entry).
DEMO_COMMAND = "ctfp demo --out demo-out --weights random --quiet"


def offline_env(tmp: Path) -> dict[str, str]:
    """The environment of a user's shell with no way to download weights (TORCH_HOME empty,
    the proxies closed) and the venv's ``ctfp`` and ``python`` first on PATH."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("VIRTUAL_ENV", None)
    env["TORCH_HOME"] = str(tmp / "torch-home")
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env[proxy] = "http://127.0.0.1:9"
    for name in ("no_proxy", "NO_PROXY"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    """The README's `make demo` (``DEMO_COMMAND``, with --json) run once, as a user runs it: a
    child process in a new folder, offline. The folder (demo-out/ in it) and the summary: the
    README tour goes on from its demo-out/ (tests/test_readme.py) and tests/cli checks it."""
    work = tmp_path_factory.mktemp("demo")
    run = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + DEMO_COMMAND + " --json"],
        cwd=work,
        env=offline_env(work),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, f"{DEMO_COMMAND} --json failed:\n{run.stderr[-3000:]}"
    return work, json.loads(run.stdout)


@pytest.fixture(scope="session")
def lung_pngs() -> list[Path]:
    if not LUNG.is_dir():
        pytest.skip(f"shared CT data not found at {LUNG}")
    paths = sorted((LUNG / "png").glob("*.png"))
    assert len(paths) == 188
    return paths


# Runs embed() in a child process (argv: sources, out, JSON options), so that a test can kill it.
EMBED_SCRIPT = """
import json, sys
from ctfp.embed.runner import embed
embed(sys.argv[1], sys.argv[2], progress=False, **json.loads(sys.argv[3]))
"""


@pytest.fixture
def embed_command() -> Callable[..., list[str]]:
    """``embed_command(src, out, **options)``: the command line of a child ``embed()`` run."""

    def command(src: Path, out: Path | str, **options: Any) -> list[str]:
        return [sys.executable, "-c", EMBED_SCRIPT, str(src), str(out), json.dumps(options)]

    return command


@pytest.fixture(scope="session")
def random_backbone_64():
    """ResNet50 with seeded random weights at 64 px: fast enough for many tests on 2 cores."""
    from ctfp.embed.backbone import build_backbone

    backbone = build_backbone("random", seed=0, image_size=64)
    return lambda: backbone


def blobs(n: int, d: int, k: int = 4, seed: int = 0, spread: float = 2.0) -> tuple:
    """``n`` rows of ``k`` Gaussian blobs in ``d`` dimensions (scales 1, 1.3, ...), shifted by 5,
    and their blob numbers."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, spread, (k, d))
    scales = 1.0 + 0.3 * np.arange(k)
    x = np.concatenate(
        [rng.normal(c, s, (n // k, d)) for c, s in zip(centers, scales, strict=True)]
    )
    return x + 5.0, np.repeat(np.arange(k), n // k)


def kill_9_while_running(
    command: list[str], done: Callable[[], int], waits=(1, 6), timeout: float = 180.0
) -> int:
    """Run ``command`` once per wait in ``waits`` and SIGKILL it as soon as ``done()`` (e.g.
    the parts committed so far) reaches that wait; returns how many runs were killed (a run
    that finished first was not). Two kills, right after the first commit and mid-run, prove
    what more would: every process start costs seconds."""
    import signal
    import subprocess
    import time

    kills = 0
    for wait in waits:
        proc = subprocess.Popen(command)
        deadline = time.monotonic() + timeout
        while done() < wait and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    return kills


def assert_same_embeddings(reference: Any, got: Any) -> None:
    """The same ids (none twice) and, row by row, the same embeddings (to float32 rounding)."""
    assert len(got.ids) == len(set(got.ids)) and sorted(got.ids) == sorted(reference.ids)
    np.testing.assert_allclose(
        got.matrix[np.argsort(got.ids)],
        reference.matrix[np.argsort(reference.ids)],
        rtol=1e-3,
        atol=1e-3,
    )


def copy_pngs(paths: list[Path], dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for p in paths:
        shutil.copy(p, dest / p.name)
    return dest


# -- small ImageCLEF-style datasets built from the shared CT PNGs, with their truth files -----
def _save(img: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def _task1_folders(root: Path, pngs: list[Path]) -> Path:
    """Used / not used interleaved by slice position; "generated" = near-copies of used slices."""
    rng = np.random.default_rng(0)
    truth = []
    for n, path in enumerate(pngs):
        used = n % 2 == 0
        label = "used" if used else "not_used"
        img = Image.open(path)
        if n % 6 in (4, 5):  # a third of each class goes to the test set
            _save(img, root / "test" / f"{path.stem}.png")
            truth.append(f"{path.stem},{int(used)}")
        else:
            _save(img, root / "train" / label / f"{path.stem}.png")
        if used:  # the "generator" memorised used slices: noisy copies
            a = np.asarray(img, dtype=np.float32) + rng.normal(0, 6, (256, 256))
            _save(
                Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)),
                root / "generated" / f"g{n}.png",
            )
    (root / "truth.csv").write_text("id,label\n" + "\n".join(truth) + "\n")
    return root


@pytest.fixture(scope="session")
def task1_data(tmp_path_factory) -> Path:
    """Task 1 folders over the 188 slices (62 test, 63 + 63 training, 94 generated)."""
    return _task1_folders(tmp_path_factory.mktemp("task1"), sorted((LUNG / "png").glob("*.png")))


@pytest.fixture(scope="session")
def task1_small(tmp_path_factory) -> Path:
    """The same folders over every third slice (20 test, 22 + 21 training, 32 generated): a
    run embeds a third of the slices, and each of the hundreds of fits of its cross-validation,
    label shuffles and held-out halves sees a third of the rows. For tests of what a run writes
    and who reads it, not of how well it scores."""
    pngs = sorted((LUNG / "png").glob("*.png"))[::3]
    return _task1_folders(tmp_path_factory.mktemp("task1-small"), pngs)


GENERATORS = {
    "blur": lambda img, rng: img.filter(ImageFilter.GaussianBlur(3)),
    "noise": lambda img, rng: Image.fromarray(
        np.clip(np.asarray(img, np.float32) + rng.normal(0, 25, (256, 256)), 0, 255).astype(
            np.uint8
        )
    ),
    "poster": lambda img, rng: Image.fromarray((np.asarray(img) // 64 * 64).astype(np.uint8)),
}


@pytest.fixture(scope="session")
def task2_data(tmp_path_factory) -> Path:
    """Three "generators" with distinct fingerprints (blur, noise, posterisation)."""
    root = tmp_path_factory.mktemp("task2")
    pngs = sorted((LUNG / "png").glob("*.png"))[::3]
    rng = np.random.default_rng(0)
    truth = []
    for n, path in enumerate(pngs):
        g = list(GENERATORS)[n % 3]
        img = GENERATORS[g](Image.open(path), rng)
        if n < 12:
            _save(img, root / "train" / g / f"{path.stem}.png")
        else:
            _save(img, root / "test" / f"{path.stem}.png")
            truth.append(f"{path.stem},{n % 3}")
    (root / "truth.csv").write_text("id,cluster\n" + "\n".join(truth) + "\n")
    return root


@pytest.fixture
def pixel_job() -> Callable[..., Job]:
    """``pixel_job(files, *outs, factory=..., settings={}, **fields)``: a job of one output per
    folder of ``outs``, whose model is 8x8 raw pixels (64-d, exact, instant), stored as float32."""

    def make(
        files: list[InputFile],
        *outs: Path,
        factory: Callable[[], Any] = lambda: PixelFeatures(8),
        settings: dict[str, Any] | None = None,
        **fields: Any,
    ) -> Job:
        options: dict[str, Any] = dict(
            window=Window(),
            dtype="float32",
            rows_per_shard=4,
            device="cpu",
            precision="fp32",
            progress=False,
        )
        outputs = [Output(str(out), factory, settings or {}) for out in outs]
        return Job(files=files, outputs=outputs, **{**options, **fields})

    return make
