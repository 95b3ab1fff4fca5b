"""Decoding real CT files: PNG/JPEG, DICOM (HU window, odd layouts), NIfTI, and corrupt inputs."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from ctfp.exceptions import DecodeError
from ctfp.io.decode import decode_file
from ctfp.io.window import Window, parse_window
from tests.conftest import EDGE, LUNG

PNG = LUNG / "png" / "A0001_s2_030.png"
DCM = LUNG / "dicom" / "A0001" / "s2" / "030.dcm"


def test_png_is_8bit_gray() -> None:
    frames = decode_file(PNG)
    assert frames.shape == (1, 256, 256) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames[0], np.asarray(Image.open(PNG)))


def test_dicom_lung_window_reproduces_the_imageclef_png() -> None:
    # The PNGs were rendered with the lung window then box-resized 512 -> 256; so must we match.
    frames = decode_file(DCM)
    assert frames.shape == (1, 512, 512)
    small = np.asarray(Image.fromarray(frames[0]).resize((256, 256), Image.BOX))
    np.testing.assert_array_equal(small, np.asarray(Image.open(PNG)))


def test_window_changes_the_rendering() -> None:
    lung = decode_file(DCM, parse_window("lung"))
    soft = decode_file(DCM, parse_window("40,400"))
    assert not np.array_equal(lung, soft)
    ds = pydicom.dcmread(DCM)
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = np.floor((np.clip(hu, -160, 240) + 160) / 400 * 255).astype(np.uint8)
    np.testing.assert_array_equal(soft[0], expected)


def test_parse_window() -> None:
    assert parse_window(None) == Window()
    assert parse_window("-600,1500") == Window("hu", -600, 1500)
    assert parse_window("minmax").mode == "minmax"
    for bad in ("abc", "1,2,3", "40,-5"):
        with pytest.raises(DecodeError):
            parse_window(bad)


def test_16bit_rgb_and_jpeg(tmp_path: Path) -> None:
    gray = np.asarray(Image.open(PNG))
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    np.testing.assert_array_equal(decode_file(tmp_path / "g16.png")[0], gray)
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(decode_file(tmp_path / "rgb.png")[0], gray)
    Image.fromarray(gray).save(tmp_path / "g.jpg", quality=95)
    jpeg = decode_file(tmp_path / "g.jpg")[0].astype(int)
    assert jpeg.shape == gray.shape and np.abs(jpeg - gray).mean() < 2


EDGE_EXPECTED = {
    "CT_Explicit_Little.dcm": (1, 512, 512),
    "CT_Implicit_Little_Headless_Retired.dcm": (1, 512, 512),
    "CT_JPEG70.dcm": (1, 400, 512),
    "MR_Implicit_Little.dcm": (1, 256, 256),
    "MR_Explicit_Little_MultiFrame.dcm": (16, 256, 256),
    "US_Explicit_Big_RGB.dcm": (1, 480, 640),
    "OT_Implicit_Little_Headless.dcm": (1, 512, 512),
}


@pytest.mark.parametrize("name", sorted(EDGE_EXPECTED))
def test_every_edge_dicom_decodes(name: str) -> None:
    frames = decode_file(EDGE / name)
    assert frames.shape == EDGE_EXPECTED[name] and frames.dtype == np.uint8
    assert frames.std() > 5, "decoded to a flat image"


def test_edge_folder_is_fully_accounted_for() -> None:
    names = {p.name for p in EDGE.glob("*.dcm")}
    assert names == set(EDGE_EXPECTED) | {"rtstruct.dcm"}


def test_dicom_without_pixel_data() -> None:
    with pytest.raises(DecodeError, match=r"no pixel data \(Modality RTSTRUCT\)"):
        decode_file(EDGE / "rtstruct.dcm")


def test_ct_edge_files_use_the_hu_window() -> None:
    ds = pydicom.dcmread(EDGE / "CT_Explicit_Little.dcm")
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    expected = np.floor((np.clip(hu, -1350, 150) + 1350) / 1500 * 255).astype(np.uint8)
    np.testing.assert_array_equal(decode_file(EDGE / "CT_Explicit_Little.dcm")[0], expected)


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    ds = pydicom.dcmread(DCM)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "m1.dcm")
    np.testing.assert_array_equal(decode_file(tmp_path / "m1.dcm"), 255 - decode_file(DCM))


def test_nifti_volume_gives_one_slice_per_axial_frame(tmp_path: Path) -> None:
    ds = pydicom.dcmread(DCM)
    hu = (ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)).astype(np.int16)
    # DICOM rows run anterior->posterior and columns right->left; RAS volume axes are x=R->L
    # reversed... build (x, y, z) so that the canonical radiological display gives back the slice.
    slice_xy = hu[::-1, ::-1].T  # (x: right->left reversed, y: posterior->anterior)
    volume = np.stack([slice_xy, slice_xy // 2, slice_xy], axis=2)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "vol.nii.gz")
    frames = decode_file(tmp_path / "vol.nii.gz")
    assert frames.shape == (3, 512, 512)
    np.testing.assert_array_equal(frames[0], decode_file(DCM)[0])
    np.testing.assert_array_equal(frames[0], frames[2])
    assert not np.array_equal(frames[0], frames[1])


def test_nifti_4d_is_refused(tmp_path: Path) -> None:
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4, 3), np.float32), np.eye(4)), tmp_path / "t.nii")
    with pytest.raises(DecodeError, match="expected 3-D"):
        decode_file(tmp_path / "t.nii")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(PNG.read_bytes()[:3000]), "truncated"),
        (lambda p: p.write_text("hello, I am text"), "not an image"),
        (lambda p: Image.fromarray(np.zeros((1, 400), np.uint8)).save(p, format="PNG"), "1x400"),
    ],
    ids=["zero-bytes", "truncated", "text", "one-row"],
)
def test_corrupt_images_raise_clear_errors(tmp_path: Path, make, message: str) -> None:
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(DecodeError, match=message):
        decode_file(path)


def test_truncated_dicom(tmp_path: Path) -> None:
    path = tmp_path / "cut.dcm"
    path.write_bytes(DCM.read_bytes()[:200_000])
    with pytest.raises(DecodeError):
        decode_file(path)


def test_dicom_named_png_is_read_by_content(tmp_path: Path) -> None:
    shutil.copy(DCM, tmp_path / "oops.png")
    np.testing.assert_array_equal(decode_file(tmp_path / "oops.png"), decode_file(DCM))


def test_window_description_round_trips() -> None:
    """Shard metadata stores Window.describe(); the report reads it back to render thumbnails."""
    for window in (Window(), Window(mode="minmax"), parse_window("40,400"), parse_window("bone")):
        assert Window.from_description(window.describe()) == window
    assert Window.from_description("not a window") == Window()


@pytest.mark.parametrize("text", ["nan,nan", "0,nan", "inf,1", "-600,inf", "nan,1500"])
def test_non_finite_windows_are_refused(text: str) -> None:
    with pytest.raises(DecodeError, match="finite"):
        parse_window(text)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels_are_an_error_of_the_file(tmp_path: Path, bad: float) -> None:
    volume = np.arange(-800.0, -800.0 + 768, dtype=np.float32).reshape(16, 16, 3)
    volume[3, 4, 1] = bad
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "v.nii.gz")
    with pytest.raises(DecodeError, match="1 of 768 pixel values are NaN or infinite"):
        decode_file(tmp_path / "v.nii.gz")
    nib.save(
        nib.Nifti1Image(np.full((16, 16, 3), np.nan, np.float32), np.eye(4)), tmp_path / "n.nii"
    )
    with pytest.raises(DecodeError, match="768 of 768"):
        decode_file(tmp_path / "n.nii")
    # A finite volume still decodes.
    volume[3, 4, 1] = -700.0
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "ok.nii.gz")
    assert decode_file(tmp_path / "ok.nii.gz").shape == (3, 16, 16)


@pytest.mark.slow
def test_declared_sizes_past_the_limit_are_refused_before_decoding(tmp_path: Path) -> None:
    # A 9000 x 9000 16-bit PNG compresses to little and would need GBs decoded.
    Image.fromarray(np.zeros((9000, 9000), np.uint16)).save(tmp_path / "big.png")
    with pytest.raises(DecodeError, match="declares 9000x9000 pixels per slice"):
        decode_file(tmp_path / "big.png")
    assert decode_file(tmp_path / "big.png", max_pixels=9000 * 9000).shape == (1, 9000, 9000)
    # A DICOM whose header declares 12000 x 12000: refused from the header.
    ds = pydicom.dcmread(sorted((LUNG / "dicom").rglob("*.dcm"))[0])
    ds.Rows = ds.Columns = 12000
    ds.save_as(tmp_path / "big.dcm")
    with pytest.raises(DecodeError, match="declares 12000x12000"):
        decode_file(tmp_path / "big.dcm")
    # A NIfTI volume: per slice and in all.
    volume = np.arange(64 * 64 * 40, dtype=np.int16).reshape(64, 64, 40)  # not blank
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "v.nii.gz")
    with pytest.raises(DecodeError, match="declares 40 slices of 64x64"):
        decode_file(tmp_path / "v.nii.gz", max_pixels=64 * 64 * 2)
    assert decode_file(tmp_path / "v.nii.gz", max_pixels=64 * 64 * 10).shape == (40, 64, 64)


def test_corrupt_jpeg_lossless_dicom_is_an_error_not_wrong_pixels(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # libjpeg inside GDCM only prints "Corrupt JPEG data" on stderr and returns a slice with
    # most pixels wrong; ctfp reads what it prints and refuses the file.
    raw = bytearray((EDGE / "CT_JPEG70.dcm").read_bytes())
    pos = len(raw) // 2
    raw[pos : pos + 64] = bytes(64)
    (tmp_path / "corrupt.dcm").write_bytes(bytes(raw))
    with pytest.raises(DecodeError, match="decoder reported corrupt data: Corrupt JPEG data"):
        decode_file(tmp_path / "corrupt.dcm")
    assert "Corrupt JPEG" not in capfd.readouterr().err  # captured, not leaked to the terminal
    assert decode_file(EDGE / "CT_JPEG70.dcm").shape == (1, 400, 512)  # the intact file still reads


def test_other_decoder_output_becomes_a_warning_naming_the_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    from ctfp.io import decode

    said: list[str] = []
    with decode._decoder_messages(said):
        os.write(2, b"libfoo: an unusual but harmless tag\n\n")
    assert said == ["libfoo: an unusual but harmless tag"]
    # Through decode_file: a decoder's harmless line is a DecoderMessage warning with the path
    # (the log shows it, --quiet silences it), never a line on the terminal behind ctfp's back.
    original = decode._decode_image

    def chatty(path: str, limit: object) -> np.ndarray:
        os.write(2, b"libpng warning: iCCP: known incorrect sRGB profile\n")
        return original(path, limit)

    monkeypatch.setattr(decode, "_decode_image", chatty)
    with pytest.warns(decode.DecoderMessage, match=r"A0001_s2_030.png: the decoder said: libpng"):
        assert decode_file(PNG).shape == (1, 256, 256)


@pytest.mark.parametrize("text", ["1.7e308,1.7e308", "-1e308,1.7e308", "1e308,1.7e308"])
def test_windows_whose_edges_overflow_are_refused(text: str) -> None:
    with pytest.raises(DecodeError, match=rf"window '{text}': its edges .* must be finite"):
        parse_window(text)
    with pytest.raises(DecodeError, match="too narrow"):
        parse_window("-600,1e-20")  # lo + width == lo: every value would fall on one edge
    assert parse_window("-1e307,1e307") == Window("hu", -1e307, 1e307)


def test_an_image_named_like_dicom_says_what_it_is(tmp_path: Path) -> None:
    shutil.copy(PNG, tmp_path / "slice.dcm")
    with pytest.raises(
        DecodeError, match=r"^not a DICOM file: its content is a PNG image \(rename it \.png\)$"
    ):
        decode_file(tmp_path / "slice.dcm")
    Image.open(PNG).save(tmp_path / "slice.dicom", format="JPEG")
    with pytest.raises(DecodeError, match=r"its content is a JPEG image \(rename it \.jpg\)"):
        decode_file(tmp_path / "slice.dicom")
    Image.open(PNG).save(tmp_path / "gif.dcm", format="GIF")
    with pytest.raises(DecodeError, match=r"its content is a GIF image"):
        decode_file(tmp_path / "gif.dcm")
    (tmp_path / "noise.dcm").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(
        DecodeError, match=r"^not a DICOM file \(no DICOM header or data elements\)$"
    ):
        decode_file(tmp_path / "noise.dcm")


def test_a_decoder_message_of_several_lines_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ctfp.io import decode

    def fails(error: Exception):
        def _decode(*args: object) -> np.ndarray:
            raise error

        return _decode

    monkeypatch.setattr(
        decode, "_decode", fails(RuntimeError("Unable to decode\n\n  Missing: x\n"))
    )
    with pytest.raises(DecodeError) as info:
        decode_file(PNG)
    assert str(info.value) == "RuntimeError: Unable to decode; Missing: x"
    monkeypatch.setattr(decode, "_decode", fails(DecodeError("cannot decode\r\nplugin y")))
    with pytest.raises(DecodeError) as info:
        decode_file(PNG)
    assert str(info.value) == "cannot decode; plugin y"
