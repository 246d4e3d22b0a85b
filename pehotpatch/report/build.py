"""A review report from a diff and its check: the plan is built here (a plan that cannot be
built is said in the report, not raised), and the HTML is written atomically, read back
and parsed before it is renamed into place."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING

from pehotpatch.errors import PehpError
from pehotpatch.report.html import render_html
from pehotpatch.report.model import ReportModel, build_model

if TYPE_CHECKING:  # pragma: no cover
    from pehotpatch.check import CheckResult
    from pehotpatch.diff import DiffResult


def report_model(diff: DiffResult, check: CheckResult, *, allow_new_imports: bool = False,
                 inputs: list[tuple[str, Path | None]] | None = None) -> ReportModel:
    """Everything the report shows; ``inputs`` are further (role, file or directory) to list with hashes."""
    from pehotpatch.plan.build import build_plan

    plan, error = None, None
    try:
        plan = build_plan(diff, sorted(check.hotpatch_set), sequence=1, allow_new_imports=allow_new_imports)
    except PehpError as exc:
        error = str(exc)
    return build_model(diff, check, plan, plan_error=error, extra_inputs=inputs)


class _Checker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)


def validate_html(data: bytes) -> None:
    """The bytes read back are UTF-8 HTML with a body (a ValueError otherwise)."""
    p = _Checker()
    p.feed(data.decode("utf-8"))
    p.close()
    if not {"html", "head", "body"} <= p.tags:
        raise ValueError("not a complete HTML document")


def write_report_file(model: ReportModel, output: Path, *, overwrite: bool = False,
                 inputs: list[Path] | None = None) -> Path:
    """Write the report to ``output`` (never over an input, an existing file only with ``overwrite``)."""
    from pehotpatch.output import write_atomic

    return write_atomic(output, render_html(model).encode("utf-8"), overwrite=overwrite, inputs=inputs or [],
                        validate=validate_html)
