"""The ``ctfp`` command: a thin layer that parses arguments and calls the Python API."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from ctfp._version import __version__
from ctfp.exceptions import CtfpError


def _add_embed_options(p: argparse.ArgumentParser) -> None:
    from ctfp.device import DEVICES, PRECISIONS
    from ctfp.io.sources import LAYOUTS

    p.add_argument(
        "--weights",
        default="imagenet",
        help="imagenet (torchvision IMAGENET1K_V2), random (seeded), or a state-dict PATH",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of --weights random (default 0)")
    p.add_argument("--image-size", type=int, default=224, help="network input side (default 224)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="slices per forward pass (default: 16 on CPU, 128 on CUDA)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decoding processes (default: 1 on CPU, up to 8 on CUDA)",
    )
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


def _cmd_embed(args: argparse.Namespace) -> int:
    from ctfp.embed.runner import embed

    result = embed(
        args.sources,
        args.out,
        weights=args.weights,
        seed=args.seed,
        image_size=args.image_size,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        precision=args.precision,
        dtype=args.dtype,
        rows_per_shard=args.rows_per_shard,
        window=args.window,
        label_from_dirs=args.label_from_dirs,
        layout=args.layout,
        progress=not args.quiet,
    )
    if args.json:
        print(json.dumps(result.to_dict()))
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
    except CtfpError as exc:
        print(f"ctfp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ctfp: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
