"""`ctfp score` and `ctfp cluster` on a local 2-CPU Ray: the local engine's outputs, the shards
read where the workers run, errors naming the shard."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ctfp.attribution.shards import cluster_shards
from ctfp.cli import main
from ctfp.engine import parallel_map
from ctfp.engine.settings import EngineSettings
from ctfp.exceptions import InputError
from ctfp.runs.score import SCORED_KEY, score_shards
from ctfp.store.manifest import read_manifest
from ctfp.store.schema import make_metadata
from ctfp.store.writer import ShardWriter
from tests.attribution.test_shards import write_blobs
from tests.runs.test_score import IDENTITY, fit_centroid, write_shards

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'ctfp[ray]')")
# Ray starts in seconds and its tests run tens of them: outside `make test-fast`.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*deprecated.*:DeprecationWarning"),
    pytest.mark.slow,
]

RAY = EngineSettings(engine="ray")


def _parts(folder: Path) -> dict[str, pq.Table]:
    names = [p.name for p in read_manifest(folder)]
    return {name: pq.read_table(folder / name) for name in names}


def assert_same_scores(local: Path, remote: Path) -> None:
    """Same parts in the record, same ids, labels and what each part records; scores equal up
    to float32 rounding."""
    a, b = _parts(local), _parts(remote)
    assert list(a) == list(b) and a
    for name in a:
        assert a[name].column("id").equals(b[name].column("id"))
        assert a[name].column("label").equals(b[name].column("label"))
        np.testing.assert_allclose(
            a[name].column("score").to_numpy(), b[name].column("score").to_numpy(), rtol=1e-6
        )
        assert a[name].schema.metadata[SCORED_KEY] == b[name].schema.metadata[SCORED_KEY]


def test_parallel_map_keeps_the_order_and_raises_the_workers_error(ray_address: str) -> None:
    items = list(range(9))
    assert list(parallel_map(abs, [-i for i in items], RAY)) == items
    assert list(parallel_map(abs, [-i for i in items], RAY, stateful=True)) == items
    assert list(parallel_map(abs, [-3, 2], "local")) == [3, 2]

    def refuse(i: int) -> int:
        if i == 4:
            raise InputError(f"item {i} is bad")
        return i

    with pytest.raises(InputError, match="item 4 is bad"):
        list(parallel_map(refuse, items, RAY))


@pytest.mark.parametrize(
    "options",
    [dict(covariance_type="diag"), dict(covariance_type="full", pca=6)],
    ids=["diag", "full-pca"],
)
def test_cluster_on_ray_fits_the_local_mixture(
    tmp_path: Path, ray_address: str, options: dict
) -> None:
    write_blobs(tmp_path / "emb")  # 3 shards of 1,000 rows
    kwargs = dict(k=3, sample=400, passes=6, tol=0.0, device="cpu", batch_size=256, **options)
    local, a = cluster_shards(tmp_path / "emb", **kwargs)
    remote, b = cluster_shards(tmp_path / "emb", engine=RAY, **kwargs)
    assert a["engine"] == "local" and b["engine"] == "ray"
    assert a["passes"] == b["passes"] == 6 and a["rows"] == b["rows"] == 3000
    assert a["sample_cluster_sizes"] == b["sample_cluster_sizes"]
    np.testing.assert_array_equal(local.labels, remote.labels)
    gl, gr = local.model, remote.model
    # The same sums per shard, summed in shard order: equal up to the rounding of the shards'
    # arithmetic in other processes (Ray's workers run torch on one thread).
    np.testing.assert_allclose(gl.weights_, gr.weights_, rtol=1e-9)
    np.testing.assert_allclose(gl.means_, gr.means_, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(gl.covariances_, gr.covariances_, rtol=1e-8, atol=1e-10)
    assert gl.lower_bound_ == pytest.approx(gr.lower_bound_, rel=1e-10)


def test_score_on_ray_writes_the_local_parts_and_resumes(tmp_path: Path, ray_address: str) -> None:
    write_shards(tmp_path / "emb")  # 3 shards of 1,000 rows
    rng = np.random.default_rng(1)
    model = fit_centroid(4, rng.gamma(1.0, 1.0, (200, 64)), rng.gamma(1.2, 1.0, (200, 64)))
    options = dict(batch_size=256, progress=False)
    local = score_shards(model, tmp_path / "emb", tmp_path / "local", **options)
    remote = score_shards(model, tmp_path / "emb", tmp_path / "ray", engine=RAY, **options)
    assert local["rows"] == remote["rows"] == 3000 and remote["engine"] == "ray"
    assert remote["shards_written"] == 3
    assert_same_scores(tmp_path / "local", tmp_path / "ray")
    # Resume: a lost part is scored again, the others are kept.
    (tmp_path / "ray" / "part-00001.parquet").unlink()
    again = score_shards(model, tmp_path / "emb", tmp_path / "ray", engine=RAY, **options)
    assert again["shards_written"] == 1 and again["shards_skipped"] == 2
    assert_same_scores(tmp_path / "local", tmp_path / "ray")


def test_cluster_and_score_commands_on_ray(tmp_path: Path, ray_address: str, capsys) -> None:
    write_blobs(tmp_path / "emb")
    fit = ["cluster", str(tmp_path / "emb"), "--k", "3", "--sample", "400", "--covariance", "diag"]
    fit += ["--passes", "5", "--tol", "0", "--device", "cpu", "--quiet", "--json"]
    assert main([*fit, "--out", str(tmp_path / "m-local")]) == 0
    local = json.loads(capsys.readouterr().out)
    assert main([*fit, "--out", str(tmp_path / "m-ray"), "--engine", "ray"]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert (local["engine"], remote["engine"]) == ("local", "ray")
    assert local["sample_cluster_sizes"] == remote["sample_cluster_sizes"]
    assert local["mean_log_likelihood"] == pytest.approx(remote["mean_log_likelihood"], 1e-10)
    for engine in ("local", "ray"):
        score = ["score", str(tmp_path / "m-ray"), str(tmp_path / "emb"), "--quiet", "--json"]
        assert main([*score, "--out", str(tmp_path / f"c-{engine}"), "--engine", engine]) == 0
        assert json.loads(capsys.readouterr().out)["rows"] == 3000
    assert_same_scores(tmp_path / "c-local", tmp_path / "c-ray")


def test_a_bad_shard_is_named_from_the_ray_workers(tmp_path: Path, ray_address: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.gamma(1.0, 1.0, (60, 64)).astype(np.float16)
    x[47, 3] = np.nan
    with ShardWriter(
        tmp_path / "emb", metadata=make_metadata(IDENTITY, "float16", {}), rows_per_shard=30
    ) as w:
        for i in range(60):  # one file per row: two shards of 30
            w.add(f"r{i:03d}", [f"r{i:03d}"], "synthetic", [0], None, x[i : i + 1])
    model = fit_centroid(2, rng.gamma(1.0, 1.0, (20, 64)), rng.gamma(1.2, 1.0, (20, 64)))
    with pytest.raises(InputError, match=r"part-00001.parquet holds non-finite .* row 17"):
        score_shards(model, tmp_path / "emb", tmp_path / "scores", engine=RAY, progress=False)
    # The first shard's scores were written and recorded; the bad one's were not.
    assert [p.name for p in read_manifest(tmp_path / "scores")] == ["part-00000.parquet"]
    with pytest.raises(InputError, match=r"non-finite embeddings .* id 'r047'"):
        cluster_shards(tmp_path / "emb", k=2, device="cpu", engine=RAY)


def test_streamed_kmeans_over_partitions_on_ray_equals_local(
    tmp_path: Path, ray_address: str
) -> None:
    from ctfp.attribution.shards import ShardBatches
    from ctfp.cluster.kmeans import KMeans
    from ctfp.store.reader import read_embeddings, shard_paths

    write_blobs(tmp_path / "emb")
    partitions = [ShardBatches(p, 256) for p in shard_paths(tmp_path / "emb")]
    sample = read_embeddings(tmp_path / "emb").matrix[::10]
    fits = {}
    for name, map_fn in {
        "local": None,
        "ray": lambda f, items: parallel_map(f, items, RAY),
    }.items():
        fits[name] = KMeans(3, random_state=0, device="cpu").fit_stream(
            partitions, sample, passes=3, map_fn=map_fn
        )
    whole = KMeans(3, random_state=0, device="cpu").fit_stream(
        lambda: (b for p in partitions for b in p()), sample, passes=3
    )
    np.testing.assert_allclose(fits["local"].cluster_centers_, fits["ray"].cluster_centers_)
    np.testing.assert_allclose(fits["local"].cluster_centers_, whole.cluster_centers_, rtol=1e-6)
    assert fits["local"].inertia_ == pytest.approx(fits["ray"].inertia_, rel=1e-12)
