"""A run's input: every feature type of a run from one decode of each slice, each type's folder
as embedding that type alone writes it, resumed type by type."""

from __future__ import annotations

import collections
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ctfp.embed import reader
from ctfp.embed.features import build_features
from ctfp.embed.runner import embed
from ctfp.embed.settings import EmbedSettings
from ctfp.exceptions import ShardMismatchError
from ctfp.runs.folder import embeddings_dir
from ctfp.runs.layout import embed_features
from ctfp.store.reader import read_embeddings, read_errors
from ctfp.store.schema import make_metadata
from ctfp.store.writer import ShardWriter

FEATURES = ["pixels:16", "residual", "spectrum", "residual+spectrum"]
REQUIRED = ["train/used", "train/not_used", "generated", "test"]
# Three rows per part: each folder of eight slices gets three parts.
SETTINGS = EmbedSettings(dtype="float32", workers=0, rows_per_shard=3)


@pytest.fixture
def data(tmp_path: Path, lung_pngs: list[Path]) -> Path:
    """An ImageCLEF-style folder with two CT slices in each of its four sub-folders."""
    root = tmp_path / "data"
    for n, folder in enumerate(REQUIRED):
        (root / folder).mkdir(parents=True)
        for p in lung_pngs[10 * n : 10 * n + 2]:
            shutil.copy(p, root / folder / p.name)
    return root


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> collections.Counter[str]:
    """How often the reader decodes each file (the real decoder, counted)."""
    seen: collections.Counter[str] = collections.Counter()
    decode = reader.decode_file

    def counted(path, *args, **kwargs):
        seen[str(path)] += 1
        return decode(path, *args, **kwargs)

    monkeypatch.setattr(reader, "decode_file", counted)
    return seen


def parts(folder: Path | str) -> list[tuple[str, list[str]]]:
    return [
        (p.name, pq.read_table(p, columns=["id"]).column("id").to_pylist())
        for p in sorted(Path(folder).glob("part-*.parquet"))
    ]


def test_every_type_from_one_decode_equals_that_type_alone(
    data: Path, tmp_path: Path, decodes: collections.Counter[str]
) -> None:
    out = tmp_path / "run"
    found = embed_features(data, out, REQUIRED, SETTINGS, FEATURES, progress=False)
    assert list(found) == FEATURES
    # Each of the eight files decoded once, for all four types.
    assert len(decodes) == 8 and set(decodes.values()) == {1}
    for f in FEATURES:
        alone = tmp_path / "alone" / f
        embed(data, alone, SETTINGS.replace(layout="imageclef", features=f), progress=False)
        a, b = read_embeddings(alone), found[f]
        assert a.ids.tolist() == b.ids.tolist() and len(a.ids) == 8
        assert a.table.equals(b.table)  # id, source, frame, label, in the same order
        assert a.metadata == b.metadata  # the same identity: they mix and score alike
        np.testing.assert_array_equal(a.matrix, b.matrix)
        assert parts(alone) == parts(embeddings_dir(out, f))  # the same parts, same rows
    # The joined type is the L2-normalised parts side by side.
    residual, spectrum = found["residual"].matrix, found["spectrum"].matrix
    unit = [m / np.linalg.norm(m, axis=1, keepdims=True) for m in (residual, spectrum)]
    joined = found["residual+spectrum"].matrix
    np.testing.assert_allclose(joined, np.concatenate(unit, 1), rtol=1e-6, atol=1e-7)

    # A rerun decodes nothing and finds the same rows.
    decodes.clear()
    again = embed_features(data, out, REQUIRED, SETTINGS, FEATURES, progress=False)
    assert not decodes
    for f in FEATURES:
        np.testing.assert_array_equal(again[f].matrix, found[f].matrix)

    # A part lost from one type: only its inputs are decoded again, only that folder changes.
    lost = Path(embeddings_dir(out, "spectrum")) / "part-00001.parquet"
    lost_ids = pq.read_table(lost, columns=["id"]).column("id").to_pylist()
    before = {f: parts(embeddings_dir(out, f)) for f in FEATURES}
    lost.unlink()
    resumed = embed_features(data, out, REQUIRED, SETTINGS, FEATURES, progress=False)
    assert sorted(Path(p).stem for p in decodes) == sorted(i.split("/")[-1] for i in lost_ids)
    assert set(decodes.values()) == {1}
    for f in ("pixels:16", "residual", "residual+spectrum"):
        assert parts(embeddings_dir(out, f)) == before[f]
    order = np.argsort(resumed["spectrum"].ids)
    assert sorted(resumed["spectrum"].ids) == sorted(found["spectrum"].ids)
    np.testing.assert_array_equal(
        resumed["spectrum"].matrix[order],
        found["spectrum"].matrix[np.argsort(found["spectrum"].ids)],
    )


def test_an_unreadable_file_is_an_error_of_every_type(data: Path, tmp_path: Path) -> None:
    (data / "test" / "broken.png").write_bytes(b"not a png")
    features = ["pixels:16", "residual:32"]
    found = embed_features(data, tmp_path / "run", REQUIRED, SETTINGS, features, progress=False)
    for f in features:
        assert len(found[f].ids) == 8  # the others embedded
        errors = read_errors(embeddings_dir(tmp_path / "run", f)).to_pylist()
        assert [e["id"] for e in errors] == ["test/broken"] and "not an image" in errors[0][
            "reason"
        ]


def test_a_joined_folder_of_the_older_kind_is_refused_naming_it(data: Path, tmp_path: Path) -> None:
    """Joined shards of ctfp 0.3.0 resized every part from the largest part's side: their
    preprocessing identity has no "resize". A run resuming such a folder stops, naming it."""
    folder = embeddings_dir(tmp_path / "run", "residual+spectrum")
    identity = build_features("residual+spectrum").identity.to_dict()
    del identity["preprocessing"]["resize"]
    metadata = make_metadata(identity, "float32", {"window": "auto:-600,1500"})
    with ShardWriter(folder, metadata=metadata) as writer:
        writer.add("x", ["x"], "/old/x.png", [0], None, np.ones((1, identity["dim"]), np.float32))
    with pytest.raises(ShardMismatchError, match="embeddings-residual\\+spectrum") as caught:
        embed_features(
            data,
            tmp_path / "run",
            REQUIRED,
            SETTINGS,
            ["residual", "residual+spectrum"],
            progress=False,
        )
    assert "preprocessing" in str(caught.value) and "remove the one named" in str(caught.value)
    assert read_embeddings(folder).ids.tolist() == ["x"]  # left as it was
