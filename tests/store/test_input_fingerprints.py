"""Each row records what its input was (size, modification time, label); a rerun embeds a changed
input again and its new row replaces the old one for every reader, the same file by another path
is the same input, and manifest ids that are blank or would escape are refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ctfp.cli import main
from ctfp.embed.runner import embed
from ctfp.exceptions import InputError
from ctfp.io.sources import InputFile, discover
from ctfp.store.manifest import MANIFEST_FILE, read_manifest
from ctfp.store.reader import read_embeddings
from ctfp.store.schema import FINGERPRINT
from ctfp.store.writer import ShardWriter, rows_table
from tests.store.test_shards import fill, meta

OPTIONS = dict(features="pixels:16", dtype="float32", device="cpu", progress=False)


def pngs(lung_pngs: list[Path], dest: Path, n: int = 3) -> Path:
    dest.mkdir(parents=True)
    for p in lung_pngs[:n]:
        shutil.copy(p, dest / p.name)
    return dest


def row_of(folder: Path, row_id: str) -> np.ndarray:
    data = read_embeddings(folder)
    assert len(set(data.ids)) == len(data.ids)
    return data.matrix[list(data.ids).index(row_id)]


def test_an_overwritten_image_is_embedded_again(tmp_path: Path, lung_pngs: list[Path]) -> None:
    src = pngs(lung_pngs, tmp_path / "src")
    out = tmp_path / "out"
    first = embed(src, out, rows_per_shard=2, **OPTIONS)
    assert first.rows == 3
    name = lung_pngs[0].stem
    old = row_of(out, name)
    shutil.copy(lung_pngs[40], src / lung_pngs[0].name)  # another slice under the same name
    again = embed(src, out, rows_per_shard=2, **OPTIONS)
    assert again.rows == 1 and again.skipped_files == 2
    fresh = embed(src / lung_pngs[0].name, tmp_path / "fresh", **OPTIONS)
    assert fresh.rows == 1
    data = read_embeddings(out)
    assert sorted(data.ids) == sorted(p.stem for p in lung_pngs[:3])  # one row per id
    assert not np.array_equal(row_of(out, name), old)
    np.testing.assert_array_equal(row_of(out, name), row_of(tmp_path / "fresh", name))
    # The replaced part is gone; the record names only what is there.
    names = {p.name for p in read_manifest(out)}
    assert names == {p.name for p in out.glob("part-*.parquet")}
    assert embed(src, out, rows_per_shard=2, **OPTIONS).rows == 0  # now unchanged


def test_a_relabelled_manifest_row_is_embedded_again(tmp_path: Path, lung_pngs: list[Path]) -> None:
    src = pngs(lung_pngs, tmp_path / "src", 2)
    manifest = src / "list.csv"
    names = [p.name for p in lung_pngs[:2]]
    manifest.write_text("path,label\n" + "".join(f"{n},used\n" for n in names))
    out = tmp_path / "out"
    assert embed(manifest, out, **OPTIONS).rows == 2
    manifest.write_text(f"path,label\n{names[0]},not_used\n{names[1]},used\n")
    assert embed(manifest, out, **OPTIONS).rows == 1
    data = read_embeddings(out)
    labels = dict(zip(data.ids, data.table.column("label").to_pylist(), strict=True))
    assert labels == {lung_pngs[0].stem: "not_used", lung_pngs[1].stem: "used"}


def test_the_same_file_through_a_linked_folder_is_the_same_input(
    tmp_path: Path, lung_pngs: list[Path]
) -> None:
    src = pngs(lung_pngs, tmp_path / "real", 2)
    link = tmp_path / "link"
    link.symlink_to(src, target_is_directory=True)
    out = tmp_path / "out"
    assert embed(src, out, **OPTIONS).rows == 2
    again = embed(link, out, **OPTIONS)  # was: "already holds id ... from another source"
    assert again.rows == 0 and again.skipped_files == 2
    # A different file under the same id is still refused.
    other = pngs(lung_pngs[2:], tmp_path / "other", 1)
    shutil.move(other / lung_pngs[2].name, other / lung_pngs[0].name)
    with pytest.raises(InputError, match="already holds id"):
        embed(other, out, **OPTIONS)


@pytest.mark.parametrize(
    ("cell", "problem"),
    [
        ('" "', "is blank"),
        ("../up", "'..' part"),
        ("a//b", "empty"),
        ("./a", "'.' or '..'"),
        ("/abs/a", "absolute"),
    ],
)
def test_blank_and_escaping_manifest_ids_are_refused(
    tmp_path: Path, lung_pngs: list[Path], cell: str, problem: str
) -> None:
    src = pngs(lung_pngs, tmp_path / "src", 2)
    manifest = src / "list.csv"
    manifest.write_text(f"path,id\n{lung_pngs[0].name},ok\n{lung_pngs[1].name},{cell}\n")
    with pytest.raises(InputError, match=rf"list.csv' line 3: id .*{problem}"):
        discover(manifest)


def test_a_path_outside_the_manifests_folder_needs_an_id(
    tmp_path: Path, lung_pngs: list[Path], capsys: pytest.CaptureFixture[str]
) -> None:
    src = pngs(lung_pngs, tmp_path / "t1" / "test", 1)
    lists = tmp_path / "lists"
    lists.mkdir()
    manifest = lists / "list.csv"
    manifest.write_text(f"path,id\n{src / lung_pngs[0].name},\n")  # an empty id
    code = main(["embed", str(manifest), "--out", str(tmp_path / "out"), "--features", "pixels"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "list.csv' line 2:" in err and "outside the manifest's folder" in err
    assert "'../t1/test/" in err
    manifest.write_text(f"path,id\n{src / lung_pngs[0].name},slice\n")  # with an id: fine
    assert [f.id for f in discover(manifest)] == ["slice"]


def test_rows_of_the_current_inputs_only(tmp_path: Path, lung_pngs: list[Path]) -> None:
    src = pngs(lung_pngs, tmp_path / "src")
    out = tmp_path / "out"
    embed(src, out, **OPTIONS)
    (src / lung_pngs[2].name).unlink()
    result = embed(src, out, **OPTIONS)
    assert result.rows == 0 and sorted(result.inputs) == sorted(p.stem for p in lung_pngs[:2])
    assert "inputs" not in result.to_dict()
    assert len(read_embeddings(out)) == 3  # an embed folder keeps other inputs' rows
    current = read_embeddings(out, inputs=result.inputs)
    assert sorted(current.ids) == sorted(result.inputs)
    assert current.matrix.shape == (2, 256)


def test_shards_without_fingerprints_are_embedded_again(
    tmp_path: Path, lung_pngs: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    src = pngs(lung_pngs, tmp_path / "src", 2)
    out = tmp_path / "out"
    embed(src, out, **OPTIONS)
    before = read_embeddings(out)
    # As an older ctfp wrote it: no fingerprint column.
    [part] = read_manifest(out)
    table = pq.read_table(out / part.name).drop_columns([FINGERPRINT])
    pq.write_table(table, out / part.name)
    doc = json.loads((out / MANIFEST_FILE).read_text())
    doc["parts"][0]["bytes"] = (out / part.name).stat().st_size
    (out / MANIFEST_FILE).write_text(json.dumps(doc))
    assert read_embeddings(out).table.column_names[-1] == "label"
    with caplog.at_level("WARNING", logger="ctfp"):
        assert embed(src, out, **OPTIONS).rows == 2
    assert "did not record what each file was" in caplog.text
    after = read_embeddings(out)
    assert sorted(after.ids) == sorted(before.ids)
    assert all(after.table.column(FINGERPRINT).to_pylist())
    assert not (out / part.name).exists()
    assert embed(src, out, **OPTIONS).rows == 0


def test_old_and_new_shards_read_together(tmp_path: Path) -> None:
    with ShardWriter(tmp_path / "new", metadata=meta()) as w:
        fill(w, ["a"])
    with ShardWriter(tmp_path / "old", metadata=meta()) as w:
        fill(w, ["b"])
    [part] = read_manifest(tmp_path / "old")
    old = tmp_path / "old" / part.name
    pq.write_table(pq.read_table(old).drop_columns([FINGERPRINT]), old)
    data = read_embeddings([tmp_path / "new" / "part-00000.parquet", old])
    assert list(data.ids) == ["a", "b"]
    assert data.table.column(FINGERPRINT).to_pylist()[1] is None
    # An engine's 5-field rows (no fingerprint) are taken too, fingerprint unknown.
    rows = [(["c"], "/c.png", [0], None, np.zeros((1, 8), np.float32))]
    assert rows_table(w.schema, rows).column(FINGERPRINT).to_pylist() == [None]


def stamped(writer: ShardWriter, names: list[str], stamp: str) -> None:
    for name in names:
        writer.add(name, [name], f"/data/{name}.png", [0], "used", np.ones((1, 8)), stamp)


def Input(name: str, stamp: str) -> InputFile:
    return InputFile(name, f"/data/{name}.png", "used", stamp=stamp)


def superseded(folder: Path) -> tuple[list, list, bytes]:
    """A folder of a, b (one part) and c, then b changed and superseded: the record before,
    the old part's bytes, and what the record said before."""
    with ShardWriter(folder, metadata=meta(), rows_per_shard=2) as w:
        stamped(w, ["a", "b", "c"], "1")
    before = (folder / MANIFEST_FILE).read_bytes()
    old = (folder / "part-00000.parquet").read_bytes()
    w = ShardWriter(folder, metadata=meta())
    assert w.resume([Input("a", "1"), Input("b", "2"), Input("c", "1")]) == {"b"}
    w.release()
    return read_manifest(folder), [old], before


@pytest.mark.parametrize("killed", ["before the copy", "after the copy", "before deleting"])
def test_a_run_killed_while_superseding_rows_resumes_to_the_same_rows(
    tmp_path: Path, killed: str
) -> None:
    parts, [old], before = superseded(tmp_path)
    assert [p.name for p in parts] == ["part-00001.parquet", "part-00002.parquet"]
    assert sorted(read_embeddings(tmp_path).ids) == ["a", "c"]
    # The folder as a kill at that moment leaves it (the steps of ShardWriter.supersede).
    (tmp_path / "part-00000.parquet").write_bytes(old)
    doc = json.loads(before)
    if killed == "before the copy":
        (tmp_path / "part-00002.parquet").unlink()
        doc["retired"] = ["part-00002.parquet"]
    elif killed == "after the copy":
        doc["retired"] = ["part-00002.parquet"]
    else:
        doc = json.loads((tmp_path / MANIFEST_FILE).read_text())
        doc["retired"] = ["part-00000.parquet"]
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(doc))
    assert len(set(read_embeddings(tmp_path).ids)) == len(read_embeddings(tmp_path).ids)
    with ShardWriter(tmp_path, metadata=meta()) as w:  # the rerun
        assert w.resume([Input("a", "1"), Input("b", "2"), Input("c", "1")]) == {"b"}
        stamped(w, ["b"], "2")
    data = read_embeddings(tmp_path)
    assert sorted(data.ids) == ["a", "b", "c"]
    stamps = dict(zip(data.ids, data.table.column(FINGERPRINT).to_pylist(), strict=True))
    assert stamps == {"a": "1", "b": "2", "c": "1"}
    on_disk = {p.name for p in tmp_path.glob("part-*.parquet")}
    assert on_disk == {p.name for p in read_manifest(tmp_path)}
    assert "retired" not in json.loads((tmp_path / MANIFEST_FILE).read_text())
