"""The reader: finding inputs, decoding them (failures kept as reasons), batches in input order."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ctfp.embed.backbone import Preprocessing
from ctfp.embed.cache import build_cache
from ctfp.embed.reader import (
    MIN_FILES_FOR_WORKERS,
    CacheDataset,
    Decoded,
    SliceDataset,
    collate,
    decode_all,
    default_workers,
    find_inputs,
    make_dataset,
    make_loader,
)
from ctfp.embed.settings import InputSettings
from ctfp.exceptions import InputError
from ctfp.io.window import Window
from tests.conftest import EDGE, copy_pngs

PRE = Preprocessing(image_size=32)


@pytest.fixture
def folder(tmp_path: Path, lung_pngs) -> Path:
    """5 PNGs, a 16-frame DICOM and a broken PNG."""
    src = copy_pngs(lung_pngs[:5], tmp_path / "src")
    shutil.copy(EDGE / "MR_Explicit_Little_MultiFrame.dcm", src / "mr.dcm")
    (src / "broken.png").write_bytes(b"not a png")
    return src


def test_find_inputs_lists_images_or_cache_rows(folder: Path, tmp_path: Path) -> None:
    files = find_inputs(folder, InputSettings())
    assert [f.id for f in files][:2] == ["A0001_s2_001", "A0001_s2_002"] and len(files) == 7
    assert all(f.cache is None for f in files)
    build_cache(folder, tmp_path / "cache", size=48, progress=False)
    rows = find_inputs(tmp_path / "cache", InputSettings())
    assert len(rows) == 5 + 16 and all(r.cache is not None for r in rows)
    assert {r.frame for r in rows if r.id.startswith("mr#")} == set(range(16))
    with pytest.raises(InputError, match="not both"):
        find_inputs([tmp_path / "cache", folder], InputSettings())


def test_a_bad_file_is_a_reason_not_an_exception(folder: Path) -> None:
    files = find_inputs(folder, InputSettings())
    dataset = SliceDataset(files, Window(), PRE)
    ids = [f.id for f in files]
    good, volume, bad = dataset[0], dataset[ids.index("mr")], dataset[ids.index("broken")]
    assert good.views[0].shape == (1, 1, 32, 32) and good.views[0].dtype == torch.uint8
    assert volume.views[0].shape == (16, 1, 32, 32) and volume.count == 16
    assert bad.views is None and "not an image" in bad.error and bad.count == 0


def test_collate_keeps_failures_aside() -> None:
    frames = torch.zeros((2, 1, 8, 8), dtype=torch.uint8)
    small = torch.zeros((2, 1, 4, 4), dtype=torch.uint8)
    batch = collate(
        [
            Decoded(0, (frames, small)),
            Decoded(1, None, "broken"),
            Decoded(2, (frames[:1], small[:1])),
        ]
    )
    assert batch.indices == [0, 2] and batch.counts == [2, 1]
    assert [v.shape for v in batch.views] == [(3, 1, 8, 8), (3, 1, 4, 4)]
    assert batch.errors == [(1, "broken")] and batch.frames is batch.views[0]
    empty = collate([Decoded(0, None, "")])
    assert empty.views == () and empty.errors == [(0, "unknown error")]


def test_each_file_is_decoded_once_and_resized_for_each_view(folder: Path) -> None:
    files = find_inputs(folder, InputSettings())
    views = (PRE, Preprocessing(image_size=16), Preprocessing(image_size=32, channels="gray"))
    (one,) = [d for d in decode_all(files[:1], Window(), views)]
    assert [v.shape for v in one.views] == [(1, 1, 32, 32), (1, 1, 16, 16), (1, 1, 32, 32)]
    # Each view is its own resize of the decoded slice, the same as a one-view reader's.
    for v, view in zip(one.views, views, strict=True):
        assert torch.equal(v, decode_all(files[:1], Window(), view)[0].views[0])


def test_loader_batches_keep_input_order_with_workers(folder: Path) -> None:
    files = find_inputs(folder, InputSettings())
    seen = {}
    for workers in (0, 2):
        loader = make_loader(
            make_dataset(files, Window(), PRE), files_per_batch=3, workers=workers, pin_memory=False
        )
        batches = list(loader)
        seen[workers] = (
            [i for b in batches for i in [*b.indices, *(e for e, _ in b.errors)]],
            torch.cat([b.frames for b in batches]),
        )
    assert sorted(seen[0][0]) == list(range(7)) and seen[0][0] == seen[2][0]
    assert torch.equal(seen[0][1], seen[2][1]) and seen[0][1].shape[0] == 5 + 16


def test_cache_rows_read_back_the_decoded_slices(folder: Path, tmp_path: Path) -> None:
    build_cache(folder, tmp_path / "cache", size=32, progress=False)
    rows = find_inputs(tmp_path / "cache", InputSettings())
    dataset = make_dataset(rows, Window(), PRE)
    assert isinstance(dataset, CacheDataset)
    cached = decode_all(rows, Window(), PRE)
    assert [d.index for d in cached] == list(range(len(rows)))
    # The very slices of decoding the images (cached at the model's size: no resize).
    files = find_inputs(folder, InputSettings())
    direct = [d.views[0] for d in decode_all(files, Window(), PRE) if d.views is not None]
    assert torch.equal(torch.cat([d.views[0] for d in cached]), torch.cat(direct))


def test_default_workers() -> None:
    cpu = torch.device("cpu")
    assert default_workers(cpu, files=10_000) == 0  # a worker takes a core from the network
    # Fingerprint features: every core decodes, unless the job is too small to pay for them.
    assert default_workers(cpu, decode_bound=True, files=10_000) == os.cpu_count()
    assert default_workers(cpu, decode_bound=True, files=MIN_FILES_FOR_WORKERS - 1) == 0
    assert 1 <= default_workers(torch.device("cuda")) <= 8


def test_cache_at_another_size_is_resized(folder: Path, tmp_path: Path) -> None:
    build_cache(folder, tmp_path / "cache", size=48, progress=False)
    rows = find_inputs(tmp_path / "cache", InputSettings())
    items = CacheDataset(rows, [PRE, Preprocessing(image_size=48)])[0]
    assert items[0].views[0].shape == (1, 1, 32, 32) and items[0].views[0].dtype == torch.uint8
    assert np.ptp(items[0].views[0].numpy()) > 0
    assert items[0].views[1].shape == (1, 1, 48, 48)  # the cache's own side: as stored
