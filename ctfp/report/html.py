"""HTML page pieces: escaping, formatting, tables, figures, thumbnails and the page template."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from ctfp.exceptions import CtfpError, InputError

THUMB_SIDE = 112
# Sets data-* attributes on <body> once the page has loaded; a headless browser reading the DOM
# back sees whether the script ran and whether every inlined image decoded.
CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var images = document.images, broken = 0;
  for (var i = 0; i < images.length; i++) {
    if (!images[i].complete || images[i].naturalWidth === 0) { broken++; }
  }
  document.body.setAttribute("data-images", String(images.length));
  document.body.setAttribute("data-broken-images", String(broken));
  document.body.setAttribute("data-rendered", "1");
});
"""
STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1180px; padding: 0 24px 48px; color: #222; line-height: 1.45; }
h1 { margin-top: 24px; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 36px; }
nav a { margin-right: 14px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: middle;
         overflow-wrap: anywhere; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.stages td:first-child, .stages th:first-child { white-space: nowrap; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 13px;
              word-break: break-all; }
.verdict-box { border: 3px solid #0072B2; background: #eef6fb; padding: 6px 20px 10px;
               border-radius: 8px; margin: 12px 0 8px; }
.verdict-box h2 { border: none; margin: 8px 0 4px; }
.verdict-box .verdict { font-size: 19px; font-weight: 600; margin: 6px 0; }
.verdict-box .why { font-size: 14px; color: #333; margin: 6px 0; }
.warning { background: #fff4e5; border: 1px solid #f0a020; padding: 10px 14px; margin: 12px 0; }
.note { color: #555; font-size: 14px; }
.figures { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
figure { margin: 0; } figcaption { font-size: 13px; color: #555; max-width: 640px; }
img.plot { max-width: 100%; height: auto; }
.wide { flex: 1 1 480px; min-width: 0; }
img.thumb { display: block; width: 112px; height: auto; background: #000; }
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


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (string cells already HTML)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for cell in row:
            numeric = isinstance(cell, (int, float)) and not isinstance(cell, bool)
            text = cell if raw and isinstance(cell, str) else escape(fmt(cell))
            cells.append(f'<td class="num">{text}</td>' if numeric else f"<td>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def png_uri(data: bytes) -> str:
    """PNG bytes as a ``data:`` URI, to inline in the page."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def figure(uri: str, caption: str, alt: str) -> str:
    """A plot (a PNG data URI) with its caption, as a ``<figure>``."""
    return (
        f'<figure><img class="plot" src="{uri}" alt="{escape(alt)}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def window_of(metadata: dict[str, Any]) -> Any:
    """The decoding window the shards were embedded with."""
    from ctfp.io.window import Window

    return Window.from_description(str((metadata.get("decode") or {}).get("window", "auto")))


class Thumbnails:
    """Slices decoded from their source files, shrunk to PNG thumbnails; the last few files are
    kept decoded, since a volume gives many slices."""

    def __init__(self, window: Any, side: int = THUMB_SIDE, keep: int = 4) -> None:
        self.window = window
        self.side = side
        self.keep = keep
        self._frames: dict[str, np.ndarray] = {}

    def _decode(self, source: str) -> np.ndarray:
        from ctfp.io.decode import decode_file

        if source not in self._frames:
            if len(self._frames) >= self.keep:
                self._frames.pop(next(iter(self._frames)))
            self._frames[source] = decode_file(source, self.window)
        return self._frames[source]

    def _image(self, where: tuple[str, int], subject: str) -> Any:
        """Frame ``where`` of its source as a PIL image; InputError naming ``subject`` (the
        source file, or "it") where the file has no such frame."""
        from PIL import Image

        source, frame = where
        frames = self._decode(source)
        if not 0 <= frame < len(frames):
            raise InputError(f"{subject or source} has {len(frames)} frames, not frame {frame}")
        return Image.fromarray(frames[frame])

    def html(self, where: tuple[str, int] | None, caption: str, title: str = "") -> str:
        """A ``<figure>`` with the thumbnail, or a grey box saying why there is none."""
        tip = escape(title or caption)
        if where is None:
            return _figure(f'<div class="missing" title="{tip}">no embedding row</div>', caption)
        try:
            img = self._image(where, "it")
        except (CtfpError, OSError) as exc:
            why = escape(f"cannot show frame {where[1]} of {where[0]}: {exc}")
            return _figure(f'<div class="missing" title="{why}">source not readable</div>', caption)
        img.thumbnail((self.side, self.side))
        return _figure(f'<img class="thumb" src="{_png(img)}" alt="{tip}" title="{tip}">', caption)

    def difference_html(
        self, a: tuple[str, int] | None, b: tuple[str, int] | None, caption: str
    ) -> str:
        """A ``<figure>`` with ``|a - b|`` of two slices (each resized to the thumbnail side,
        bright = different), or a grey box saying why there is none."""
        from PIL import Image

        try:
            if a is None or b is None:
                raise InputError("no embedding row")
            size = (self.side, self.side)
            x, y = (self._image(w, "").convert("L").resize(size, Image.BILINEAR) for w in (a, b))
        except (CtfpError, OSError) as exc:
            why = escape(f"no difference image: {exc}")
            return _figure(f'<div class="missing" title="{why}">no difference</div>', caption)
        diff = np.abs(np.asarray(x, np.int16) - np.asarray(y, np.int16)).astype(np.uint8)
        uri = _png(Image.fromarray(diff))
        tip = "absolute difference of the two slices (bright = different)"
        return _figure(f'<img class="thumb" src="{uri}" alt="{tip}" title="{tip}">', caption)


def _figure(content: str, caption: str) -> str:
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f"<figure>{content}{cap}</figure>"


def _png(img: Any) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return png_uri(buf.getvalue())


def page(title: str, task: str, nav: Sequence[str], body: str, version: str) -> str:
    """The whole HTML document: style, title, links to the sections of ``nav`` that ``body``
    has, the body and the check script."""
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
    "STYLE",
    "THUMB_SIDE",
    "Thumbnails",
    "escape",
    "figure",
    "fmt",
    "page",
    "png_uri",
    "table",
    "window_of",
]
