"""Source discovery: folders, globs, manifests, the ImageCLEF layout, ids and clear errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ctfp.exceptions import InputError
from ctfp.io.sources import SUFFIXES, discover
from tests.conftest import LUNG


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    pngs = sorted((LUNG / "png").glob("*.png"))
    for i, p in enumerate(pngs[:6]):
        sub = tmp_path / "data" / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, sub / p.name)
    (tmp_path / "data" / "notes.txt").write_text("not an image")
    (tmp_path / "data" / ".hidden.png").write_bytes(b"")
    return tmp_path / "data"


def test_folder_is_recursive_with_relative_ids(tree: Path) -> None:
    files = discover(tree)
    assert len(files) == 6
    assert all("/" in f.id and not f.id.endswith(".png") for f in files)
    assert [f.id for f in files] == sorted(f.id for f in files)
    assert all(Path(f.path).is_absolute() and Path(f.path).is_file() for f in files)
    assert all(f.label is None for f in files)


def test_label_from_dirs(tree: Path) -> None:
    labels = {f.id.split("/")[0]: f.label for f in discover(tree, label_from_dirs=True)}
    assert labels == {"a": "a", "b": "b"}


def test_glob_root_is_the_fixed_prefix(tree: Path) -> None:
    files = discover(str(tree / "a" / "*.png"))
    assert len(files) == 3 and all("/" not in f.id for f in files)
    files = discover(str(tree / "**" / "*.png"))
    assert len(files) == 6 and all(f.id.startswith(("a/", "b/")) for f in files)


def test_manifest_csv_and_parquet(tree: Path, tmp_path: Path) -> None:
    paths = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*.png"))
    csv = tree / "manifest.csv"
    csv.write_text("path,id,label\n" + "".join(f"{p},x{i},{i % 2}\n" for i, p in enumerate(paths)))
    files = discover(csv)
    assert [f.id for f in files] == sorted(f"x{i}" for i in range(len(paths)))
    assert {f.label for f in files} == {"0", "1"}
    assert all(Path(f.path).is_file() for f in files)
    pq.write_table(pa.table({"path": [str(tree / p) for p in paths]}), tmp_path / "m.parquet")
    files = discover(tmp_path / "m.parquet")
    assert len(files) == len(paths) and files[0].id.startswith("data/")


def test_imageclef_layout_labels(tmp_path: Path) -> None:
    pngs = sorted((LUNG / "png").glob("*.png"))
    layout = {"train/used": 2, "train/not_used": 2, "generated": 3, "test": 2}
    k = 0
    for folder, n in layout.items():
        (tmp_path / folder).mkdir(parents=True)
        for _ in range(n):
            shutil.copy(pngs[k], tmp_path / folder / f"img{k}.png")
            k += 1
    labels = {f.id: f.label for f in discover(tmp_path)}
    assert labels["train/used/img0"] == "used"
    assert labels["train/not_used/img2"] == "not_used"
    assert labels["generated/img4"] == "generated"
    assert labels["test/img7"] is None
    assert all(f.label is None for f in discover(tmp_path, layout="plain"))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "holds no files"),
        (lambda p: str(p / "*.nothing"), "matched no files"),
    ],
)
def test_bad_sources_fail_clearly(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(InputError, match=message):
        discover(make(tmp_path))


def test_manifest_without_path_column(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("file\na.png\n")
    with pytest.raises(InputError, match="no 'path' column"):
        discover(tmp_path / "m.csv")


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    png = sorted((LUNG / "png").glob("*.png"))[0]
    shutil.copy(png, tmp_path / "x.png")
    shutil.copy(png, tmp_path / "x.jpg")
    with pytest.raises(InputError, match="same id"):
        discover(tmp_path)


def test_undecodable_file_names_get_escaped_valid_ids(tmp_path: Path) -> None:
    png = sorted((LUNG / "png").glob("*.png"))[0]
    raw = os.fsencode(tmp_path) + b"/bad\xffname.png"
    shutil.copy(png, os.fsdecode(raw))
    shutil.copy(png, tmp_path / "good.png")
    files = discover(tmp_path)
    assert [f.id for f in files] == ["bad\\xffname", "good"]
    assert os.path.exists(files[0].path)  # opened by its real name
    "".join(f.id for f in files).encode("utf-8")  # valid text


def test_ids_that_look_like_frames_of_another_input_are_refused(tmp_path: Path) -> None:
    png = sorted((LUNG / "png").glob("*.png"))[0]
    shutil.copy(png, tmp_path / "y.png")
    shutil.copy(png, tmp_path / "y#0.png")
    with pytest.raises(InputError, match=r"'y#0' .* looks like frame 0 of 'y'"):
        discover(tmp_path)
    (tmp_path / "y.png").unlink()
    assert [f.id for f in discover(tmp_path)] == ["y#0"]  # alone it clashes with nothing


def test_folder_links_are_followed_once_and_loops_are_recorded(tmp_path: Path) -> None:
    pngs = sorted((LUNG / "png").glob("*.png"))[:3]
    real = tmp_path / "elsewhere" / "series"
    real.mkdir(parents=True)
    for p in pngs:
        shutil.copy(p, real / p.name)
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(pngs[0], src / "top.png")
    (src / "linked").symlink_to(real, target_is_directory=True)
    (real / "loop").symlink_to(src, target_is_directory=True)  # back to the top: a cycle
    unreadable: list = []
    files = discover(src, unreadable=unreadable)
    assert sorted(f.id for f in files) == sorted(["top", *(f"linked/{p.stem}" for p in pngs)])
    assert [u.id for u in unreadable] == ["linked/loop"]
    assert "searched already; skipped" in unreadable[0].reason


def test_what_could_not_be_searched_reaches_the_errors_table(tmp_path: Path) -> None:
    from ctfp.embed.runner import embed
    from ctfp.store.reader import read_errors

    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    shutil.copy(sorted((LUNG / "png").glob("*.png"))[0], src / "a" / "x.png")
    (src / "a" / "again").symlink_to(src / "a", target_is_directory=True)
    result = embed(src, tmp_path / "out", features="pixels", device="cpu", progress=False)
    assert result.rows == 1
    errors = read_errors(tmp_path / "out").to_pylist()
    assert [e["id"] for e in errors] == ["a/again"] and "searched already" in errors[0]["reason"]


def test_relative_paths_are_those_of_relpath(tmp_path: Path, monkeypatch) -> None:
    from ctfp.io.sources import _local, _walk, suffix_of

    def relpath(root: str, paths: list[str]) -> list[tuple[str, str]]:
        return [(Path(os.path.relpath(p, root)).as_posix(), os.path.abspath(p)) for p in paths]

    names = ["a.png", "b c.PNG", "x\\y.png", "new\nline.png", "..png", "ü.dcm", "v.nii.gz"]
    for folder in ["d", "d/sub", "d/..odd"]:
        (tmp_path / folder).mkdir(parents=True)
        for name in names:
            (tmp_path / folder / name).write_bytes(b"")
    (tmp_path / "link").symlink_to(tmp_path / "d")
    monkeypatch.chdir(tmp_path / "d")
    for root in ["..", ".", "sub", "./sub/", "../d", "../link/", str(tmp_path) + "//d", "/", "//"]:
        walked = sorted(_walk(Path("..") if root in ("/", "//") else Path(root), []))
        globbed = [f"../d/{n}" for n in names] + [f"/{tmp_path}/d/a.png", "sub//a.png"]
        for paths in (walked, globbed, ["sub/a.png"], [root]):
            assert _local(root, paths) == relpath(root, paths), (root, paths[:2])
    for name in [*names, "a.nii", "a.gz", "A.NII.GZ", "x.png.txt", ""]:
        expected = next(
            (s for s in sorted(SUFFIXES, key=len, reverse=True) if name.lower().endswith(s)), ""
        )
        assert suffix_of(name) == expected
