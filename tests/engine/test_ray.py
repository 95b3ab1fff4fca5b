"""The Ray Data engine on a local 2-CPU Ray: the local rows, resume after kill -9, errors."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ctfp.embed.cache import build_cache
from ctfp.embed.runner import embed, embed_many
from ctfp.engine.settings import EngineSettings
from ctfp.exceptions import CtfpError, DeviceError
from ctfp.store.reader import read_embeddings, read_errors
from ctfp.store.schema import read_metadata
from tests.conftest import EDGE, LUNG, copy_pngs, cuda

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'ctfp[ray]')")
pytest.importorskip(
    "ray.data", reason="ray is installed without Ray Data (pip install 'ray[data]')"
)

# Ray Data's own DataContext still reads its deprecated fields.
# Ray starts in seconds and its tests run tens of them: outside `make test-fast`.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*deprecated.*:DeprecationWarning"),
    pytest.mark.slow,
]

# Small and exact: random weights at 64 px, fp32 compute, float32 storage.
SMALL = dict(weights="random", image_size=64, precision="fp32", dtype="float32", progress=False)
# Where the network is not what a test checks: 16x16 pixels, exact, with no ResNet50 to build
# in each actor (every embed() on Ray starts its actors afresh).
PIXELS = dict(features="pixels:16", dtype="float32", progress=False)


def _shards(folder: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted(folder.glob("part-*.parquet")))


def test_ray_gives_the_local_rows_for_pngs_dicoms_and_volumes(
    tmp_path: Path, lung_pngs, ray_address: str, assert_same_rows
) -> None:
    import nibabel as nib

    src = copy_pngs(lung_pngs[:6], tmp_path / "src")
    for inst in ("010", "011", "012"):
        shutil.copy(LUNG / "dicom" / "A0001" / "s2" / f"{inst}.dcm", src / f"d{inst}.dcm")
    shutil.copy(EDGE / "CT_Explicit_Little.dcm", src / "ct_edge.dcm")
    shutil.copy(EDGE / "MR_Explicit_Little_MultiFrame.dcm", src / "mr.dcm")  # 16 frames
    vol = np.random.default_rng(0).integers(-1000, 400, (48, 40, 5)).astype(np.int16)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), src / "ct.nii.gz")  # 5 frames, not square
    # Batches of 4 rows split the volumes across forward passes; parts hold whole files: the
    # local engine cuts them after 10 rows, the Ray planner by files (at least two blocks per
    # actor; it never opens an input to count its slices): same rows, same order, other parts.
    options = dict(SMALL, batch_size=4, rows_per_shard=10, commit_seconds=3600.0)
    local = embed(src, tmp_path / "local", **options)
    remote = embed(src, tmp_path / "ray", engine="ray", **options)
    assert remote.rows == local.rows == 10 + 16 + 5 and not remote.errors
    assert remote.engine == "ray" and remote.actors == 1 and remote.device == "ray:1xcpu"
    assert remote.precision == "fp32" and remote.identity == local.identity
    assert remote.settings == local.settings
    assert set(remote.timings) == {"ray_init", "startup", "wait", "write"}
    assert_same_rows(tmp_path / "local", tmp_path / "ray", same_parts=False)
    parts = sorted(p.name for p in (tmp_path / "ray").glob("part-*.parquet"))
    assert parts == ["part-00000.parquet", "part-00001.parquet"]  # two blocks of 6 files
    # The embeddings stayed with the actor that wrote them: the driver got O(files) bytes.
    assert 0 < remote.driver_bytes < 300 * remote.files
    assert remote.driver_bytes < remote.rows * 2048 * 4 / 20
    data = read_embeddings(tmp_path / "ray")
    frames = dict(zip(data.ids, data.table.column("frame").to_pylist(), strict=True))
    assert frames["mr#15"] == 15 and frames["ct#4"] == 4 and frames["d010"] == 0
    # A second run has nothing left to do.
    again = embed(src, tmp_path / "ray", engine="ray", **options)
    assert again.rows == 0 and again.skipped_files == again.files == 12


def test_several_types_run_as_one_job_with_the_local_rows(
    tmp_path: Path, lung_pngs, ray_address: str, assert_same_rows
) -> None:
    """embed_many on Ray: one job, each block decoded once for every type (a joined one's parts
    resized each to its side, a volume among the inputs), the folders the local engine writes."""
    src = copy_pngs(lung_pngs[:4], tmp_path / "src")
    shutil.copy(EDGE / "MR_Explicit_Little_MultiFrame.dcm", src / "mr.dcm")
    types = ["pixels:16", "pixels:16+residual:32"]
    options = dict(dtype="float32", rows_per_shard=100, progress=False)
    local = embed_many(src, {f: tmp_path / "local" / f for f in types}, **options)
    remote = embed_many(src, {f: tmp_path / "ray" / f for f in types}, engine="ray", **options)
    for f in types:
        assert remote[f].engine == "ray" and remote[f].rows == local[f].rows == 4 + 16
        assert remote[f].settings == local[f].settings and remote[f].settings["features"] == f
        assert_same_rows(tmp_path / "local" / f, tmp_path / "ray" / f, same_parts=False)
    assert remote[types[0]].driver_bytes == remote[types[1]].driver_bytes  # one run


def test_corrupt_inputs_land_in_the_errors_table(
    tmp_path: Path, lung_pngs, ray_address: str
) -> None:
    src = copy_pngs(lung_pngs[:4], tmp_path / "src")
    (src / "zero.png").write_bytes(b"")
    (src / "truncated.png").write_bytes(lung_pngs[0].read_bytes()[:2000])
    (src / "text.png").write_text("this is not a PNG")
    shutil.copy(EDGE / "rtstruct.dcm", src / "rtstruct.dcm")
    options = dict(PIXELS, batch_size=3)
    out = tmp_path / "ray"
    # Joins the module's Ray by its address.
    engine = EngineSettings(engine="ray", ray_address=ray_address)
    result = embed(src, out, engine=engine, **options)
    assert len(result.errors) == 4 and result.rows == 4
    embed(src, tmp_path / "local", **options)
    errors = read_errors(out).to_pylist()
    assert errors == read_errors(tmp_path / "local").to_pylist()
    reasons = {e["id"]: e["reason"] for e in errors}
    assert set(reasons) == {"zero", "truncated", "text", "rtstruct"}
    assert reasons["zero"] == "empty file (0 bytes)" and "truncated" in reasons["truncated"]
    assert "no pixel data" in reasons["rtstruct"]
    assert len(read_embeddings(out)) == 4
    # A rerun retries the failures, records them once and adds no rows.
    assert embed(src, out, engine="ray", **options).rows == 0
    assert len(read_errors(out)) == 4 and len(read_embeddings(out)) == 4
    # The pixel limit reaches the decode tasks: every 256x256 slice is over 128x128.
    small = embed(src, tmp_path / "small", engine=engine, max_pixels=128 * 128, **options)
    assert small.rows == 0 and len(small.errors) == 8
    assert all("more than the limit of 16,384" in e["reason"] for e in small.errors[:4])


def test_kill_9_and_resume_gives_the_uninterrupted_ids(
    tmp_path: Path, lung_pngs, ray_address: str, embed_command, cosines
) -> None:
    src = copy_pngs(lung_pngs[:48], tmp_path / "src")
    # A block (one file) and a part a row: the kill lands after 2 of 48 parts.
    options = dict(PIXELS, batch_size=1, rows_per_shard=1)
    del options["progress"]
    out = tmp_path / "out"
    engine = {"engine": "ray", "ray_address": ray_address}
    proc = subprocess.Popen(embed_command(src, out, engine=engine, **options))
    deadline = time.monotonic() + 120
    while len(list(out.glob("part-*.parquet"))) < 2 and proc.poll() is None:
        assert time.monotonic() < deadline, "no shard within 2 minutes"
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before it could be killed; make it slower"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_with = len(list(out.glob("part-*.parquet")))
    assert 2 <= killed_with < 48

    reference = tmp_path / "reference"
    embed(src, reference, progress=False, **options)  # local engine, uninterrupted
    resumed = embed(src, out, engine="ray", progress=False, **options)
    assert resumed.skipped_files >= killed_with - 1 and resumed.rows == 48 - resumed.skipped_files
    ref, got = read_embeddings(reference), read_embeddings(out)  # refuses duplicate ids
    assert len(got) == 48 and len(set(got.ids)) == 48 and sorted(got.ids) == sorted(ref.ids)
    ia, ib = np.argsort(ref.ids), np.argsort(got.ids)
    assert cosines(ref.matrix[ia], got.matrix[ib]).min() >= 0.999
    assert not list(out.glob(".*.tmp"))


def test_decoded_slice_cache_on_ray(
    tmp_path: Path, lung_pngs, ray_address: str, assert_same_rows
) -> None:
    src = copy_pngs(lung_pngs[:5], tmp_path / "src")
    shutil.copy(EDGE / "MR_Explicit_Little_MultiFrame.dcm", src / "mr.dcm")
    (src / "broken.png").write_bytes(b"not a png")
    options = dict(size=48, rows_per_shard=8, progress=False)
    build_cache(src, tmp_path / "cache-local", **options)
    result = build_cache(src, tmp_path / "cache-ray", engine="ray", **options)
    assert result.rows == 5 + 16 and [e["id"] for e in result.errors] == ["broken"]
    assert result.device == "ray:1xcpu"  # copying bytes takes no GPU
    a, b = (_shards(tmp_path / name) for name in ("cache-local", "cache-ray"))
    assert a.column("id").to_pylist() == b.column("id").to_pylist()
    assert a.equals(b, check_metadata=True)  # uint8 pixels: exactly equal
    # Embedding from the cache (no image decoding) on Ray equals the local engine's.
    embed(tmp_path / "cache-ray", tmp_path / "local", batch_size=4, **PIXELS)
    embed(tmp_path / "cache-ray", tmp_path / "ray", batch_size=4, engine="ray", **PIXELS)
    # 21 rows: one local part; Ray cuts a small run into two blocks per actor.
    assert_same_rows(tmp_path / "local", tmp_path / "ray", same_parts=False)


def test_the_engines_resume_each_other(tmp_path: Path, lung_pngs, ray_address: str) -> None:
    src = copy_pngs(lung_pngs[:10], tmp_path / "src")
    embed(sorted(src.glob("*.png"))[:6], tmp_path / "out", rows_per_shard=4, **PIXELS)
    # Batches of 2 files: the 4 pending files make 2 blocks, one per actor.
    options = dict(PIXELS, rows_per_shard=4, batch_size=2)
    engine = EngineSettings(engine="ray", actors=2)
    result = embed(src, tmp_path / "out", engine=engine, **options)
    assert result.skipped_files == 6 and result.rows == 4 and result.actors == 2
    data = read_embeddings(tmp_path / "out")
    assert sorted(data.ids) == sorted(p.stem for p in src.glob("*.png"))
    metas = {str(read_metadata(pq.read_schema(p))) for p in (tmp_path / "out").glob("part-*")}
    assert len(metas) == 1  # shards of both engines carry the same metadata


def test_an_actor_whose_model_differs_from_the_drivers_is_refused(
    tmp_path: Path, lung_pngs, ray_address: str
) -> None:
    from ctfp.embed.backbone import build_backbone

    driver = os.getpid()  # a worker "with another weights file": another seed off the driver

    def factory():
        return build_backbone("random", seed=0 if os.getpid() == driver else 1, image_size=32)

    with pytest.raises(CtfpError, match="differs from the driver's"):
        embed(
            lung_pngs[0], tmp_path / "out", backbone_factory=factory, engine="ray", progress=False
        )
    assert not list((tmp_path / "out").glob("part-*"))


def test_what_the_ray_engine_cannot_do_is_refused_up_front(tmp_path: Path, lung_pngs) -> None:
    # Refused before Ray is started or joined: no fixture needed.
    with pytest.raises(CtfpError, match=r"compile.*option of the local engine"):
        embed(lung_pngs[0], tmp_path / "out", engine="ray", compile=True, **SMALL)
    with pytest.raises(DeviceError, match="each actor gets one whole GPU"):
        embed(lung_pngs[0], tmp_path / "out", engine="ray", device="cuda:0", **SMALL)
    assert not (tmp_path / "out").exists()


@cuda
@pytest.mark.gpu
def test_gpu_actors_match_the_local_gpu_run(
    tmp_path: Path, lung_pngs, ray_address: str, assert_same_rows
) -> None:
    assert ray.cluster_resources().get("GPU", 0) >= 1
    src = copy_pngs(lung_pngs[:16], tmp_path / "src")
    options = dict(SMALL, device="cuda", batch_size=8)
    embed(src, tmp_path / "local", **options)
    result = embed(src, tmp_path / "ray", engine="ray", **options)
    assert result.device == "ray:1xcuda" and torch.cuda.is_available()
    assert_same_rows(tmp_path / "local", tmp_path / "ray")


def test_blocks_are_whole_consecutive_files_within_the_limits() -> None:
    from ctfp.engine.ray import BLOCK_BYTES, plan_blocks

    def sizes(*args, **kwargs) -> list[int]:
        blocks = plan_blocks(*args, **kwargs)
        assert [i for b in blocks for i in b] == list(range(args[0]))  # all, in order, once
        return [len(b) for b in blocks]

    assert sizes(12, 10, 64, actors=1, batch_size=4) == [6, 6]  # two blocks per actor
    assert sizes(4, 4, 64, actors=2, batch_size=2) == [2, 2]
    assert sizes(48, 4, 128, actors=1, batch_size=4) == [4] * 12  # rows_per_shard caps
    assert sizes(10, 100, 64, actors=8, batch_size=4) == [4, 4, 2]  # not below a batch
    per = BLOCK_BYTES // (224 * 224)  # decoded bytes cap: ~1,300 files at 224 px
    assert sizes(100_000, 10_000, 224, actors=2, batch_size=64)[:2] == [per, per]
    assert plan_blocks(0, 10, 64) == []
