"""embed() end to end on real CT: settings, shards, resume after kill -9, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import ctfp
from ctfp.embed.runner import embed, embed_many
from ctfp.embed.settings import CacheSettings, EmbedSettings
from ctfp.exceptions import DeviceError
from ctfp.settings import SettingsError
from ctfp.store.reader import read_embeddings, read_errors
from tests.conftest import (
    EDGE,
    LUNG,
    assert_same_embeddings,
    copy_pngs,
    cuda,
    kill_9_while_running,
)

SAMPLE = Path(ctfp.__file__).parent / "data" / "sample"  # ships with the package


def test_all_188_pngs_become_readable_shards(tmp_path: Path, lung_pngs, random_backbone_64) -> None:
    out = tmp_path / "out"
    result = embed(
        LUNG / "png", out, backbone_factory=random_backbone_64, rows_per_shard=50, progress=False
    )
    assert result.rows == 188 and not result.errors and len(result.shards) == 4
    # Imported here: the GPU tests of this module also run where only the runtime is installed.
    duckdb = pytest.importorskip("duckdb")
    count = duckdb.sql(f"SELECT count(*) FROM '{out}/*.parquet'").fetchall()[0][0]
    assert count == 188
    data = read_embeddings(out)
    assert data.matrix.shape == (188, 2048) and np.isfinite(data.matrix).all()
    first = duckdb.sql(
        f"SELECT embedding::FLOAT[] FROM '{out}/part-*.parquet' WHERE id = '{data.ids[0]}'"
    ).fetchall()[0][0]
    np.testing.assert_array_equal(np.asarray(first, dtype=np.float32), data.matrix[0])
    assert sorted(data.ids) == sorted(p.stem for p in lung_pngs)
    assert data.metadata["dtype"] == "float16" and data.metadata["dim"] == 2048
    assert data.metadata["weights"] == "random:seed=0"
    assert data.table.column("source").to_pylist()[0] == str(LUNG / "png" / f"{data.ids[0]}.png")
    assert set(data.table.column("frame").to_pylist()) == {0}
    # Different slices give different embeddings (not a constant vector).
    assert np.linalg.norm(data.matrix - data.matrix.mean(0), axis=1).min() > 1.0


def test_png_and_dicom_of_a_slice_agree(tmp_path: Path, random_backbone_64) -> None:
    slices = [
        ("A0001", "s2", "010"),
        ("A0001", "s2", "050"),
        ("A0002", "s3", "010"),
        ("A0002", "s3", "025"),
    ]
    for patient, series, inst in slices:
        shutil.copy(
            LUNG / "png" / f"{patient}_{series}_{inst}.png", tmp_path / f"{patient}{inst}.png"
        )
        shutil.copy(
            LUNG / "dicom" / patient / series / f"{inst}.dcm", tmp_path / f"{patient}{inst}_d.dcm"
        )
    embed(
        tmp_path,
        tmp_path / "out",
        backbone_factory=random_backbone_64,
        dtype="float32",
        progress=False,
    )
    data = read_embeddings(tmp_path / "out")
    index = {i: k for k, i in enumerate(data.ids)}
    m = data.matrix
    for patient, _, inst in slices:
        dcm = m[index[f"{patient}{inst}_d"]]
        d = {i: np.linalg.norm(dcm - m[k]) for i, k in index.items() if not i.endswith("_d")}
        own = d.pop(f"{patient}{inst}")
        assert own < 0.3 * min(d.values()), (patient, inst, own, d)
        cos = (
            dcm
            @ m[index[f"{patient}{inst}"]]
            / np.linalg.norm(dcm)
            / np.linalg.norm(m[index[f"{patient}{inst}"]])
        )
        assert cos > 0.999


@pytest.mark.slow
def test_kill_9_and_resume_gives_the_uninterrupted_rows(
    tmp_path: Path, lung_pngs, embed_command
) -> None:
    src = copy_pngs(lung_pngs[:48], tmp_path / "src")
    # A commit a row (instant 16x16 pixel features; ResNet50 would only make each run slower):
    # the runs, with a loader worker, are killed right after the first commit and mid-run.
    common = dict(features="pixels:16", rows_per_shard=1, batch_size=1)
    out = tmp_path / "out"
    kills = kill_9_while_running(
        embed_command(src, out, workers=1, **common), lambda: len(list(out.glob("part-*.parquet")))
    )
    assert kills >= 2, "the run finished before it could be killed; make it slower"
    assert 6 <= len(list(out.glob("part-*.parquet"))) < 48
    embed(src, out, **common, workers=0, progress=False)  # resumes the killed runs' folder
    embed(src, tmp_path / "ref", **common, workers=0, progress=False)  # uninterrupted
    ref, got = read_embeddings(tmp_path / "ref"), read_embeddings(out)  # refuses duplicate ids
    assert len(got) == 48
    assert_same_embeddings(ref, got)
    assert not list(out.glob(".*.tmp"))


def _children(pid: int) -> dict[int, str]:
    """``{pid: start time}`` of the processes whose parent is ``pid`` (from /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # not a process, or gone
            continue
        if fields[1] == str(pid):
            found[int(entry.name)] = fields[19]
    return found


def _running(pid: int, started: str) -> bool:
    try:
        fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[19] == started and fields[0] != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc")
def test_kill_9_of_a_run_leaves_no_loader_workers_behind(
    tmp_path: Path, lung_pngs, embed_command
) -> None:
    import os
    import signal
    import subprocess
    import time

    src = copy_pngs(lung_pngs[:48], tmp_path / "src")
    # 64 KiB of float32 pixels a batch: a batch fills a pipe, so workers left with work block.
    options = dict(features="pixels:64", dtype="float32", batch_size=4, rows_per_shard=4)
    out = tmp_path / "out"
    proc = subprocess.Popen(embed_command(src, out, workers=2, **options))
    deadline = time.monotonic() + 120
    while not list(out.glob("part-*.parquet")) and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    workers = _children(proc.pid)
    assert proc.poll() is None, "the run finished before it could be killed; make it slower"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(workers) == 2
    deadline = time.monotonic() + 4  # torch's own check of the parent: every 5 s, if at all
    while any(_running(*w) for w in workers.items()) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = [pid for pid, started in workers.items() if _running(pid, started)]
    for pid in left:  # not to leave them behind on this machine either
        os.kill(pid, signal.SIGKILL)
    assert not left, f"loader workers {left} outlived the killed run"


def test_corrupt_inputs_are_recorded_and_the_run_goes_on(
    tmp_path: Path, lung_pngs, ctfp_log
) -> None:
    src = copy_pngs(lung_pngs[:5], tmp_path / "src")
    (src / "zero.png").write_bytes(b"")
    (src / "truncated.png").write_bytes(lung_pngs[0].read_bytes()[:2000])
    (src / "text.png").write_text("this is not a PNG")
    shutil.copy(EDGE / "rtstruct.dcm", src / "rtstruct.dcm")
    out = tmp_path / "out"
    options = dict(weights="random", image_size=64, progress=False)
    result = embed(src, out, **options)
    assert result.rows == 5 and len(result.errors) == 4
    warnings = [r.getMessage() for r in ctfp_log if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith("warning: 4 input(s) could not be read")
    assert str(out / "_errors" / "errors.parquet") in warnings[0]
    errors = {r["id"]: r["reason"] for r in read_errors(out).to_pylist()}
    assert set(errors) == {"zero", "truncated", "text", "rtstruct"}
    assert errors["zero"] == "empty file (0 bytes)"
    assert "truncated" in errors["truncated"]
    assert "not an image" in errors["text"]
    assert "no pixel data" in errors["rtstruct"]
    assert pq.read_table(out / "_errors" / "errors.parquet").column_names == [
        "id",
        "source",
        "reason",
    ]
    assert len(read_embeddings(out)) == 5
    # A rerun retries the failures, still records them once and adds no rows.
    again = embed(src, out, **options)
    assert again.rows == 0 and again.skipped_files == 5
    assert len(read_errors(out)) == 4 and len(read_embeddings(out)) == 5


def test_volumes_give_one_row_per_frame(tmp_path: Path, random_backbone_64) -> None:
    import nibabel as nib

    shutil.copy(EDGE / "MR_Explicit_Little_MultiFrame.dcm", tmp_path / "mr.dcm")
    vol = np.random.default_rng(0).integers(-1000, 400, (32, 32, 6)).astype(np.int16)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), tmp_path / "ct.nii.gz")
    embed(tmp_path, tmp_path / "out", backbone_factory=random_backbone_64, progress=False)
    data = read_embeddings(tmp_path / "out")
    assert sorted(data.ids) == sorted(
        [f"ct#{k}" for k in range(6)] + [f"mr#{k}" for k in range(16)]
    )
    frames = dict(zip(data.ids, data.table.column("frame").to_pylist(), strict=True))
    assert frames["mr#15"] == 15 and frames["ct#0"] == 0


def test_fp32_and_bf16_agree(tmp_path: Path, lung_pngs, random_backbone_64) -> None:
    src = copy_pngs(lung_pngs[::12], tmp_path / "src")
    runs = {}
    for precision in ("fp32", "bf16"):
        try:
            embed(
                src,
                tmp_path / precision,
                backbone_factory=random_backbone_64,
                precision=precision,
                dtype="float32",
                progress=False,
            )
        except (RuntimeError, DeviceError) as exc:  # pragma: no cover - bf16 missing on this CPU
            pytest.skip(f"bf16 does not run here: {exc}")
        runs[precision] = read_embeddings(tmp_path / precision).matrix
    a, b = runs["fp32"], runs["bf16"]
    cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() >= 0.99
    # Random-init features share a large common part; compare what differs between slices too.
    ac, bc = a - a.mean(0), b - a.mean(0)
    centered = np.sum(ac * bc, 1) / np.linalg.norm(ac, axis=1) / np.linalg.norm(bc, axis=1)
    assert centered.min() >= 0.9


def test_same_inputs_same_outputs(tmp_path: Path, lung_pngs) -> None:
    src = copy_pngs(lung_pngs[:4], tmp_path / "src")
    for name in ("a", "b"):
        embed(src, tmp_path / name, weights="random", weights_seed=3, image_size=64, progress=False)
    a, b = read_embeddings(tmp_path / "a"), read_embeddings(tmp_path / "b")
    assert a.metadata["weights_sha256"] == b.metadata["weights_sha256"]
    assert a.metadata["weights"] == "random:seed=3"
    np.testing.assert_array_equal(a.matrix, b.matrix)
    embed(src, tmp_path / "c", weights="random", weights_seed=4, image_size=64, progress=False)
    assert (
        read_embeddings(tmp_path / "c").metadata["weights_sha256"] != a.metadata["weights_sha256"]
    )


def test_a_settings_object_with_overrides(tmp_path: Path, lung_pngs) -> None:
    settings = EmbedSettings(weights="random", image_size=32, precision="fp32")
    result = embed(lung_pngs[0], tmp_path / "out", settings, dtype="float32", progress=False)
    assert result.settings == settings.replace(dtype="float32").to_dict()
    assert EmbedSettings.from_dict(result.settings).dtype == "float32"
    assert read_embeddings(tmp_path / "out").metadata["dtype"] == "float32"
    assert settings.dtype == "float16"  # the caller's settings are not changed


def test_unknown_options_and_bad_values_are_refused_before_anything_runs(
    tmp_path: Path, lung_pngs
) -> None:
    out = tmp_path / "out"
    with pytest.raises(SettingsError, match=r"embed\(\) got an unknown option 'unknown_option'"):
        embed(lung_pngs[0], out, unknown_option=1)
    with (  # renamed in 0.3: the old spelling warns and still works for a release
        pytest.warns(FutureWarning, match="use weights_seed="),
        pytest.raises(SettingsError, match="image_size must be at least 32"),
    ):
        embed(lung_pngs[0], out, weights="random", seed=1, image_size=8)
    with pytest.raises(SettingsError, match=r"EngineSettings\(engine='ray', actors"):
        embed(lung_pngs[0], out, weights="random", actors=2)
    with pytest.raises(SettingsError, match=r"EmbedSettings\.batch_size must be at least 1"):
        embed(lung_pngs[0], out, weights="random", batch_size=0)
    with pytest.raises(SettingsError, match=r"EmbedSettings\.features.*unknown features 'sift'"):
        embed(lung_pngs[0], out, features="sift")
    with pytest.raises(SettingsError, match="takes EmbedSettings settings, got CacheSettings"):
        embed(lung_pngs[0], out, CacheSettings())
    assert not out.exists()


def test_weights_may_be_a_path(tmp_path: Path, lung_pngs) -> None:
    from ctfp.embed.backbone import build_backbone

    torch.save(build_backbone("random", seed=5).net.state_dict(), tmp_path / "w.pt")
    embed(lung_pngs[0], tmp_path / "out", weights=tmp_path / "w.pt", image_size=32, progress=False)
    assert read_embeddings(tmp_path / "out").metadata["weights"] == "file:w.pt"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_asking_for_cuda_without_it_is_an_error(tmp_path: Path, lung_pngs) -> None:
    with pytest.raises(DeviceError, match="CUDA is not available"):
        embed(lung_pngs[0], tmp_path / "out", weights="random", device="cuda", progress=False)
    assert not (tmp_path / "out").exists()


@cuda
@pytest.mark.gpu
def test_cuda_matches_cpu(tmp_path: Path, random_backbone_64) -> None:
    # The bundled sample: a device machine running only the GPU tests may lack ../shared.
    src = copy_pngs(sorted(SAMPLE.glob("png/*.png")), tmp_path / "src")
    for device in ("cpu", "cuda"):
        embed(
            src,
            tmp_path / device,
            backbone_factory=random_backbone_64,
            device=device,
            precision="fp32",
            dtype="float32",
            progress=False,
        )
    a, b = read_embeddings(tmp_path / "cpu").matrix, read_embeddings(tmp_path / "cuda").matrix
    cos = np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.999


def test_embed_many_writes_what_each_type_alone_writes(tmp_path: Path, lung_pngs) -> None:
    """Several types from one decode, in two loader workers, a volume and a broken file among
    the inputs: each folder as embed() of that type alone (no workers) writes it."""
    src = copy_pngs(lung_pngs[:4], tmp_path / "src")
    shutil.copy(EDGE / "MR_Explicit_Little_MultiFrame.dcm", src / "mr.dcm")
    (src / "broken.png").write_bytes(b"not a png")
    types = ["pixels:16", "residual:32+pixels:16", "spectrum:32"]
    options = dict(dtype="float32", rows_per_shard=8, batch_size=3, progress=False)
    threads = torch.get_num_threads()
    results = embed_many(src, {f: tmp_path / f for f in types}, workers=2, **options)
    assert list(results) == types
    assert torch.get_num_threads() == threads  # one thread for the models while they ran
    for f in types:
        alone = embed(src, tmp_path / "alone" / f, features=f, workers=0, **options)
        result = results[f]
        assert (result.rows, result.files, result.workers) == (4 + 16, 6, 2)
        assert {**result.settings, "workers": 0} == alone.settings
        assert result.identity == alone.identity
        a, b = read_embeddings(tmp_path / "alone" / f), read_embeddings(tmp_path / f)
        assert a.table.equals(b.table) and a.metadata == b.metadata
        np.testing.assert_array_equal(a.matrix, b.matrix)
        parts = [
            sorted(p.name for p in d.glob("part-*")) for d in (tmp_path / "alone" / f, tmp_path / f)
        ]
        assert parts[0] == parts[1]
        assert read_errors(tmp_path / f).equals(read_errors(tmp_path / "alone" / f))
    with pytest.raises(SettingsError, match="not auto"):
        embed_many(src, {"auto": tmp_path / "auto"})
    with pytest.raises(SettingsError, match="unknown features 'sift'"):
        embed_many(src, {"sift": tmp_path / "sift"})
