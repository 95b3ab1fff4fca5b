"""The ``ctfp`` command: a thin layer that parses arguments and calls the Python API."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from ctfp._version import __version__
from ctfp.exceptions import CtfpError, StorageError
from ctfp.settings import Settings

# A number, or a comma-separated list of them, that starts with '-': an option's value
# (``--window -600,1500``, ``-1.5e3,400``), never an option name.
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_NEGATIVE_NUMBERS = re.compile(rf"^-{_NUMBER}(?:,[-+]?{_NUMBER})*$")


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``ctfp: error: ...`` and where the options are listed,
    not the whole usage block. Negative numbers and lists of numbers (``-600,1500``) are taken
    as values, as argparse takes ``-5``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # argparse's own matcher of values that start with '-' knows single numbers only.
        self._negative_number_matcher = _NEGATIVE_NUMBERS

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


#: ``--features`` of ``ctfp run``: its default is not EmbedSettings' (one type) but a choice.
RUN_FEATURES_HELP = (
    "auto (default): several feature types are embedded and the best is chosen by "
    "cross-validation on the labelled slices (resnet50 only where its weights load; task 2 "
    "without labels: residual); or one of resnet50, pixels, spectrum, residual, name:size, "
    "several joined by +"
)


def deprecated_alias(flag: str, new: str, dest: str, type: Callable[[str], Any]) -> dict[str, Any]:
    """``add_argument`` keywords of an old spelling of an option, kept for a release: it sets
    ``dest`` as ``new`` does and warns once on stderr (hidden from ``--help``)."""

    class Alias(argparse.Action):
        def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
            print(
                f"ctfp: warning: {flag} is deprecated and will be removed in the next release; "
                f"use {new}",
                file=sys.stderr,
            )
            setattr(namespace, self.dest, values)

    return dict(
        dest=dest, type=type, action=Alias, help=argparse.SUPPRESS, default=argparse.SUPPRESS
    )


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command; each command's options come from its settings objects."""
    from ctfp.attribution.settings import ClusterSettings, Task2Settings
    from ctfp.cli import commands
    from ctfp.cli.options import add_settings
    from ctfp.embed.settings import CacheSettings, EmbedSettings
    from ctfp.engine.settings import EngineSettings
    from ctfp.membership.settings import Task1Settings, option_classes
    from ctfp.runs.settings import TASKS, ScoreSettings

    parser = Parser(
        prog="ctfp",
        description="Find the fingerprints generative models leave in synthetic CT slices.",
    )
    parser.add_argument("-V", "--version", action="version", version=f"ctfp {__version__}")
    common = Parser(add_help=False)
    common.add_argument("--quiet", action="store_true", help="no progress bars or info lines")
    common.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=Parser
    )
    shards = (
        "shards",
        "folder (or file) of embedding shards, or a Delta table (delta:PATH[@vN] reads version N)",
    )

    def command(
        name: str,
        func: Callable[[argparse.Namespace], int],
        help: str,
        description: str | None = None,
        *,
        under: Any = sub,
        sources: bool = False,
        positionals: Sequence[tuple[str, str]] = (),
        out: str | None = None,
        settings: Sequence[type[Settings]] = (),
    ) -> argparse.ArgumentParser:
        p = under.add_parser(name, parents=[common], help=help, description=description or help)
        p.set_defaults(func=func)
        if sources:
            p.add_argument("sources", nargs="+", metavar="SOURCES")
        for dest, text in positionals:
            p.add_argument(dest, metavar=dest.upper(), help=text)
        if out is not None:
            p.add_argument("--out", required=True, help=out)
        for cls in settings:
            add_settings(p, cls)
        return p

    command(
        "embed",
        commands.embed,
        "embed CT slices into Parquet shards",
        "Embed every CT slice behind SOURCES (folders, globs, CSV/Parquet manifests, files) into "
        "Parquet shards in --out. Rerun the same command to resume.",
        sources=True,
        out="output folder of part-NNNNN.parquet shards; delta:PATH (delta:s3://...) writes a "
        "Delta Lake table instead",
        settings=(EmbedSettings, EngineSettings),
    ).add_argument("--seed", **deprecated_alias("--seed", "--weights-seed", "weights_seed", int))

    run = sub.add_parser("run", help="run a task end to end on an ImageCLEF-style folder")
    tasks = run.add_subparsers(dest="task", required=True, metavar="TASK", parser_class=Parser)
    t1 = command(
        "task1",
        commands.run_task1,
        "membership: was a real slice used to train the generator?",
        "DATA holds train/used/, train/not_used/, generated/ and test/. By default (--method "
        "auto, features auto) the features, method and settings are chosen by cross-validation "
        "on the labelled training reals. Writes OUT/run.csv (<id>,<0|1>), OUT/scores.csv and "
        "OUT/model/; with several --k, OUT/k<k>/. Options of a method other than --method's are "
        "refused.",
        under=tasks,
    )
    seen: set[str] = set()
    add_settings(t1, Task1Settings, seen=seen)
    for options_cls in option_classes():
        add_settings(t1, options_cls, seen=seen)
    t2 = command(
        "task2",
        commands.run_task2,
        "attribution: which generator made each test slice",
        "DATA holds test/ and optionally train/<group>/ (labelled examples of each known "
        "generator). With them, the way to attribute (a classifier or the semi-supervised "
        "mixture) and the features are chosen by cross-validation on them, and slices no known "
        "generator explains are -1 in OUT/open_set.csv; without, the blind Gaussian mixture. "
        "Writes OUT/clusters.csv (<id>,<cluster>), OUT/model/ and OUT/summary.json.",
        under=tasks,
    )
    add_settings(t2, Task2Settings, seen=(seen2 := set()))
    for tp, taken in ((t1, seen), (t2, seen2)):
        tp.add_argument(
            "data", metavar="DATA", help="the data folder: a path or a URI (s3://bucket/data)"
        )
        tp.add_argument("--out", required=True, help="output folder (embeddings are reused)")
        tp.add_argument(
            "--report", action="store_true", help="also write OUT/report.html (see `ctfp report`)"
        )
        # The run lays out its inputs itself, and without --features tries several types.
        add_settings(
            tp,
            EmbedSettings,
            exclude=("layout", "label_from_dirs"),
            seen=taken,
            help={"features": RUN_FEATURES_HELP},
        )
        add_settings(tp, EngineSettings, seen=taken)

    p = command(
        "evaluate",
        commands.evaluate,
        "score a run file against the truth",
        "Score RUN (run.csv, clusters.csv or open_set.csv of `ctfp run`, or any id,value run "
        "file) against --truth. Task 1: F1, accuracy, kappa and, with scores, ROC-AUC (only the "
        "order of the scores counts: inf and -inf are scores, NaN is refused), with 95 % "
        "bootstrap intervals. Task 2: ARI and NMI; the slices open_set.csv marks -1 (in no "
        "known group) are scored as one cluster of their own (n_unknown). An id given twice in "
        "any file is refused.",
    )
    p.add_argument("task", choices=TASKS)
    p.add_argument("run", metavar="RUN")
    truth = "CSV with id,label (task1) or id,cluster (task2)"
    p.add_argument("--truth", required=True, help=truth)
    p.add_argument(
        "--scores", default=None, help="task1: id,score CSV for ROC-AUC (default: beside RUN)"
    )

    p = command("validate", commands.validate, "check a run file against the challenge format")
    p.add_argument("task", choices=TASKS)
    p.add_argument("run", metavar="RUN")
    p.add_argument("--ids", default=None, help="text file with one expected id per line")

    command(
        "score",
        commands.score,
        "score embedding shards with a saved model (an archive, streamed)",
        "Stream every row of the embedding shards in SHARDS through the model saved by "
        "`ctfp run` (OUT/model, or OUT itself) or `ctfp cluster` and write OUT/part-NNNNN.parquet "
        "with id, score, label (task 1: 1 = used; task 2: the cluster and its posterior). "
        "Memory stays bounded; rerun to resume. --engine ray scores the shards on Ray actors "
        "that write their own parts.",
        positionals=(("model", "a saved model folder, or a run folder"), shards),
        out="output folder of scored shards; delta:PATH writes a Delta Lake table instead",
        settings=(ScoreSettings, EngineSettings),
    )

    command(
        "cluster",
        commands.cluster,
        "fit a Gaussian mixture over embedding shards too large for memory (streamed EM)",
        "Task 2 at archive scale: fit a Gaussian mixture over every row of the embedding shards "
        "in SHARDS without holding them in memory (a seeded sample starts it, then each EM pass "
        "streams the shards) and save it as a model in --out. `ctfp score OUT SHARDS --out "
        "CLUSTERS` then writes each row's cluster. --engine ray runs each pass as a map over "
        "the shards on Ray (sufficient statistics summed on the driver).",
        positionals=(shards,),
        out="model folder to write",
        settings=(ClusterSettings, EngineSettings),
    )

    command(
        "cache",
        commands.cache,
        "decode CT slices once into a uint8 Parquet cache that `embed` reads fast",
        "Decode every slice behind SOURCES into uint8 slices (padded, resized to --size) in "
        "Parquet shards in --out. `ctfp embed OUT ...` then skips image decoding.",
        sources=True,
        out="output folder of the cache shards",
        settings=(CacheSettings, EngineSettings),
    )

    p = command(
        "report",
        commands.report,
        "write a self-contained HTML report of a run folder",
        "Write one HTML file (figures and thumbnails inlined) showing a `ctfp run` folder: "
        "settings and model, a map of the embeddings, scores or clusters, the evidence "
        "thumbnails and, with --truth, the metrics.",
    )
    p.add_argument("run_dir", metavar="OUT", help="the --out folder of `ctfp run`")
    p.add_argument("--out", default=None, help="where to write (default OUT/report.html)")
    p.add_argument("--truth", default=None, help=truth)
    items = "evidence rows (task1) or thumbnails per cluster (task2); default 12"
    p.add_argument("--max-items", type=int, default=12, help=items)
    p.add_argument("--k", type=int, default=None, help="task1 k sweep: the k shown in detail")

    p = command("demo", commands.demo, "run ctfp on the sample shipped with it")
    p.add_argument("--out", default="demo-out", help="output folder (default demo-out)")
    weights = "imagenet, random or PATH (default: imagenet if it can be had, else random)"
    p.add_argument("--weights", default=None, help=weights)
    return parser


class _Stdout:
    """``sys.stdout`` while a command runs: a write that fails (a closed pipe, a full disk) is
    kept in :attr:`failure` and later writes are dropped, so the command runs to its end and
    its exit status is not lost."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.failure: OSError | None = None

    def write(self, text: str) -> int:
        if self.failure is None:
            try:
                return self._stream.write(text)
            except OSError as exc:
                self.failure = exc
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self.failure is None:
            try:
                self._stream.flush()
            except OSError as exc:
                self.failure = exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    real = sys.stdout
    if real is None:  # no stdout at all (pythonw): nothing to guard
        return _main(argv)
    out = _Stdout(real)
    sys.stdout = out
    try:
        status = _main(argv)
        out.flush()
    finally:
        sys.stdout = real
    return status if out.failure is None else _stdout_failed(real, out.failure, status)


def _stdout_failed(stream: Any, failure: OSError, status: int) -> int:
    """The exit status once writing to standard output failed: the command's own when the
    reader left (``ctfp validate ... | head -1``), else 2 with one line saying why."""
    target = ""
    try:
        fd = stream.fileno()
        with contextlib.suppress(OSError):
            where = os.readlink(f"/proc/self/fd/{fd}")
            target = f" ({where})" if where.startswith("/") else ""
        # What is still buffered goes nowhere at exit instead of failing again (a traceback).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (a test's capture)
        pass
    if isinstance(failure, BrokenPipeError) or failure.errno == errno.EPIPE:
        return status
    reason = failure.strerror or str(failure)
    print(f"ctfp: error: cannot write to standard output{target}: {reason}", file=sys.stderr)
    return 2


def _main(argv: Sequence[str] | None) -> int:
    from ctfp.progress import configure_logging

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error argparse has printed
        return exc.code if isinstance(exc.code, int) else 2
    configure_logging(quiet=args.quiet)
    try:
        return args.func(args)
    # BrokenPipeError: a pipe other than sys.stdout closed, so the command did not finish.
    except (CtfpError, argparse.ArgumentTypeError, ValueError, BrokenPipeError) as exc:
        print(f"ctfp: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ctfp: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        # The system's or a store's error that no layer below named: one line, no traceback.
        # pyarrow is loaded by whatever raised its error.
        pyarrow = sys.modules.get("pyarrow")
        if not (isinstance(exc, OSError) or (pyarrow and type(exc) is pyarrow.ArrowException)):
            raise
        print(f"ctfp: error: {StorageError.of(exc)}", file=sys.stderr)
        return 2


__all__ = ["build_parser", "main"]
