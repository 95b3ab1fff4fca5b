"""The mapper: chunked forward passes, precision resolved once, and a light import."""

from __future__ import annotations

import functools
import subprocess
import sys

import numpy as np
import torch

from ctfp.device import autocast
from ctfp.embed.features import PixelFeatures, build_features, join
from ctfp.embed.mapper import Mapper, default_batch_size, forward

CPU = torch.device("cpu")


def frames(n: int, s: int = 8) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 1, s, s), dtype=torch.uint8, generator=torch.Generator().manual_seed(n)
    )


def test_forward_in_chunks_equals_one_pass() -> None:
    model = PixelFeatures(8)
    x = frames(10)
    amp = autocast("fp32", CPU)
    whole = forward(model, x, CPU, amp, batch_size=64)
    assert whole.shape == (10, 64) and whole.dtype == np.float32
    np.testing.assert_array_equal(forward(model, x, CPU, amp, batch_size=3), whole)
    np.testing.assert_allclose(whole, x.reshape(10, -1).numpy() / 255.0, rtol=1e-6)
    empty = forward(model, x[:0], CPU, amp, batch_size=3)
    assert empty.shape == (0, 64) and empty.dtype == np.float32


def test_mapper_builds_the_model_and_embeds() -> None:
    mapper = Mapper.build(lambda: PixelFeatures(8), CPU, "fp32", batch_size=4)
    assert mapper.precision == "fp32" and mapper.batch_size == 4
    assert mapper.identity.dim == 64 and [v.image_size for v in mapper.views] == [8]
    x = frames(6)
    [y] = mapper(x)
    np.testing.assert_array_equal(y, forward(mapper.model, x, CPU, mapper.amp, 64))
    # "auto" is resolved once, to what this CPU runs.
    assert Mapper.build(lambda: PixelFeatures(8), CPU, "auto", 4).precision in ("fp32", "bf16")


def test_several_models_share_their_parts_and_the_resized_batches() -> None:
    """residual:16, spectrum:16, residual:16+spectrum:16 and pixels:8: two sides to resize to,
    three extractors run, the joined output the join of the two it shares."""
    specs = ["residual:16", "spectrum:16", "residual:16+spectrum:16", "pixels:8"]
    mapper = Mapper.build([functools.partial(build_features, s) for s in specs], CPU, "fp32", 4)
    assert [v.image_size for v in mapper.views] == [16, 8] and len(mapper.parts) == 3
    assert [i.model for i in mapper.identities] == [
        "residual",
        "spectrum",
        "residual+spectrum",
        "pixels",
    ]
    assert mapper.decode_bound  # no network among them
    views = [frames(5, 16), frames(5, 8)]
    residual, spectrum, joined, pixels = mapper(views)
    alone = [Mapper.build(functools.partial(build_features, s), CPU, "fp32", 4) for s in specs]
    np.testing.assert_array_equal(residual, alone[0](views[0])[0])
    np.testing.assert_array_equal(spectrum, alone[1](views[0])[0])
    np.testing.assert_array_equal(joined, alone[2](views[0])[0])
    np.testing.assert_array_equal(pixels, alone[3](views[1])[0])
    expected = join([torch.from_numpy(residual), torch.from_numpy(spectrum)]).numpy()
    np.testing.assert_array_equal(joined, expected)
    # Only the models asked for run.
    got = mapper(views, [1])
    assert got[0] is None and got[2] is None and got[3] is None
    np.testing.assert_array_equal(got[1], spectrum)


def test_default_batch_size() -> None:
    assert default_batch_size(CPU) == 16 and default_batch_size(torch.device("cuda")) == 128
    # Models lighter than decoding take the loader's batches of 64 on a CPU.
    assert default_batch_size(CPU, decode_bound=True) == 64
    assert Mapper.build(lambda: PixelFeatures(8), CPU, "fp32").batch_size == 64
    assert Mapper.build(lambda: PixelFeatures(8), CPU, "fp32", 5).batch_size == 5


def test_importing_a_stage_does_not_import_the_runner_or_the_engines() -> None:
    code = (
        "import sys, ctfp.embed.mapper, ctfp.embed.reader, ctfp.embed.writer\n"
        "print(sorted(m for m in sys.modules if m in ('ctfp.embed.runner', 'ctfp.embed.cache', "
        "'ctfp.engine', 'ctfp.engine.local', 'ctfp.engine.ray', 'ray')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_mapper_pickles_for_spawned_loader_workers() -> None:
    """Its autocast factory (a lambda under bf16) is rebuilt where it is unpickled."""
    import pickle

    mapper = Mapper.build(functools.partial(build_features, "residual:16"), CPU, "bf16", 4)
    copy = pickle.loads(pickle.dumps(mapper))
    assert copy.precision == "bf16" and [v.image_size for v in copy.views] == [16]
    x = frames(3, 16)
    np.testing.assert_array_equal(copy(x)[0], mapper(x)[0])
