"""Clustering and lookup: ctfp vs scikit-learn, side by side on the same data in one run.

Prints one JSON line with, for each case, both timings, their ratio and the quality difference:

- GaussianMixture, 20,000 x 256 diag and 3,000 x 2,048 full, 4 components, the same initial
  weights/means/precisions for both and the same number of EM iterations (tol=0), so both do
  the same work; ctfp in float64 (sklearn's arithmetic) and in float32 (covariances and their
  Cholesky factors still in float64).
- KMeans: ctfp (FAISS) vs scikit-learn (Lloyd), 100,000 x 256, k=64, same iteration count.
- L1 1-NN of 1,000,000 queries (2,048-d) against 64 centres: ctfp FlatIndex (FAISS METRIC_L1)
  vs NearestNeighbors(metric="manhattan", algorithm="brute"), in chunks of 100,000 queries.

    python benchmarks/cluster_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import numpy as np
import torch

from ctfp.cluster import GaussianMixture, KMeans
from ctfp.index import FlatIndex


def mixture_data(n: int, d: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping Gaussian clusters shaped like embeddings (non-negative, anisotropic)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % k
    centres = rng.gamma(2.0, 0.5, (k, d))
    scales = rng.uniform(0.3, 1.0, (k, d))
    x = centres[labels] + rng.standard_normal((n, d)) * scales[labels]
    return np.maximum(x, 0).astype(np.float32), labels


def shared_start(x: np.ndarray, labels: np.ndarray, covariance_type: str, reg: float) -> dict:
    from sklearn.mixture._gaussian_mixture import (
        _compute_precision_cholesky,
        _estimate_gaussian_parameters,
    )

    k = labels.max() + 1
    nk, means, cov = _estimate_gaussian_parameters(
        x.astype(np.float64), np.eye(k)[labels], reg, covariance_type
    )
    pc = _compute_precision_cholesky(cov, covariance_type)
    precisions = pc @ pc.transpose(0, 2, 1) if covariance_type == "full" else pc**2
    return {"weights_init": nk / len(x), "means_init": means, "precisions_init": precisions}


def gmm_case(n: int, d: int, covariance_type: str, iters: int, reg: float, seed: int) -> dict:
    from sklearn.metrics import adjusted_rand_score
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    x, _ = mixture_data(n, d, 4, seed)
    start_labels = KMeans(4, random_state=seed).fit(x).labels_
    kw = dict(
        covariance_type=covariance_type,
        reg_covar=reg,
        max_iter=iters,
        tol=0.0,
        **shared_start(x, start_labels, covariance_type, reg),
    )
    x64 = x.astype(np.float64)  # sklearn runs in the input's dtype; float32 fails in 2048-d
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        sk = SkGaussianMixture(4, **kw).fit(x64)
        sk_s = time.perf_counter() - t
        sk_ll = sk.score(x64)
        result = {
            "n": n,
            "d": d,
            "covariance_type": covariance_type,
            "em_iterations": iters,
            "reg_covar": reg,
            "sklearn_s": round(sk_s, 3),
            "sklearn_loglik": sk_ll,
        }
        for name, dtype in (("float64", torch.float64), ("float32", torch.float32)):
            t = time.perf_counter()
            ours = GaussianMixture(4, device="cpu", dtype=dtype, **kw).fit(x)
            s = time.perf_counter() - t
            ll = ours.score(x)
            result[f"ctfp_{name}_s"] = round(s, 3)
            result[f"ctfp_{name}_speedup"] = round(sk_s / s, 2)
            result[f"ctfp_{name}_loglik_rel_diff"] = abs(ll - sk_ll) / abs(sk_ll)
            result[f"ctfp_{name}_ari_vs_sklearn"] = adjusted_rand_score(
                sk.predict(x64), ours.predict(x)
            )
    return result


def kmeans_case(n: int, d: int, k: int, iters: int, seed: int) -> dict:
    from sklearn.cluster import KMeans as SkKMeans

    x, _ = mixture_data(n, d, 16, seed)
    t = time.perf_counter()
    sk = SkKMeans(k, n_init=1, max_iter=iters, tol=0.0, random_state=seed).fit(x)
    sk_s = time.perf_counter() - t
    t = time.perf_counter()
    ours = KMeans(k, n_init=1, max_iter=iters, random_state=seed, device="cpu").fit(x)
    s = time.perf_counter() - t
    return {
        "n": n,
        "d": d,
        "k": k,
        "iterations": iters,
        "sklearn_s": round(sk_s, 3),
        "ctfp_s": round(s, 3),
        "speedup": round(sk_s / s, 2),
        "backend": ours.backend_,
        "inertia_ratio_ctfp_over_sklearn": ours.inertia_ / sk.inertia_,
    }


def l1_case(n_queries: int, d: int, k: int, chunk: int, seed: int) -> dict:
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(seed)
    centres = rng.gamma(1.0, 1.0, (k, d)).astype(np.float32)
    index = FlatIndex(d, metric="l1", device="cpu").add(centres)
    nn = NearestNeighbors(n_neighbors=1, metric="manhattan", algorithm="brute").fit(centres)
    ours_s = sk_s = 0.0
    agree = 0
    for start in range(0, n_queries, chunk):
        q = rng.gamma(1.0, 1.0, (min(chunk, n_queries - start), d)).astype(np.float32)
        t = time.perf_counter()
        _, I = index.search(q, 1)  # noqa: E741
        ours_s += time.perf_counter() - t
        t = time.perf_counter()
        _, i_sk = nn.kneighbors(q)
        sk_s += time.perf_counter() - t
        agree += int((I[:, 0] == i_sk[:, 0]).sum())
    return {
        "queries": n_queries,
        "d": d,
        "centres": k,
        "sklearn_s": round(sk_s, 2),
        "ctfp_s": round(ours_s, 2),
        "speedup": round(sk_s / ours_s, 2),
        "ctfp_queries_per_s": round(n_queries / ours_s),
        "same_nearest_fraction": agree / n_queries,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    q = args.quick
    line = {
        "benchmark": "cluster_bench",
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gmm_diag": gmm_case(2000 if q else 20_000, 256, "diag", 20, 1e-6, args.seed),
        "gmm_full": gmm_case(600 if q else 3_000, 512 if q else 2_048, "full", 5, 1e-6, args.seed),
        "kmeans": kmeans_case(10_000 if q else 100_000, 256, 64, 20, args.seed),
        "l1_1nn": l1_case(100_000 if q else 1_000_000, 2_048, 64, 100_000, args.seed),
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
