"""``write_report``: one self-contained HTML page of a ``ctfp run`` output folder."""

from __future__ import annotations

import os
from pathlib import Path

from ctfp import __version__
from ctfp.exceptions import InputError
from ctfp.io.fs import PathLike, as_local, is_remote, resolve
from ctfp.progress import logger
from ctfp.report.audit import audit_record, write_audit
from ctfp.report.audit_md import plain_answer
from ctfp.report.html import page
from ctfp.report.sections import answer_box, selection_section, settings_section
from ctfp.report.task1 import NAV as TASK1_NAV
from ctfp.report.task1 import task1_body
from ctfp.report.task2 import NAV as TASK2_NAV
from ctfp.report.task2 import task2_body
from ctfp.runs.folder import REPORT_FILE, find_embeddings, read_summary


def write_report(
    run_dir: PathLike,
    out_html: PathLike | None = None,
    *,
    truth: PathLike | None = None,
    max_items: int = 12,
    k: int | None = None,
    seed: int = 0,
) -> Path:
    """Write one self-contained HTML report (every figure inlined) of the ``--out`` folder
    ``run_dir`` of ``ctfp run task1|task2`` to ``out_html`` (default ``run_dir/report.html``),
    and the audit files ``run_dir/audit.json`` and ``audit.md`` (:func:`write_audit`). A run on
    an object store gets them beside it there.

    It shows the settings and model, a 2-D map of the embeddings and, for task 1, the test
    scores, the ``max_items`` highest-scoring test slices next to their nearest generated slice
    and the k sweep (``k``: the k shown in detail, default the chosen one); for task 2, the
    clusters and ``max_items`` thumbnails of each (``seed``: of the random samples). ``truth``
    (the CSV ``ctfp evaluate`` takes) adds the metrics against it.

    Raises InputError where ``run_dir`` is not a run folder, a run file is missing, or the truth
    does not cover the run's ids; StorageError where ``out_html`` cannot be written.
    """
    from ctfp.runs.remote import local_run

    if max_items < 1:
        raise InputError(f"max_items must be positive, got {max_items}")
    if out_html is not None:  # a folder or a device there: said before the report is made
        out_html = as_local(out_html)
        resolve(out_html).check_file()
    with local_run(run_dir) as (run, origin):
        home = resolve(origin)
        summary = read_summary(run)
        task = summary["task"]
        if task == "task2" and k is not None:
            raise InputError("k chooses one k of a task 1 k sweep; this is a task2 run")
        shards = find_embeddings(run, summary, origin)
        if out_html is None:
            dest: Path | str = run / REPORT_FILE
        else:
            dest = os.fspath(out_html) if is_remote(out_html) else Path(out_html)
        report = dest if isinstance(dest, Path) else None
        # One record for the Answer box and the audit files: they say the same.
        record = audit_record(run, truth, report=report, origin=None if home.local else origin)
        if task == "task1":
            body, rows = task1_body(run, summary, shards, truth, k, max_items, seed)
        else:
            body, rows = task2_body(run, summary, shards, truth, max_items, seed)
        # The answer first, settings last.
        body = answer_box(plain_answer(record)) + selection_section(summary) + body
        body += settings_section(run, summary, rows, shards)
        title = f"ctfp {task} report: {home.uri.rstrip('/').rsplit('/', 1)[-1]}"
        html = page(title, task, TASK1_NAV if task == "task1" else TASK2_NAV, body, __version__)
        resolve(dest).put(html.encode("utf-8"))
        written = write_audit(run, record=record)
        audit = ", ".join(map(str, written))
        if not home.local:  # the report and the audit go beside the run on the store
            for path in [*written, *([run / REPORT_FILE] if out_html is None else [])]:
                home.join(path.name).put(path.read_bytes())
            audit = ", ".join(home.join(path.name).uri for path in written)
            dest = home.join(REPORT_FILE).uri if out_html is None else dest
        logger.info(f"report -> {dest}")
        logger.info(f"audit -> {audit}")
        return dest


__all__ = ["write_report"]
