"""Audit a generator end to end with ctfp's Python API, on the CT sample shipped with ctfp.

    python examples/audit_a_generator.py --out audit-example

1. builds two small ImageCLEF-style folders from the bundled sample (what ``ctfp demo`` uses):
   task 1 (real slices used / not used to train a pretend generator, its output, test slices)
   and task 2 (slices from three pretend generators, three labelled per generator);
2. embeds the bundled sample once, to show the shards (``ctfp.embed``, ``ctfp.read_embeddings``);
3. runs task 1 with the defaults (``--method auto``: features, method and settings chosen by
   cross-validation on the labelled training slices), prints the verdict and the best
   candidates, and evaluates the run against the truth;
4. runs task 2 with the defaults (the labelled examples choose the way to attribute and the
   features) and evaluates it;
5. writes each run's HTML report and its audit summary (``audit.json``, ``audit.md``).

It runs offline: nothing is downloaded. The features that need no weights (pixels, residual,
spectrum) are tried, and so is a ResNet50 with seeded random (untrained) weights instead of
ImageNet's, so the numbers show that the pipeline works, not how a real generator fares. About
30 s on 2 CPU cores (29.5 s, the median of ``benchmarks/user_times.py``, with the permutation
test of task 1's choice).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import ctfp
from ctfp import EmbedSettings, Task1Settings, Task2Settings
from ctfp.demo import build_demo_data, sample_dir


def interval(values: list[float] | None) -> str:
    return "-" if not values or None in values else f"[{values[0]:.2f}, {values[1]:.2f}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out", default=None, help="output folder (default: a new temporary folder)"
    )
    args = parser.parse_args()
    start = time.perf_counter()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="ctfp-audit-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"ctfp {ctfp.__version__}: auditing the bundled sample in {out}")
    print(
        "Offline: no ImageNet weights are downloaded. The fingerprint features (pixels, "
        "residual, spectrum) need no weights, and the ResNet50 candidates have seeded random "
        "(untrained) weights (--weights random): these numbers show that the pipeline works, "
        "not how a real generator fares."
    )

    # 1. The data: ImageCLEF-style folders with truth files.
    data = build_demo_data(out / "data")
    print(f"\n1. data: task 1 in {data['task1']}, task 2 in {data['task2']}")

    # 2. Embedding: every slice of the bundled sample (PNG and DICOM) into Parquet shards.
    shards = out / "sample-embeddings"
    result = ctfp.embed([sample_dir()], shards, EmbedSettings(features="residual"), progress=False)
    emb = ctfp.read_embeddings(shards)
    print(
        f"2. embedded {result.rows} slices of the bundled sample into {shards}/part-*.parquet: "
        f"{emb.matrix.shape[1]}-d residual fingerprints ({emb.metadata['weights']})"
    )

    # 3. Task 1 with the defaults: --method auto, every feature type tried.
    t1 = out / "task1"
    # features="auto": every feature type is a candidate; ResNet50's weights seeded random.
    offline = EmbedSettings(features="auto", weights="random", weights_seed=0)
    summary1 = ctfp.run_task1(data["task1"], t1, Task1Settings(), embed=offline, progress=False)
    selection = summary1["selection"]
    print(f"\n3. task 1 (membership), {summary1['method']} on {summary1['features']}")
    print(f"   verdict: {summary1['verdict']}")
    print(f"   why: {selection['reason']}")
    print(f"   the best of {len(selection['candidates'])} candidates (cross-validated ROC-AUC):")
    print(f"   {'candidate':<62} {'ROC-AUC':>7} {'SE':>6}  95 % interval")
    for c in selection["candidates"][:5]:
        label = c["label"] if len(c["label"]) <= 62 else c["label"][:59] + "..."
        auc = "-" if c["roc_auc"] is None else f"{c['roc_auc']:.3f}"
        se = "-" if c["roc_auc_se"] is None else f"{c['roc_auc_se']:.3f}"
        print(f"   {label:<62} {auc:>7} {se:>6}  {interval(c['roc_auc_95'])}")
    truth1 = data["task1"] / "truth.csv"
    m1 = ctfp.evaluate_run("task1", t1 / "run.csv", truth1)
    print(
        f"   against the truth ({m1['n']} test slices): F1 {m1['f1']:.2f} "
        f"{interval(m1['f1_ci95'])}, accuracy {m1['accuracy']:.2f} "
        f"{interval(m1['accuracy_ci95'])}, kappa {m1['kappa']:.2f} {interval(m1['kappa_ci95'])}, "
        f"ROC-AUC {m1['roc_auc']:.2f} {interval(m1['roc_auc_ci95'])} "
        f"(every slice 'used' would score F1 {m1['baseline_all_used_f1']:.2f})"
    )

    # 4. Task 2 with the defaults: the labelled examples in train/<generator>/ choose the way
    # (a classifier or the semi-supervised mixture) and the features by cross-validation.
    t2 = out / "task2"
    summary2 = ctfp.run_task2(data["task2"], t2, Task2Settings(), embed=offline, progress=False)
    truth2 = data["task2"] / "truth.csv"
    m2 = ctfp.evaluate_run("task2", t2 / "clusters.csv", truth2)
    print(f"\n4. task 2 (attribution), {summary2['method']} on {summary2['features']}")
    print(f"   verdict: {summary2['verdict']}")
    print(f"   against the truth ({m2['n']} test slices): ARI {m2['ari']:.2f}, NMI {m2['nmi']:.2f}")

    # 5. The reports; write_report writes each run's audit.json and audit.md beside it.
    written = []
    for run, truth in ((t1, truth1), (t2, truth2)):
        report = ctfp.write_report(run, truth=truth)
        written += [report, run / "audit.json", run / "audit.md"]
    print("\n5. audit summary of task 1 (audit.md):\n")
    print((t1 / "audit.md").read_text())
    for path in written:
        print(f"wrote {path}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
