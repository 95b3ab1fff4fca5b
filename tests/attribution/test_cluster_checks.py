"""`ctfp cluster` checks its streamed fit as `ctfp run task2` checks its own: a mixture that puts
every sampled row in one component is refused unless --allow-collapse, and doubtful fits (empty
components, k at the edge of --k-range, BIC and silhouette disagreeing, full covariances from
fewer rows than dimensions) are warned about, in the log and in the JSON summary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ctfp.attribution.settings import ClusterSettings
from ctfp.attribution.shards import cluster_shards, stream_fit_warnings
from ctfp.cli import main
from ctfp.exceptions import InputError
from ctfp.store.schema import make_metadata
from ctfp.store.writer import ShardWriter
from tests.attribution.test_shards import IDENTITY, write_blobs


def write_copies(out: Path, distinct: int, n: int = 20) -> None:
    """``n`` rows that are copies of ``distinct`` vectors (one: every row identical)."""
    vectors = np.random.default_rng(0).normal(size=(distinct, 32))
    x = vectors[np.arange(n) % distinct].astype(np.float16)
    with ShardWriter(out, metadata=make_metadata(IDENTITY, "float16", {})) as w:
        w.add("all", [f"g{i:03d}" for i in range(n)], "synthetic", range(n), None, x)


def cluster(shards: Path, out: Path, *extra: str) -> list[str]:
    return ["cluster", str(shards), "--out", str(out), *extra, "--device", "cpu", "--quiet"]


def test_a_collapsed_fit_is_refused_with_one_line(tmp_path: Path, capsys) -> None:
    write_copies(tmp_path / "emb", distinct=1)
    assert main(cluster(tmp_path / "emb", tmp_path / "m", "--k", "3")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "all 20 sampled rows in one component (sizes [20, 0, 0])" in err[0]
    assert str(tmp_path / "emb") in err[0] and "--allow-collapse" in err[0]
    assert not (tmp_path / "m" / "model.json").exists()  # nothing to score with
    with pytest.raises(InputError, match=r"one component \(sizes \[20, 0\]\)"):
        cluster_shards(tmp_path / "emb", k=2, device="cpu")
    # k=auto collapses too: refused whichever k the BIC chose.
    assert main(cluster(tmp_path / "emb", tmp_path / "a", "--k", "auto", "--k-range", "2-3")) == 2
    assert "in one component" in capsys.readouterr().err
    # Asked for: kept, with the sizes and the warning in the summary.
    args = cluster(tmp_path / "emb", tmp_path / "m", "--k", "3", "--allow-collapse", "--json")
    assert main(args) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["sample_cluster_sizes"] == [20, 0, 0]
    assert any("2 of 3 components hold none" in w for w in summary["warnings"])
    assert "warning: 2 of 3 components hold none" in captured.err
    assert (tmp_path / "m" / "model.json").is_file()
    # One component is not a collapse.
    _, one = cluster_shards(tmp_path / "emb", k=1, device="cpu")
    assert one["sample_cluster_sizes"] == [20]


def test_allow_collapse_is_a_cluster_setting() -> None:
    assert ClusterSettings().allow_collapse is False
    assert ClusterSettings(allow_collapse=True).to_dict()["allow_collapse"] is True


def test_empty_components_and_singular_covariances_are_warned(tmp_path: Path, capsys) -> None:
    write_copies(tmp_path / "emb", distinct=2)  # 20 rows, two distinct, 32 dimensions
    assert main(cluster(tmp_path / "emb", tmp_path / "m", "--k", "3", "--json")) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert sorted(summary["sample_cluster_sizes"]) == [0, 10, 10]
    warnings = summary["warnings"]
    assert len(warnings) == 2, warnings
    assert "1 of 3 components hold none of the 20 sampled rows" in warnings[0]
    assert "full covariances from 20 rows in 32 dimensions" in warnings[1]
    assert all(f"warning: {w}" in captured.err for w in warnings)
    # A diagonal covariance is not singular; the empty component stays a warning.
    assert main(cluster(tmp_path / "emb", tmp_path / "d", "--k", "3", "--covariance", "diag",
                        "--json")) == 0  # fmt: skip
    assert [w[:30] for w in json.loads(capsys.readouterr().out)["warnings"]] == [warnings[0][:30]]


def test_k_auto_at_the_edge_of_the_range_is_warned(tmp_path: Path, capsys) -> None:
    write_blobs(tmp_path / "emb", n=600)  # three blobs
    args = cluster(tmp_path / "emb", tmp_path / "m", "--k", "auto", "--covariance", "diag")
    assert main([*args, "--k-range", "2-3", "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["k"] == 3
    assert sorted(summary["silhouettes"]) == ["2", "3"]
    edge = "k=auto chose k=3, the edge of the range searched (2-3)"
    assert any(edge in w for w in summary["warnings"]) and edge in captured.err
    # Searched around it: no warning at all (the silhouette agrees with the BIC).
    assert main([*args, "--k-range", "2-5", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["k"] == 3 and summary["warnings"] == []
    assert max(summary["silhouettes"], key=summary["silhouettes"].get) == "3"


def test_bic_and_silhouette_disagreeing_is_warned() -> None:
    settings = ClusterSettings(covariance_type="diag")
    bics = {2: 10.0, 3: 5.0, 4: 8.0}
    found = stream_fit_warnings(
        3, [5, 5, 5], settings, rows=15, dim=4, bics=bics, silhouettes={2: 0.9, 3: 0.4, 4: 0.1}
    )
    assert found == ["BIC chose k=3 but the silhouette prefers k=2"]
    # Undefined silhouettes (one cluster found) are ignored, agreeing ones say nothing.
    nan = float("nan")
    assert not stream_fit_warnings(
        3, [5, 5, 5], settings, rows=15, dim=4, bics=bics, silhouettes={2: nan, 3: 0.4, 4: 0.1}
    )
