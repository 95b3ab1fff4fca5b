"""What a user waits for: the CLI's answers (help, version, a usage error), ``ctfp demo`` and
``examples/audit_a_generator.py``, each timed as a fresh process, as a user starts it.

The README and the example quote these figures; this script is where they come from. Each
command runs ``--repeats`` times (the CLI ones ``--cli-repeats`` times) and the median and
the spread (min-max) of the wall-clock seconds are printed as one JSON line. Time-sensitive:
run it on a quiet machine and say how quiet it was.

    python benchmarks/user_times.py [--repeats 3] [--cli-repeats 5] [--skip-example]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The console script a user runs (python -m ctfp where it is not installed beside Python).
SCRIPT = Path(sys.executable).with_name("ctfp")
CTFP = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "ctfp"]
CLI = {
    "ctfp --version": ["--version"],
    "ctfp --help": ["--help"],
    "ctfp embed --help": ["embed", "--help"],
    "ctfp run task1 --help": ["run", "task1", "--help"],
    "usage error": ["run", "task1", "--bogus"],
}


def timed(command: list[str], repeats: int, fresh: Path | None = None) -> dict[str, float]:
    """Median, min and max wall-clock seconds of ``command`` over ``repeats`` runs (``fresh``:
    a folder removed before each run, so that every run starts from nothing)."""
    seconds = []
    for _ in range(repeats):
        if fresh is not None:
            shutil.rmtree(fresh, ignore_errors=True)
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, capture_output=True, check=False)
        seconds.append(time.perf_counter() - start)
    return {
        "median_s": round(statistics.median(seconds), 3),
        "min_s": round(min(seconds), 3),
        "max_s": round(max(seconds), 3),
        "runs": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cli-repeats", type=int, default=5)
    parser.add_argument("--skip-example", action="store_true")
    args = parser.parse_args()
    result: dict[str, dict[str, float]] = {}
    for name, argv in CLI.items():
        result[name] = timed([*CTFP, *argv], args.cli_repeats)
    with tempfile.TemporaryDirectory(prefix="ctfp-times-") as tmp:
        out = Path(tmp) / "demo-out"
        # The demo as `make demo` runs it: ImageNet weights where they can be had, else random.
        result["ctfp demo"] = timed(
            [*CTFP, "demo", "--out", str(out), "--quiet"], args.repeats, out
        )
        if not args.skip_example:
            example = [sys.executable, str(ROOT / "examples" / "audit_a_generator.py")]
            out = Path(tmp) / "audit"
            result["examples/audit_a_generator.py"] = timed(
                [*example, "--out", str(out)], args.repeats, out
            )
    print(json.dumps({"benchmark": "user_times", **result}))


if __name__ == "__main__":
    main()
