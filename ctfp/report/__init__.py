"""The HTML report of a run: settings, embedding map, scores, metrics and thumbnails, one file;
and the audit summary (``audit.json``, ``audit.md``) written beside it."""

from ctfp.report.audit import audit_record, write_audit
from ctfp.report.build import write_report

__all__ = ["audit_record", "write_audit", "write_report"]
