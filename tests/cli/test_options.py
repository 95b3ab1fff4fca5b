"""Options built from settings: flags, types, choices, defaults and what the user gave."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from ctfp.cli import build_parser
from ctfp.cli.options import add_settings, from_args, given
from ctfp.embed.settings import EmbedSettings
from ctfp.membership.options import ProximitySettings


def test_options_come_from_the_fields() -> None:
    p = argparse.ArgumentParser()
    names = add_settings(p, ProximitySettings)
    assert names == ProximitySettings.field_names()
    args = p.parse_args(["--metric", "l2", "--no-reference", "--recall-target", "0.5"])
    assert given(args, names) == {"metric": "l2", "reference": False, "recall_target": 0.5}
    s = from_args(ProximitySettings, args)
    assert s == ProximitySettings(metric="l2", reference=False, recall_target=0.5)
    assert from_args(ProximitySettings, p.parse_args([])) == ProximitySettings()
    with pytest.raises(SystemExit):
        p.parse_args(["--metric", "hamming"])
    with pytest.raises(SystemExit):
        p.parse_args(["--neighbours", "two"])


def test_shared_fields_are_added_once_and_excluded_ones_not_at_all() -> None:
    p = argparse.ArgumentParser()
    seen: set[str] = set()
    add_settings(p, EmbedSettings, exclude=("layout",), seen=seen)
    with pytest.raises(SystemExit):
        p.parse_args(["--layout", "plain"])
    assert add_settings(p, EmbedSettings, seen=seen) == ["layout"]
    assert p.parse_args(["--layout", "plain"]).layout == "plain"


def test_every_command_parses_and_help_shows_defaults(capsys) -> None:
    parser = build_parser()
    for argv in (
        ["embed", "x", "--out", "o"],
        ["run", "task1", "d", "--out", "o", "--method", "proximity", "--metric", "l1"],
        ["run", "task2", "d", "--out", "o", "--k", "auto", "--k-range", "2-5"],
        ["score", "m", "s", "--out", "o", "--batch-size", "8"],
        ["cluster", "s", "--out", "o", "--covariance", "diag"],
        ["cache", "x", "--out", "o", "--size", "64"],
    ):
        assert callable(parser.parse_args(argv).func)
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "task1", "--help"])
    text = capsys.readouterr().out
    assert "--metric {l1,l2,cosine}" in text and "(default cosine)" in text
    assert "--weights-seed" in text and "--layout" not in text
    assert "--features FEATURES   auto (default)" in text  # run's default, not embed's


def test_the_parser_and_help_import_nothing_heavy() -> None:
    # --help, --version and usage errors answer at once: no NumPy, scikit-learn, torch,
    # pyarrow or FAISS is imported to build the parser of every command.
    code = (
        "import sys\n"
        "from ctfp.cli import build_parser\n"
        "for argv in (['run', 'task1', '--help'], ['-V'], ['embed', '--bogus']):\n"
        "    try:\n"
        "        build_parser().parse_args(argv)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = ('numpy', 'sklearn', 'scipy', 'torch', 'pyarrow', 'faiss', 'tqdm', 'PIL')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip().splitlines()[-1] == "[]"
    assert run.stdout.startswith("usage:") and "ctfp 0.3" in run.stdout


def test_an_old_option_spelling_still_works_with_a_warning(capsys) -> None:
    args = build_parser().parse_args(["embed", "x", "--out", "o", "--seed", "3"])
    assert args.weights_seed == 3
    assert "--seed is deprecated" in capsys.readouterr().err
