"""Degenerate inputs are named, never embedded as if they were slices: blank renderings, files
that are no regular files, and broken DICOM headers each give one sentence saying what is wrong."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from ctfp.embed.backbone import Preprocessing
from ctfp.embed.reader import SliceDataset
from ctfp.embed.runner import embed
from ctfp.exceptions import DecodeError
from ctfp.io.decode import BlankImage, decode_file
from ctfp.io.sources import InputFile
from ctfp.io.window import Window, parse_window
from ctfp.store.reader import read_embeddings, read_errors
from tests.conftest import LUNG

DCM = LUNG / "dicom" / "A0001" / "s2" / "030.dcm"
PNG = LUNG / "png" / "A0001_s2_030.png"


def _dicom(tmp_path: Path, name: str, **changes: object) -> Path:
    """A copy of a real CT slice with its header changed (``None`` deletes an element)."""
    ds = pydicom.dcmread(DCM)
    for key, value in changes.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    path = tmp_path / name
    ds.save_as(path)
    return path


def test_rescale_slope_0_is_an_error_record_not_a_constant_row(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    _dicom(src, "slope0.dcm", RescaleSlope=0)
    shutil.copy(DCM, src / "good.dcm")
    result = embed(src, tmp_path / "out", features="pixels", device="cpu", progress=False)
    assert result.rows == 1 and read_embeddings(tmp_path / "out").ids == ["good"]
    reasons = {e["id"]: e["reason"] for e in read_errors(tmp_path / "out").to_pylist()}
    assert reasons == {
        "slope0": "constant after windowing: RescaleSlope is 0, so every pixel has the value "
        "of RescaleIntercept (a wrong header)"
    }


def test_a_window_that_flattens_the_slice_says_so(tmp_path: Path) -> None:
    # Every HU value of a chest slice lies below a window at 5000 +/- 10.
    with pytest.raises(DecodeError, match=r"^every pixel is the same value after the window "):
        decode_file(DCM, parse_window("5000,20"))
    with pytest.raises(DecodeError, match="4990 to 5010 HU; the file's values span -1024 to"):
        decode_file(DCM, parse_window("5000,20"))


def test_blank_dicoms_and_volumes_are_errors_but_some_blank_slices_are_kept(
    tmp_path: Path,
) -> None:
    ds = pydicom.dcmread(DCM)
    ds.PixelData = np.zeros((ds.Rows, ds.Columns), np.int16).tobytes()
    ds.save_as(tmp_path / "air.dcm")
    with pytest.raises(DecodeError, match="every pixel of each slice has the value -1024 HU"):
        decode_file(tmp_path / "air.dcm")
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 3), np.int16), np.eye(4)), tmp_path / "z.nii")
    with pytest.raises(DecodeError, match="the value 0: a blank image"):
        decode_file(tmp_path / "z.nii")
    # Padding slices at the ends of a volume with anatomy in between: the volume is embedded.
    volume = np.full((16, 16, 3), -1024, np.int16)
    volume[:, :, 1] = np.arange(256).reshape(16, 16) * 4 - 1000
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "padded.nii")
    assert decode_file(tmp_path / "padded.nii").shape == (3, 16, 16)


def test_a_blank_png_is_embedded_with_a_warning(tmp_path: Path) -> None:
    # A generator's blank output is data to attribute, and an ImageCLEF run file needs a line
    # for every test image: kept, with a word naming it.
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(tmp_path / "blank.png")
    with pytest.warns(BlankImage, match=r"blank\.png: every pixel is 7"):
        frames = decode_file(tmp_path / "blank.png")
    assert frames.shape == (1, 32, 32)


def _decode_within(path: Path, seconds: float = 20.0) -> str:
    """The error the reader records for ``path``, failing the test (not hanging it) when the
    read blocks."""
    dataset = SliceDataset(
        [InputFile(path.stem, str(path), None)], Window(), Preprocessing(image_size=32)
    )
    result: list[str | None] = []
    reader = threading.Thread(target=lambda: result.append(dataset[0].error), daemon=True)
    reader.start()
    reader.join(seconds)
    assert result, f"reading {path} blocked"
    assert result[0] is not None
    return result[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_not_a_regular_file_and_is_never_read(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.png")
    assert _decode_within(tmp_path / "pipe.png") == "not a regular file (a FIFO); give image files"


@pytest.mark.skipif(not os.path.exists("/dev/urandom"), reason="no /dev/urandom here")
def test_a_device_is_not_a_regular_file() -> None:
    assert _decode_within(Path("/dev/urandom")) == (
        "not a regular file (a character device); give image files"
    )


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"BitsAllocated": None}, "missing required DICOM element Bits Allocated (0028,0100)"),
        ({"Rows": None}, "missing required DICOM element Rows (0028,0010)"),
        (
            {"Rows": 1000},
            "pixel data shorter than the image size says (524288 of 1024000 bytes: a truncated "
            "file, or wrong Rows, Columns, Bits Allocated or Number of Frames?)",
        ),
        ({"BitsAllocated": 12}, "DICOM element Bits Allocated (0028,0100) is '12'; it must be"),
        (
            {"PhotometricInterpretation": "FOO"},
            "DICOM element Photometric Interpretation (0028,0004) has an unknown value 'FOO'",
        ),
    ],
    ids=["no-bits-allocated", "no-rows", "rows-too-many", "bits-12", "photometric"],
)
def test_broken_dicom_headers_give_one_sentence(
    tmp_path: Path, changes: dict[str, object], reason: str
) -> None:
    path = _dicom(tmp_path, "bad.dcm", **changes)
    with pytest.raises(DecodeError) as caught:
        decode_file(path)
    assert str(caught.value).startswith(reason)
    assert "Error" not in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("cut", "reason"),
    [
        (1000, "the DICOM data stops inside a data element (a truncated file?)"),
        (200_000, "pixel data shorter than the image size says (196930 of 524288 bytes"),
    ],
)
def test_truncated_dicoms_give_one_sentence(tmp_path: Path, cut: int, reason: str) -> None:
    (tmp_path / "cut.dcm").write_bytes(DCM.read_bytes()[:cut])
    with pytest.raises(DecodeError) as caught:
        decode_file(tmp_path / "cut.dcm")
    assert str(caught.value).startswith(reason)


def test_a_good_png_still_decodes_without_a_word(recwarn: pytest.WarningsRecorder) -> None:
    assert decode_file(PNG).shape == (1, 256, 256)
    assert not [w for w in recwarn if issubclass(w.category, BlankImage)]
