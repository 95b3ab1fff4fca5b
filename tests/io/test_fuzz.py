"""Seeded fuzzing of the decoders: mutated PNG, DICOM and NIfTI files built from the shared CT
data each give slices or a DecodeError naming the problem, never another exception or a hang."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from ctfp.exceptions import DecodeError
from ctfp.io.decode import decode_file
from tests.conftest import LUNG

CASES = 400
BUDGET_S = 60.0


def seeds(tmp: Path) -> list[tuple[str, bytes]]:
    png = sorted((LUNG / "png").glob("*.png"))[0].read_bytes()
    dcm = sorted((LUNG / "dicom").rglob("*.dcm"))[0].read_bytes()
    volume = np.linspace(-1000, 400, 32 * 32 * 4, dtype=np.float32).reshape(32, 32, 4)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp / "seed.nii")
    nii = (tmp / "seed.nii").read_bytes()
    return [(".png", png), (".dcm", dcm), (".nii", nii), (".nii.gz", gzip.compress(nii))]


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    a = bytearray(data)
    kind = rng.integers(4)
    if kind == 0:  # flip bytes, mostly in the header where the structure is
        for _ in range(int(rng.integers(1, 16))):
            i = int(rng.integers(min(len(a), 2048)))
            a[i] = int(rng.integers(256))
    elif kind == 1:  # truncate
        a = a[: int(rng.integers(1, len(a)))]
    elif kind == 2:  # insert junk
        i = int(rng.integers(len(a)))
        a[i:i] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    else:  # overwrite a run with one repeated byte (zeroed or saturated sizes)
        i = int(rng.integers(min(len(a), 1024)))
        a[i : i + 8] = bytes([int(rng.choice([0, 255]))]) * 8
    return bytes(a)


@pytest.mark.slow
def test_mutated_inputs_give_slices_or_a_decode_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(2026)
    base = seeds(tmp_path)
    start = time.monotonic()
    outcomes = {"slices": 0, "error": 0}
    wrong = []
    for n in range(CASES):
        suffix, data = base[n % len(base)]
        path = tmp_path / f"case{n:03d}{suffix}"
        path.write_bytes(mutate(data, rng))
        try:
            frames = decode_file(path)
        except DecodeError as exc:
            assert str(exc), path  # a reason a person can read
            outcomes["error"] += 1
        except Exception as exc:  # anything else is a bug: a traceback for the user
            wrong.append(f"{path.name}: {type(exc).__name__}: {exc}")
        else:
            assert frames.dtype == np.uint8 and frames.ndim == 3 and min(frames.shape[1:]) >= 8
            outcomes["slices"] += 1
        path.unlink()
        assert time.monotonic() - start < BUDGET_S, f"fuzzing ran past {BUDGET_S} s at case {n}"
    assert not wrong, "\n".join(wrong[:10])
    assert outcomes["error"] > 0 and outcomes["slices"] > 0  # both outcomes were exercised
