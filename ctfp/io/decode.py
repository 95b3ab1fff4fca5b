"""Decoding: PNG/JPEG, DICOM (HU windowing) and NIfTI into stacks of 8-bit grayscale slices."""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import re
import stat
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from ctfp.exceptions import DecodeError
from ctfp.io.fs import is_remote, resolve
from ctfp.io.sources import IMAGE_SUFFIXES, NIFTI_SUFFIXES, suffix_of
from ctfp.io.window import MAX_PIXELS, MIN_SIDE, Window


def decode_file(
    path: str | os.PathLike[str], window: Window | None = None, *, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Decode one file into its slices.

    Returns
    -------
    frames : (n, h, w) uint8
        One 8-bit grayscale slice per frame (2-D images: ``n == 1``).

    Raises DecodeError: with a reason a person can act on: empty file, not an image, truncated
    data, DICOM without pixel data, unsupported compression, wrong dimensions.
    """
    window = window or Window()
    path = os.fspath(path)
    if is_remote(path):  # a local temporary copy (same suffix: the decoders go by it)
        try:
            data = resolve(path).read_bytes()
        except (OSError, ValueError) as exc:
            raise DecodeError(f"cannot read object: {exc}") from exc
        if data is None:
            raise DecodeError("cannot read object: it does not exist")
        fd, name = tempfile.mkstemp(prefix="ctfp-", suffix=suffix_of(path) or ".bin")
        try:
            with open(fd, "wb") as f:
                f.write(data)
            return decode_file(name, window, max_pixels=max_pixels)
        finally:
            os.unlink(name)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise DecodeError(f"cannot read file: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(info.st_mode):  # never read one: a FIFO blocks, a device never ends
        raise DecodeError(f"not a regular file ({file_kind(info.st_mode)}); give image files")
    if info.st_size == 0:
        raise DecodeError("empty file (0 bytes)")
    said: list[str] = []
    try:
        with _decoder_messages(said):
            frames = _decode(path, window, max_pixels)
    except DecodeError as exc:
        if _one_line(str(exc)) != str(exc):
            raise DecodeError(_one_line(str(exc))) from exc
        raise
    except MemoryError:
        raise
    except Exception as exc:  # decoders raise anything from OSError to struct.error
        raise DecodeError(_one_line(f"{type(exc).__name__}: {exc}")) from exc
    finally:
        corrupt = [line for line in said if _CORRUPTION.search(line)]
        for line in said:
            if line not in corrupt:
                warnings.warn(f"{path}: the decoder said: {line}", DecoderMessage, stacklevel=2)
    if corrupt:
        # libjpeg (inside GDCM for JPEG-compressed DICOM) only *prints* "Corrupt JPEG data" and
        # returns whatever it reconstructed: most pixels of such a slice are wrong.
        raise DecodeError(f"the decoder reported corrupt data: {corrupt[0]}")
    if frames.ndim != 3:
        raise DecodeError(f"decoded to an array of shape {frames.shape}; expected 2-D slices")
    n, h, w = frames.shape
    if n == 0:
        raise DecodeError("no frames in file")
    if h < MIN_SIDE or w < MIN_SIDE:
        raise DecodeError(
            f"slice is {h}x{w} pixels; expected a 2-D image at least {MIN_SIDE}x{MIN_SIDE}"
        )
    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    if _blank(frames):
        warnings.warn(
            f"{path}: every pixel is {frames.flat[0]}: a blank image, embedded as it is",
            BlankImage,
            stacklevel=2,
        )
    return frames


def file_kind(mode: int) -> str:
    """What a file that is not a regular one is, by its ``st_mode``: "a FIFO", "a folder"..."""
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((kind for test, kind in kinds if test(mode)), "not a regular file")


def _one_line(text: str) -> str:
    """A decoder's message on one line: its non-empty lines joined with "; "."""
    if "\n" not in text and "\r" not in text:
        return text
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


class BlankImage(UserWarning):
    """An image file (PNG, JPEG) whose every pixel is one gray value: embedded (an ImageCLEF
    run file needs a line for every test image); a blank DICOM or NIfTI file is an error."""


class DecoderMessage(UserWarning):
    """A line a C decoder wrote to stderr while decoding, not a sign of corruption."""


# What C decoders print, instead of failing, when the data they reconstructed is wrong.
_CORRUPTION = re.compile(
    r"corrupt|premature end|bogus|invalid|overflow|truncat|not a jpeg|huffman|marker",
    re.IGNORECASE,
)
_STDERR_LOCK = threading.Lock()
_SINKS: dict[int, Any] = {}  # the file that catches the decoders' stderr, by process


@contextlib.contextmanager
def _decoder_messages(said: list[str]) -> Iterator[None]:
    """Collect what C code writes to file descriptor 2 while decoding into ``said`` (one entry
    per non-empty line): it bypasses ``sys.stderr`` and ``--quiet``, and is the only sign of
    some corrupt files."""
    fd = 2  # C code writes to descriptor 2 whatever sys.stderr is (pytest, notebooks)
    with _STDERR_LOCK:
        sink = _SINKS.get(os.getpid())  # made once per process (a forked worker makes its own)
        if sink is None:
            sink = _SINKS[os.getpid()] = tempfile.TemporaryFile()  # noqa: SIM115 (kept open)
            atexit.register(sink.close)
        try:
            saved = os.dup(fd)
        except OSError:  # no stderr at all (a daemon): nothing to capture
            yield
            return
        if sys.stderr is not None:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
        os.dup2(sink.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            if os.fstat(sink.fileno()).st_size:
                sink.seek(0)
                text = sink.read(64 * 1024).decode("utf-8", "replace")
                said.extend(line.strip() for line in text.splitlines() if line.strip())
                sink.seek(0)
                sink.truncate()


def _decode(path: str, window: Window, limit: int) -> np.ndarray:
    suffix = suffix_of(path)
    if suffix in NIFTI_SUFFIXES:
        return _decode_nifti(path, window, limit)
    if suffix not in IMAGE_SUFFIXES:
        return _decode_dicom(path, window, limit)  # DICOM, or headless DICOM without a suffix
    with open(path, "rb") as f:  # read once: the DICOM check and the image decoder share it
        data = f.read()
    if len(data) >= 132 and data[128:132] == b"DICM":
        return _decode_dicom(path, window, limit)  # a DICOM file named .png: trust content
    return _decode_image(io.BytesIO(data), limit)


def _check_size(max_pixels: int, height: int, width: int, frames: int) -> None:
    """The declared-size check every decoder runs before decoding pixels."""
    if height * width > max_pixels:
        raise DecodeError(
            f"declares {width}x{height} pixels per slice, more than the limit of "
            f"{max_pixels:,} (decoding would need {height * width * 8 / 2**30:.2g} GiB; "
            "raise the limit with --max-pixels)"
        )
    if height * width * frames > 4 * max_pixels:
        raise DecodeError(
            f"declares {frames} slices of {width}x{height} pixels, more than the limit of "
            f"{4 * max_pixels:,} pixels in one file (raise the limit with --max-pixels)"
        )


# The first bytes of the image formats a file named like DICOM most often really is.
_IMAGE_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
_READ_AS = {"PNG": ".png", "JPEG": ".jpg"}  # the formats ctfp decodes, by the suffix it reads


def image_kind(head: bytes) -> str | None:
    """The image format ("PNG", "JPEG", ...) whose signature ``head``, a file's first bytes,
    starts with; None for any other content."""
    return next((kind for signature, kind in _IMAGE_SIGNATURES if head.startswith(signature)), None)


def _image_content(path: str) -> str | None:
    """ "not a DICOM file: its content is a PNG image (...)" when the first bytes of ``path``
    are an image format's signature and it has no DICOM preamble; else None."""
    with open(path, "rb") as f:
        head = f.read(132)
    if head[128:132] == b"DICM":  # the preamble may be anything, a TIFF header included
        return None
    kind = image_kind(head)
    if kind is None:
        return None
    fix = f"rename it {_READ_AS[kind]}" if kind in _READ_AS else "convert it to PNG"
    return f"not a DICOM file: its content is a {kind} image ({fix})"


def _decode_image(path: str | io.BytesIO, limit: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:  # reads the header only
            _check_size(limit, img.size[1], img.size[0], getattr(img, "n_frames", 1))
            img.load()  # raises on truncated data instead of returning a half-grey image
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit gray: map the full 0..65535 range to 0..255 (no per-image stretching).
                a = np.asarray(img).astype(np.float64)
                return np.floor(np.clip(a, 0, 65535) / 257.0).astype(np.uint8)[None]
            if img.mode == "F":
                return _minmax(np.asarray(img, dtype=np.float64))[None]
            gray = img if img.mode == "L" else img.convert("L")  # RGB, palette...: ITU-R 601 luma
            return np.asarray(gray, dtype=np.uint8)[None]
    except UnidentifiedImageError:
        raise DecodeError("not an image: PIL cannot identify the file format") from None
    except OSError as exc:
        raise DecodeError(f"corrupt or truncated image: {exc}") from None


def _render(values: np.ndarray, window: Window, is_hu: bool, slope: Any = None) -> np.ndarray:
    """A DICOM or NIfTI file's stored values (HU for CT), frame by frame along axis 0, as uint8
    (:func:`_refuse_blank`). Non-finite values are an error of the file: a window or min-max
    scaling would turn them into plausible-looking gray without a word."""
    bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
    if bad:
        raise DecodeError(
            f"{bad} of {np.size(values)} pixel values are NaN or infinite; ctfp does not guess "
            "what they stand for"
        )
    if window.mode == "hu" or (window.mode == "auto" and is_hu):
        lo = window.level - window.width / 2.0
        scaled = (np.clip(values, lo, lo + window.width) - lo) / window.width * 255.0
        return _refuse_blank(np.floor(scaled).astype(np.uint8), values, window, slope)
    return _refuse_blank(np.stack([_minmax(frame) for frame in values]), values, None, slope)


def _blank(frames: np.ndarray) -> bool:
    """Whether each frame of ``frames`` (n, h, w) is one value throughout."""
    flat = frames.reshape(len(frames), -1)
    return bool((flat.min(axis=1) == flat.max(axis=1)).all())


def _refuse_blank(
    out: np.ndarray, values: np.ndarray, window: Window | None = None, slope: Any = None
) -> np.ndarray:
    """``out``, the 8-bit rendering of ``values`` (through the HU ``window``, None: none),
    unless each of its slices is one gray value: every such slice embeds alike, so the file is
    an error that says why (some blank slices are embedded). ``slope``: the RescaleSlope."""
    if not _blank(out):
        return out
    if slope not in (None, "") and float(slope) == 0:
        raise DecodeError(
            "constant after windowing: RescaleSlope is 0, so every pixel has the value of "
            "RescaleIntercept (a wrong header)"
        )
    unit = " HU" if window is not None else ""
    lo, hi = float(values.min()), float(values.max())
    if _blank(values):
        what = f"the value {lo:g}{unit}" if lo == hi else f"one value ({lo:g} to {hi:g}{unit})"
        raise DecodeError(f"every pixel of each slice has {what}: a blank image, nothing to embed")
    if window is None:  # e.g. 8-bit RGB whose values differ by under a gray level
        raise DecodeError(
            f"every pixel is the same gray in 8 bits (the file's values span {lo:g} to {hi:g})"
        )
    left, right = window.level - window.width / 2.0, window.level + window.width / 2.0
    raise DecodeError(
        f"every pixel is the same value after the window {window.level:g}/{window.width:g} "
        f"({left:g} to {right:g} HU; the file's values span {lo:g} to {hi:g}): choose a "
        "--window that covers them"
    )


def _minmax(a: np.ndarray) -> np.ndarray:
    lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    if not np.isfinite(lo) or not np.isfinite(hi):
        raise DecodeError("slice has no finite pixel values")
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.floor((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _decode_dicom(path: str, window: Window, limit: int) -> np.ndarray:
    try:
        return _dicom_frames(path, window, limit)
    except (DecodeError, MemoryError):
        raise
    except Exception as exc:  # pydicom raises ValueError, AttributeError, OSError, ...
        text = str(exc)
        for pattern, sentence in _DICOM_PROBLEMS:  # what pydicom says, as one sentence
            if match := re.search(pattern, text):
                raise DecodeError(sentence.format(*match.groups())) from exc
        reason = f"unreadable DICOM file ({type(exc).__name__}: {text})"
        raise DecodeError(_one_line(reason)) from exc


# What pydicom says about a broken file, and the sentence that says it to a person.
_DICOM_PROBLEMS = (
    (
        r"number of bytes of pixel data is less than expected \((\d+) vs (\d+) bytes\)",
        "pixel data shorter than the image size says ({0} of {1} bytes: a truncated file, or "
        "wrong Rows, Columns, Bits Allocated or Number of Frames?)",
    ),
    (
        r"Missing required element: \((\w{4},\w{4})\) '([^']+)'",
        "missing required DICOM element {1} ({0})",
    ),
    (
        r"A \((\w{4},\w{4})\) '([^']+)' value of '([^']*)' is invalid, it must be ([^\n]*)",
        "DICOM element {1} ({0}) is {2!r}; it must be {3}",
    ),
    (
        r"Unknown \((\w{4},\w{4})\) '([^']+)' value '([^']*)'",
        "DICOM element {1} ({0}) has an unknown value {2!r}",
    ),
    (
        r"No tag to read at file position",
        "the DICOM data stops inside a data element (a truncated file?)",
    ),
)


def _dicom_frames(path: str, window: Window, limit: int) -> np.ndarray:
    import pydicom
    from pydicom.datadict import dictionary_has_tag
    from pydicom.dataset import FileMetaDataset
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut
    from pydicom.uid import ImplicitVRLittleEndian

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # retired or malformed tags in old files are common
            ds = pydicom.dcmread(path, force=True)
    except InvalidDicomError as exc:
        raise DecodeError(f"not a readable DICOM file: {exc}") from None
    except Exception:  # struct.error, OSError, ... : an image named .dcm is said to be one
        image = _image_content(path)
        if image is None:
            raise
        raise DecodeError(image) from None
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        # DICOM: a file meta header, or an element of the DICOM dictionary (a forced read of
        # other bytes gives stray tags; keys(), not elements: making those can raise)
        header = getattr(ds, "preamble", None) is not None or getattr(ds, "file_meta", None)
        known = (t.group != 0 and dictionary_has_tag(t) for t in ds.keys())  # noqa: SIM118
        if not header and not any(known):
            image = _image_content(path)
            raise DecodeError(image or "not a DICOM file (no DICOM header or data elements)")
        raise DecodeError(f"DICOM has no pixel data (Modality {ds.get('Modality', 'unknown')})")
    modality = str(ds.get("Modality", "unknown"))
    if getattr(ds, "file_meta", None) is None:
        ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" not in ds.file_meta:
        # No preamble / file meta: DICOM PS3.10 says such files are Implicit VR Little Endian.
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    if "SamplesPerPixel" not in ds:
        ds.SamplesPerPixel = 1  # old ACR-NEMA style files omit it; they are grayscale
    samples = int(ds.SamplesPerPixel)
    if "PhotometricInterpretation" not in ds:
        ds.PhotometricInterpretation = "MONOCHROME2" if samples == 1 else "RGB"
    try:
        declared = [int(ds.get(k, 0) or 0) for k in ("Rows", "Columns", "NumberOfFrames")]
    except (TypeError, ValueError):
        raise DecodeError("DICOM Rows, Columns or NumberOfFrames is not a number") from None
    _check_size(limit, declared[0], declared[1], max(declared[2], 1) * samples)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        syntax = ds.file_meta.TransferSyntaxUID
        raise DecodeError(
            f"cannot decode pixel data with transfer syntax {syntax} ({syntax.name}): {exc}"
        ) from None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if samples == 3:
        if frames == 1:
            pixels = pixels[None]
        rgb = pixels.astype(np.float64)
        gray = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
        if int(ds.get("BitsStored", 8)) <= 8:
            return _refuse_blank(np.floor(np.clip(gray, 0, 255)).astype(np.uint8), gray)
        return _refuse_blank(np.stack([_minmax(frame) for frame in gray]), gray)
    values = apply_modality_lut(pixels, ds).astype(np.float64)
    if frames == 1:
        values = values[None]
    is_hu = modality == "CT" or str(ds.get("RescaleType", "")).upper() == "HU"
    out = _render(values, window, is_hu, ds.get("RescaleSlope"))
    if str(ds.PhotometricInterpretation).upper() == "MONOCHROME1":
        out = 255 - out  # MONOCHROME1: low values are white
    return out


def _decode_nifti(path: str, window: Window, limit: int) -> np.ndarray:
    import nibabel as nib

    try:
        img = nib.load(path)
    except Exception as exc:
        raise DecodeError(f"not a readable NIfTI file: {exc}") from None
    shape = (*(int(v) for v in img.shape), 1, 1)
    # The header's shape, checked before any voxel is read.
    _check_size(limit, shape[0], shape[1], int(np.prod(shape[2:])))
    img = nib.as_closest_canonical(img)  # RAS+, so axis 2 is axial (inferior -> superior)
    data = np.asanyarray(img.dataobj, dtype=np.float64)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[:, :, None]
    if data.ndim != 3:
        raise DecodeError(f"NIfTI volume has shape {data.shape}; expected 3-D (x, y, z)")
    # Radiological display: rows run anterior -> posterior, columns patient right -> left.
    slices = np.ascontiguousarray(np.transpose(data, (2, 1, 0))[:, ::-1, ::-1])
    is_hu = bool(np.isfinite(slices).all()) and float(slices.min()) < -500.0
    return _render(slices, window, is_hu)
