"""The README's commands run as written, and the documentation's links lead somewhere.

Every command of the README's ``bash`` / ``sh`` / ``console`` blocks is run, in order, in one
temporary folder, with the venv's ``ctfp`` and ``python`` first on PATH: the tour works on the
sample that ``ctfp demo`` builds. A command that cannot run here is listed in ``NOT_RUN`` (or
replaced by its equivalent in ``RUN_AS``) with the reason; a command in neither is run, and an
entry that no longer matches a README command fails the test, so the lists cannot go stale. A
command given twice (``make demo`` is in the set-up and in the tour) runs once.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DEMO_COMMAND, offline_env

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

#: Commands not run here, by prefix (or the whole line), with the reason.
NOT_RUN = {
    "make test": "is the test suite itself (this test is part of it)",
    "source .venv/bin/activate": "the test already puts the venv's ctfp and python first on PATH",
    "pip install duckdb": "needs the network; the dev install this test runs in has duckdb",
    "ctfp run task1 /data/": "the user's own data (the tour runs the same command on the sample)",
    "ctfp embed /data/": "the user's own data (the tour embeds the sample with the same command)",
}

#: Commands run as another command that does the same here, with the reason.
RUN_AS = {
    "make demo": (
        DEMO_COMMAND,
        "`make demo` creates .venv, pip-installs ctfp and runs `ctfp demo --out demo-out`; the "
        "venv exists here, and random weights keep the test from downloading ImageNet's. Run "
        "once for the session, with --json, by the demo_run fixture (tests/conftest.py): the "
        "tour goes on from a copy of its demo-out/, tests/cli checks its summary",
    ),
}

FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```", re.M | re.S)
SHELL = {"bash", "sh", "console"}
# Lines of an untagged block that look like commands: tag the block, or the test misses them.
COMMANDISH = re.compile(r"^\s*(\$ )?(ctfp|make|python|pip|\.venv/bin/)\b")


def _strip_comment(line: str) -> str:
    """The line without a trailing ``# comment`` (a ``#`` outside quotes, after a blank)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote and (i == 0 or line[i - 1] != "\\"):
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def readme_commands(text: str) -> list[str]:
    """The commands of the shell blocks in order, continuation lines joined, comments dropped."""
    commands = []
    for lang, body in FENCE.findall(text):
        if lang not in SHELL:
            continue
        lines = body.splitlines()
        if lang == "console":  # "$ command" lines; the rest is output
            lines = [line[2:] for line in lines if line.startswith("$ ")]
        pending = ""
        for line in lines:
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            command = _strip_comment(pending + line).strip()
            pending = ""
            if command:
                commands.append(command)
        assert not pending, f"a shell block ends in a continuation line: {pending!r}"
    return commands


def _listed(command: str) -> str | None:
    for entry in (*NOT_RUN, *RUN_AS):
        if command == entry or command.startswith(entry if entry.endswith("/") else entry + " "):
            return entry
    return None


def test_untagged_blocks_hold_no_commands() -> None:
    for lang, body in FENCE.findall(README.read_text()):
        if lang in SHELL:
            continue
        lines = [line for line in body.splitlines() if COMMANDISH.match(line)]
        assert lang != "" or not lines, (
            f"an untagged block holds commands {lines}: tag it ```bash so that they are run"
        )


def test_every_skip_and_alias_matches_a_readme_command() -> None:
    commands = readme_commands(README.read_text())
    assert len(commands) >= 10  # the parser found the tour
    used = {_listed(c) for c in commands}
    stale = [entry for entry in (*NOT_RUN, *RUN_AS) if entry not in used]
    assert not stale, f"listed in tests/test_readme.py but no longer in the README: {stale}"


@pytest.mark.slow
def test_readme_commands_run_on_the_bundled_sample(
    tmp_path: Path, demo_run: tuple[Path, dict[str, Any]]
) -> None:
    # Hermetic: no download of ImageNet weights (auto then leaves ResNet50 out and says so, as it
    # does offline), whatever torchvision's cache holds on this machine.
    env = offline_env(tmp_path)
    work = tmp_path / "work"
    work.mkdir()

    ran, skipped, seen = [], [], set()
    for command in readme_commands(README.read_text()):
        if command in seen:  # `make demo` is in the set-up and in the tour: once is enough
            continue
        seen.add(command)
        entry = _listed(command)
        if entry in NOT_RUN:
            skipped.append((command, NOT_RUN[entry]))
            continue
        if entry in RUN_AS:
            assert command == entry, f"{command!r}: RUN_AS entries replace whole commands only"
            command = RUN_AS[entry][0]
        if command == DEMO_COMMAND:  # run by the fixture, in the same environment
            shutil.copytree(demo_run[0] / "demo-out", work / "demo-out")
            ran.append((f"{command} (the demo_run fixture's)", 0.0))
            continue
        start = time.perf_counter()
        run = subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + command],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        ran.append((command, round(time.perf_counter() - start, 1)))
        assert run.returncode == 0, (
            f"README command failed (exit {run.returncode}): {command}\n"
            f"--- stdout ---\n{run.stdout[-3000:]}\n--- stderr ---\n{run.stderr[-3000:]}"
        )
    print("\n".join(f"ran ({s} s): {c}" for c, s in ran))
    print("\n".join(f"not run: {c} ({why})" for c, why in skipped))
    # What the tour says it makes is there.
    for path in (
        "demo-out/task2/report.html",
        "runs/t1/report.html",
        "runs/t1/summary.json",
        "runs/t2/open_set.csv",
        "archive-scores",
    ):
        assert (work / path).exists(), path
    assert len(ran) >= 8


def test_readme_is_short() -> None:
    lines = README.read_text().count("\n")
    assert lines <= 250, f"README.md has {lines} lines; move details to docs/"


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file (outside code blocks)."""
    anchors, fence = set(), False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
        elif not fence and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize(
    "doc", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: str(p.relative_to(ROOT))
)
def test_relative_links_point_at_files_that_exist(doc: Path) -> None:
    text = FENCE.sub("", doc.read_text())
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            broken.append(f"{target} (no file {dest})")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not broken, f"{doc.name}: broken links: {broken}"


def test_docs_are_linked_from_the_readme() -> None:
    text = README.read_text()
    for doc in sorted(DOCS.glob("*.md")):
        assert f"(docs/{doc.name})" in text, f"docs/{doc.name} is not linked from README.md"
