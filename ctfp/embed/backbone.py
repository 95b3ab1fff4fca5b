"""The backbone: ResNet50 with its weights, preprocessing and identity, built by a factory."""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import io
import os
import stat
import sys
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ctfp.exceptions import WeightsUnavailableError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EMBED_DIM = 2048


@dataclass(frozen=True)
class Preprocessing:
    """What happens to a decoded uint8 slice before the network: :meth:`resize` on the CPU in
    loader workers, in uint8; :meth:`normalize` on the device, so only bytes cross the bus."""

    image_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear-antialias"
    pad: str = "square-zero"
    channels: str = "gray-to-rgb"

    def resize(self, frame: np.ndarray) -> np.ndarray:
        """Pad ``frame`` (h, w) uint8 to a square with zeros (air), then resize to (s, s) uint8."""
        from PIL import Image

        h, w = frame.shape
        if h != w:
            side = max(h, w)
            square = np.zeros((side, side), dtype=np.uint8)
            top, left = (side - h) // 2, (side - w) // 2
            square[top : top + h, left : left + w] = frame
            frame = square
        if frame.shape[0] == self.image_size:
            return np.ascontiguousarray(frame)
        # PIL's bilinear filter widens its support when shrinking, i.e. it antialiases.
        img = Image.fromarray(frame).resize((self.image_size, self.image_size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(b, 1, s, s) uint8 on any device -> (b, 3, s, s) float32 ImageNet-normalised."""
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        x = x.float().div_(255.0).expand(-1, 3, -1, -1)
        return (x - mean) / std


@dataclass(frozen=True)
class Identity:
    """Which model made an embedding; equal identities mean comparable embeddings."""

    model: str
    weights: str
    weights_sha256: str
    dim: int
    preprocessing: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Backbone(nn.Module):
    """ResNet50 up to global average pooling: (b, 1, s, s) uint8 -> (b, 2048) embeddings."""

    def __init__(self, net: nn.Module, preprocessing: Preprocessing, identity: Identity) -> None:
        super().__init__()
        self.net = net
        self.preprocessing = preprocessing
        self.identity = identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.preprocessing.normalize(x).contiguous(memory_format=torch.channels_last)
        return self.net(x)


def build_backbone(
    weights: str | os.PathLike[str] = "imagenet",
    *,
    seed: int = 0,
    image_size: int = 224,
) -> Backbone:
    """Build the backbone on the CPU in eval mode (a factory: once per process or actor).

    ``weights``: ``"imagenet"`` (torchvision's IMAGENET1K_V2 through its cache and download),
    a local state-dict path (loaded with ``weights_only=True``) or ``"random"`` (init seeded
    with ``seed``, for tests and offline demos). ``image_size``: side of the network input.
    """
    if image_size < 32:
        raise WeightsUnavailableError(f"image size {image_size} is too small; use at least 32")
    weights_text = os.fspath(weights)
    key = weights_text
    if weights_text not in ("random", "imagenet"):  # a file: its content may change
        try:
            stat = os.stat(weights_text)
        except OSError:
            return _build(weights_text, seed, image_size)  # which says what is wrong
        key = f"{weights_text}:{stat.st_size}:{stat.st_mtime_ns}"
    # A copy of the one built for the same weights: random init and hashing cost a second.
    return copy.deepcopy(_built(weights_text, key, seed, image_size))


@functools.lru_cache(maxsize=2)
def _built(weights: str, key: str, seed: int, image_size: int) -> Backbone:
    return _build(weights, seed, image_size)


def _build(weights_text: str, seed: int, image_size: int) -> Backbone:
    import torchvision

    if weights_text == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = torchvision.models.resnet50(weights=None)
        label = f"random:seed={seed}"
    else:
        net = torchvision.models.resnet50(weights=None)
        if weights_text == "imagenet":
            state = imagenet_state_dict()
            label, source = "imagenet:IMAGENET1K_V2", "the ImageNet weights"
        else:
            from ctfp.io.fs import local_only

            # torch.load reads local files
            local_only("weights", weights_text, "a weights file", WeightsUnavailableError)
            state = _file_state_dict(Path(weights_text))
            label, source = f"file:{Path(weights_text).name}", f"weights file {weights_text!r}"
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        _check_fits(net, state, source)
        net.load_state_dict(state, strict=False)
    net.fc = nn.Identity()  # the 2048-d average-pool output is the embedding
    net.eval().requires_grad_(False)
    net = net.to(memory_format=torch.channels_last)
    preprocessing = Preprocessing(image_size=image_size)
    identity = Identity(
        model="resnet50",
        weights=label,
        weights_sha256=state_dict_sha256(net.state_dict()),
        dim=EMBED_DIM,
        preprocessing=asdict(preprocessing),
    )
    return Backbone(net, preprocessing, identity).eval()


def imagenet_unavailable() -> str | None:
    """Why ImageNet's ResNet50 weights cannot be had here (the reason's first sentence), or
    None when they load; silently (torch.hub announces a download on both streams)."""
    try:
        quiet = io.StringIO()
        with contextlib.redirect_stderr(quiet), contextlib.redirect_stdout(quiet):
            imagenet_state_dict()
    except WeightsUnavailableError as exc:
        return str(exc).split(". ")[0]
    return None


def imagenet_state_dict() -> dict[str, torch.Tensor]:
    """torchvision's IMAGENET1K_V2 ResNet50 weights, or a WeightsUnavailableError saying how to
    get them without internet."""
    from torchvision.models import ResNet50_Weights

    try:
        # torch.hub announces a download on stdout, which is for results (--json).
        with contextlib.redirect_stdout(sys.stderr):
            return ResNet50_Weights.IMAGENET1K_V2.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # URLError, socket errors, hash mismatch, a broken cache file
        raise WeightsUnavailableError(
            f"ImageNet ResNet50 weights (torchvision IMAGENET1K_V2) could not be loaded: {exc}. "
            f"Download them where there is internet ({ResNet50_Weights.IMAGENET1K_V2.url}) and "
            "pass --weights PATH, or use --weights random (seeded, for tests and offline demos)."
        ) from exc


def _file_state_dict(path: Path) -> dict[str, torch.Tensor]:
    from ctfp.io.decode import file_kind

    try:
        info = path.stat()
    except OSError:
        raise WeightsUnavailableError(
            f"weights file {str(path)!r} does not exist; give a state-dict file, 'imagenet' or "
            "'random'"
        ) from None
    if not stat.S_ISREG(info.st_mode):  # a FIFO would block torch.load for ever
        raise WeightsUnavailableError(
            f"weights file {str(path)!r} is not a regular file ({file_kind(info.st_mode)}); "
            "give a state-dict file saved with torch.save"
        )
    if info.st_size == 0:
        raise WeightsUnavailableError(
            f"cannot load weights file {str(path)!r}: it is empty (0 bytes); give a ResNet50 "
            "state dict saved with torch.save"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's advice on pickle protocols
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises anything from UnpicklingError to RuntimeError
        raise WeightsUnavailableError(
            f"cannot load weights file {str(path)!r}: {_unloadable(path, exc)}"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailableError(f"weights file {str(path)!r} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _unloadable(path: Path, exc: Exception) -> str:
    """Why ``torch.load`` could not read ``path``, in one sentence (torch's own runs to many
    lines)."""
    from ctfp.io.decode import image_kind

    with open(path, "rb") as f:
        head = f.read(16)
    if "Unsupported global" in str(exc):
        return (
            "it holds Python objects besides tensors (a pickled model?); save "
            "model.state_dict() with torch.save and pass that file"
        )
    if head.startswith(b"PK"):  # torch.save writes a zip archive
        return "a damaged PyTorch archive (truncated, or changed after saving?)"
    kind = image_kind(head)
    what = f"its content is a {kind} image" if kind else "torch.load cannot read it"
    return f"not a PyTorch weights file ({what}); give a state dict saved with torch.save"


def _check_fits(net: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse a state dict that ``net`` (without its classifier) cannot take, or with values
    that are not finite, in one line naming ``source``."""
    expected = {k: v.shape for k, v in net.state_dict().items() if not k.startswith("fc.")}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [k for k in expected if k in state and state[k].shape != expected[k]]
    parts = []
    if missing:
        parts.append(f"{len(missing)} keys missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    if reshaped:
        k = reshaped[0]
        parts.append(
            f"{len(reshaped)} tensors of another shape (e.g. {k}: {list(state[k].shape)}, "
            f"ResNet50 has {list(expected[k])})"
        )
    if parts:
        raise WeightsUnavailableError(f"{source} is not a ResNet50 state dict: {', '.join(parts)}")
    # Count only in tensors whose sum is not finite (an overflow counts 0): much faster.
    bad = {
        k: int(v.numel() - torch.isfinite(v).sum())
        for k, v in state.items()
        if v.is_floating_point() and not torch.isfinite(v.sum())
    }
    bad = {k: n for k, n in bad.items() if n}
    if bad:
        name = next(iter(bad))
        raise WeightsUnavailableError(
            f"{source} holds {sum(bad.values())} NaN or infinite values (first in {name}); "
            "every embedding would be NaN: use other weights"
        )


def state_dict_sha256(state: dict[str, torch.Tensor]) -> str:
    """Content hash of a state dict (names, dtypes, shapes, values), independent of file format."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
