"""HTML page pieces: escaping, formatting, tables, figures, thumbnails and the page template."""

from __future__ import annotations

import base64
import functools
import html
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from ctfp.exceptions import CtfpError, InputError

THUMB_SIDE = 112
# Sets data-* attributes on <body> once loaded, for a headless browser to check the page: the
# script ran, every image decoded, and the layout (size, narrowest cell in em, tallest row).
CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var body = document.body, images = document.images, broken = 0, drawn = 0;
  for (var i = 0; i < images.length; i++) {
    if (!images[i].complete || images[i].naturalWidth === 0) { broken++; }
    drawn += images[i].getBoundingClientRect().height;
  }
  var narrowest = 1e9, narrow = "", tallest = 0, rows = 0;
  var cells = document.querySelectorAll("td, th");
  for (var j = 0; j < cells.length; j++) {
    var box = cells[j].getBoundingClientRect();
    if (box.width === 0) { continue; }  // not laid out
    var em = box.width / parseFloat(getComputedStyle(cells[j]).fontSize);
    if (em < narrowest) { narrowest = em; narrow = cells[j].textContent.slice(0, 40); }
  }
  var trs = document.querySelectorAll("tr");
  for (var k = 0; k < trs.length; k++) {
    if (trs[k].closest("details:not([open])")) { continue; }
    rows++;
    tallest = Math.max(tallest, trs[k].getBoundingClientRect().height);
  }
  var page = document.documentElement.getBoundingClientRect();
  var set = function (name, value) { body.setAttribute("data-" + name, String(value)); };
  set("images", images.length);
  set("broken-images", broken);
  set("image-height", Math.round(drawn));
  set("height", Math.round(page.height));
  set("width", Math.round(Math.max(page.width, document.documentElement.scrollWidth)));
  set("narrowest-cell-em", narrowest === 1e9 ? 0 : narrowest.toFixed(2));
  set("narrowest-cell", narrow);
  set("rows", rows);
  set("tallest-row", Math.round(tallest));
  set("rendered", "1");
});
"""
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1180px; padding: 0 24px 48px; color: #222; line-height: 1.45; }
h1 { margin-top: 24px; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 36px; }
nav a { margin-right: 14px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 14px; }
/* A column is never narrower than its longest word (nor than about 8 characters); only cells
   marked long (paths, hashes) break inside a word. */
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: middle;
         min-width: 4em; word-break: normal; overflow-wrap: break-word; }
td.long, td figcaption { overflow-wrap: anywhere; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.kv td.num { text-align: left; }
td details table { margin: 4px 0; font-size: 13px; }
summary { cursor: pointer; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 13px;
              overflow-wrap: anywhere; }
.verdict-box { border: 3px solid #0072B2; background: #eef6fb; padding: 6px 20px 10px;
               border-radius: 8px; margin: 12px 0 8px; }
.verdict-box h2 { border: none; margin: 8px 0 4px; }
.verdict-box .verdict { font-size: 19px; font-weight: 600; margin: 6px 0 10px; }
.answer { display: grid; grid-template-columns: 11em 1fr; gap: 6px 16px; margin: 0 0 6px;
          font-size: 15px; }
.answer dt { font-weight: 600; } .answer dd { margin: 0; }
.answer ul, .warning ul { margin: 0; padding-left: 18px; }
.warning { background: #fff4e5; border: 1px solid #f0a020; padding: 8px 14px; margin: 10px 0; }
.note { color: #555; font-size: 14px; }
.figures { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 13px; color: #555; max-width: 640px; }
img.plot { max-width: 100%; height: auto; }
.wide { flex: 1 1 480px; min-width: 0; }
img.thumb { display: block; width: 112px; height: auto; background: #000; }
td figcaption { max-width: 112px; }
.grid { display: flex; flex-wrap: wrap; gap: 6px; margin-bottom: 18px; }
.grid figure figcaption { max-width: 112px; font-size: 11px; overflow-wrap: anywhere; }
.missing { width: 112px; height: 112px; background: #eee; font-size: 11px; color: #a00;
           display: flex; align-items: center; justify-content: center; text-align: center;
           overflow: hidden; }
"""


def escape(value: Any) -> str:
    """``str(value)`` escaped for HTML text and attribute values."""
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A value as short text: floats to 4 significant digits, also inside dicts and lists."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt(v) for v in value) + "]"
    return str(value)


class Html(str):
    """Text that is HTML already: a :func:`table` cell inserted as it is."""


#: A word this long (a path, a hash) may break anywhere; shorter words never break.
LONG_WORD = 24


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table of :func:`fmt` cells, escaped except :class:`Html` ones; numbers are
    right-aligned, cells with a word of :data:`LONG_WORD` characters or more marked ``long``."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            text = fmt(cell)
            if isinstance(cell, Html):
                cells.append(f"<td>{cell}</td>")
            elif isinstance(cell, (int, float)) and not isinstance(cell, bool):
                cells.append(f'<td class="num">{escape(text)}</td>')
            elif max(map(len, text.split()), default=0) >= LONG_WORD:
                cells.append(f'<td class="long">{escape(text)}</td>')
            else:
                cells.append(f"<td>{escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def png_uri(data: bytes) -> str:
    """PNG bytes as a ``data:`` URI, to inline in the page."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure(uri: str, caption: str, alt: str) -> str:
    """A plot (a PNG data URI) with its caption, as a ``<figure>``."""
    return _figure(f'<img class="plot" src="{uri}" alt="{escape(alt)}">', caption)


def window_of(metadata: dict[str, Any]) -> Any:
    """The decoding window the shards were embedded with."""
    from ctfp.io.window import Window

    return Window.from_description(str((metadata.get("decode") or {}).get("window", "auto")))


class Thumbnails:
    """Slices decoded from their source files, shrunk to PNG thumbnails; the last few files are
    kept decoded, since a volume gives many slices."""

    def __init__(self, window: Any, side: int = THUMB_SIDE) -> None:
        from ctfp.io.decode import decode_file

        self.side = side
        self._decode = functools.lru_cache(maxsize=4)(lambda source: decode_file(source, window))

    def _image(self, where: tuple[str, int], subject: str) -> Any:
        """Frame ``where`` of its source as a PIL image; InputError naming ``subject`` (or the
        source) where it has no such frame."""
        from PIL import Image

        source, frame = where
        frames = self._decode(source)
        if not 0 <= frame < len(frames):
            raise InputError(f"{subject or source} has {len(frames)} frames, not frame {frame}")
        return Image.fromarray(frames[frame])

    def html(self, where: tuple[str, int] | None, caption: str) -> str:
        """A ``<figure>`` with the thumbnail, or a grey box saying why there is none."""
        if where is None:
            return _figure(_missing(caption, "no embedding row"), caption)
        try:
            img = self._image(where, "it")
        except (CtfpError, OSError) as exc:
            why = f"cannot show frame {where[1]} of {where[0]}: {exc}"
            return _figure(_missing(why, "source not readable"), caption)
        img.thumbnail((self.side, self.side))
        return _figure(_thumb(img, caption), caption)

    def difference_html(self, a: tuple[str, int], b: tuple[str, int]) -> str:
        """A ``<figure>`` with ``|a - b|`` of two slices at the thumbnail side, or a grey box
        saying why there is none."""
        from PIL import Image

        size = (self.side, self.side)
        try:
            x, y = (self._image(w, "").convert("L").resize(size, Image.BILINEAR) for w in (a, b))
        except (CtfpError, OSError) as exc:
            return _figure(_missing(f"no difference image: {exc}", "no difference"), "")
        diff = np.abs(np.asarray(x, np.int16) - np.asarray(y, np.int16)).astype(np.uint8)
        tip = "absolute difference of the two slices (bright = different)"
        return _figure(_thumb(Image.fromarray(diff), tip), "")


def _figure(content: str, caption: str) -> str:
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f"<figure>{content}{cap}</figure>"


def _missing(why: str, text: str) -> str:
    return f'<div class="missing" title="{escape(why)}">{text}</div>'


def _thumb(img: Any, tip: str) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    uri, tip = png_uri(buf.getvalue()), escape(tip)
    return f'<img class="thumb" src="{uri}" alt="{tip}" title="{tip}">'


def page(title: str, task: str, nav: Sequence[str], body: str, version: str) -> str:
    """The whole HTML document, with links to the sections of ``nav`` that ``body`` has."""
    links = " ".join(f'<a href="#{n}">{escape(n)}</a>' for n in nav if f'id="{n}"' in body)
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{STYLE}</style></head>\n"
        f'<body data-task="{escape(task)}"><h1>{escape(title)}</h1><nav>{links}</nav>\n'
        f"{body}\n"
        f'<p class="note">Written by ctfp {escape(version)}.</p>'
        f"<script>{CHECK_SCRIPT}</script></body></html>\n"
    )


__all__ = [
    "CHECK_SCRIPT",
    "LONG_WORD",
    "STYLE",
    "THUMB_SIDE",
    "Html",
    "Thumbnails",
    "escape",
    "figure",
    "fmt",
    "page",
    "png_uri",
    "table",
    "window_of",
]
