"""Membership benchmark over generator families and dataset seeds: does ``--method auto`` hold?

For every generator family (pca, vae, vae64, vae-up, gan; see ``make_generator``), memorisation
strength (``normal``, or ``strong``: the generator trained to memorise more) and dataset seed, a
task 1 dataset is built by
``benchmarks/quality_data.py`` (real lung CT slices of ``../shared/data/lung-pet-ct-dx``, used /
not used interleaved by slice position, the generator trained here on the used ones, a balanced
test set; datasets are cached under ``--out/data``). Then, on each:

- ``ctfp run task1 DATA`` with its defaults (``--method auto``, features auto; no ImageNet
  weights on this machine, so ResNet50 is left out as it would be for such a user);
- every candidate scorer of the auto grid (feature type x method x settings) fitted on all the
  training reals and scored on the test set (each method's own threshold), to show the best
  single scorer in hindsight (an oracle, chosen on the test truth: an upper bound, not a method);
- the seed method (centroid, L1 1-NN on k-means centres) at k = 4 and at its best k in
  hindsight, on each feature type.

With ``--null N`` (default 1), each dataset is also run N times with its training labels
shuffled (the used / not-used folders dealt again at random, sizes kept, the files hard-linked;
each copy dealt by its own seed, the CRC-32 of its name, as the datasets of one seed share
their real slices):
there is nothing to find, so the permutation p-value should be at most 0.05 about 1 time in
20 (its null rate), while on the real labels the share of datasets with p at most 0.05 is its
power. The table gives both per family, the held-out estimate the verdict quotes beside the
test ROC-AUC (is it honest?), and the seconds of a default run.

With ``--without-members``, each dataset is also audited as if ``train/used/`` were missing
(on its saved embeddings): the test ROC-AUC of the score ``--method auto`` then chooses by its
rule, against the one default 0.4 ran.

Test labels are used for scoring only. Prints one JSON line and a markdown table of mean ± sd
over seeds per family and strength (keyed ``family`` for normal, ``family/strong`` otherwise):
ROC-AUC and kappa (F1 and accuracy in the JSON). Datasets, runs and per-seed results are named
``{family}-seed{seed}`` for normal strength and ``{family}-{strength}-seed{seed}`` otherwise.

    python benchmarks/membership.py [--out bench-out/membership] [--families pca,vae]
        [--strengths normal,strong] [--seeds 0,1,2] [--null 1] [--without-members]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality_data import STRENGTHS, build_task1

from ctfp.embed.settings import EmbedSettings
from ctfp.evaluate import membership_metrics, read_table
from ctfp.membership.nonmembers import choose_without_members
from ctfp.membership.selection import build, candidate, default_candidates
from ctfp.membership.settings import Task1Settings
from ctfp.runs.folder import embeddings_dir
from ctfp.runs.task1 import NON_MEMBER_DEFAULT, run_task1
from ctfp.selection import auc_of
from ctfp.store.reader import read_embeddings

FAMILIES = ("pca", "vae", "vae64", "vae-up", "gan")


def key(family: str, strength: str) -> str:
    """Results key: ``family`` for normal strength, ``family/strength`` otherwise."""
    return family if strength == "normal" else f"{family}/{strength}"


def stem(family: str, strength: str, seed: int) -> str:
    """Folder and file stem: ``{family}-seed{seed}``, or ``{family}-{strength}-seed{seed}``."""
    return f"{family}-seed{seed}" if strength == "normal" else f"{family}-{strength}-seed{seed}"


def dataset(
    out: Path, family: str, seed: int, strength: str = "normal"
) -> tuple[Path, dict[str, str]]:
    """The cached task 1 dataset of ``family``, ``strength`` and ``seed`` (built on first use)."""
    folder = out / "data" / stem(family, strength, seed)
    root, truth = folder / "task1", folder / "task1_truth.csv"
    if not truth.is_file():
        build_task1(folder, seed=seed, generator=family, strength=strength)
    return root, read_table(truth, "label")


def metrics(y: np.ndarray, pred: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    m = membership_metrics(y, pred, scores)
    return {k: round(float(m[k]), 4) for k in ("roc_auc", "kappa", "f1", "accuracy")}


def run_auto(
    out: Path, family: str, seed: int, strength: str = "normal"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``ctfp run task1 DATA`` with its defaults on one dataset: (its results row, summary)."""
    root, truth = dataset(out, family, seed, strength)
    run = out / "runs" / stem(family, strength, seed)
    start = time.perf_counter()
    summary = run_task1(root, run, Task1Settings(seed=seed), progress=False)
    seconds = time.perf_counter() - start
    ids = read_table(run / "scores.csv", "score")
    preds = read_table(run / "run.csv", "label")
    order = sorted(ids)
    y = np.array([int(truth[i]) for i in order])
    auto = metrics(
        y, np.array([int(preds[i]) for i in order]), np.array([float(ids[i]) for i in order])
    )
    chosen = summary["selection"]["chosen"]
    row: dict[str, Any] = {
        "auto": {
            **auto,
            "chosen": chosen["label"],
            "method": chosen["method"],
            "cv_auc": chosen["roc_auc"],
            **quoted(summary),
        },
        "auto_seconds": round(seconds, 1),
        "stage_seconds": summary.get("stage_seconds"),
    }
    return row, summary


def quoted(summary: dict[str, Any]) -> dict[str, Any]:
    """What the verdict of a run quotes: its p-value, held-out ROC-AUC and range."""
    selection = summary["selection"]
    held = selection.get("heldout") or {}
    return {
        "p_value": (selection.get("permutation") or {}).get("p_value"),
        "heldout_auc": held.get("roc_auc"),
        "heldout_95": held.get("roc_auc_95"),
    }


def shuffled(root: Path, folder: Path, seed: int) -> Path:
    """A copy of the task 1 folder ``root`` at ``folder`` (files hard-linked, or copied across
    filesystems) whose training slices are dealt into used / not used again at random, with
    the same sizes: labels that carry nothing."""
    if folder.exists():
        shutil.rmtree(folder)
    train = sorted((root / "train").glob("*/*"))
    labels = np.array([p.parent.name for p in train])
    dealt = np.random.default_rng(seed).permutation(labels)
    for part in ("generated", "test"):
        shutil.copytree(root / part, folder / part, copy_function=link)
    for p, label in zip(train, dealt, strict=True):
        (folder / "train" / label).mkdir(parents=True, exist_ok=True)
        link(p, folder / "train" / label / p.name)
    return folder


def link(src: Any, dst: Any) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def null_runs(out: Path, family: str, seed: int, strength: str, n: int) -> list[dict[str, Any]]:
    """``ctfp run task1`` with its defaults on ``n`` label-shuffled copies of a dataset: what
    each quoted (p-value, held-out estimate), and its seconds."""
    root, _ = dataset(out, family, seed, strength)
    got = []
    for i in range(n):
        name = f"{stem(family, strength, seed)}-null{i}"
        # Every copy its own labelling: the families and strengths of a seed share their real
        # slices, so a labelling shared by seed (as before) made their null runs one draw
        # counted up to eight times.
        dealt = zlib.crc32(name.encode())
        data = shuffled(root, out / "null-data" / name, dealt)
        start = time.perf_counter()
        summary = run_task1(
            data, out / "null-runs" / name, Task1Settings(seed=seed), progress=False
        )
        seconds = round(time.perf_counter() - start, 1)
        got.append({**quoted(summary), "seconds": seconds, "labels_seed": dealt})
        shutil.rmtree(data)
    return got


def one(out: Path, family: str, seed: int, strength: str = "normal") -> dict[str, Any]:
    _, truth = dataset(out, family, seed, strength)
    run = out / "runs" / stem(family, strength, seed)
    row, summary = run_auto(out, family, seed, strength)
    # Every candidate, fitted on all training reals and scored on the test set.
    features = summary["selection"]["features_tried"]
    data = {}
    for f in features:
        emb = read_embeddings(embeddings_dir(run, f))
        labels = emb.labels
        train = (labels == "used") | (labels == "not_used")
        test = np.array([i.startswith("test/") for i in emb.ids])
        test_ids = [i[len("test/") :] for i in emb.ids[test]]
        data[f] = (
            emb.matrix[train],
            (labels[train] == "used").astype(int),
            emb.matrix[labels == "generated"],
            emb.matrix[test],
            np.array([int(truth[i]) for i in test_ids]),
        )
    n_small = min(int(d[1].sum()) for d in data.values())
    # auto's candidates, and the seed method (not one of them: it ignores the generator) to
    # compare with.
    candidates = default_candidates(features, n_small, True) + [
        candidate(f, "centroid", {"k": k})
        for f in features
        for k in (1, 2, 4, 8, 16, 32)
        if k <= n_small
    ]
    scored = {}
    for c in candidates:
        tx, ty, g, x, yt = data[c.features]
        try:
            model = build(c, seed, "cpu").fit(tx, ty, g)
            scored[c.label] = {
                "features": c.features,
                "method": c.method,
                **metrics(yt, model.predict(x), model.score_samples(x)),
            }
        except Exception as exc:  # reported, as auto reports it
            scored[c.label] = {"error": f"{type(exc).__name__}: {exc}"}
    ok = {k: v for k, v in scored.items() if "error" not in v}
    best = max(ok, key=lambda k: ok[k]["roc_auc"])
    row["oracle_best"] = {"label": best, **ok[best]}
    for method in sorted({v["method"] for v in ok.values()}):
        name = max((k for k in ok if ok[k]["method"] == method), key=lambda k: ok[k]["roc_auc"])
        row[f"best {method}"] = {"label": name, **ok[name]}
    seed_k4 = {k: v for k, v in ok.items() if v["method"] == "centroid" and "(k=4)" in k}
    row["seed k=4"] = max(seed_k4.values(), key=lambda v: v["roc_auc"]) if seed_k4 else None
    row["seed k=4 by features"] = {v["features"]: v for v in seed_k4.values()}
    row["candidates"] = scored
    return row


def without_members(out: Path, family: str, seed: int, strength: str) -> dict[str, Any]:
    """The audit without known members (train/used/ left out) on a dataset's saved embeddings:
    the test ROC-AUC of the score ``--method auto`` chooses then
    (:func:`~ctfp.membership.nonmembers.choose_without_members`: the default unless another
    beats it by more than one SE), of the default alone (GAN-Leaks' calibrated distance on
    pixels, what 0.4 ran) and of the best measured (``top``: the rule without the default),
    each fitted on the known non-members alone, as such a run fits it."""
    _, truth = dataset(out, family, seed, strength)
    run = out / "runs" / stem(family, strength, seed)
    features = json.loads((run / "summary.json").read_text())["selection"]["features_tried"]
    data, test = {}, {}
    for f in features:
        emb = read_embeddings(embeddings_dir(run, f))
        on_test = np.array([i.startswith("test/") for i in emb.ids])
        data[f] = (emb.matrix[emb.labels == "not_used"], emb.matrix[emb.labels == "generated"])
        test[f] = emb.matrix[on_test]
        y = np.array([int(truth[i[len("test/") :]]) for i in emb.ids[on_test]])
    n = len(data[features[0]][0])
    candidates = default_candidates(features, n, True)
    default = candidate(NON_MEMBER_DEFAULT[0], *NON_MEMBER_DEFAULT[1:])
    start = time.perf_counter()
    chosen, rows = choose_without_members(
        data, test, candidates, default=default, seed=seed, device="cpu"
    )
    seconds = time.perf_counter() - start
    measured = {r["label"]: r.get("test_vs_non_members_auc") for r in rows}
    ok = [c for c in candidates if measured.get(c.label) is not None]
    top = max(ok, key=lambda c: measured[c.label])
    got = {}
    for name, c in (("chosen", chosen), ("default", default), ("top", top)):
        model = build(c, seed, "cpu")
        if "calibrate" in model.get_params():
            model.set_params(calibrate="fpr:0.05")
        x, generated = data[c.features]
        model.fit(x, np.zeros(len(x), dtype=np.int64), generated)
        got |= {
            name: c.label,
            f"{name}_auc": round(auc_of(y, model.score_samples(test[c.features])), 4),
            f"{name}_measure": measured.get(c.label),
        }
    return {
        **got,
        "seconds": round(seconds, 1),
    }


def without_members_table(results: dict[str, dict[int, dict[str, Any]]]) -> str:
    """Per family: test ROC-AUC without known members, the rule's choice against 0.4's default
    and the best in hindsight (mean ± sd over seeds, and the gap paired by seed)."""
    lines = [
        "| family | chosen by the rule | 0.4's default (pixels, GAN-Leaks) | gap (paired) | "
        "best measured alone | rule chose |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    every: dict[str, list[float]] = {}
    for family, by_seed in results.items():
        got = [s["without_members"] for s in by_seed.values() if s.get("without_members")]
        if not got:
            continue
        rule, default = [g["chosen_auc"] for g in got], [g["default_auc"] for g in got]
        gap, top = list(np.subtract(rule, default)), [g["top_auc"] for g in got]
        for name, v in (("rule", rule), ("default", default), ("gap", gap), ("top", top)):
            every.setdefault(name, []).extend(v)
        lines.append(
            f"| {family} | {mean_sd(rule)} | {mean_sd(default)} | {mean_sd(gap)} | "
            f"{mean_sd(top)} | {'; '.join(g['chosen'] for g in got)} |"
        )
    if every:
        lines.append("")
        lines.append(
            f"All {len(every['rule'])} datasets: rule {mean_sd(every['rule'])}, default "
            f"{mean_sd(every['default'])}, gap paired by dataset {mean_sd(every['gap'])}; the "
            f"best measured alone {mean_sd(every['top'])}."
        )
    return "\n".join(lines)


def mean_sd(values: list[float]) -> str:
    a = np.asarray(values, dtype=float)
    return f"{a.mean():.3f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.3f}"


def markdown(results: dict[str, dict[int, dict[str, Any]]]) -> str:
    rows = ["auto", "oracle_best", "seed k=4"]
    methods = sorted(
        {k for r in results.values() for s in r.values() for k in s if k.startswith("best ")}
    )
    lines = [
        "| family | scorer | ROC-AUC | kappa |",
        "| --- | --- | --- | --- |",
    ]
    for family, by_seed in results.items():
        for name in rows + methods:
            got = [s[name] for s in by_seed.values() if s.get(name)]
            if not got:
                continue
            auc = mean_sd([g["roc_auc"] for g in got])
            kappa = mean_sd([g["kappa"] for g in got])
            lines.append(f"| {family} | {name} | {auc} | {kappa} |")
    return "\n".join(lines)


def calibration(results: dict[str, dict[int, dict[str, Any]]]) -> str:
    """Per family: the power of the p-value (share of datasets with p <= 0.05), its null rate
    on label-shuffled copies, the held-out ROC-AUC the verdict quotes beside the test ROC-AUC,
    and the seconds of a default run; then the null rate over every family."""
    lines = [
        "| family | p <= 0.05 (power) | shuffled: p <= 0.05 (null rate) | held-out ROC-AUC "
        "(quoted) | test ROC-AUC | seconds per run |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    nulls: list[float] = []
    for family, by_seed in results.items():
        auto = [s["auto"] for s in by_seed.values()]
        ps = [a["p_value"] for a in auto if a.get("p_value") is not None]
        null = [n["p_value"] for s in by_seed.values() for n in s.get("null", [])]
        nulls += null
        held = [a["heldout_auc"] for a in auto if a.get("heldout_auc") is not None]
        seconds = [s["auto_seconds"] for s in by_seed.values()]
        lines.append(
            f"| {family} | {sum(p <= 0.05 for p in ps)} of {len(ps)} | "
            f"{sum(p <= 0.05 for p in null)} of {len(null)} | "
            f"{mean_sd(held) if held else '-'} | {mean_sd([a['roc_auc'] for a in auto])} | "
            f"{mean_sd(seconds)} |"
        )
    if nulls:
        k, n = sum(p <= 0.05 for p in nulls), len(nulls)
        lo, hi = wilson(k, n)
        lines.append("")
        lines.append(
            f"Null rate over all shuffled runs: {k} of {n} at p <= 0.05 ({k / n:.3f}, 95 % "
            f"interval {lo:.3f}-{hi:.3f}; a valid test gives 0.05); mean p {np.mean(nulls):.3f}."
        )
    return "\n".join(lines)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson 95 % interval of a proportion k / n."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def fixed_best(
    by_seed: dict[int, dict[str, Any]], generator_only: bool = False
) -> tuple[str, list[dict[str, Any]]]:
    """The single candidate (one fixed setting) with the best mean test AUC over the seeds,
    and its per-seed results: the best scorer a user could have fixed in hindsight
    (``generator_only``: among the scores that use the generated slices, those ``--method
    auto`` chooses among since 0.4)."""
    from ctfp.runs.verdict import examines_generator

    runs = list(by_seed.values())
    common = set.intersection(
        *(
            {
                k
                for k, v in r["candidates"].items()
                if "error" not in v and (not generator_only or examines_generator(v["method"]))
            }
            for r in runs
        )
    )
    label = max(
        sorted(common), key=lambda k: np.mean([r["candidates"][k]["roc_auc"] for r in runs])
    )
    return label, [r["candidates"][label] for r in runs]


def verdict(results: dict[str, dict[int, dict[str, Any]]]) -> str:
    """Per family: auto against the best fixed scorer and the seed method; then the average
    over families, which decides whether the default is justified."""
    lines = [
        "| family | best fixed scorer (hindsight) | its ROC-AUC | best using the generated slices "
        "| its ROC-AUC | auto ROC-AUC | auto kappa | gap (paired by seed) | within 1 sd | "
        "seed k=4 ROC-AUC | seed k=4 kappa | auto chose |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    means: dict[str, list[float]] = {}
    for family, by_seed in results.items():
        label, got = fixed_best(by_seed)
        fixed = np.array([g["roc_auc"] for g in got])
        generator_label, generator_got = fixed_best(by_seed, generator_only=True)
        generator = [g["roc_auc"] for g in generator_got]
        auto = [s["auto"] for s in by_seed.values()]
        seed = [s["seed k=4"] for s in by_seed.values()]
        auc = np.array([a["roc_auc"] for a in auto])
        # Paired by seed: the gap to the best fixed scorer on the same dataset, and its spread.
        gap = fixed - auc
        gap_sd = gap.std(ddof=1) if len(gap) > 1 else 0.0
        within = "yes" if gap.mean() <= gap_sd else "**no**"
        chose = sorted({a["chosen"].split(":")[0] for a in auto})  # an ensemble: its size
        lines.append(
            f"| {family} | {label} | {mean_sd(list(fixed))} | {generator_label} | "
            f"{mean_sd(generator)} | {mean_sd(list(auc))} | "
            f"{mean_sd([a['kappa'] for a in auto])} | {mean_sd(list(gap))} | {within} | "
            f"{mean_sd([x['roc_auc'] for x in seed])} | {mean_sd([x['kappa'] for x in seed])} | "
            f"{'; '.join(chose)} |"
        )
        for name, values in (
            ("auto AUC", auc),
            ("auto kappa", [a["kappa"] for a in auto]),
            ("seed k=4 AUC", [x["roc_auc"] for x in seed]),
            ("seed k=4 kappa", [x["kappa"] for x in seed]),
            ("best fixed AUC", fixed),
            ("best fixed AUC using the generated slices", generator),
        ):
            means.setdefault(name, []).append(float(np.mean(values)))
    lines.append("")
    lines.append(
        "Average over the "
        + str(len(results))
        + " families (each the mean over its seeds): "
        + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in means.items())
        + "."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-out/membership")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--strengths", default="normal", help=f"of {', '.join(STRENGTHS)}")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument(
        "--null",
        type=int,
        default=1,
        help="label-shuffled runs per dataset, for the null rate of the p-value (0: none)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the per-dataset results already in --out/results (from this code: remove "
        "them after changing ctfp)",
    )
    parser.add_argument(
        "--rerun-auto",
        action="store_true",
        help="with --resume: run the defaults (auto) again on every dataset and keep the "
        "saved fixed scorers (they do not depend on auto's rule)",
    )
    parser.add_argument(
        "--without-members",
        action="store_true",
        help="also the audit without known members (train/used/ left out), on each dataset's "
        "saved embeddings: the score the rule chooses against 0.4's default",
    )
    args = parser.parse_args()
    strengths = args.strengths.split(",")
    bad = sorted(set(strengths) - set(STRENGTHS))
    if bad:
        parser.error(f"unknown strength {', '.join(bad)}; choose from {', '.join(STRENGTHS)}")
    out = Path(args.out)
    start = time.perf_counter()
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for family in args.families.split(","):
        for strength in strengths:
            for seed in (int(s) for s in args.seeds.split(",")):
                saved = out / "results" / f"{stem(family, strength, seed)}.json"  # all candidates
                if args.resume and saved.is_file():
                    r = json.loads(saved.read_text())
                    if args.rerun_auto:
                        print(f"{family} {strength} seed {seed}: auto ...", file=sys.stderr)
                        r.update(run_auto(out, family, seed, strength)[0])
                        saved.write_text(json.dumps(r, indent=1))
                        print(
                            f"  auto {r['auto']['roc_auc']} kappa {r['auto']['kappa']}"
                            f" ({r['auto']['chosen']})",
                            file=sys.stderr,
                            flush=True,
                        )
                    nulls = r.get("null", [])
                    if len(nulls) < args.null or any("labels_seed" not in n for n in nulls):
                        r["null"] = null_runs(out, family, seed, strength, args.null)
                        saved.write_text(json.dumps(r, indent=1))
                    if args.without_members and "top" not in r.get("without_members", {}):
                        r["without_members"] = without_members(out, family, seed, strength)
                        saved.write_text(json.dumps(r, indent=1))
                    results.setdefault(key(family, strength), {})[seed] = r
                    continue
                print(f"{family} {strength} seed {seed} ...", file=sys.stderr, flush=True)
                r = one(out, family, seed, strength)
                if args.null:
                    r["null"] = null_runs(out, family, seed, strength, args.null)
                if args.without_members:
                    r["without_members"] = without_members(out, family, seed, strength)
                results.setdefault(key(family, strength), {})[seed] = r
                saved.parent.mkdir(parents=True, exist_ok=True)
                saved.write_text(json.dumps(r, indent=1))
                print(
                    f"  auto {r['auto']['roc_auc']} kappa {r['auto']['kappa']}"
                    f" ({r['auto']['chosen']}); oracle {r['oracle_best']['roc_auc']}"
                    f" ({r['oracle_best']['label']})",
                    file=sys.stderr,
                    flush=True,
                )
    line = {
        "benchmark": "membership",
        "embed": EmbedSettings(features="auto").to_dict(),
        "results": {
            f: {s: {k: v for k, v in r.items() if k != "candidates"} for s, r in by.items()}
            for f, by in results.items()
        },
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(json.dumps(line))
    print()
    print(markdown(results))
    print()
    print(verdict(results))
    print()
    print(calibration(results))
    if args.without_members:
        print()
        print(without_members_table(results))


if __name__ == "__main__":
    main()
