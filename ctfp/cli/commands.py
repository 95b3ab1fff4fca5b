"""One small function per command: settings from the parsed options, then the Python API."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from ctfp.cli.options import from_args, given
from ctfp.embed.settings import CacheSettings, EmbedSettings
from ctfp.engine.settings import EngineSettings
from ctfp.io.fs import local_only
from ctfp.progress import logger
from ctfp.settings import Settings


def _print_json(args: argparse.Namespace, value: dict) -> None:
    if args.json:
        print(json.dumps(value))


def _weights(settings: Settings) -> Settings:
    """``settings`` where its ``--weights`` (a state-dict file) is not on a store."""
    local_only("--weights", getattr(settings, "weights", None), "a weights file")
    return settings


def embed(args: argparse.Namespace) -> int:
    from ctfp.embed.runner import embed

    return _shards(args, embed, EmbedSettings)


def cache(args: argparse.Namespace) -> int:
    from ctfp.embed.cache import build_cache

    return _shards(args, build_cache, CacheSettings)


def _shards(args: argparse.Namespace, api: Callable[..., Any], settings: type[Settings]) -> int:
    """`embed` and `cache`: SOURCES -> shards in --out, on the chosen engine."""
    from ctfp.embed.writer import errors_file

    engine = from_args(EngineSettings, args)
    stage = _weights(from_args(settings, args))
    result = api(args.sources, args.out, stage, engine=engine, progress=not args.quiet)
    _print_json(args, result.to_dict())
    if result.errors and result.rows == 0 and result.skipped_files == 0:  # none readable
        logger.error(
            f"error: none of the {result.files} input(s) could be read; the reasons are in "
            f"{errors_file(result.out)}"
        )
        return 2
    return 0


def run_task1(args: argparse.Namespace) -> int:
    from ctfp.membership.settings import AUTO, Task1Settings, option_classes
    from ctfp.runs.task1 import run_task1

    options = {name for cls in option_classes() for name in cls.field_names()}
    settings = Task1Settings.with_options(
        **given(args, Task1Settings.field_names()), **given(args, options)
    )
    return _run(args, run_task1, settings, choose_features=settings.method == AUTO)


def run_task2(args: argparse.Namespace) -> int:
    from ctfp.attribution.settings import Task2Settings
    from ctfp.runs.task2 import run_task2

    # Labels: the features are chosen; none: the blind default.
    return _run(args, run_task2, from_args(Task2Settings, args), choose_features=True)


def _run(
    args: argparse.Namespace, api: Callable[..., Any], settings: Settings, choose_features: bool
) -> int:
    """`run task1|task2` DATA --out OUT (features "auto" where chosen and none were given)."""
    embed = _weights(from_args(EmbedSettings, args))
    if choose_features and not given(args, ["features"]):
        embed = embed.replace(features="auto")
    engine = from_args(EngineSettings, args)
    summary = api(
        args.data, args.out, settings, embed=embed, engine=engine, progress=not args.quiet
    )
    if args.report:
        from ctfp.report import write_report

        summary["report"] = str(write_report(args.out))
        summary["audit"] = os.path.join(args.out, "audit.json")
    _print_json(args, summary)
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from ctfp.evaluate import evaluate_run, format_table

    with _run_file(args.run) as run:
        metrics = evaluate_run(args.task, run, args.truth, args.scores)
    if args.json:  # one JSON line for scripts
        print(json.dumps({"task": args.task, "run": args.run, **metrics}))
    else:  # the table for people
        print(format_table(metrics))
    if metrics.get("n_unknown"):
        logger.info(
            f"note: the {metrics['n_unknown']} id(s) marked -1 in {args.run} (in no known group) "
            "are scored as one cluster of their own"
        )
    return 0


@contextlib.contextmanager
def _run_file(run: str) -> Iterator[str | os.PathLike[str]]:
    """RUN as ``evaluate`` reads it: a file of a ctfp run folder (or of one k of its sweep) only
    if that run finished and recorded it (:func:`ctfp.runs.folder.check_if_run`, on a store in
    its local copy); a file elsewhere as it is."""
    import re

    from ctfp.io.fs import child, is_remote, resolve
    from ctfp.runs.folder import MODEL_DIR, MODEL_FILE, SCORES_FILE, SUMMARY_FILE, check_if_run
    from ctfp.runs.remote import local_run

    folder, name = os.path.split(run)
    marks = (SUMMARY_FILE, SCORES_FILE, f"{MODEL_DIR}/{MODEL_FILE}")
    if is_remote(run) and not any(resolve(child(folder, m)).exists() for m in marks):
        yield run
        return
    with local_run(folder) as (local, _):
        here = (local / name).parent
        if not (re.fullmatch(r"k\d+", here.name) and check_if_run(here.parent)):
            check_if_run(here, (MODEL_DIR, SCORES_FILE))
        yield local / name


def validate(args: argparse.Namespace) -> int:
    from ctfp.evaluate import read_ids, validate_run

    ids = read_ids(args.ids) if args.ids else None
    problems = validate_run(args.run, args.task, ids, ids_file=args.ids or "ids")
    if args.json:
        report = {"task": args.task, "run": args.run, "valid": not problems}
        print(json.dumps({**report, "problems": [str(p) for p in problems]}))
        return 1 if problems else 0
    for problem in problems:
        print(problem)
    if problems:
        print(
            f"{args.run}: not a valid {args.task} run ({len(problems)} problems)", file=sys.stderr
        )
        return 1
    print(f"{args.run}: valid {args.task} run")
    return 0


def score(args: argparse.Namespace) -> int:
    from ctfp.runs.models import load_model
    from ctfp.runs.score import score_shards
    from ctfp.runs.settings import ScoreSettings

    settings = from_args(ScoreSettings, args)
    saved = load_model(args.model, device=settings.device)
    engine = from_args(EngineSettings, args)
    result = score_shards(
        saved, args.shards, args.out, settings, engine=engine, progress=not args.quiet
    )
    result = {"task": saved.task, "kind": saved.kind, **result}
    logger.info(
        f"scored {result['rows']} rows with the {saved.kind} model ({saved.task}) in "
        f"{result['seconds']:.1f} s, {result['rows_per_second']:,.0f} rows/s -> {args.out} "
        f"({result['shards_skipped']} shards already done)"
    )
    _print_json(args, result)
    return 0


def cluster(args: argparse.Namespace) -> int:
    import math

    from ctfp.attribution.settings import ClusterSettings
    from ctfp.attribution.shards import cluster_shards
    from ctfp.runs.models import save_model
    from ctfp.store.delta import pin

    start = time.perf_counter()
    settings = from_args(ClusterSettings, args)
    engine = from_args(EngineSettings, args)
    shards = pin(args.shards)  # a Delta table's version now: every pass reads that one
    clustering, summary = cluster_shards(shards, settings, engine=engine, progress=not args.quiet)
    recorded = {"cluster": settings.to_dict(), "shards": str(shards), "k": summary["k"]}
    path = save_model(clustering, args.out, identity=summary["metadata"], settings=recorded)
    silhouettes = summary["silhouettes"]
    result = {
        "model": str(path),
        "shards": str(shards),
        **{key: summary[key] for key in ("k", "bics", "rows", "sample_rows", "passes", "engine")},
        # NaN (fewer than two clusters found) is not JSON: null.
        "silhouettes": None
        if silhouettes is None
        else {k: v if math.isfinite(v) else None for k, v in silhouettes.items()},
        **{k: summary[k] for k in ("sample_cluster_sizes", "converged", "mean_log_likelihood")},
        "warnings": summary["warnings"],
        "seconds": time.perf_counter() - start,
    }
    logger.info(
        f"fitted a {result['k']}-component {settings.covariance_type} mixture over "
        f"{result['rows']:,} rows in {result['passes']} passes "
        f"({'converged' if result['converged'] else 'not converged'}, mean log-likelihood "
        f"{result['mean_log_likelihood']:.6g}) -> {path}; assign every row with: ctfp score "
        f"{path} {args.shards} --out CLUSTERS"
    )
    _print_json(args, result)
    return 0


def report(args: argparse.Namespace) -> int:
    from ctfp.report import write_report

    path = write_report(
        args.run_dir, args.out, truth=args.truth, max_items=args.max_items, k=args.k
    )
    audit = os.path.join(args.run_dir, "audit.json")  # a store URI too ("/"-joined here)
    size = path.stat().st_size if isinstance(path, os.PathLike) else None  # None: on a store
    _print_json(args, {"run": args.run_dir, "report": str(path), "bytes": size, "audit": audit})
    return 0


def demo(args: argparse.Namespace) -> int:
    from ctfp.demo import run_demo

    local_only("--out", args.out, "the demo's output folder")
    local_only("--weights", args.weights, "a weights file")
    summary = run_demo(args.out, weights=args.weights, progress=not args.quiet)
    _print_json(args, summary)
    return 0
