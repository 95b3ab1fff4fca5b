"""A weights file ctfp cannot use is refused when loaded, in one line naming the file and what
is wrong with it: never a torch traceback, never NaN embeddings."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
import torchvision

from ctfp.embed.backbone import build_backbone
from ctfp.exceptions import WeightsUnavailableError
from tests.conftest import LUNG


def _refusal(path: Path) -> str:
    with pytest.raises(WeightsUnavailableError) as caught:
        build_backbone(path, image_size=64)
    message = str(caught.value)
    assert "\n" not in message and repr(str(path)) in message
    return message


@pytest.fixture(scope="module")
def resnet50_state() -> dict[str, torch.Tensor]:
    return torchvision.models.resnet50(weights=None).state_dict()


def test_nan_weights_are_refused_when_loaded(tmp_path: Path, resnet50_state) -> None:
    state = dict(resnet50_state)
    state["layer1.0.conv1.weight"] = state["layer1.0.conv1.weight"].clone()
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    state["bn1.running_var"] = torch.full_like(state["bn1.running_var"], float("inf"))
    torch.save(state, tmp_path / "nan.pth")
    assert _refusal(tmp_path / "nan.pth").endswith(
        "holds 65 NaN or infinite values (first in bn1.running_var); every embedding would be "
        "NaN: use other weights"
    )


def test_a_resnet18_state_dict_is_named_in_one_line(tmp_path: Path) -> None:
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    assert _refusal(tmp_path / "r18.pth") == (
        f"weights file {str(tmp_path / 'r18.pth')!r} is not a ResNet50 state dict: 198 keys "
        "missing (e.g. layer1.0.conv3.weight), 23 tensors of another shape (e.g. "
        "layer1.0.conv1.weight: [64, 64, 3, 3], ResNet50 has [64, 64, 1, 1])"
    )


def test_unexpected_keys_are_named(tmp_path: Path, resnet50_state) -> None:
    torch.save({**resnet50_state, "head.weight": torch.zeros(2)}, tmp_path / "extra.pth")
    assert _refusal(tmp_path / "extra.pth").endswith(
        "is not a ResNet50 state dict: 1 unexpected keys (e.g. head.weight)"
    )


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda p: p.write_bytes(b""), "it is empty (0 bytes)"),
        (
            lambda p: shutil.copy(LUNG / "png" / "A0001_s2_030.png", p),
            "not a PyTorch weights file (its content is a PNG image)",
        ),
        (lambda p: p.write_text("hello"), "not a PyTorch weights file (torch.load cannot read it)"),
        (
            lambda p: torch.save(torch.nn.Linear(2, 2), p),
            "it holds Python objects besides tensors (a pickled model?)",
        ),
        (
            lambda p: (torch.save({"w": torch.zeros(4)}, p), p.write_bytes(p.read_bytes()[:200])),
            "a damaged PyTorch archive (truncated, or changed after saving?)",
        ),
    ],
    ids=["empty", "png", "text", "pickled-model", "truncated"],
)
def test_unloadable_files_say_what_they_are(tmp_path: Path, make, reason: str) -> None:
    path = tmp_path / "weights.pth"
    make(path)
    assert _refusal(path).startswith(f"cannot load weights file {str(path)!r}: {reason}")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_without_being_read(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.pth")  # torch.load would wait for a writer for ever
    assert _refusal(tmp_path / "pipe.pth").endswith(
        "is not a regular file (a FIFO); give a state-dict file saved with torch.save"
    )
