"""The backbone: weights sources, identity, preprocessing and the honest offline failure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ctfp.embed.backbone import Preprocessing, build_backbone, state_dict_sha256
from ctfp.exceptions import WeightsUnavailableError


@pytest.fixture(scope="module")
def backbone():
    return build_backbone("random", seed=0, image_size=64)


def test_random_weights_are_seeded(backbone) -> None:
    again = build_backbone("random", seed=0, image_size=64)
    other = build_backbone("random", seed=1, image_size=64)
    assert again.identity.weights_sha256 == backbone.identity.weights_sha256
    assert other.identity.weights_sha256 != backbone.identity.weights_sha256
    assert backbone.identity.weights == "random:seed=0" and backbone.identity.dim == 2048
    assert not backbone.training and isinstance(backbone.net.fc, torch.nn.Identity)


def test_forward_shape_from_uint8(backbone) -> None:
    x = torch.randint(0, 256, (3, 1, 64, 64), dtype=torch.uint8)
    with torch.inference_mode():
        y = backbone(x)
    assert y.shape == (3, 2048) and torch.isfinite(y).all()


def test_local_weights_file_round_trip(tmp_path: Path, backbone) -> None:
    path = tmp_path / "resnet50.pt"
    state = backbone.net.state_dict()
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    loaded = build_backbone(path, image_size=64)
    assert loaded.identity.weights == "file:resnet50.pt"
    assert loaded.identity.weights_sha256 == backbone.identity.weights_sha256
    x = torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), backbone(x))


def test_bad_weights_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        build_backbone(tmp_path / "missing.pt")
    with pytest.raises(WeightsUnavailableError, match=r"'s3://b/w\.pt': a weights file is a local"):
        build_backbone("s3://b/w.pt")
    torch.save({"conv1.weight": torch.zeros(3)}, tmp_path / "wrong.pt")
    with pytest.raises(WeightsUnavailableError, match="is not a ResNet50 state dict"):
        build_backbone(tmp_path / "wrong.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailableError, match="cannot load"):
        build_backbone(tmp_path / "junk.pt")


def test_imagenet_without_network_names_the_alternatives(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: only a download could help
    try:
        build_backbone("imagenet")
    except WeightsUnavailableError as exc:
        assert "--weights PATH" in str(exc) and "--weights random" in str(exc)
    else:
        pytest.skip("ImageNet weights could be downloaded here")


def test_preprocessing_pads_to_square_and_resizes() -> None:
    p = Preprocessing(image_size=32)
    frame = np.full((40, 80), 200, dtype=np.uint8)
    out = p.resize(frame)
    assert out.shape == (32, 32) and out.dtype == np.uint8
    assert out[0, 16] == 0 and out[16, 16] == 200  # zero (air) bands above and below
    x = torch.from_numpy(np.stack([out])[:, None])
    y = p.normalize(x)
    assert y.shape == (1, 3, 32, 32)
    assert torch.allclose(y[0, :, 0, 0], -torch.tensor(p.mean) / torch.tensor(p.std))


def test_state_dict_hash_sees_values() -> None:
    a = {"w": torch.zeros(3), "n": torch.tensor(0)}
    b = {"w": torch.tensor([0.0, 0.0, 1e-8]), "n": torch.tensor(0)}
    assert state_dict_sha256(a) != state_dict_sha256(b)
