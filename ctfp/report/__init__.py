"""The HTML report of a run: settings, embedding map, scores, metrics and thumbnails, one file."""

from ctfp.report.build import write_report

__all__ = ["write_report"]
