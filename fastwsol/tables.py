"""Tables as text: Markdown (the reports of ``fastwsol reproduce``, ``fastwsol check-gpu`` and the
benchmarks) and CSV (the benchmarks' rows)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A GitHub Markdown table: the header, a ``|---|`` rule, then one line per row, the cells
    printed with ``str``. A row whose cell count differs from the header's, or a cell holding
    ``|`` or a line break (it would split its column or its row), is a ``ValueError``."""
    lines = [_markdown_line([str(name) for name in header]), "|" + "---|" * len(header)]
    for number, row in enumerate(rows):
        cells = [str(cell) for cell in row]
        if len(cells) != len(header):
            raise ValueError(f"row {number} has {len(cells)} cells under {len(header)} headers: {cells}")
        lines.append(_markdown_line(cells))
    return "\n".join(lines)


def _markdown_line(cells: Sequence[str]) -> str:
    for cell in cells:
        if "|" in cell or "\n" in cell:
            raise ValueError(f"a Markdown table cell cannot hold '|' or a line break: {cell!r}")
    return "| " + " | ".join(cells) + " |"


def csv_text(rows: list[dict], fields: Sequence[str] | None = None) -> str:
    """Rows of dicts as CSV; the header is ``fields`` or every key in first-seen order."""
    if fields is None:
        fields = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fields))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
