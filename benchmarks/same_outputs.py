"""Same outputs before and after a refactor: run ~25 user commands, dump every file canonically.

A change that claims "same behaviour" (a size pass, a module split) is checked by running this at
the commit before and at the commit after, into the same OUT folder name (paths are part of the
stored rows), and diffing the two dumps:

    git worktree add ../before HEAD~1
    (cd ../before && PYTHONPATH=$PWD python benchmarks/same_outputs.py /tmp/same > /tmp/before.txt)
    PYTHONPATH=$PWD python benchmarks/same_outputs.py /tmp/same > /tmp/after.txt
    diff /tmp/before.txt /tmp/after.txt

The commands: ``ctfp demo``; ``run task1`` (proximity, centroid, auto with permutations) and
``run task2`` (auto, gmm) on the demo's folders; evaluate, validate and report; ``embed`` of
PNGs, of DICOMs with the odd ones, into a Delta table, and again (resume); ``cache`` and an embed
from it; ``score`` of both tasks' models; ``cluster``; three usage errors. Parquet columns are
hashed, JSON keys of Delta logs sorted, and what changes from run to run anyway is masked
(timings, dates, ids, input mtimes). Two runs of the same code still differ in the HTML reports'
seconds cells and in the byte sizes of parts that hold input mtimes: read those lines as noise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TIMING_KEYS = (
    "embedding|selection|fit_and_files|decode_wait|infer|write|embed_seconds|images_per_second"
    "|rows_per_second|summary_sha256|seconds|timestamp|createdTime|modificationTime|created"
    "|updated|elapsed_s|time|started|finished|run_id|id|txnId|engineInfo"
)


#: The user commands, in order (later ones read what earlier ones wrote); {out} is the output
#: folder, {t1}/{t2} the demo's task folders, {png}/{dicom}/{edge} the shared CT data.
COMMANDS = """
demo --out {out}/demo --weights random --json --quiet
run task1 {t1} --out {out}/t1prox --method proximity --features pixels:16 --json --quiet
run task1 {t1} --out {out}/t1cent --method centroid --k 2 --features pixels:16 --json --quiet
run task1 {t1} --out {out}/t1auto --features pixels:16+residual --permutations 19 --json --quiet
run task2 {t2} --out {out}/t2 --features residual --json --quiet
run task2 {t2} --out {out}/t2gmm --method gmm --k 3 --features spectrum --json --quiet
evaluate task1 {out}/t1prox/run.csv --truth {t1}/truth.csv --scores {out}/t1prox/scores.csv --json
evaluate task2 {out}/t2/clusters.csv --truth {t2}/truth.csv --json
validate task1 {out}/t1prox/run.csv --json
report {out}/t1prox --out {out}/t1prox.html --quiet
report {out}/t2 --out {out}/t2.html --truth {t2}/truth.csv --quiet
embed {png} --out {out}/emb --features pixels:16 --label-from-dirs --json --quiet
embed {png} --out delta:{out}/delta --features pixels:16 --label-from-dirs --quiet
embed {dicom} {edge} --out {out}/dcm --features pixels:16+spectrum --rows-per-shard 50 --quiet
embed {dicom} {edge} --out {out}/dcm --features pixels:16+spectrum --rows-per-shard 50 --quiet
cache {png} --out {out}/cache --size 64 --quiet
embed {out}/cache --out {out}/fromcache --features pixels:16 --quiet
score {out}/t1prox {out}/emb --out {out}/score1 --json --quiet
cluster {out}/emb --out {out}/clu --k 3 --json --quiet
score {out}/clu {out}/emb --out {out}/score2 --json --quiet
run task1 /nonexistent --out {out}/x --quiet
embed {png} --out {out}/y --features nope
run task2 {t2} --out {out}/z --k nan
"""


def commands(out: Path) -> list[list[str]]:
    """:data:`COMMANDS` with the folders filled in, each split into its arguments."""
    ct = SHARED / "lung-pet-ct-dx"
    where = {"out": out, "t1": out / "data" / "task1", "t2": out / "data" / "task2"}
    where |= {"png": ct / "png", "dicom": ct / "dicom", "edge": SHARED / "dicom-edge"}
    quoted = {name: shlex.quote(str(path)) for name, path in where.items()}
    return [shlex.split(line.format(**quoted)) for line in COMMANDS.strip().splitlines()]


def masked(text: str, out: Path, repo: Path) -> str:
    """``text`` with what differs between two runs of the same code replaced by placeholders."""
    text = text.replace(str(out), "<OUT>").replace(str(repo), "<REPO>")
    text = re.sub(r"mtime \d+ ns", "mtime <T> ns", text)
    text = re.sub(
        rf"\b({TIMING_KEYS})(&quot;|\\?\"|'|)(: ?)(&quot;|\"|)[0-9a-f.e+-]+", r"\1\2\3<X>", text
    )
    text = re.sub(r"sha256 `[0-9a-f]{64}`", "sha256 `<X>`", text)
    text = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+\+?[\dZ:]*", "<TS>", text)
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<UUID>", text)
    return re.sub(r"part-(\d+)-[0-9a-f]{8}", r"part-\1-<H>", text)


def dump(out: Path, repo: Path) -> list[str]:
    """Every file under ``out`` as masked text; Parquet files as schema, metadata and hashes."""
    import pyarrow.parquet as pq

    lines = []
    for path in sorted(out.rglob("*")):
        rel = masked(str(path.relative_to(out)), out, repo)
        if path.is_dir():
            lines.append(f"DIR {rel}")
        elif path.suffix == ".parquet":
            table = pq.read_table(path)
            meta = {
                k.decode(): masked(v.decode(), out, repo)
                for k, v in (table.schema.metadata or {}).items()
            }
            lines.append(
                f"PARQUET {rel} rows={table.num_rows} schema={table.schema.remove_metadata()}"
            )
            lines.append(f"  meta={json.dumps(meta, sort_keys=True)}")
            for name, column in sorted(table.to_pydict().items()):
                digest = hashlib.sha1(masked(repr(column), out, repo).encode()).hexdigest()
                lines.append(f"  column {name} {digest}")
        else:
            try:
                text = path.read_bytes().decode()
            except UnicodeDecodeError:  # an image, a model's arrays: its bytes
                lines.append(f"BINARY {rel} {hashlib.sha1(path.read_bytes()).hexdigest()}")
                continue
            if "_delta_log" in path.parts and path.suffix == ".json":  # key order varies
                text = "\n".join(
                    json.dumps(json.loads(x), sort_keys=True)
                    for x in text.splitlines()
                    if x.strip()
                )
            lines.append(f"FILE {rel}\n{masked(text, out, repo)}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "out", type=Path, help="output folder (an earlier output of this script is emptied first)"
    )
    out = parser.parse_args().out.resolve()
    repo = Path(__file__).resolve().parents[1]
    if out.exists() and any(out.iterdir()) and not (out / "_log.txt").is_file():
        parser.error(f"{out} is not empty and not an earlier output of this script: not emptied")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"from ctfp.demo import build_demo_data; build_demo_data({str(out / 'data')!r})",
        ],
        check=True,
        env=env,
    )
    with open(out / "_log.txt", "w") as log:
        for command in commands(out):
            log.write(f"### ctfp {shlex.join(command)}\n")
            log.flush()
            rc = subprocess.run(
                [sys.executable, "-m", "ctfp", *command], stdout=log, stderr=log, env=env
            ).returncode
            log.write(f"exit {rc}\n")
    print("\n".join(dump(out, repo)))


if __name__ == "__main__":
    main()
