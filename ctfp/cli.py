"""The ``ctfp`` command: a thin layer that parses arguments and calls the Python API."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence

from ctfp._version import __version__
from ctfp.exceptions import CtfpError


def _add_embed_options(p: argparse.ArgumentParser) -> None:
    from ctfp.device import DEVICES, PRECISIONS

    p.add_argument(
        "--weights",
        default="imagenet",
        help="imagenet (torchvision IMAGENET1K_V2), random (seeded), or a state-dict PATH",
    )
    p.add_argument(
        "--features",
        default="resnet50",
        help="resnet50 (default), pixels, spectrum, residual, or several joined by +",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of --weights random (default 0)")
    p.add_argument("--image-size", type=int, default=224, help="network input side (default 224)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="slices per forward pass (default: 16 on CPU, 128 on CUDA)",
    )
    _add_input_options(p)
    p.add_argument("--device", default="auto", help=f"{'|'.join(DEVICES)} or cuda:N (default auto)")
    p.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="auto: bf16 on CUDA and on CPUs with bf16 hardware, else fp32",
    )
    p.add_argument(
        "--dtype",
        default="float16",
        choices=("float16", "float32"),
        help="storage type of the embedding column (default float16)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model: a one-off compilation for faster batches (large runs)",
    )


def _add_input_options(p: argparse.ArgumentParser) -> None:
    """Decoding and output options shared by `embed`, `run` and `cache`."""
    from ctfp.io.sources import LAYOUTS

    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decoding processes (default: 0 on CPU, up to 8 on CUDA)",
    )
    p.add_argument("--rows-per-shard", type=int, default=10_000, help="rows per Parquet shard")
    p.add_argument(
        "--window",
        default=None,
        help="DICOM/NIfTI window: LEVEL,WIDTH, lung (-600,1500, the CT default), "
        "mediastinum, bone, brain, minmax, or auto",
    )
    p.add_argument(
        "--label-from-dirs",
        action="store_true",
        help="take each file's parent folder name as its label",
    )
    p.add_argument(
        "--layout",
        default="auto",
        choices=LAYOUTS,
        help="auto: detect the ImageCLEF layout (train/<label>/, generated/, test/)",
    )
    _add_engine_options(p)


def _add_engine_options(p: argparse.ArgumentParser) -> None:
    """Where the run executes (ctfp.engine): this machine, or Ray Data on a Ray cluster."""
    from ctfp.engine import ENGINES

    p.add_argument(
        "--engine",
        default="local",
        choices=ENGINES,
        help="local: this process (default); ray: Ray Data, decoding in CPU tasks and the model "
        "in an actor pool (pip install 'ctfp[ray]')",
    )
    p.add_argument(
        "--actors",
        type=int,
        default=None,
        help="--engine ray: model actors (default: one per GPU of the cluster, else 1)",
    )
    p.add_argument(
        "--ray-address",
        default=None,
        help="--engine ray: cluster to join (auto, HOST:PORT, ray://HOST:PORT; default: start "
        "a local Ray)",
    )


def _engine_kwargs(args: argparse.Namespace) -> dict:
    """engine=local gets no Ray options (the API refuses them there)."""
    if args.engine == "local":
        if args.actors is not None or args.ray_address is not None:
            raise argparse.ArgumentTypeError("--actors and --ray-address need --engine ray")
        return {}
    return dict(engine=args.engine, actors=args.actors, ray_address=args.ray_address)


def _embed_kwargs(args: argparse.Namespace) -> dict:
    """The embedding settings shared by `embed` and `run`."""
    return dict(
        weights=args.weights,
        features=args.features,
        image_size=args.image_size,
        batch_size=args.batch_size,
        workers=args.workers,
        precision=args.precision,
        dtype=args.dtype,
        rows_per_shard=args.rows_per_shard,
        window=args.window,
        progress=not args.quiet,
        compile=args.compile,
        **_engine_kwargs(args),
    )


def _cmd_embed(args: argparse.Namespace) -> int:
    from ctfp.embed.runner import embed

    result = embed(
        args.sources,
        args.out,
        seed=args.seed,
        device=args.device,
        label_from_dirs=args.label_from_dirs,
        layout=args.layout,
        **_embed_kwargs(args),
    )
    if args.json:
        print(json.dumps(result.to_dict()))
    return 0


def _parse_ks(text: str) -> list[int]:
    try:
        ks = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--k takes integers like 4 or 1,2,4,8, got {text!r}"
        ) from None
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError(f"--k takes positive integers, got {text!r}")
    return ks


def _parse_range(text: str) -> list[int]:
    try:
        lo, hi = (int(v) for v in text.split("-"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--k-range takes LOW-HIGH like 2-8, got {text!r}"
        ) from None
    if not 1 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"--k-range needs 1 <= LOW <= HIGH, got {text!r}")
    return list(range(lo, hi + 1))


def _cmd_run(args: argparse.Namespace) -> int:
    from ctfp.tasks.runs import run_task1, run_task2

    common = dict(seed=args.seed, device=args.device, **_embed_kwargs(args))
    if args.task == "task1":
        ks = _parse_ks(args.k)
        summary = run_task1(
            args.data,
            args.out,
            k=ks[0] if len(ks) == 1 else ks,
            method=args.method,
            metric=args.metric,
            neighbours=args.neighbours,
            reference=args.reference,
            calibrate=args.calibrate,
            index=args.index,
            recall_target=args.recall_target,
            **common,
        )
    else:
        k = "auto" if args.k == "auto" else _parse_ks(args.k)[0]
        summary = run_task2(
            args.data,
            args.out,
            k=k,
            init=args.init,
            covariance_type=args.covariance,
            k_range=_parse_range(args.k_range),
            n_init=args.n_init,
            reg_covar=args.reg_covar,
            pca=args.pca,
            semi_supervised=args.semi_supervised,
            **common,
        )
    if args.report:
        from ctfp.report import write_report

        summary["report"] = str(write_report(args.out))
    if args.json:
        print(json.dumps(summary))
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from ctfp.evaluate import evaluate_run, format_table

    metrics = evaluate_run(args.task, args.run, args.truth, args.scores)
    if not args.json:  # the table for people; the JSON line (always last) for scripts
        print(format_table(metrics))
    print(json.dumps({"task": args.task, "run": args.run, **metrics}))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from ctfp.evaluate import read_ids, validate_run

    ids = read_ids(args.ids) if args.ids else None
    problems = validate_run(args.run, args.task, ids, ids_file=args.ids or "ids")
    if args.json:
        print(
            json.dumps(
                {
                    "task": args.task,
                    "run": args.run,
                    "valid": not problems,
                    "problems": [str(p) for p in problems],
                }
            )
        )
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


def _cmd_cache(args: argparse.Namespace) -> int:
    from ctfp.store.cache import build_cache

    result = build_cache(
        args.sources,
        args.out,
        size=args.size,
        workers=args.workers,
        window=args.window,
        rows_per_shard=args.rows_per_shard,
        label_from_dirs=args.label_from_dirs,
        layout=args.layout,
        progress=not args.quiet,
        **_engine_kwargs(args),
    )
    if args.json:
        print(json.dumps(result.to_dict()))
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from ctfp.progress import logger
    from ctfp.tasks.persist import load_model
    from ctfp.tasks.score import score_shards

    saved = load_model(args.model, device=args.device)
    result = score_shards(
        saved, args.shards, args.out, batch_size=args.batch_size, progress=not args.quiet
    )
    result = {"task": saved.task, "kind": saved.kind, **result}
    logger.info(
        f"scored {result['rows']} rows with the {saved.kind} model ({saved.task}) in "
        f"{result['seconds']:.1f} s, {result['rows_per_second']:,.0f} rows/s -> {args.out} "
        f"({result['shards_skipped']} shards already done)"
    )
    if args.json:
        print(json.dumps(result))
    return 0


def _cmd_cluster(args: argparse.Namespace) -> int:
    from ctfp.progress import logger
    from ctfp.tasks.attribution import cluster_shards
    from ctfp.tasks.persist import save_model

    start = time.perf_counter()
    clustering, summary = cluster_shards(
        args.shards,
        k="auto" if args.k == "auto" else _parse_ks(args.k)[0],
        k_range=_parse_range(args.k_range),
        covariance_type=args.covariance,
        init=args.init,
        pca=args.pca,
        sample_rows=args.sample,
        passes=args.passes,
        tol=args.tol,
        reg_covar=args.reg_covar,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        progress=not args.quiet,
    )
    settings = {
        "k": summary["k"],
        "k_option": args.k,
        "covariance": args.covariance,
        "init": args.init,
        "pca": args.pca,
        "sample": summary["sample_rows"],
        "passes": summary["passes"],
        "seed": args.seed,
        "shards": str(args.shards),
    }
    path = save_model(clustering, args.out, identity=summary["metadata"], settings=settings)
    result = {
        "model": str(path),
        "k": summary["k"],
        "bics": summary["bics"],
        "rows": summary["rows"],
        "sample_rows": summary["sample_rows"],
        "passes": summary["passes"],
        "converged": summary["converged"],
        "mean_log_likelihood": summary["mean_log_likelihood"],
        "seconds": time.perf_counter() - start,
    }
    logger.info(
        f"fitted a {result['k']}-component {args.covariance} mixture over {result['rows']:,} "
        "rows in "
        f"{result['passes']} passes ({'converged' if result['converged'] else 'not converged'}, "
        f"mean log-likelihood {result['mean_log_likelihood']:.6g}) -> {path}; assign every row "
        f"with: ctfp score {path} {args.shards} --out CLUSTERS"
    )
    if args.json:
        print(json.dumps(result))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ctfp.report import write_report

    path = write_report(
        args.run_dir, args.out, truth=args.truth, max_items=args.max_items, k=args.k
    )
    if args.json:
        print(json.dumps({"run": args.run_dir, "report": str(path), "bytes": path.stat().st_size}))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from ctfp.demo import run_demo

    summary = run_demo(args.out, weights=args.weights, progress=not args.quiet)
    if args.json:
        print(json.dumps(summary))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctfp",
        description="Find the fingerprints generative models leave in synthetic CT slices.",
    )
    parser.add_argument("--version", action="version", version=f"ctfp {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars or info lines")
    common.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "embed",
        parents=[common],
        help="embed CT slices into Parquet shards",
        description="Embed every CT slice behind SOURCES (folders, globs, CSV/"
        "Parquet manifests, files) into Parquet shards in --out. "
        "Rerun the same command to resume.",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCES")
    p.add_argument("--out", required=True, help="output folder of part-NNNNN.parquet shards")
    _add_embed_options(p)
    p.set_defaults(func=_cmd_embed)

    from ctfp.cluster.gmm import COVARIANCE_TYPES, INIT_PARAMS

    p = sub.add_parser("run", help="run a task end to end on an ImageCLEF-style folder")
    tasks = p.add_subparsers(dest="task", required=True, metavar="TASK")
    t = tasks.add_parser(
        "task1",
        parents=[common],
        help="membership: seed method (k-means centres per class, FAISS flat L1 1-NN)",
        description="DATA holds train/used/, train/not_used/, generated/ (optional) and test/. "
        "Writes OUT/run.csv (<id>,<0|1>) and OUT/scores.csv; with several --k, OUT/k<k>/.",
    )
    t.add_argument("--k", default="4", help="clusters per class, or a list like 1,2,4,8,16,32")
    t.add_argument(
        "--method",
        default="centroid",
        choices=("centroid", "proximity"),
        help="centroid: the seed paper; proximity: distance to the generated set",
    )
    t.add_argument(
        "--metric",
        default="cosine",
        choices=("l1", "l2", "cosine"),
        help="proximity distance (default cosine, the best on the quality benchmark)",
    )
    t.add_argument(
        "--neighbours",
        type=int,
        default=1,
        help="proximity: mean over this many nearest generated slices",
    )
    t.add_argument(
        "--calibrate",
        default="balanced",
        choices=("f1", "accuracy", "balanced"),
        help="criterion for the threshold chosen on the training reals",
    )
    t.add_argument(
        "--no-reference",
        dest="reference",
        action="store_false",
        help="proximity: do not subtract the distance to the not-used reference set",
    )
    t.add_argument(
        "--index",
        default="flat",
        choices=("flat", "ivf", "hnsw"),
        help="proximity: exact (flat) or approximate search over the generated set",
    )
    t.add_argument(
        "--recall-target",
        type=float,
        default=0.99,
        help="ivf/hnsw: tune nprobe/efSearch to the least effort reaching this recall@1 on the "
        "training reals (default 0.99)",
    )
    t2 = tasks.add_parser(
        "task2",
        parents=[common],
        help="attribution: Gaussian mixture clustering of the test slices",
        description="DATA holds test/ and optionally train/<group>/. Writes OUT/clusters.csv "
        "(<id>,<cluster>).",
    )
    t2.add_argument("--k", default="4", help="number of components, or auto (lowest BIC)")
    t2.add_argument("--k-range", default="2-8", help="range searched by --k auto (default 2-8)")
    t2.add_argument("--init", default="kmeans", choices=INIT_PARAMS, help="GMM initialisation")
    t2.add_argument("--covariance", default="full", choices=COVARIANCE_TYPES)
    t2.add_argument("--n-init", type=int, default=1, help="GMM initialisations (best kept)")
    t2.add_argument("--reg-covar", type=float, default=1e-6, help="added to covariance diagonals")
    t2.add_argument("--pca", type=int, default=None, help="project onto N principal components")
    t2.add_argument(
        "--semi-supervised",
        action="store_true",
        help="start one component per train/<group>/ at the group's mean",
    )
    for tp in (t, t2):
        tp.add_argument("data", metavar="DATA")
        tp.add_argument("--out", required=True, help="output folder (embeddings are reused)")
        tp.add_argument(
            "--report", action="store_true", help="also write OUT/report.html (see `ctfp report`)"
        )
        _add_embed_options(tp)
        tp.set_defaults(func=_cmd_run)

    p = sub.add_parser("evaluate", parents=[common], help="score a run file against the truth")
    p.add_argument("task", choices=("task1", "task2"))
    p.add_argument("run", metavar="RUN")
    p.add_argument("--truth", required=True, help="CSV with id,label (task1) or id,cluster (task2)")
    p.add_argument(
        "--scores",
        default=None,
        help="task1: id,score CSV for ROC-AUC (default: scores.csv beside RUN)",
    )
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "validate", parents=[common], help="check a run file against the challenge format"
    )
    p.add_argument("task", choices=("task1", "task2"))
    p.add_argument("run", metavar="RUN")
    p.add_argument("--ids", default=None, help="text file with one expected id per line")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser(
        "score",
        parents=[common],
        help="score embedding shards with a saved model (an archive, streamed)",
        description="Stream every row of the embedding shards in SHARDS through the model saved "
        "by `ctfp run` (OUT/model, or OUT itself) and write OUT/part-NNNNN.parquet with id, "
        "score, label (task 1: 1 = used; task 2: the cluster and its posterior). Memory stays "
        "bounded; rerun to resume.",
    )
    p.add_argument("model", metavar="MODEL", help="a saved model folder, or a run folder")
    p.add_argument("shards", metavar="SHARDS", help="folder (or file) of embedding shards")
    p.add_argument("--out", required=True, help="output folder of scored shards")
    p.add_argument("--batch-size", type=int, default=16_384, help="rows per batch (memory)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.set_defaults(func=_cmd_score)

    p = sub.add_parser(
        "cluster",
        parents=[common],
        help="fit a Gaussian mixture over embedding shards too large for memory (streamed EM)",
        description="Task 2 at archive scale: fit a K-component Gaussian mixture over every row "
        "of the embedding shards in SHARDS without holding them in memory (a seeded sample "
        "starts it, then each EM pass streams the shards) and save it as a model in --out. "
        "`ctfp score OUT SHARDS --out CLUSTERS` then writes each row's cluster.",
    )
    p.add_argument("shards", metavar="SHARDS", help="folder (or file) of embedding shards")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument(
        "--k", default="4", help="number of components, or auto (lowest BIC on the sample)"
    )
    p.add_argument("--k-range", default="2-8", help="range searched by --k auto (default 2-8)")
    p.add_argument("--covariance", default="full", choices=COVARIANCE_TYPES)
    p.add_argument("--init", default="kmeans", choices=INIT_PARAMS, help="GMM initialisation")
    p.add_argument(
        "--pca", type=int, default=None, help="project onto N principal components of the sample"
    )
    p.add_argument("--sample", type=int, default=50_000, help="rows that start the fit")
    p.add_argument("--passes", type=int, default=20, help="most EM passes over the shards")
    p.add_argument("--tol", type=float, default=1e-3, help="stop when the mean log-lik. moves less")
    p.add_argument("--reg-covar", type=float, default=1e-6, help="added to covariance diagonals")
    p.add_argument("--batch-size", type=int, default=65_536, help="rows per batch (memory)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.set_defaults(func=_cmd_cluster)

    p = sub.add_parser(
        "cache",
        parents=[common],
        help="decode CT slices once into a uint8 Parquet cache that `embed` reads fast",
        description="Decode every slice behind SOURCES into uint8 slices (padded, resized to "
        "--size) in Parquet shards in --out. `ctfp embed OUT ...` then skips image decoding.",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCES")
    p.add_argument("--out", required=True, help="output folder of the cache shards")
    p.add_argument("--size", type=int, default=256, help="side of the cached slices (default 256)")
    _add_input_options(p)
    p.set_defaults(func=_cmd_cache)

    p = sub.add_parser(
        "report",
        parents=[common],
        help="write a self-contained HTML report of a run folder",
        description="Write one HTML file (figures and thumbnails inlined) showing a `ctfp run` "
        "folder: settings and model, a map of the embeddings, scores or clusters, the evidence "
        "thumbnails and, with --truth, the metrics.",
    )
    p.add_argument("run_dir", metavar="OUT", help="the --out folder of `ctfp run`")
    p.add_argument("--out", default=None, help="where to write (default OUT/report.html)")
    p.add_argument("--truth", default=None, help="CSV with id,label (task1) or id,cluster (task2)")
    p.add_argument(
        "--max-items",
        type=int,
        default=12,
        help="evidence rows (task1) or thumbnails per cluster (task2); default 12",
    )
    p.add_argument("--k", type=int, default=None, help="task1 k sweep: the k shown in detail")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("demo", parents=[common], help="run ctfp on the sample shipped with it")
    p.add_argument("--out", default="demo-out", help="output folder (default demo-out)")
    p.add_argument(
        "--weights",
        default=None,
        help="imagenet, random or PATH (default: imagenet if it can be had, else random)",
    )
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from ctfp.progress import configure_logging

    args = build_parser().parse_args(argv)
    configure_logging(quiet=args.quiet)
    try:
        return args.func(args)
    except (CtfpError, argparse.ArgumentTypeError, ValueError) as exc:
        print(f"ctfp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ctfp: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
