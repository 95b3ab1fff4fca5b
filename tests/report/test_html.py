"""Page pieces: thumbnails, tables and escaping."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np

from ctfp.io.window import Window
from ctfp.report.html import CHECK_SCRIPT, Html, Thumbnails, fmt, page, table

PNG = "data:image/png;base64,"


def test_thumbnails_say_why_a_slice_cannot_be_shown(tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64).astype(np.uint8)).save(
        tmp_path / "a.png"
    )
    thumbs = Thumbnails(Window(), side=32)
    shown = thumbs.html((str(tmp_path / "a.png"), 0), "a & b")
    assert shown.count(PNG) == 1 and "<figcaption>a &amp; b</figcaption>" in shown
    thumb = re.search(r'src="data:image/png;base64,([^"]+)"', shown)
    assert thumb is not None
    assert Image.open(io.BytesIO(base64.b64decode(thumb.group(1)))).size == (32, 24)
    for where, reason in (
        ((str(tmp_path / "gone.png"), 0), "does not exist|cannot read"),
        ((str(tmp_path / "a.png"), 3), "it has 1 frames, not frame 3"),
    ):
        missing = thumbs.html(where, "x")
        assert PNG not in missing and "source not readable" in missing
        assert re.search(reason, missing), missing
    assert "no embedding row" in thumbs.html(None, "x")


def test_tables_format_and_escape() -> None:
    assert fmt(None) == "-" and fmt(1 / 3) == "0.3333"
    assert fmt({"a": [0.123456, 2]}) == "{a: [0.1235, 2]}"
    out = table(["<h>", "n"], [("<b>", 2), ("x", 0.5)])
    assert "<th>&lt;h&gt;</th>" in out and "<td>&lt;b&gt;</td>" in out
    assert '<td class="num">2</td>' in out and '<td class="num">0.5</td>' in out
    assert "<td><b>x</b></td>" in table(["h"], [(Html("<b>x</b>"),)])
    # A cell with a word too long to fit (a path, a hash) may fold inside it; others never do.
    long = table(["h"], [("/a/very/long/path/to/a/run/folder/x.csv (3 rows)",), ("a b",)])
    assert '<td class="long">/a/very' in long and "<td>a b</td>" in long


def test_page_links_only_the_sections_it_has() -> None:
    body = '<section id="settings"></section><section id="map"></section>'
    out = page("t <1>", "task1", ["settings", "map", "scores"], body, "0.0")
    assert out.startswith("<!DOCTYPE html>") and "<title>t &lt;1&gt;</title>" in out
    assert '<body data-task="task1">' in out and CHECK_SCRIPT in out
    assert '<a href="#settings">' in out and '<a href="#map">' in out
    assert 'href="#scores"' not in out
